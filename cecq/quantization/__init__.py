"""Quantizers: one interface (:class:`CodeQuantizer`), one registry, one module a kind.

``scalar`` (percentile thresholds, fixed bits a dimension), ``mixed`` (bits fitted per
dimension within a byte budget), ``product`` (a byte per 4-dim subspace of a rotated prefix).
"""

from cecq.quantization.base import CodeQuantizer, SizedBy
from cecq.quantization.mixed import MixedQuantizer, allocate_bits
from cecq.quantization.packing import VALID_BITS, bytes_per_vector, pack_codes, unpack_codes
from cecq.quantization.product import ProductQuantizer
from cecq.quantization.registry import (
    fit_quantizer,
    load_quantizer,
    quantizer_class,
    quantizer_kinds,
    register_quantizer,
    resolve_kind,
    unregister_quantizer,
)
from cecq.quantization.scalar import Quantizer

__all__ = [
    "VALID_BITS",
    "CodeQuantizer",
    "MixedQuantizer",
    "ProductQuantizer",
    "Quantizer",
    "SizedBy",
    "allocate_bits",
    "bytes_per_vector",
    "fit_quantizer",
    "load_quantizer",
    "pack_codes",
    "quantizer_class",
    "quantizer_kinds",
    "register_quantizer",
    "resolve_kind",
    "unpack_codes",
    "unregister_quantizer",
]
