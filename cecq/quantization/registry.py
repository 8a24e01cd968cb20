"""The one registry of quantizer kinds. Adding a kind: a module with a
:class:`~cecq.quantization.base.CodeQuantizer` subclass, and one line below (or, outside cecq,
a plugin that calls :func:`register_quantizer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cecq.errors import ConfigError
from cecq.plugins import ENTRY_POINT_GROUP, ENV_VAR, load_plugins
from cecq.quantization.base import CodeQuantizer, SizedBy
from cecq.quantization.file import named_errors, read_quantizer_table
from cecq.quantization.mixed import MixedQuantizer
from cecq.quantization.product import ProductQuantizer
from cecq.quantization.scalar import Quantizer

_QUANTIZERS: dict[str, type[CodeQuantizer]] = {}

# The kind a run gets when it names none: by what sets its size.
DEFAULT_KINDS: dict[SizedBy, str] = {"bits": "scalar", "budget": "mixed"}


def register_quantizer(cls: type[CodeQuantizer]) -> type[CodeQuantizer]:
    """Register a quantizer kind under ``cls.kind`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, CodeQuantizer)):
        raise TypeError(f"{cls!r} is not a CodeQuantizer subclass")
    if cls.sized_by not in DEFAULT_KINDS:
        raise TypeError(f"{cls.__name__}.sized_by must be one of {sorted(DEFAULT_KINDS)}, got {cls.sized_by!r}")
    _QUANTIZERS[cls.kind] = cls
    return cls


def unregister_quantizer(kind: str) -> None:
    """Remove a registered kind (for plugins' tests); the built-in kinds stay."""
    if _QUANTIZERS.get(kind) in (Quantizer, MixedQuantizer, ProductQuantizer):
        raise ValueError(f"{kind!r} is a built-in quantizer kind")
    _QUANTIZERS.pop(kind, None)


for _cls in (Quantizer, MixedQuantizer, ProductQuantizer):
    register_quantizer(_cls)


def quantizer_kinds(sized_by: SizedBy | None = None) -> list[str]:
    """Registered kinds (plugins included), optionally only those sized by bits or a budget."""
    load_plugins()
    return [k for k, c in _QUANTIZERS.items() if sized_by is None or c.sized_by == sized_by]


def quantizer_class(kind: str) -> type[CodeQuantizer]:
    """The class of a kind; ConfigError naming the known kinds if there is none."""
    if kind not in _QUANTIZERS:
        load_plugins()
    if kind not in _QUANTIZERS:
        raise ConfigError(
            f"unknown quantization {kind!r}; choose from {', '.join(quantizer_kinds())} (a kind from a "
            f"plugin needs its module in {ENV_VAR} or an installed {ENTRY_POINT_GROUP!r} entry point)"
        )
    return _QUANTIZERS[kind]


def resolve_kind(kind: str | None, budget_bytes: int | None) -> str:
    """The kind a run uses: ``kind``, else the default for a byte budget or for bits. A
    kind sized by bits given with a budget is the spelling of stores written before kinds
    had names (``scalar`` + budget meant fitted bits): it resolves to the budget default."""
    if kind is None:
        return DEFAULT_KINDS["budget" if budget_bytes is not None else "bits"]
    if budget_bytes is not None and quantizer_class(kind).sized_by == "bits":
        return DEFAULT_KINDS["budget"]
    quantizer_class(kind)
    return kind


def fit_quantizer(
    kind: str, sample: np.ndarray, *, bits: int | None = None, budget_bytes: int | None = None, seed: int = 0
) -> CodeQuantizer:
    """Fit a quantizer of ``kind`` on a calibration sample."""
    return quantizer_class(kind).fit_sample(sample, bits=bits, budget_bytes=budget_bytes, seed=seed)


def load_quantizer(path: str | Path | BinaryIO, filesystem: Any = None) -> CodeQuantizer:
    """A quantizer file written by the ``save`` of any registered kind, read once."""
    table, meta = read_quantizer_table(path, filesystem)
    try:
        cls = quantizer_class(meta["kind"])
    except ConfigError:
        raise ValueError(
            f"{path}: unknown quantizer kind {meta['kind']!r} (this cecq reads {', '.join(quantizer_kinds())})"
        ) from None
    with named_errors(path):
        return cls.from_table(table, meta)
