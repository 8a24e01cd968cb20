"""The multi-model embed stage: every base model's shards on one Ray pool (what embed-corpus
does) against the models one after another, each on a pool of its own (what it did), and
against the sum of bare in-process loops over the same models."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from cecq.bench.perf_embed import write_jsonl
from cecq.bench.perf_scaleout import LocalCluster
from cecq.bench.timing import Figure, Ratio, interleaved, ratio
from cecq.catalog.layout import embedding_path, model_key
from cecq.catalog.reader import load_store_encoder
from cecq.catalog.records import CorpusManifest
from cecq.encoders import is_fitted, model_fingerprint
from cecq.pipeline.corpus import shard_corpus
from cecq.pipeline.fanout import embed_model, embed_models
from cecq.pipeline.ray_pool import actor_shape, init_ray
from cecq.pipeline.steps import fit_encoder
from cecq.storage import Store

VARIANTS = ("one-pool", "model-after-model")


def measure(
    texts: list[str],
    models: Sequence[str],
    batch_size: int,
    repeats: int,
    shards: int,
    workdir: Path,
    nodes: int = 0,
    node_cpus: int = 1,
) -> tuple[list[Figure], list[Ratio], dict]:
    """Time the embed stage of ``models`` over ``texts`` in ``shards`` shards, three ways: on
    the local Ray, or with ``nodes`` >= 1 on a cluster of that many nodes of ``node_cpus``
    CPUs started here (:class:`~cecq.bench.perf_scaleout.LocalCluster`)."""
    if nodes < 1:
        init_ray(None)
        return _measure(texts, models, batch_size, repeats, shards, workdir)
    with LocalCluster(node_cpus) as cluster:
        cluster.resize(nodes)
        figs, ratios, details = _measure(texts, models, batch_size, repeats, shards, workdir)
    return figs, ratios, {**details, "nodes": nodes, "node_cpus": node_cpus}


def _measure(
    texts: list[str], models: Sequence[str], batch_size: int, repeats: int, shards: int, workdir: Path
) -> tuple[list[Figure], list[Ratio], dict]:
    shape = actor_shape()  # the bare loops keep torch's own threads (every core), as a user's loop gets them
    models = list(models)
    fingerprints = [model_fingerprint(m) for m in models]
    url = write_jsonl(workdir / "models.jsonl", texts)
    shard_rows = max(1, -(-len(texts) // shards))
    # A fresh, sharded store per variant and repeat (fitted models fitted there, untimed):
    # the embed stage never skips work.
    stores = {}
    for variant in VARIANTS:
        for r in range(repeats):
            store = Store(str(workdir / f"models-{variant}-{r}"))
            manifest = shard_corpus(url, store, shard_rows)
            for m in models:
                if is_fitted(m):
                    fit_encoder(store, manifest, m)
            stores[variant, r] = (store, manifest)
    first_store, first_manifest = stores[VARIANTS[0], 0]
    started = time.perf_counter()
    encoders = [
        load_store_encoder(first_store, m, first_manifest.corpus_key, batch_size, "cpu", trusted=True) for m in models
    ]
    load_s = time.perf_counter() - started
    n, bs = len(texts), batch_size

    def bare_loops(_: int) -> None:
        for enc in encoders:
            for i in range(0, n, bs):
                enc.encode(texts[i : i + bs], "document")

    used: list[int] = []  # nodes the one-pool runs used

    def one_pool(r: int) -> None:
        results = embed_models(*stores["one-pool", r], models, batch_size, fingerprints=fingerprints)
        used.append(len({n for res in results for n in res.nodes}))

    def after(r: int) -> None:
        for m, fp in zip(models, fingerprints):
            embed_model(*stores["model-after-model", r], m, batch_size, fingerprint=fp)

    times = interleaved({"bare-loops": bare_loops, "one-pool": one_pool, "model-after-model": after}, repeats)
    names = ", ".join(models)
    what = {
        "bare-loops": f"the sum of one in-process loop a model ({names}; loaded before timing): "
        f"Encoder.encode on consecutive batches of {bs}",
        "one-pool": "embed stage of embed-corpus now (cecq.pipeline.fanout.embed_models): every model's shards "
        "on one Ray pool, longest first; actor start, model loads, shard reads, encode, Parquet writes",
        "model-after-model": "the embed stage as it was: cecq.pipeline.fanout.embed_model for one model after "
        "the other, a pool each",
    }
    measurement = "embed-models"
    figs = {name: Figure(measurement, name, n * len(models), "docs", secs, what[name]) for name, secs in times.items()}
    # Both orders must write the same bytes (the schedule changes where and when, not what).
    identical = all(
        stores["one-pool", r][0].read_bytes(rel) == stores["model-after-model", r][0].read_bytes(rel)
        for r in range(repeats)
        for rel in _embedding_files(models, stores["one-pool", r][1], fingerprints)
    )
    ratios = [
        ratio(figs, "one-pool", "model-after-model"),
        ratio(figs, "one-pool", "bare-loops"),
        ratio(figs, "model-after-model", "bare-loops"),
    ]
    details = {
        "docs": n,
        "models": models,
        "shards": len(first_manifest.shards),
        "actors": shape.count,
        "threads": shape.threads,
        "bare_model_load_s": load_s,
        "identical_outputs": identical,
        "one_pool_nodes_used": used,
    }
    return list(figs.values()), ratios, details


def _embedding_files(models: list[str], manifest: CorpusManifest, fingerprints: list[str | None]) -> list[str]:
    return [
        embedding_path(model_key(m, manifest.corpus_key, fp), s)
        for m, fp in zip(models, fingerprints)
        for s in manifest.shards
    ]
