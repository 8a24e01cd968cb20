"""Building and searching FAISS indexes of published codes, and their bytes on disk
(FAISS's own format)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from cecq.errors import IndexFileError
from cecq.index.layouts import CodeLayout
from cecq.storage import file_digest


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


def write_index_file(index: Any, path: str) -> tuple[int, str]:
    """Write ``index`` to a local file in FAISS's format; its ``(bytes, sha256)``. Written
    straight to disk: ``serialize_index`` would hold the file's bytes in memory (as a
    growing vector, then a NumPy copy) beside the index itself, which tripled the build's
    peak; the digest is taken streaming."""
    import faiss

    faiss.write_index(index, path)
    return os.path.getsize(path), file_digest(path)


def from_bytes(data: bytes, where: str) -> Any:
    """An index from FAISS's serialisation; IndexFileError naming ``where`` if it is not one."""
    import faiss

    try:
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as e:
        raise IndexFileError(f"{where} is not a readable FAISS index ({str(e).splitlines()[0]})") from None


ASSIGN_BLOCK = 2048  # documents assigned to their clusters at a time
ROWS_PER_SHORTLIST_SLOT = 1000  # a group's first shortlist: at least one candidate per this many documents
MAX_SHORTLIST = 1 << 15  # candidates a query and list group at most, when a shortlist is grown
MAX_GROUPS = 64


def norm_edges(low: float, high: float, ratio: float) -> list[float]:
    """Edges of the norm groups: geometric steps of at most ``ratio`` from ``low`` to ``high``."""
    if not high > low > 0:
        return [float(low), float(high)]
    groups = min(MAX_GROUPS, max(1, math.ceil(math.log(high / low) / math.log(ratio))))
    return (low * (high / low) ** (np.arange(groups + 1) / groups)).tolist()


def coarse_centroids(centroids: np.ndarray) -> np.ndarray:
    """``centroids`` as the coarse quantizer of :func:`make_index` holds them (float16 values)."""
    return np.ascontiguousarray(np.asarray(centroids, np.float16), np.float32)


def make_index(layout: CodeLayout, centroids: np.ndarray, groups: int) -> Any:
    """An empty IVF index of ``len(centroids) * (groups + 1)`` lists: list ``c * (groups + 1) + g``
    holds cluster ``c``'s documents of norm group ``g`` (the last group: documents without text).
    The coarse quantizer repeats each centroid for its groups, so plain FAISS search probes
    whole clusters (``nprobe`` is set to all of them: a flat scan). It stores them in float16
    (give it :func:`coarse_centroids`, so documents are assigned by the centroids it holds):
    at 10M documents the float32 repeats were 46 MB, 9% of the codes."""
    import faiss

    coarse = faiss.IndexScalarQuantizer(layout.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    coarse.add(np.ascontiguousarray(np.repeat(centroids, groups + 1, axis=0), np.float32))
    index = layout.ivf(coarse, coarse.ntotal)
    index.own_fields = True
    coarse.this.disown()  # the IVF index frees its coarse quantizer
    index.nprobe = coarse.ntotal
    return index


def add_documents(
    index: Any,
    layout: CodeLayout,
    centroids: np.ndarray,
    edges: Sequence[float],
    packed: np.ndarray,
    empty: np.ndarray,
    first_id: int,
) -> None:
    """Add documents ``first_id ...`` (published packed codes, empty flags) to their lists."""
    empty = np.asarray(empty, dtype=bool)
    codes = layout.faiss_codes(packed, empty)
    groups = len(edges) - 1
    cluster = np.zeros(len(codes), np.int64)
    if len(centroids) > 1:
        # in blocks: a shard's whole score matrix (50,000 rows x 1,024 lists) was 205 MB, the
        # build's peak; a block's vectors and scores stay a few MB whatever the shard
        for a in range(0, len(codes), ASSIGN_BLOCK):
            b = slice(a, a + ASSIGN_BLOCK)
            cluster[b] = np.argmax(layout.vectors(packed[b], empty[b]) @ centroids.T, axis=1)
    group = np.clip(np.searchsorted(np.asarray(edges), layout.norms(codes), side="right") - 1, 0, groups - 1)
    group[empty] = groups
    listno = (cluster * (groups + 1) + group).astype("<u8").view(np.uint8).reshape(-1, 8)
    prefix = listno[:, : index.coarse_code_size()]
    ids = np.arange(first_id, first_id + len(codes), dtype=np.int64)
    index.add_sa_codes(np.ascontiguousarray(np.concatenate([prefix, codes], axis=1)), ids)


class GroupedSearcher:
    """Exact cosine top-k over the lists of an index built by :func:`make_index`.

    FAISS scores a product code by the query's products with its centroids; cecq's cosine
    also divides by the code's norm. Within a norm group norms differ by at most the edge
    ratio, so FAISS's order there is nearly the cosine order: each group's best
    ``k * shortlist`` are re-scored exactly (norms from their codes), and a group's
    shortlist grows while a document outside it could still beat the merged k-th cosine
    (its cosine is at most its FAISS score over the group's least norm). A flat index (one
    cluster) so returns the exhaustive scan's top-k; an IVF index the exact top-k of the
    clusters it probes. Documents without text score 0, as in the exhaustive scan.
    """

    def __init__(self, index: Any, layout: CodeLayout, clusters: int, edges: Sequence[float]):
        import faiss

        self.inner, self.layout = inner_index(index), layout
        self.clusters, self.edges = clusters, np.asarray(edges, np.float64)
        self.groups = len(edges) - 1
        width = self.groups + 1
        if self.inner.nlist != clusters * width:
            raise ValueError(f"index has {self.inner.nlist} lists, its record {clusters} x {width}")
        q = faiss.downcast_index(self.inner.quantizer)
        self.centroids = np.ascontiguousarray(q.reconstruct_n(0, q.ntotal)[::width])  # strided: a slow matmul
        sizes = np.array([self.inner.invlists.list_size(i) for i in range(self.inner.nlist)], np.int64)
        self.group_rows = sizes.reshape(clusters, width)[:, : self.groups].sum(axis=0)  # documents a group
        self._lists: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _list(self, lst: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and codes of one inverted list (views into the index, cached)."""
        import faiss

        if lst not in self._lists:
            inv, n = self.inner.invlists, self.inner.invlists.list_size(lst)
            ids = faiss.rev_swig_ptr(inv.get_ids(lst), n) if n else np.zeros(0, np.int64)
            codes = faiss.rev_swig_ptr(inv.get_codes(lst), n * inv.code_size) if n else np.zeros(0, np.uint8)
            self._lists[lst] = (np.asarray(ids), np.asarray(codes).reshape(n, inv.code_size))
        return self._lists[lst]

    def probe(self, q: np.ndarray, nprobe: int) -> np.ndarray:
        if nprobe >= self.clusters:
            return np.broadcast_to(np.arange(self.clusters), (len(q), self.clusters))
        return np.argsort(-(q @ self.centroids.T), axis=1, kind="stable")[:, :nprobe]

    def _group(self, q: np.ndarray, probe: np.ndarray, g: int, size: int) -> tuple[np.ndarray, ...]:
        import faiss

        n, width = len(q), probe.shape[1]
        assign = np.ascontiguousarray(probe * (self.groups + 1) + g, dtype=np.int64)
        dis = np.zeros(assign.shape, np.float32)
        ip, labels = np.empty((n, size), np.float32), np.empty((n, size), np.int64)
        self.inner.search_preassigned_c(
            n,
            faiss.swig_ptr(q),
            size,
            faiss.swig_ptr(assign),
            faiss.swig_ptr(dis),
            faiss.swig_ptr(ip),
            faiss.swig_ptr(labels),
            True,  # store_pairs: labels are (list << 32 | offset), so codes are found without a direct map
            faiss.SearchParametersIVF(nprobe=width),
        )
        valid = labels >= 0
        flat = np.flatnonzero(valid.ravel())
        pairs = labels.ravel()[flat]
        order = np.argsort(pairs, kind="stable")  # candidates by list, then offset
        pairs = pairs[order]
        lists, offsets = pairs >> 32, pairs & 0xFFFFFFFF
        cuts = np.flatnonzero(np.diff(lists)) + 1
        found_ids = np.empty(len(pairs), np.int64)
        codes = [] if not self.layout.exact_scores else None
        for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(pairs)]])):
            list_ids, list_codes = self._list(int(lists[a]))
            found_ids[a:b] = list_ids[offsets[a:b]]
            if codes is not None:
                codes.append(list_codes[offsets[a:b]])
        ids = np.full(labels.size, -1, np.int64)
        norms = np.ones(labels.size, np.float64)
        ids[flat[order]] = found_ids
        if codes:
            norms[flat[order]] = self.layout.norms(np.concatenate(codes))
        ids, norms = ids.reshape(labels.shape), norms.reshape(labels.shape)
        scores = np.where(valid, ip / np.where(norms > 0, norms, 1.0), -np.inf).astype(np.float32)
        last = ip[:, -1].astype(np.float64)
        low, high = self.edges[g], self.edges[g + 1]
        bound = np.where(valid[:, -1], np.where(last >= 0, last / low, last / high), -np.inf)
        return scores, ids, bound

    def search(
        self, q: np.ndarray, k: int, nprobe: int, shortlist: int, empty_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, row ids)`` ``(n, k)``, best first, ties to the lower row, ``-1`` / ``-inf``
        where fewer than ``k`` documents were scanned."""
        q = np.ascontiguousarray(q, dtype=np.float32)
        n, probe = len(q), self.probe(q, nprobe)
        start = k if self.layout.exact_scores else k * shortlist
        # A group searched further is scanned again whole, so its first shortlist grows with
        # the documents it probes: at 10M codes, 100 a group rescanned 9 of 12 groups once
        # and 2 twice (1.1 s a query, against 0.47 s for one pass).
        probed = self.group_rows * min(nprobe, self.clusters) / self.clusters
        sizes = [int(min(MAX_SHORTLIST, max(start, p // ROWS_PER_SHORTLIST_SLOT))) for p in probed]
        cand_s = [np.full((n, 0), -np.inf, np.float32) for _ in range(self.groups)]
        cand_i = [np.full((n, 0), -1, np.int64) for _ in range(self.groups)]
        bounds = np.full((n, self.groups), -np.inf)
        empty = np.sort(np.asarray(empty_rows, np.int64))[:k]
        extra_s = np.zeros((n, len(empty)), np.float32)
        extra_i = np.broadcast_to(empty, (n, len(empty)))
        todo = {g: np.arange(n) for g in range(self.groups)}
        while True:
            for g, rows in todo.items():
                s, i, b = self._group(q[rows], probe[rows], g, sizes[g])
                if s.shape[1] > cand_s[g].shape[1]:
                    pad = s.shape[1] - cand_s[g].shape[1]
                    cand_s[g] = np.pad(cand_s[g], ((0, 0), (0, pad)), constant_values=-np.inf)
                    cand_i[g] = np.pad(cand_i[g], ((0, 0), (0, pad)), constant_values=-1)
                cand_s[g][rows], cand_i[g][rows] = s, i
                bounds[rows, g] = b
            best_s, best_i = _best(np.concatenate([*cand_s, extra_s], 1), np.concatenate([*cand_i, extra_i], 1), k)
            kth = best_s[:, k - 1] if best_s.shape[1] >= k else np.full(n, -np.inf)
            todo = {}
            for g in range(self.groups):
                rows = np.flatnonzero(bounds[:, g] > kth)
                if len(rows) and sizes[g] < MAX_SHORTLIST:
                    sizes[g] = min(MAX_SHORTLIST, sizes[g] * 4)
                    todo[g] = rows
            if not todo:
                break
        out_s, out_i = np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        out_s[:, : best_s.shape[1]], out_i[:, : best_i.shape[1]] = best_s, best_i
        return out_s, out_i


def _best(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best candidates a row, ties to the lower row, missing (``-1``) last."""
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
