"""Top-k search over packed codes: symmetric or asymmetric, with optional float rescoring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from cecq.encoders import l2_normalize
from cecq.quantizer import Quantizer


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-k of a score matrix, best first (ties broken by lower column index)."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1) if part.size else part
    idx = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(scores, idx, axis=1), idx


def _chunked_top_k(q: np.ndarray, n_docs: int, k: int, chunk_rows: int,
                   load_chunk: Callable[[int, int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Running top-k of ``q @ docs.T`` over document chunks, so memory is bounded by a chunk."""
    best_scores = np.full((q.shape[0], 0), -np.inf, dtype=np.float32)
    best_idx = np.zeros((q.shape[0], 0), dtype=np.int64)
    for start in range(0, n_docs, chunk_rows):
        s, i = _top_k(q @ load_chunk(start, start + chunk_rows).T, k)
        best_scores, order = _top_k(np.concatenate([best_scores, s], axis=1), k)
        best_idx = np.take_along_axis(np.concatenate([best_idx, i + start], axis=1), order, axis=1)
    return best_scores, best_idx


def _dequantized(quantizer: Quantizer, packed: np.ndarray, empty: np.ndarray | None) -> np.ndarray:
    docs = l2_normalize(quantizer.dequantize(quantizer.unpack(packed)))
    if empty is not None:
        docs[np.asarray(empty, dtype=bool)] = 0.0
    return docs


def prepare_queries(queries: np.ndarray, quantizer: Quantizer, scoring: Literal["symmetric", "asymmetric"]) -> np.ndarray:
    """The query side: float (asymmetric) or quantized and dequantized (symmetric), normalised."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != quantizer.dim:
        raise ValueError(f"queries must be (n, {quantizer.dim}), got shape {q.shape}")
    if scoring == "symmetric":
        q = quantizer.dequantize(quantizer.encode(q))
    elif scoring != "asymmetric":
        raise ValueError(f"scoring must be 'symmetric' or 'asymmetric', got {scoring!r}")
    return l2_normalize(q)


def search_codes(queries: np.ndarray, packed: np.ndarray, quantizer: Quantizer, k: int = 10,
                 scoring: Literal["symmetric", "asymmetric"] = "asymmetric", chunk_rows: int = 65536,
                 rescore_vectors: np.ndarray | None = None, rescore_k: int = 0,
                 rescore_queries: np.ndarray | None = None, empty: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of ``queries`` against packed document codes.

    Documents are dequantized chunk by chunk (bin centroids), so memory stays bounded in the
    number of documents. With ``rescore_vectors`` (float document vectors, one row per code)
    the best ``rescore_k`` candidates are re-ranked by float cosine against ``rescore_queries``
    (default: ``queries``), which may live in another space (e.g. the float concatenation).
    ``empty`` flags documents without content: codes cannot say "zero vector", so their
    dequantized rows are zeroed here and they score 0, as their float vectors would.
    Returns ``(scores, indices)``, each ``(n_queries, k)``, best first.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = prepare_queries(queries, quantizer, scoring)
    n_docs = packed.shape[0]
    first = max(k, rescore_k) if rescore_vectors is not None else k
    best_scores, best_idx = _chunked_top_k(
        q, n_docs, first, chunk_rows,
        lambda a, b: _dequantized(quantizer, packed[a:b], None if empty is None else empty[a:b]),
    )
    if rescore_vectors is not None and best_idx.size:
        if rescore_vectors.shape[0] != n_docs:
            raise ValueError(f"rescore_vectors has {rescore_vectors.shape[0]} rows for {n_docs} codes")
        cand = l2_normalize(np.asarray(rescore_vectors)[best_idx.ravel()]).reshape(*best_idx.shape, -1)
        fq = l2_normalize(queries if rescore_queries is None else rescore_queries)
        if cand.shape[2] != fq.shape[1]:
            raise ValueError(f"rescore vectors are {cand.shape[2]}-dim, queries {fq.shape[1]}-dim")
        rescored = np.einsum("qkd,qd->qk", cand, fq)
        s, order = _top_k(rescored, k)
        return s, np.take_along_axis(best_idx, order, axis=1)
    return best_scores[:, :k], best_idx[:, :k]


def search_float(queries: np.ndarray, docs: np.ndarray, k: int = 10, chunk_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k against float document vectors (the uncompressed reference)."""
    return _chunked_top_k(l2_normalize(queries), docs.shape[0], k, chunk_rows, lambda a, b: l2_normalize(docs[a:b]))
