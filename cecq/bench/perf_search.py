"""``cecq bench perf --only search``, the FAISS part: product codes (53 B) at 1M and 10M
documents, searched by cecq's NumPy scan, the DuckDB path, a FAISS flat PQ index and an
IVF index at its default nprobe, single-threaded and with all cores, side by side.

The codes are synthetic but drawn from a fitted quantizer: rows of a decoder-like
distribution (a mixture of 256 Gaussian clusters in 212 dims, variance decaying along the
dims as an MRL prefix's does, norms spread 0.5x-2x) are quantized by a product quantizer
fitted on 20,000 of them, chunk by chunk; queries are fresh rows of the same mixture, in
batches of 1 (a service answering one query at a time) and of 10 (a batch job). The scan
dequantizes the codes once a batch, so its cost hardly grows with the batch; FAISS scores
each query's lookup tables over every code, so the flat index's lead is largest at one
query a batch.

Each index is built in its own process (``python -m cecq.bench.perf_search build``) so its
peak resident memory can be reported per size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from cecq.bench.perf_compute import build_store
from cecq.bench.perf_memory import peak_rss
from cecq.bench.timing import Figure, Ratio, interleaved, ratio
from cecq.catalog import plan_search, search_published
from cecq.config import IndexConfig
from cecq.pipeline.index import build_index
from cecq.quantization import ProductQuantizer
from cecq.search import prepare_queries, search_codes
from cecq.storage import Store

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
    sizes: Sequence[int], batches: Sequence[int], k: int, repeats: int, shard_rows: int, workdir: Path
) -> tuple[list[Figure], list[Ratio], dict[str, Any]]:
    """Figures and ratios for every size, thread count and query batch; details with recall
    and memory."""
    started = time.perf_counter()
    fit_rows = max(2000, min(FIT_ROWS, max(sizes)))  # tiny runs (the tests) fit on fewer
    quantizer = ProductQuantizer.fit(decoder_like(fit_rows, 0), BUDGET)
    q = decoder_like(max(batches), 999)
    figures: list[Figure] = []
    ratios: list[Ratio] = []
    details: dict[str, Any] = {
        "codes": f"{BUDGET}-byte product codes of {PREFIX_DIMS}-dim decoder-like rows ({CLUSTERS} clusters), "
        f"quantizer fitted on {fit_rows} rows",
        "batches": list(batches),
        "k": k,
        "sizes": {},
    }
    for rows in sizes:
        f, r, per_size = _measure_size(rows, quantizer, q, batches, k, repeats, shard_rows, workdir)
        figures += f
        ratios += r
        details["sizes"][str(rows)] = per_size
    details["seconds"] = round(time.perf_counter() - started, 1)
    return figures, ratios, details


def build_in_child(store: Store, kind: str) -> dict[str, Any]:
    """Build the ``kind`` index of ``store`` in a fresh process: its record's name, the
    wall seconds and the process's peak resident memory."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "cecq.bench.perf_search", "build", store.url, kind],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "wall_s": round(time.perf_counter() - started, 1)}


def _measure_size(
    rows: int,
    quantizer: ProductQuantizer,
    q: np.ndarray,
    batches: Sequence[int],
    k: int,
    repeats: int,
    shard_rows: int,
    workdir: Path,
) -> tuple[list[Figure], list[Ratio], dict[str, Any]]:
    """One collection size: make the codes and a store, build both indexes (each in its own
    process), time every variant at every thread count and batch."""
    import faiss

    cores = os.cpu_count() or 1
    figures: list[Figure] = []
    ratios: list[Ratio] = []
    t0 = time.perf_counter()
    packed = synthetic_codes(rows, quantizer)
    store = build_store(workdir / f"search-{rows}", packed, quantizer, shard_rows)
    made_s = time.perf_counter() - t0
    builds = {kind: build_in_child(store, kind) for kind in ("flat", "ivf")}
    flat = build_index(store, IndexConfig(kind="flat"))  # found: the child built it
    ivf = build_index(store, IndexConfig(kind="ivf"))
    plans = {
        "exact": plan_search(store, exact=True),
        "flat": plan_search(store, index=flat.name),
        "ivf": plan_search(store, index=ivf.name),
    }
    found: dict[str, np.ndarray] = {}

    def indexed(plan: Any, code_space: np.ndarray) -> np.ndarray:
        """Row ids from the index (as the NumPy scan returns them): FAISS plus exact re-scoring."""
        loaded = plan.index
        rows = loaded.searcher.search(
            code_space, k, loaded.nprobe(None), loaded.record.shortlist, np.asarray(loaded.record.empty_rows)
        )
        return rows[1]

    def keep(name: str, fn: Callable[[], np.ndarray]) -> Callable[[int], None]:
        return lambda _: found.__setitem__(name, fn())

    def variants(b: np.ndarray) -> dict[str, Callable[[int], None]]:
        code_space = prepare_queries(b, quantizer, "asymmetric")
        return {
            "numpy-scan": keep("numpy-scan", lambda: search_codes(b, packed, quantizer, k)[1]),
            "duckdb-scan": keep("duckdb-scan", lambda: _ids(search_published(store, b, k, plan=plans["exact"]))),
            "faiss-flat-pq": keep("faiss-flat-pq", lambda: indexed(plans["flat"], code_space)),
            "faiss-ivf-pq": keep("faiss-ivf-pq", lambda: indexed(plans["ivf"], code_space)),
            "search-published-ivf": keep(
                "search-published-ivf", lambda: _ids(search_published(store, b, k, plan=plans["ivf"]))
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
        "build_flat_s": builds["flat"]["wall_s"],
        "build_ivf_s": builds["ivf"]["wall_s"],
        "build_flat_peak_rss_bytes": builds["flat"]["peak_rss_bytes"],
        "build_ivf_peak_rss_bytes": builds["ivf"]["peak_rss_bytes"],
        "flat_index_file_bytes": flat.file_bytes,
        "ivf_index_file_bytes": ivf.file_bytes,
        "nlist": ivf.params["nlist"],
        "nprobe": ivf.nprobe,
        "threads": {},
    }
    inner = plans["ivf"].index.index
    ivf_inner = faiss.downcast_index(faiss.downcast_index(inner).index)
    # The coarse quantizer holds each centroid once per norm group (see make_index): that
    # repetition is index memory, while the goal's allowance is the nlist centroids themselves.
    coarse = faiss.downcast_index(ivf_inner.quantizer)
    coarse_bytes = coarse.ntotal * coarse.code_size  # float16 values (see make_index)
    centroid_bytes = ivf.clusters * ivf_inner.d * 4
    list_bytes = sum(ivf_inner.invlists.list_size(i) for i in range(ivf_inner.nlist)) * (ivf_inner.code_size + 8)
    per_size["ivf_memory"] = {
        "inverted_lists_bytes": int(list_bytes),
        "coarse_quantizer_bytes": int(coarse_bytes),
        "centroids_bytes": int(centroid_bytes),
        "ratio_to_codes_plus_centroids": (list_bytes + coarse_bytes) / (packed.nbytes + centroid_bytes),
        "note": "lists hold each code (53 B) and its int64 id (8 B); the coarse quantizer repeats each of the "
        "nlist centroids for every norm group",
    }
    for threads in sorted({1, cores}):
        faiss.omp_set_num_threads(threads)
        for batch in batches:
            with threadpool_limits(threads):
                times = interleaved(variants(q[:batch]), repeats)
            label = ("1 thread" if threads == 1 else f"{threads} threads") + f", {batch} a batch"
            figs = {
                name: Figure(
                    f"search {rows:,} ({label})",
                    name,
                    batch,
                    "queries",
                    secs,
                    what[name],
                    {"threads": threads, "batch": batch},
                )
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


def main(argv: list[str] | None = None) -> int:
    """``build STORE KIND``: build one index (default parameters) and print its name and
    this process's peak resident memory as JSON (what :func:`build_in_child` runs)."""
    p = argparse.ArgumentParser(prog="python -m cecq.bench.perf_search")
    p.add_argument("action", choices=["build"])
    p.add_argument("store")
    p.add_argument("kind")
    a = p.parse_args(argv)
    record = build_index(Store(a.store), IndexConfig(kind=a.kind))
    print(json.dumps({"name": record.name, "peak_rss_bytes": peak_rss()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
