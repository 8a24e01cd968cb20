"""Shard-parallel search on Ray: every codes shard of a catalog version is scanned by an
actor of the generic pool (:func:`cecq.pipeline.ray_pool.run_on_actors`), each returns its
top-k, and the driver merges them. Each shard is scanned exactly as the single-process scan
scans it (same DuckDB record batches, same scoring), and ties go to the lower catalog row
in both, so the hits equal :func:`cecq.catalog.search_published` with ``--exact``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cecq.catalog.reader import current_manifest, duckdb_connection, load_quantizer
from cecq.catalog.records import CatalogManifest
from cecq.catalog.search import code_batches, hits_with_texts, query_encoder
from cecq.pipeline.index import shard_row_counts
from cecq.pipeline.ray_pool import ActorContext, init_ray, run_on_actors
from cecq.search import CodeScoring, search_code_batches
from cecq.storage import Store


@dataclass
class ShardSearch:
    """One job: scan codes shard ``path`` (its first row is catalog row ``start``)."""

    name: str
    path: str
    start: int
    queries: np.ndarray
    k: int
    scoring: CodeScoring


@dataclass
class ShardSearcher:
    """An actor's worker: the store and its quantizer, loaded once."""

    store_url: str
    storage_options: dict[str, Any]
    quantizer_path: str

    def __call__(self, ctx: ActorContext) -> Any:
        store = Store(self.store_url, self.storage_options)
        quantizer = load_quantizer(store, self.quantizer_path)
        con = duckdb_connection(store)

        def run(job: ShardSearch) -> tuple[int, np.ndarray, np.ndarray]:
            batches = code_batches(con, store.uri(job.path), quantizer.bytes_per_vector)
            scores, idx = search_code_batches(job.queries, batches, quantizer, job.k, job.scoring)
            return job.start, scores, idx + job.start

        return run


def search_parallel(
    store: Store,
    queries: np.ndarray,
    k: int,
    ray_address: str | None,
    manifest: CatalogManifest | None = None,
    scoring: CodeScoring = "asymmetric",
    max_actors: int | None = None,
) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """Top-k hits (as :func:`cecq.catalog.search_published` gives them) for decoded query
    rows, every codes shard scanned on Ray; and the nodes that scanned them."""
    m = manifest or current_manifest(store)
    rows = shard_row_counts(store, m)
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    q = np.asarray(queries, dtype=np.float32)
    jobs = [
        ShardSearch(f"search {path}", path, int(start), q, k, scoring)
        for path, start, n in zip(m.codes, starts, rows)
        if n
    ]
    init_ray(ray_address)
    placed = run_on_actors(
        ShardSearcher(store.url, store.storage_options, m.quantizer), jobs, "shard search", max_actors=max_actors
    )
    parts = sorted(p.value for p in placed)
    scores = np.concatenate([s for _, s, _ in parts], axis=1) if parts else np.zeros((len(q), 0), np.float32)
    idx = np.concatenate([i for _, _, i in parts], axis=1) if parts else np.zeros((len(q), 0), np.int64)
    order = np.lexsort((idx, -scores), axis=1)[:, :k]  # best first, ties to the lower row (as the scan)
    scores, idx = np.take_along_axis(scores, order, 1), np.take_along_axis(idx, order, 1)
    return hits_with_texts(store, m, scores, idx, starts), sorted({p.node for p in placed})


def search_store_parallel(
    store: Store, texts: list[str], k: int, ray_address: str | None, scoring: CodeScoring = "asymmetric"
) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """:func:`search_parallel` for text queries (encoded here, with the version's models)."""
    m = current_manifest(store)
    encode, _ = query_encoder(store, m)
    return search_parallel(store, encode(texts), k, ray_address, m, scoring)
