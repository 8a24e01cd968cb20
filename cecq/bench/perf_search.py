"""``cecq bench perf --only search``, the FAISS part: product codes (53 B) at 1M and 10M
documents, searched by cecq's NumPy scan, the DuckDB path, a FAISS flat PQ index and an
IVF index at its default nprobe, single-threaded and with all cores, side by side.

The codes are synthetic but drawn from a fitted quantizer: rows of a decoder-like
distribution (a mixture of 256 Gaussian clusters in 212 dims, variance decaying along the
dims as an MRL prefix's does, norms spread 0.5x-2x) are quantized by a product quantizer
fitted on 20,000 of them, chunk by chunk; queries are fresh rows of the same mixture.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from cecq.bench.perf_compute import build_store
from cecq.bench.timing import Figure, Ratio, interleaved, ratio
from cecq.catalog import plan_search, search_published
from cecq.config import IndexConfig
from cecq.pipeline.index import build_index
from cecq.quantization import ProductQuantizer
from cecq.search import prepare_queries, search_codes

PREFIX_DIMS = 212  # 53 subspaces of 4 dims: the 53-byte codes of the README's headline store
BUDGET = 53
CLUSTERS = 256
FIT_ROWS = 20_000
CHUNK = 250_000


def decoder_like(n: int, seed: int) -> np.ndarray:
    """Rows of the synthetic decoder-prefix distribution (see the module docstring)."""
    centres = np.random.default_rng(12345).standard_normal((CLUSTERS, PREFIX_DIMS)).astype(np.float32)
    scale = (1.0 + np.arange(PREFIX_DIMS, dtype=np.float32)) ** -0.5
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, CLUSTERS, n)] + 0.8 * rng.standard_normal((n, PREFIX_DIMS), dtype=np.float32)
    return (x * scale * rng.uniform(0.5, 2.0, (n, 1)).astype(np.float32)).astype(np.float32)


def synthetic_codes(rows: int, quantizer: ProductQuantizer, seed: int = 0) -> np.ndarray:
    """``rows`` codes of fresh decoder-like rows under ``quantizer``: its rotation, then the
    nearest of its centroids in every subspace, found by FAISS's PQ encoder loaded with the
    quantizer's own codebooks (the same codes as ``quantizer.quantize``, much faster)."""
    import faiss

    pq = faiss.ProductQuantizer(quantizer.kept_dims, quantizer.subspaces, 8)
    faiss.copy_array_to_vector(np.ascontiguousarray(quantizer.codebooks, np.float32).ravel(), pq.centroids)
    out = np.empty((rows, quantizer.bytes_per_vector), np.uint8)
    for i, a in enumerate(range(0, rows, CHUNK)):
        out[a : a + CHUNK] = pq.compute_codes(quantizer.project(decoder_like(min(CHUNK, rows - a), seed + 1000 + i)))
    return out


def _recall(found: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, reference)]))


def _ids(hits: list[list[dict]]) -> np.ndarray:
    return np.array([[int(h["id"][1:]) for h in row] for row in hits])


def measure(
    sizes: Sequence[int], queries: int, k: int, repeats: int, shard_rows: int, workdir: Path
) -> tuple[list[Figure], list[Ratio], dict[str, Any]]:
    """Figures and ratios for every size and thread count; details with recall and memory."""
    started = time.perf_counter()
    fit_rows = max(2000, min(FIT_ROWS, max(sizes)))  # tiny runs (the tests) fit on fewer
    quantizer = ProductQuantizer.fit(decoder_like(fit_rows, 0), BUDGET)
    q = decoder_like(queries, 999)
    figures: list[Figure] = []
    ratios: list[Ratio] = []
    details: dict[str, Any] = {
        "codes": f"{BUDGET}-byte product codes of {PREFIX_DIMS}-dim decoder-like rows ({CLUSTERS} clusters), "
        f"quantizer fitted on {fit_rows} rows",
        "queries": queries,
        "k": k,
        "sizes": {},
    }
    for rows in sizes:
        f, r, per_size = _measure_size(rows, quantizer, q, k, repeats, shard_rows, workdir)
        figures += f
        ratios += r
        details["sizes"][str(rows)] = per_size
    details["seconds"] = round(time.perf_counter() - started, 1)
    return figures, ratios, details


def _measure_size(
    rows: int, quantizer: ProductQuantizer, q: np.ndarray, k: int, repeats: int, shard_rows: int, workdir: Path
) -> tuple[list[Figure], list[Ratio], dict[str, Any]]:
    import faiss

    """One collection size: make the codes and a store, build both indexes, time every variant."""
    queries, cores = len(q), os.cpu_count() or 1
    figures: list[Figure] = []
    ratios: list[Ratio] = []
    t0 = time.perf_counter()
    packed = synthetic_codes(rows, quantizer)
    store = build_store(workdir / f"search-{rows}", packed, quantizer, shard_rows)
    made_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    flat = build_index(store, IndexConfig(kind="flat"))
    flat_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ivf = build_index(store, IndexConfig(kind="ivf"))
    ivf_s = time.perf_counter() - t0
    plans = {
        "exact": plan_search(store, exact=True),
        "flat": plan_search(store, index=flat.name),
        "ivf": plan_search(store, index=ivf.name),
    }
    found: dict[str, np.ndarray] = {}
    code_space = prepare_queries(q, quantizer, "asymmetric")

    def indexed(plan: Any) -> np.ndarray:
        """Row ids from the index (as the NumPy scan returns them): FAISS plus exact re-scoring."""
        loaded = plan.index
        rows = loaded.searcher.search(
            code_space, k, loaded.nprobe(None), loaded.record.shortlist, np.asarray(loaded.record.empty_rows)
        )
        return rows[1]

    def keep(name: str, fn: Callable[[], np.ndarray]) -> Callable[[int], None]:
        return lambda _: found.__setitem__(name, fn())

    variants = {
        "numpy-scan": keep("numpy-scan", lambda: search_codes(q, packed, quantizer, k)[1]),
        "duckdb-scan": keep("duckdb-scan", lambda: _ids(search_published(store, q, k, plan=plans["exact"]))),
        "faiss-flat-pq": keep("faiss-flat-pq", lambda: indexed(plans["flat"])),
        "faiss-ivf-pq": keep("faiss-ivf-pq", lambda: indexed(plans["ivf"])),
        "search-published-ivf": keep(
            "search-published-ivf", lambda: _ids(search_published(store, q, k, plan=plans["ivf"]))
        ),
    }
    what = {
        "numpy-scan": "cecq.search.search_codes over the codes in memory (today's NumPy scan)",
        "duckdb-scan": "search_published --exact: DuckDB streams the codes shards (today's `cecq search`)",
        "faiss-flat-pq": f"the flat index ({flat.name}): FAISS PQ scan with cecq's codebooks by norm group, "
        "shortlists re-scored to cecq's cosine (row ids, as the NumPy scan)",
        "faiss-ivf-pq": f"{ivf.name} at nprobe {ivf.nprobe} (the default), same re-scoring (row ids)",
        "search-published-ivf": "search_published with the IVF index: the same plus ids and texts by DuckDB "
        "(what `cecq search` runs after encoding)",
    }
    per_size: dict[str, Any] = {
        "rows": rows,
        "codes_bytes": int(packed.nbytes),
        "make_codes_and_store_s": round(made_s, 1),
        "build_flat_s": round(flat_s, 1),
        "build_ivf_s": round(ivf_s, 1),
        "flat_index_file_bytes": flat.file_bytes,
        "ivf_index_file_bytes": ivf.file_bytes,
        "nlist": ivf.params["nlist"],
        "nprobe": ivf.nprobe,
        "threads": {},
    }
    inner = plans["ivf"].index.index
    ivf_inner = faiss.downcast_index(faiss.downcast_index(inner).index)
    centroid_bytes = ivf_inner.nlist * ivf_inner.d * 4
    list_bytes = sum(ivf_inner.invlists.list_size(i) for i in range(ivf_inner.nlist)) * (ivf_inner.code_size + 8)
    per_size["ivf_memory"] = {
        "inverted_lists_bytes": int(list_bytes),
        "coarse_centroids_bytes": int(centroid_bytes),
        "ratio_to_codes_plus_centroids": (list_bytes + centroid_bytes) / (packed.nbytes + centroid_bytes),
        "note": "lists hold each code (53 B) and its int64 id (8 B)",
    }
    for threads in sorted({1, cores}):
        faiss.omp_set_num_threads(threads)
        with threadpool_limits(threads):
            times = interleaved(variants, repeats)
        label = "1 thread" if threads == 1 else f"{threads} threads"
        figs = {
            name: Figure(f"search {rows:,} ({label})", name, queries, "queries", secs, what[name], {"threads": threads})
            for name, secs in times.items()
        }
        figures += figs.values()
        ratios += [
            ratio(figs, "faiss-flat-pq", "numpy-scan", 5.0),
            ratio(figs, "faiss-ivf-pq", "numpy-scan", 50.0 if rows >= 10_000_000 else None),
            ratio(figs, "duckdb-scan", "numpy-scan"),
            ratio(figs, "search-published-ivf", "duckdb-scan"),
        ]
        per_size["threads"][label] = {
            "recall_at_k_ivf_vs_flat": _recall(found["faiss-ivf-pq"], found["faiss-flat-pq"]),
            "recall_at_k_flat_vs_numpy": _recall(found["faiss-flat-pq"], found["numpy-scan"]),
            "recall_at_k_duckdb_vs_numpy": _recall(found["duckdb-scan"], found["numpy-scan"]),
        }
    faiss.omp_set_num_threads(cores)
    return figures, ratios, per_size
