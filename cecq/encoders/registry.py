"""The one registry of encoder kinds: built-in names (``lexical``) map to their class; any
other model name is a sentence-transformers model (Hugging Face id or local folder).
Adding a kind: a module with an :class:`~cecq.encoders.base.Encoder` subclass and one line
below (or, outside cecq, a plugin that calls :func:`register_encoder`)."""

from __future__ import annotations

from collections.abc import Sequence

from cecq.config import ModelSpec
from cecq.encoders.base import Encoder
from cecq.encoders.lexical import LEXICAL, LexicalEncoder
from cecq.encoders.sentence_transformer import SentenceTransformerEncoder, resolve_model
from cecq.plugins import load_plugins

_ENCODERS: dict[str, type[Encoder]] = {}
DEFAULT_ENCODER: type[Encoder] = SentenceTransformerEncoder  # every name that is not registered


def register_encoder(name: str, cls: type[Encoder]) -> type[Encoder]:
    """Register an encoder kind under a built-in model name."""
    if not (isinstance(cls, type) and issubclass(cls, Encoder)):
        raise TypeError(f"{cls!r} is not an Encoder subclass")
    _ENCODERS[name] = cls
    return cls


register_encoder(LEXICAL, LexicalEncoder)


def encoder_class(name: str) -> type[Encoder]:
    """The class that loads or fits the model called ``name``."""
    if name not in _ENCODERS:
        load_plugins()
    return _ENCODERS.get(name, DEFAULT_ENCODER)


def encoder_names() -> list[str]:
    """The built-in model names (plugins included)."""
    load_plugins()
    return list(_ENCODERS)


def is_fitted(spec: ModelSpec | str) -> bool:
    """Whether the model is fitted on the corpus (and stored with it) rather than pretrained."""
    return encoder_class(spec.name if isinstance(spec, ModelSpec) else spec).fitted


def check_model(name: str) -> None:
    """Fail now, with :class:`~cecq.errors.ModelNotFoundError`, on a pretrained model that
    cannot be resolved (a missing local path), before any worker starts."""
    if encoder_class(name) is DEFAULT_ENCODER:
        resolve_model(name)


def preload_models(models: Sequence[str]) -> None:
    """Import what loading every one of ``models`` needs (:meth:`Encoder.preload`)."""
    for kind in {encoder_class(m) for m in models}:
        kind.preload()


def model_fingerprint(name: str) -> str | None:
    """The fingerprint of the weights of the model called ``name`` (see :meth:`Encoder.fingerprint`)."""
    return encoder_class(name).fingerprint(name)


def load_encoder(spec: ModelSpec | str, fit_texts: Sequence[str] | None = None, seed: int = 0) -> Encoder:
    """Load a pretrained base model, or fit a corpus-fitted one on ``fit_texts``."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec(spec)
    cls = encoder_class(spec.name)
    if cls.fitted:
        if fit_texts is None:
            raise ValueError(f"encoder {spec.name!r} is fitted on the corpus: pass fit_texts")
        return cls.fit_corpus(fit_texts, spec, seed=seed)
    return cls.from_spec(spec)
