"""Top-k search over packed codes: symmetric or asymmetric, with optional float rescoring."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np

from cecq.encoders import EPS, l2_normalize
from cecq.quantization import CodeQuantizer

CodeScoring = Literal["symmetric", "asymmetric"]  # how a query meets the codes


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row top-k of a score matrix, best first (ties broken by lower column index)."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # argpartition keeps arbitrary members of a tie that straddles the cut (common with
        # Hamming distances and coarse codes): in those rows keep the lowest columns instead.
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
        n_above = (scores > kth).sum(axis=1)
        straddle = np.flatnonzero(n_above + (scores == kth).sum(axis=1) > k)
        if straddle.size:
            rows, cut = scores[straddle], kth[straddle]
            tied = rows == cut
            keep = (rows > cut) | (tied & (np.cumsum(tied, axis=1) <= (k - n_above[straddle])[:, None]))
            part[straddle] = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1) if part.size else part
    idx = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(scores, idx, axis=1), idx


def _running_top_k(score_chunks: Iterable[np.ndarray], n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Running top-k over a stream of ``(n_queries, chunk)`` score blocks (indices count
    columns across the whole stream), so memory is bounded by a chunk, not the collection."""
    best_scores = np.full((n_queries, 0), -np.inf, dtype=np.float32)
    best_idx = np.zeros((n_queries, 0), dtype=np.int64)
    start = 0
    for scores in score_chunks:
        s, i = _top_k(scores, k)
        best_scores, order = _top_k(np.concatenate([best_scores, s], axis=1), k)
        best_idx = np.take_along_axis(np.concatenate([best_idx, i + start], axis=1), order, axis=1)
        start += scores.shape[1]
    return best_scores, best_idx


def _chunked_top_k(
    q: np.ndarray, n_docs: int, k: int, chunk_rows: int, load_chunk: Callable[[int, int], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Running top-k of ``q @ docs.T`` over ``load_chunk(start, stop)`` slices of ``n_docs`` rows."""
    return _running_top_k((q @ load_chunk(a, a + chunk_rows).T for a in range(0, n_docs, chunk_rows)), q.shape[0], k)


def _code_scores(q: np.ndarray, quantizer: CodeQuantizer, packed: np.ndarray, empty: np.ndarray | None) -> np.ndarray:
    """Cosine of ``q`` with dequantized codes. The dot products are scaled by the documents'
    inverse norms afterwards, rather than normalising the (much larger) document block."""
    docs = quantizer.dequantize_packed(packed)
    norms = np.sqrt(np.einsum("ij,ij->i", docs, docs))
    scale = np.where(norms > EPS, 1.0 / np.maximum(norms, EPS), 0.0).astype(np.float32)
    if empty is not None:
        scale[np.asarray(empty, dtype=bool)] = 0.0  # codes cannot say "zero vector"
    return (q @ docs.T) * scale


def prepare_queries(queries: np.ndarray, quantizer: CodeQuantizer, scoring: CodeScoring) -> np.ndarray:
    """The query side in the quantizer's code space: float (asymmetric) or quantized and
    dequantized (symmetric), normalised."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != quantizer.dim:
        raise ValueError(f"queries must be (n, {quantizer.dim}), got shape {q.shape}")
    if scoring == "symmetric":
        q = quantizer.dequantize(quantizer.encode(q))
    elif scoring == "asymmetric":
        q = quantizer.project(q)
    else:
        raise ValueError(f"scoring must be 'symmetric' or 'asymmetric', got {scoring!r}")
    return l2_normalize(q)


def search_codes(
    queries: np.ndarray,
    packed: np.ndarray,
    quantizer: CodeQuantizer,
    k: int = 10,
    scoring: CodeScoring = "asymmetric",
    chunk_rows: int = 65536,
    rescore_vectors: np.ndarray | None = None,
    rescore_k: int = 0,
    rescore_queries: np.ndarray | None = None,
    empty: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
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
    batches = (
        (packed[a : a + chunk_rows], None if empty is None else empty[a : a + chunk_rows])
        for a in range(0, n_docs, chunk_rows)
    )
    best_scores, best_idx = _scan(q, batches, quantizer, first)
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


def _scan(
    q: np.ndarray, batches: Iterable[tuple[np.ndarray, np.ndarray | None]], quantizer: CodeQuantizer, k: int
) -> tuple[np.ndarray, np.ndarray]:
    return _running_top_k((_code_scores(q, quantizer, packed, empty) for packed, empty in batches), q.shape[0], k)


def search_code_batches(
    queries: np.ndarray,
    batches: Iterable[tuple[np.ndarray, np.ndarray | None]],
    quantizer: CodeQuantizer,
    k: int = 10,
    scoring: CodeScoring = "asymmetric",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`search_codes` over a stream of ``(packed codes, empty flags or None)`` batches,
    e.g. record batches read from Parquet: indices count rows across the whole stream, and
    memory is bounded by one batch."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return _scan(prepare_queries(queries, quantizer, scoring), batches, quantizer, k)


def search_float(
    queries: np.ndarray, docs: np.ndarray, k: int = 10, chunk_rows: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k against float document vectors (the uncompressed reference)."""
    return _chunked_top_k(l2_normalize(queries), docs.shape[0], k, chunk_rows, lambda a, b: l2_normalize(docs[a:b]))


def unpack_signs(packed: np.ndarray, dim: int) -> np.ndarray:
    """One-bit codes packed as :func:`numpy.packbits` packs them (most significant bit first,
    the layout of sentence-transformers' ``ubinary``) as ``(n, dim)`` float32 of +1 / -1."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.ndim != 2 or packed.shape[1] != (dim + 7) // 8:
        raise ValueError(f"packed bits of shape {packed.shape} do not hold {dim} one-bit dims")
    return np.unpackbits(packed, axis=1, count=dim).astype(np.float32) * 2.0 - 1.0


def _signs(packed: np.ndarray, dim: int, empty: np.ndarray | None) -> np.ndarray:
    signs = unpack_signs(packed, dim)
    if empty is not None:
        signs[np.asarray(empty, dtype=bool)] = 0.0
    return signs


def search_hamming(
    query_bits: np.ndarray,
    packed: np.ndarray,
    dim: int,
    k: int = 10,
    chunk_rows: int = 65536,
    empty: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of packed one-bit document codes by Hamming distance to packed one-bit queries.

    Bits are compared as +1/-1 vectors, whose dot product is ``dim - 2 * hamming``, so the
    same chunked top-k as every other search applies (exact: small integers in float32).
    ``empty`` flags documents without content: they sit at distance ``dim / 2`` from every
    query (a zero vector, as :func:`search_codes` scores them 0).
    Returns ``(-hamming distance, indices)``, each ``(n_queries, k)``, nearest first, ties
    broken by the lower document index.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = unpack_signs(query_bits, dim)
    scores, idx = _chunked_top_k(
        q, packed.shape[0], k, chunk_rows, lambda a, b: _signs(packed[a:b], dim, None if empty is None else empty[a:b])
    )
    return (scores - dim) / 2, idx


def rescore_signs(
    queries: np.ndarray, packed: np.ndarray, dim: int, candidates: np.ndarray, k: int, empty: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidate one-bit documents by the float query's dot product with their bits
    read as +1/-1 (sentence-transformers' rescoring reads them as 1/0, which ranks the same:
    the two differ by a per-query constant and a factor 2). Returns the best ``k`` of
    ``candidates`` (``(n_queries, c)`` document indices) as ``(scores, indices)``."""
    candidates = np.asarray(candidates)
    if candidates.size == 0:
        return np.zeros(candidates.shape, np.float32), candidates
    flat = candidates.ravel()
    signs = _signs(np.asarray(packed)[flat], dim, None if empty is None else np.asarray(empty, dtype=bool)[flat])
    q = l2_normalize(queries)
    if q.shape != (candidates.shape[0], dim):
        raise ValueError(f"queries must be ({candidates.shape[0]}, {dim}), got shape {q.shape}")
    scores = np.einsum("qkd,qd->qk", signs.reshape(*candidates.shape, dim), q)
    s, order = _top_k(scores, k)
    return s, np.take_along_axis(candidates, order, axis=1)
