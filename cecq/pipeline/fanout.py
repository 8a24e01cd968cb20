"""Fan-out of the per-shard steps over a Ray cluster (through :mod:`cecq.pipeline.ray_pool`,
which is handed the work): embedding on actors that hold a model, compression as tasks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cecq.catalog.layout import codes_path, embedding_path, model_key
from cecq.catalog.reader import is_whole
from cecq.catalog.records import CodesShard, CorpusManifest, EmbeddingResult, EmbedShardResult, ShardInfo
from cecq.encoders import check_model
from cecq.errors import ModelLoadError
from cecq.pipeline import ray_pool
from cecq.pipeline.ray_pool import Progress
from cecq.pipeline.steps import compress_shard, embed_worker_factory
from cecq.storage import Store

logger = logging.getLogger(__name__)


@dataclass
class EmbedJob:
    """One corpus shard to embed with one model."""

    shard: dict[str, Any]  # ShardInfo fields
    out_path: str
    previous_paths: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"shard {self.shard['name']}"

    @property
    def size(self) -> int:
        """Documents: what progress counts."""
        return int(self.shard["rows"])


def embed_model(
    store: Store,
    manifest: CorpusManifest,
    model: str,
    batch_size: int = 64,
    ray_address: str | None = None,
    previous: CorpusManifest | None = None,
    progress: Progress | None = None,
    fingerprint: str | None = None,
) -> EmbeddingResult:
    """Embed every shard of the corpus with one model on Ray; shards already committed are
    skipped, and with ``previous`` unchanged documents reuse their earlier vectors.
    Embeddings are keyed by the weights' ``fingerprint``: vectors of other weights are never
    reused, and an actor whose copy of the model has other weights fails to start."""
    check_model(model)  # a missing local path fails here, before any actor starts
    mkey = model_key(model, manifest.corpus_key, fingerprint)
    prev_by_name = {s.name: s for s in previous.shards} if previous else {}
    jobs, skipped = [], 0
    for shard in manifest.shards:
        out = embedding_path(mkey, shard)
        if is_whole(store, out, shard.rows):  # a damaged shard is embedded again
            skipped += 1
            continue
        prev = prev_by_name.get(shard.name)
        jobs.append(EmbedJob(shard.to_dict(), out, [embedding_path(mkey, prev)] if prev else []))
    results: list[EmbedShardResult] = []
    if jobs:
        ray_pool.init_ray(ray_address)
        factory = embed_worker_factory(
            store.url, store.storage_options, model, manifest.corpus_key, batch_size, fingerprint
        )
        try:
            placed = ray_pool.run_on_actors(factory, jobs, label=model, progress=progress)
        except ray_pool.ActorStartError as e:
            raise ModelLoadError(f"model {model!r} could not be loaded by the embedding actors: {e}") from e
        for p in placed:
            p.value.node, p.value.pid = p.node, p.pid
            results.append(p.value)
    return EmbeddingResult(
        model=model,
        model_key=mkey,
        shards=len(manifest.shards),
        skipped_shards=skipped,
        embedded_documents=sum(r.embedded for r in results),
        truncated_documents=sum(r.truncated for r in results),  # longer than the model's limit
        seconds=sum(r.seconds for r in results),
        nodes=sorted({r.node for r in results if r.node}),
        info=results[0].model_info if results else None,
        fingerprint=fingerprint,
    )


def _compress_job(
    store_url: str,
    storage_options: dict[str, Any],
    shard: dict[str, Any],
    embedding_paths: list[str],
    decoder_rel: str,
    quantizer_rel: str,
    out_rel: str,
) -> CodesShard:
    import torch  # heavy: only compress tasks need it

    torch.set_num_threads(1)
    return compress_shard(
        Store(store_url, storage_options), ShardInfo(**shard), embedding_paths, decoder_rel, quantizer_rel, out_rel
    )


def compress_corpus(
    store: Store,
    manifest: CorpusManifest,
    model_keys: Sequence[str],
    decoder_rel: str,
    quantizer_rel: str,
    compressor_id: str,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> list[CodesShard]:
    """Compress every shard (as Ray tasks); committed shards are skipped, not rewritten."""
    ray_pool.init_ray(ray_address)
    jobs = [
        (
            store.url,
            store.storage_options,
            s.to_dict(),
            [embedding_path(k, s) for k in model_keys],
            decoder_rel,
            quantizer_rel,
            codes_path(compressor_id, s),
        )
        for s in manifest.shards
    ]
    results = ray_pool.run_tasks(
        _compress_job,
        jobs,
        num_cpus=ray_pool.cpus_per_task(),
        progress=progress,
        sizes=[s.rows for s in manifest.shards],
    )
    order = {s.name: i for i, s in enumerate(manifest.shards)}
    return sorted(results, key=lambda r: order[r.name])
