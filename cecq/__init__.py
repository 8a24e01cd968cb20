"""cecq: concat-encode-quantize. Several small frozen embedding models, a learned Matryoshka
decoder, and percentile quantization, for compact and searchable corpus embeddings.

The steps, one by one::

    from cecq import load_encoder, embed, train_decoder, decode, Quantizer, search_codes
"""

from cecq.config import DecoderConfig, EvalConfig, ModelSpec, QuantizerConfig
from cecq.data import DataError, RetrievalTask, load_beir
from cecq.decoder import Decoder, DimensionMismatchError, decode, load_decoder, mrl_similarity_loss, save_decoder, train_decoder
from cecq.encoders import Encoder, LexicalEncoder, ModelNotFoundError, SentenceTransformerEncoder, concatenate, embed, load_encoder
from cecq.product_quantizer import ProductQuantizer
from cecq.quantizer import MixedQuantizer, Quantizer, load_quantizer, pack_codes, unpack_codes
from cecq.search import search_codes, search_float, search_hamming

__all__ = [
    "DataError", "Decoder", "DecoderConfig", "DimensionMismatchError", "Encoder", "EvalConfig", "LexicalEncoder",
    "MixedQuantizer", "ModelNotFoundError", "ModelSpec", "ProductQuantizer", "Quantizer", "QuantizerConfig", "RetrievalTask", "SentenceTransformerEncoder",
    "concatenate", "decode", "embed", "load_beir", "load_decoder", "load_encoder", "load_quantizer", "mrl_similarity_loss", "pack_codes",
    "save_decoder", "search_codes", "search_float", "search_hamming", "train_decoder", "unpack_codes",
]
