"""Searching a FAISS index of published codes, and its bytes on disk (FAISS's own format)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cecq.errors import IndexFileError
from cecq.index.layouts import CodeLayout


def inner_index(index: Any) -> Any:
    """The code index itself, without a pre-transform (cecq hands it code-space queries)."""
    import faiss

    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        return faiss.downcast_index(index.index)
    return index


def with_pre_transform(index: Any, layout: CodeLayout) -> Any:
    """``index`` behind the layout's transform from decoder outputs (where it has one), so
    the file takes the decoder's output rows directly."""
    import faiss

    transform = layout.pre_transform()
    if transform is None:
        return index
    wrapped = faiss.IndexPreTransform(transform, index)
    wrapped.own_fields = True
    index.this.disown()
    transform.this.disown()
    return wrapped


def to_bytes(index: Any) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


def from_bytes(data: bytes, where: str) -> Any:
    """An index from FAISS's serialisation; IndexFileError naming ``where`` if it is not one."""
    import faiss

    try:
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as e:
        raise IndexFileError(f"{where} is not a readable FAISS index ({str(e).splitlines()[0]})") from None


MAX_SHORTLIST = 1 << 15  # candidates a query at most, when a shortlist is grown to prove a flat top-k exact


def search_index(
    index: Any,
    layout: CodeLayout,
    queries: np.ndarray,
    k: int,
    search_params: dict[str, Any],
    shortlist: int,
    empty_rows: np.ndarray | None = None,
    norm_range: tuple[float, float] = (1.0, 1.0),
    certify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of normalised code-space ``queries``: ``(scores, row ids)``, best first, ties
    broken by the lower row, ``-1`` ids (score ``-inf``) where fewer than ``k`` were found.

    Where the layout's FAISS score is not cecq's cosine (product codes: FAISS adds the
    query's products with the centroids, cecq also divides by the document's norm),
    FAISS's best ``k * shortlist`` are re-scored with the exact cosine of their codes,
    reconstructed from the index itself. With ``certify`` the shortlist of a query grows
    until no scanned document outside it can beat its k-th cosine: a document's cosine is
    at most its FAISS score over the least document norm (``norm_range``). So a flat
    index's top-k is the exhaustive scan's, and an IVF index's is the exact top-k of the
    lists it probes (within :data:`MAX_SHORTLIST` candidates a query).
    Documents without text score 0 (``empty_rows``), as in the exhaustive scan.
    """
    import faiss

    inner = inner_index(index)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    params = faiss.SearchParametersIVF(**search_params) if search_params else None
    empty = np.asarray(empty_rows if empty_rows is not None else [], dtype=np.int64)
    out_s = np.full((len(q), k), -np.inf, np.float32)
    out_i = np.full((len(q), k), -1, np.int64)
    if inner.ntotal < 1:
        return out_s, out_i
    if layout.exact_scores:
        s, i = inner.search(q, min(k, inner.ntotal), params=params)
        s, i = _best(np.where(i < 0, -np.inf, s), i, empty, k)
        out_s[:, : s.shape[1]], out_i[:, : i.shape[1]] = s, i
        return out_s, out_i
    todo = np.arange(len(q))
    size = min(inner.ntotal, k * shortlist)
    while len(todo):
        ip, ids, rec = inner.search_and_reconstruct(q[todo], size, params=params)
        norms = np.linalg.norm(rec, axis=2)
        cos = np.einsum("qkd,qd->qk", rec, q[todo]) / np.where(norms > 0, norms, 1.0)
        s, i = _best(np.where(ids < 0, -np.inf, cos), ids, empty, k)
        out_s[todo, : s.shape[1]], out_i[todo, : i.shape[1]] = s, i
        if not certify or size >= min(inner.ntotal, MAX_SHORTLIST):
            break
        last = ip[:, -1]
        bound = np.where(last >= 0, last / norm_range[0], last / norm_range[1])
        if len(empty):
            bound = np.maximum(bound, 0.0)
        proven = (ids[:, -1] < 0) | (out_s[todo, k - 1] >= bound)
        todo = todo[~proven]
        size = min(inner.ntotal, size * 4, MAX_SHORTLIST)
    return out_s, out_i


def _best(scores: np.ndarray, ids: np.ndarray, empty: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best candidates a row, empty documents scored 0, ties to the lower row."""
    scores = scores.astype(np.float32)
    if len(empty):
        scores[np.isin(ids, empty) & (ids >= 0)] = 0.0
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
