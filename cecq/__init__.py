"""cecq: concat-encode-quantize. Several small frozen embedding models, a learned Matryoshka
decoder, and quantization, for compact and searchable corpus embeddings.

The steps, one by one::

    from cecq import load_encoder, embed, train_decoder, decode, Quantizer, search_codes
"""

from cecq.config import DecoderConfig, EvalConfig, ModelSpec, PipelineConfig
from cecq.decoder import Decoder, decode, load_decoder, mrl_similarity_loss, save_decoder, train_decoder
from cecq.encoders import (
    Encoder,
    LexicalEncoder,
    SentenceTransformerEncoder,
    concatenate,
    embed,
    load_encoder,
    register_encoder,
)
from cecq.errors import ConfigError, DataError, DimensionMismatchError, ModelNotFoundError, StorageError
from cecq.eval.beir import RetrievalTask, load_beir
from cecq.quantization import (
    CodeQuantizer,
    MixedQuantizer,
    ProductQuantizer,
    Quantizer,
    fit_quantizer,
    load_quantizer,
    pack_codes,
    register_quantizer,
    unpack_codes,
)
from cecq.search import search_codes, search_float, search_hamming

__all__ = [
    "CodeQuantizer",
    "ConfigError",
    "DataError",
    "Decoder",
    "DecoderConfig",
    "DimensionMismatchError",
    "Encoder",
    "EvalConfig",
    "LexicalEncoder",
    "MixedQuantizer",
    "ModelNotFoundError",
    "ModelSpec",
    "PipelineConfig",
    "ProductQuantizer",
    "Quantizer",
    "RetrievalTask",
    "SentenceTransformerEncoder",
    "StorageError",
    "concatenate",
    "decode",
    "embed",
    "fit_quantizer",
    "load_beir",
    "load_decoder",
    "load_encoder",
    "load_quantizer",
    "mrl_similarity_loss",
    "pack_codes",
    "register_encoder",
    "register_quantizer",
    "save_decoder",
    "search_codes",
    "search_float",
    "search_hamming",
    "train_decoder",
    "unpack_codes",
]
