"""Base encoders: the :class:`Encoder` interface, its registry, and the kinds cecq ships
(sentence-transformers models, the corpus-fitted ``lexical`` model, distilled static models)."""

from cecq.encoders.base import EPS, Encoder, TextKind, concatenate, embed, l2_normalize, nonempty_rows, validate_texts
from cecq.encoders.lexical import LEXICAL, LexicalEncoder
from cecq.encoders.registry import (
    check_model,
    encoder_class,
    encoder_names,
    is_fitted,
    load_encoder,
    model_fingerprint,
    preload_models,
    register_encoder,
)
from cecq.encoders.sentence_transformer import (
    OFFLINE_BUNDLES,
    PAPER_PRESET,
    PROMPT_PRESETS,
    SentenceTransformerEncoder,
    resolve_model,
)
from cecq.encoders.weights import fit_weights, guarded_weights, self_retrieval_weights, spread_weights

__all__ = [
    "EPS",
    "LEXICAL",
    "OFFLINE_BUNDLES",
    "PAPER_PRESET",
    "PROMPT_PRESETS",
    "Encoder",
    "LexicalEncoder",
    "SentenceTransformerEncoder",
    "TextKind",
    "check_model",
    "concatenate",
    "embed",
    "encoder_class",
    "encoder_names",
    "fit_weights",
    "guarded_weights",
    "is_fitted",
    "l2_normalize",
    "load_encoder",
    "model_fingerprint",
    "nonempty_rows",
    "preload_models",
    "register_encoder",
    "resolve_model",
    "self_retrieval_weights",
    "spread_weights",
    "validate_texts",
]
