"""The encoder interface and the vector algebra every encoder shares.

Every encoder returns float32 rows that are L2-normalised (or all zero for an empty
text), so the concatenation of several encoders is well defined and NaN-free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from cecq.config import ModelSpec
from cecq.errors import DataError

TextKind = Literal["query", "document"]
EPS = 1e-12


def validate_texts(texts: Sequence[object], what: str = "text") -> list[str]:
    """Return ``texts`` as a list of str; raise a DataError naming the first bad entry.

    Empty and whitespace-only strings are allowed (they embed to a zero vector, see
    :func:`cecq.encoders.l2_normalize`); ``None`` and non-strings are not.
    """
    out: list[str] = []
    for i, t in enumerate(texts):
        if t is None:
            raise DataError(f"{what} at position {i} is None; pass an empty string for an empty document")
        if not isinstance(t, str):
            raise DataError(f"{what} at position {i} is {type(t).__name__}, expected str")
        out.append(t)
    return out


def _row_norms(x: np.ndarray) -> np.ndarray:
    """Row L2 norms without a full-size temporary (einsum reduces in one pass)."""
    return np.sqrt(np.einsum("ij,ij->i", x, x)) if x.ndim == 2 else np.linalg.norm(x, axis=-1)


def l2_normalize(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise L2 normalisation; rows of (near) zero norm stay zero instead of NaN.
    ``out`` (may be ``x`` itself, if float32) receives the result instead of a new array."""
    x = np.asarray(x, dtype=np.float32)
    norms = _row_norms(x)
    # A NaN or infinity anywhere in a row makes its norm NaN or infinite: checking the
    # norms is the same check as checking every value, at a fraction of the memory traffic.
    if not np.all(np.isfinite(norms)):
        raise ValueError("embedding contains NaN or infinity")
    scale = np.where(norms > EPS, 1.0 / np.maximum(norms, EPS), 0.0).astype(np.float32)
    return np.multiply(x, scale[..., None], out=out)


def nonempty_rows(x: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows that are not all zero (empty texts embed to zero rows)."""
    return _row_norms(np.asarray(x)) > 0


def concatenate(parts: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Concatenate per-model embeddings (each normalised, optionally weighted) and renormalise."""
    if not parts:
        raise ValueError("nothing to concatenate")
    rows = {p.shape[0] for p in parts}
    if len(rows) != 1:
        raise ValueError(f"per-model embeddings disagree on the number of rows: {sorted(rows)}")
    weights = list(weights) if weights is not None else [1.0] * len(parts)
    if len(weights) != len(parts):
        raise ValueError(f"{len(weights)} weights for {len(parts)} models")
    # One pass: after normalising its parts, a row's norm is sqrt(sum of w**2 over its
    # non-zero parts), known before the concatenation is built, so every part is scaled
    # once, straight into the output (no second normalisation pass over the wide array).
    parts = [np.asarray(p, dtype=np.float32) for p in parts]
    norms = [_row_norms(p) for p in parts]
    if not all(np.all(np.isfinite(n)) for n in norms):
        raise ValueError("embedding contains NaN or infinity")
    total = np.sqrt(sum(np.float32(w) ** 2 * (n > EPS) for n, w in zip(norms, weights)))
    out = np.empty((parts[0].shape[0], sum(p.shape[1] for p in parts)), dtype=np.float32)
    col = 0
    for p, n, w in zip(parts, norms, weights):
        ok = (n > EPS) & (total > EPS)
        scale = np.where(ok, np.float32(w) / (np.maximum(n, EPS) * np.maximum(total, EPS)), 0.0).astype(np.float32)
        np.multiply(p, scale[:, None], out=out[:, col : col + p.shape[1]])
        col += p.shape[1]
    return out


class Encoder(ABC):
    """A frozen base model that maps texts to L2-normalised float32 vectors.

    Hooks the pipeline calls instead of testing a model's name or attributes:
    ``fitted`` (fitted on the corpus, then stored with it, like ``lexical``; else
    pretrained), :meth:`fit_corpus`, :meth:`save` / :meth:`load` and ``files`` (fitted kinds only;
    the last file written marks the folder complete), :meth:`to_device` (placement and
    precision on an accelerator), ``truncated`` (texts cut at the model's length limit) and
    :meth:`cost` (compute a document takes, relative to a small transformer such as MiniLM;
    ``relative_cost`` unless a kind reads it from the model: the embedding pool starts the
    longest jobs of all models first).
    """

    name: str
    dim: int
    fitted: ClassVar[bool] = False
    files: ClassVar[tuple[str, ...]] = ()
    relative_cost: ClassVar[float] = 1.0
    truncated: int = 0

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Encoder:
        """A pretrained encoder for ``spec`` (fitted kinds are made by :meth:`fit`)."""
        raise TypeError(f"{cls.__name__} is fitted on a corpus: use fit()")

    @classmethod
    def fit_corpus(cls, texts: Sequence[str], spec: ModelSpec, seed: int = 0) -> Encoder:
        """Fit on corpus texts (fitted kinds only)."""
        raise TypeError(f"{cls.__name__} is pretrained: nothing to fit")

    def save(self, folder: str | Path) -> None:
        """Write the fitted state to ``folder`` (fitted kinds only), ``files`` in order."""
        raise TypeError(f"{type(self).__name__} is pretrained: nothing to save")

    @classmethod
    def cost(cls, name: str) -> float:
        """The compute a document takes with the model called ``name``, relative to MiniLM
        (the embedding pool sizes and orders jobs by it); read without loading the model.
        ``relative_cost`` by default."""
        return cls.relative_cost

    @classmethod
    def preload(cls) -> None:
        """Import what loading a model of this kind needs, ahead of the load (a worker that
        starts before its jobs are known does this while other services start). Nothing by
        default."""
        return None

    @classmethod
    def fingerprint(cls, name: str) -> str | None:
        """What identifies the weights of the model called ``name`` (``sha256:<digest of its
        weight files>``, ``hub:<commit>``): a change re-embeds the corpus. None for kinds whose
        state lives in the store, and where the weights cannot be found."""
        return None

    @classmethod
    def loads_from(cls, name: str) -> str | None:
        """Where the model called ``name`` loads weights from that the store does not hold:
        an absolute local folder or a hub id; None for kinds made of code and the store's
        own files (the trust check of stores' models looks only at these)."""
        return None

    @classmethod
    def load(cls, folder: str | Path) -> Encoder:
        """Read what :meth:`save` wrote (fitted kinds only)."""
        raise TypeError(f"{cls.__name__} is pretrained: load it with from_spec()")

    def to_device(self, device: str) -> None:  # noqa: B027 - a hook; most encoders need nothing
        """Prepare for inference on ``device`` ("cpu" or "cuda")."""

    @abstractmethod
    def _encode(self, texts: list[str], kind: TextKind, show_progress: bool) -> np.ndarray: ...

    def encode(self, texts: Sequence[str], kind: TextKind = "document", show_progress: bool = False) -> np.ndarray:
        texts = validate_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._encode(texts, kind, show_progress)
        out = l2_normalize(out)
        # An empty text has no content: give it the zero vector (scores 0 with everything).
        empty = np.fromiter((not t.strip() for t in texts), dtype=bool, count=len(texts))
        out[empty] = 0.0
        return out

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """What identifies this encoder in a run's metadata (name, source, revision, dim)."""


def embed(
    encoders: Sequence[Encoder],
    texts: Sequence[str],
    kind: TextKind = "document",
    weights: Sequence[float] | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed texts with every encoder and return the normalised concatenation."""
    return concatenate([e.encode(texts, kind, show_progress) for e in encoders], weights)
