"""Fan-out of the per-shard steps over a Ray cluster (through :mod:`cecq.pipeline.ray_pool`,
which is handed the work): the shards of every model on one pool of actors that load the
models they are given, compression as tasks."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cecq.catalog.layout import codes_path, embedding_path, model_key
from cecq.catalog.reader import is_whole
from cecq.catalog.records import CodesShard, CorpusManifest, EmbeddingResult, EmbedShardResult, ShardInfo
from cecq.config import Precision
from cecq.encoders import check_model, encoder_class, is_fitted
from cecq.errors import ModelLoadError
from cecq.killpoints import kill_point
from cecq.pipeline import ray_pool
from cecq.pipeline.ray_pool import Progress
from cecq.pipeline.steps import commit_parts, compress_shard, embed_worker_factory, write_guard
from cecq.storage import Store

logger = logging.getLogger(__name__)

# A shard is cut into parts for several actors only into parts of at least this many documents
# (a batch): a part costs a sort and a transfer of its vectors, and the second actor a model load.
MIN_PART_ROWS = 64


@dataclass
class EmbedJob:
    """One corpus shard to embed with one model."""

    shard: dict[str, Any]  # ShardInfo fields
    out_path: str
    previous_paths: list[str] = field(default_factory=list)
    group: str = ""  # the model: which worker of the pool runs it
    relative_cost: float = 1.0  # the model's per-document cost (Encoder.cost)
    part: int = 0  # this job embeds part `part` of `parts` of the shard (steps.part_rows)
    parts: int = 1
    kind: str = "document"  # what the texts are to the model: the guard's pseudo-queries are "query"
    counted: bool = True  # a corpus shard, counted in its model's EmbeddingResult (the guard's texts are not)

    @property
    def name(self) -> str:
        return f"shard {self.shard['name']}" + (f" part {self.part + 1}/{self.parts}" if self.parts > 1 else "")

    @property
    def size(self) -> int:
        """Documents: what progress counts."""
        return len(range(self.part, int(self.shard["rows"]), self.parts))

    @property
    def cost(self) -> float:
        """Documents times the model's cost a document: the pool starts the longest first."""
        return self.size * self.relative_cost


def split_jobs(jobs: Sequence[EmbedJob], actors: int, min_rows: int | None = None) -> list[EmbedJob]:
    """Cut jobs into parts of their shard where there are too few to keep ``actors`` busy: each
    into about as many parts as it holds halves of an actor's fair share (so a corpus of one
    shard runs on every actor), none of fewer than ``min_rows`` documents
    (:data:`MIN_PART_ROWS`), and a multiple of ``actors`` parts where there are that many (3
    parts on 2 actors would leave one idle for a third of the job). A corpus of many shards
    is left as it is."""
    min_rows = MIN_PART_ROWS if min_rows is None else min_rows
    total = sum(j.cost for j in jobs)
    if actors < 2 or total <= 0:
        return list(jobs)
    unit = total / (2 * actors)
    out: list[EmbedJob] = []
    for job in jobs:
        parts = max(1, min(math.ceil(job.cost / unit - 1e-9), job.size // max(1, min_rows)))
        if parts > actors:
            parts -= parts % actors
        out.extend(replace(job, part=k, parts=parts) for k in range(parts))
    return out


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
    """:func:`embed_models` for one model."""
    [result] = embed_models(
        store,
        manifest,
        [model],
        batch_size,
        ray_address,
        previous,
        {model: progress} if progress else None,
        [fingerprint],
    )
    return result


def embed_models(
    store: Store,
    manifest: CorpusManifest,
    models: Sequence[str],
    batch_size: int = 64,
    ray_address: str | None = None,
    previous: CorpusManifest | None = None,
    progress: Mapping[str, Progress] | None = None,
    fingerprints: Sequence[str | None] | None = None,
    guard_seed: int | None = None,
    precision: Precision = "auto",
) -> list[EmbeddingResult]:
    """Embed every shard of the corpus with every model, all on one pool of Ray actors (the
    shards of all models longest first, so no actor idles while another model's shards
    wait); return one result per model, in the models' order. Shards already committed are
    skipped, and with ``previous`` unchanged documents reuse their earlier vectors.
    Embeddings are keyed by the weights' ``fingerprints`` (one per model): vectors of other
    weights are never reused, and an actor whose copy of a model has other weights fails to
    start (:class:`ModelLoadError`). ``progress[model]`` counts that model's documents.
    With ``guard_seed``, where the pool has corpus shards to embed, every pretrained model
    also embeds the guarded weights' pseudo-queries and answers cut with that seed
    (:func:`steps.write_guard`; not counted in the results), so that training loads no model.
    With nothing else to embed (a rerun), no pool starts for them: training, if it runs,
    encodes them itself. ``precision``: the pretrained models' number format (embeddings of
    another format are kept apart, under another model key)."""
    models = list(models)
    if len(set(models)) != len(models):
        raise ValueError(f"a model is named twice: {models}")
    fingerprints = list(fingerprints) if fingerprints is not None else [None] * len(models)
    if len(fingerprints) != len(models):
        raise ValueError(f"{len(fingerprints)} fingerprints for {len(models)} models")
    for model in models:
        check_model(model)  # a missing local path fails here, before any actor starts
    prev_by_name = {s.name: s for s in previous.shards} if previous else {}
    keys = {m: model_key(m, manifest.corpus_key, fp, precision) for m, fp in zip(models, fingerprints)}
    costs = {m: encoder_class(m).cost(m) for m in models}
    jobs, skipped = [], dict.fromkeys(models, 0)
    for model in models:
        cost = costs[model]
        for shard in manifest.shards:
            out = embedding_path(keys[model], shard)
            if is_whole(store, out, shard.rows):  # a damaged shard is embedded again
                skipped[model] += 1
                continue
            prev = prev_by_name.get(shard.name)
            previous_paths = [embedding_path(keys[model], prev)] if prev else []
            jobs.append(EmbedJob(shard.to_dict(), out, previous_paths, model, cost))
    guard = write_guard(store, manifest, guard_seed) if jobs and guard_seed is not None else {}
    for model, (kind, shard) in itertools.product([m for m in models if not is_fitted(m)], guard.items()):
        out = embedding_path(keys[model], shard)
        if not is_whole(store, out, shard.rows):
            jobs.append(EmbedJob(shard.to_dict(), out, [], model, costs[model], kind=kind, counted=False))
    results: dict[str, list[EmbedShardResult]] = {m: [] for m in models}
    nodes: dict[str, set[str]] = {m: set() for m in models}
    if jobs:
        ray_pool.init_ray(ray_address)
        factories = {
            m: embed_worker_factory(store.url, store.storage_options, m, manifest.corpus_key, batch_size, fp, precision)
            for m, fp in zip(models, fingerprints)
            if any(j.group == m for j in jobs)
        }
        jobs = split_jobs(jobs, ray_pool.actor_shape().count)
        try:
            placed = ray_pool.run_groups(factories, jobs, label="embed", progress=progress)
        except ray_pool.ActorStartError as e:
            which = f"model {e.group!r}" if e.group is not None else f"one of the models {models}"
            raise ModelLoadError(f"{which} could not be loaded by the embedding actors: {e}") from e
        for job, result, where in _committed(store, placed):
            if job.counted:
                results[job.group].append(result)
                nodes[job.group] |= where
    return [
        EmbeddingResult(
            model=m,
            model_key=keys[m],
            shards=len(manifest.shards),
            skipped_shards=skipped[m],
            embedded_documents=sum(r.embedded for r in results[m]),
            truncated_documents=sum(r.truncated for r in results[m]),  # longer than the model's limit
            seconds=sum(r.seconds for r in results[m]),
            nodes=sorted(n for n in nodes[m] if n),
            info=results[m][0].model_info if results[m] else None,
            fingerprint=fp,
        )
        for m, fp in zip(models, fingerprints)
    ]


def _committed(store: Store, placed: Sequence[ray_pool.Placed]) -> list[tuple[EmbedJob, EmbedShardResult, set[str]]]:
    """Each shard's result, its job (a part's, for a shard cut into parts) and the nodes that
    embedded it: shards the actors committed as they are, and the parts of a shard cut into
    several committed here as one."""
    out: list[tuple[EmbedJob, EmbedShardResult, set[str]]] = []
    split: dict[tuple[str, str], list[ray_pool.Placed]] = {}
    for p in placed:
        if p.job.parts > 1:
            split.setdefault((p.job.group, p.job.out_path), []).append(p)
            continue
        p.value.node, p.value.pid = p.node, p.pid
        out.append((p.job, p.value, {p.node}))
    for (_, out_path), ps in split.items():
        ps.sort(key=lambda p: p.job.part)
        result = commit_parts(store, ShardInfo(**ps[0].job.shard), out_path, [p.value for p in ps])
        result.node, result.pid, result.model_info = ps[0].node, ps[0].pid, ps[0].value.model_info
        kill_point("embedding")  # crash tests: a shard committed, others still to embed
        out.append((ps[0].job, result, {p.node for p in ps}))
    return out


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
