"""Several base models, one pool: the jobs of every group (model) run on one pool of actors
sized for the cluster, longest first, each actor building a group's worker on its first job
of that group and keeping it. On a real local Ray with room for two actors."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import numpy as np
import pytest

from cecq.errors import ModelLoadError
from cecq.storage import Store
from tests.helpers.corpora import write_corpus
from tests.helpers.local_ray import local_ray

UNIT_S = 0.5  # seconds a unit of cost sleeps


@pytest.fixture(scope="module")
def two_actor_ray():
    """A local Ray whose 2 logical CPUs make :func:`actor_shape` size a pool of two actors."""
    yield from local_ray(2)


@dataclass(frozen=True)
class _Job:
    name: str
    group: str
    cost: float
    size: int = 10


class _Sleeper:
    """A group's worker: sleeps its job's cost; says where and when it ran, and when it was built."""

    def __init__(self, group: str, context):
        self.group, self.built = group, time.time()

    def __call__(self, job: _Job) -> tuple:
        if job.group != self.group:
            raise AssertionError(f"{job.name} of {job.group} ran on the worker of {self.group}")
        start = time.time()
        time.sleep(job.cost * UNIT_S)
        return job.group, job.name, start, time.time(), os.getpid(), self.built


def _broken(context):
    raise OSError("no weights here")


def test_jobs_of_two_models_share_one_pool_longest_first(two_actor_ray):
    """Model after model, b's jobs would start only when all of a's are done; on one pool
    a's longest and b's longest start together, and the pool never exceeds its actors."""
    from cecq.pipeline import ray_pool

    assert ray_pool.actor_shape().count == 2
    jobs = [_Job("a-long", "a", 4), _Job("a1", "a", 1), _Job("a2", "a", 1), _Job("b1", "b", 3), _Job("b2", "b", 3)]
    seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    placed = ray_pool.run_groups(
        {g: functools.partial(_Sleeper, g) for g in "ab"},
        jobs,
        label="test",
        progress={g: (lambda d, t, g=g: seen[g].append((d, t))) for g in "ab"},
    )
    runs = {p.value[1]: p.value for p in placed}
    assert sorted(runs) == sorted(j.name for j in jobs)
    assert all(p.job.name == p.value[1] for p in placed)  # each result comes back with its job
    assert len({r[4] for r in runs.values()}) == 2  # two actors, not a pool a model
    # b's first job started before a's longest (which started first) ended.
    assert min(r[2] for r in runs.values() if r[0] == "b") < runs["a-long"][3]
    # Each actor built each group's worker once, before that group's first job there.
    builds: dict[tuple[int, str], set[float]] = {}
    for group, _, start, _, pid, built in runs.values():
        builds.setdefault((pid, group), set()).add(built)
        assert built <= start
    assert all(len(b) == 1 for b in builds.values())
    assert seen["a"][-1] == (30, 30) and seen["b"][-1] == (20, 20)  # progress per group, in its units


def test_a_worker_that_fails_to_build_names_its_group(two_actor_ray):
    from cecq.pipeline import ray_pool

    with pytest.raises(ray_pool.ActorStartError, match="OSError: no weights here") as e:
        ray_pool.run_groups(
            {"a": functools.partial(_Sleeper, "a"), "bad": _broken},
            [_Job("a1", "a", 1), _Job("x", "bad", 2)],
        )
    assert e.value.group == "bad"


@pytest.mark.slow
def test_embed_models_on_one_pool_matches_model_after_model(two_actor_ray, tmp_path, tiny_model_dir, tiny_model_dir_48):
    """Byte-identical shards and the same per-model results as one model at a time; a rerun
    skips every committed shard; a copy of a model with other weights is a ModelLoadError."""
    from cecq.encoders import model_fingerprint
    from cecq.pipeline.corpus import shard_corpus
    from cecq.pipeline.fanout import embed_model, embed_models

    corpus = tmp_path / "docs.jsonl"
    write_corpus(corpus, n=60)
    models = [str(tiny_model_dir), str(tiny_model_dir_48)]
    fps = [model_fingerprint(m) for m in models]
    pooled, single = Store(str(tmp_path / "pooled")), Store(str(tmp_path / "single"))
    m_pooled = shard_corpus(str(corpus), pooled, shard_rows=20)
    m_single = shard_corpus(str(corpus), single, shard_rows=20)

    seen: dict[str, list] = {m: [] for m in models}
    progress = {m: (lambda d, t, m=m: seen[m].append((d, t))) for m in models}
    got = embed_models(pooled, m_pooled, models, batch_size=8, progress=progress, fingerprints=fps)
    want = [embed_model(single, m_single, m, batch_size=8, fingerprint=fp) for m, fp in zip(models, fps)]

    assert [r.model for r in got] == models
    for g, w in zip(got, want):
        assert (g.model_key, g.shards, g.skipped_shards, g.embedded_documents, g.truncated_documents) == (
            w.model_key,
            w.shards,
            w.skipped_shards,
            w.embedded_documents,
            w.truncated_documents,
        )
        assert g.info == w.info and g.fingerprint == w.fingerprint and g.embedded_documents == 60
    files = sorted(p for p in pooled.glob("embeddings/*/*") if ".tmp-" not in p)
    assert len(files) == 2 * 3
    for rel in files:
        assert pooled.read_bytes(rel) == single.read_bytes(rel), rel
    assert all(seen[m][-1] == (60, 60) for m in models)

    again = embed_models(pooled, m_pooled, models, batch_size=8, fingerprints=fps)
    assert [(r.skipped_shards, r.embedded_documents) for r in again] == [(3, 0), (3, 0)]

    other = Store(str(tmp_path / "other"))
    m_other = shard_corpus(str(corpus), other, shard_rows=20)
    with pytest.raises(
        ModelLoadError, match=r"model '.*48.*' could not be loaded by the embedding actors: .*not the run's"
    ):
        embed_models(other, m_other, models, batch_size=8, fingerprints=[fps[0], "sha256:" + "0" * 64])


@pytest.mark.slow
def test_a_corpus_of_one_shard_runs_on_every_actor(two_actor_ray, tmp_path, tiny_model_dir, monkeypatch):
    """Too few shards to keep the actors busy: each is cut into parts that run on both
    actors and are committed as one shard, holding the vectors a whole-shard job writes
    (to float rounding: the batches differ); progress counts every document; a rerun skips it."""
    from cecq.pipeline import fanout
    from cecq.pipeline.corpus import shard_corpus
    from cecq.pipeline.steps import vectors_of

    corpus = tmp_path / "docs.jsonl"
    write_corpus(corpus, n=60)
    split, whole = Store(str(tmp_path / "split")), Store(str(tmp_path / "whole"))
    m_split = shard_corpus(str(corpus), split, shard_rows=100)
    m_whole = shard_corpus(str(corpus), whole, shard_rows=100)
    model = str(tiny_model_dir)
    pids: list[int] = []
    original = fanout._committed

    def spy(store, placed):
        pids.extend(p.pid for p in placed)
        return original(store, placed)

    monkeypatch.setattr(fanout, "_committed", spy)
    r_whole = fanout.embed_model(whole, m_whole, model, batch_size=8)
    assert len(pids) == 1  # 60 documents, one part of at least MIN_PART_ROWS: one job
    monkeypatch.setattr(fanout, "MIN_PART_ROWS", 10)
    seen: list[tuple[int, int]] = []
    pids.clear()
    r_split = fanout.embed_model(split, m_split, model, batch_size=8, progress=lambda d, t: seen.append((d, t)))

    assert len(pids) == 4 and len(set(pids)) == 2  # 4 parts on both actors
    assert (r_split.embedded_documents, r_split.shards, r_split.info) == (60, 1, r_whole.info)
    [rel] = [p for p in split.glob("embeddings/*/*") if ".tmp-" not in p]
    a, b = split.read_parquet(rel), whole.read_parquet(rel)
    assert a.column("id").equals(b.column("id")) and a.column("content_hash").equals(b.column("content_hash"))
    np.testing.assert_allclose(vectors_of(a), vectors_of(b), atol=1e-6)
    assert seen[-1] == (60, 60)
    again = fanout.embed_model(split, m_split, model, batch_size=8)
    assert (again.skipped_shards, again.embedded_documents) == (1, 0)


def _note_pid(folder: str) -> None:
    with open(os.path.join(folder, str(os.getpid())), "w"):
        pass


def test_prestarted_actors_run_the_next_pools_jobs_or_give_way_to_tasks(two_actor_ray, tmp_path):
    """Actors started before their jobs are known warm up at once and run the next pool's
    jobs (no new actor starts); ones no pool takes are stopped before tasks that need their
    CPUs (2 actors of 3/4 CPU on 2 CPUs would leave a 1-CPU task waiting forever)."""
    import ray

    from cecq.pipeline import ray_pool

    warmed = tmp_path / "warmed"
    warmed.mkdir()
    assert ray_pool.prestart(functools.partial(_note_pid, str(warmed))) == 2
    deadline = time.monotonic() + 60
    while len(os.listdir(warmed)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = {int(p) for p in os.listdir(warmed)}
    assert len(pids) == 2  # both warmed before any job was known
    placed = ray_pool.run_groups(
        {"a": functools.partial(_Sleeper, "a")}, [_Job("a1", "a", 0.2), _Job("a2", "a", 0.2), _Job("a3", "a", 0.2)]
    )
    assert {p.pid for p in placed} <= pids  # the prestarted actors ran them

    ray_pool.prestart()
    started = time.monotonic()
    results = ray_pool.run_tasks(_one, [(i,) for i in range(2)], num_cpus=1.0)
    assert sorted(results) == [0, 1] and time.monotonic() - started < 60
    ray.get(ray.remote(num_cpus=2)(_one).remote(0), timeout=60)  # nothing holds a CPU any more


def _one(i: int) -> int:
    return i


@pytest.mark.slow
def test_the_pool_embeds_the_guards_pseudo_queries_so_training_loads_no_pretrained_model(
    two_actor_ray, tmp_path, tiny_model_dir, monkeypatch
):
    """With a guard seed, the pretrained model also embeds the guarded weights' pseudo-queries
    and answers on the pool (as queries and documents; not counted as corpus documents); the
    fitted lexical view is not asked to. The weights are then fitted loading only lexical, to
    the weights an in-process guard gives. A rerun with nothing to embed starts no pool for them."""
    import json

    from cecq.catalog.layout import GUARD_KINDS, embedding_path
    from cecq.config import PipelineConfig
    from cecq.encoders import load_encoder
    from cecq.pipeline import steps
    from cecq.pipeline.corpus import shard_corpus
    from cecq.pipeline.fanout import embed_models
    from tests.helpers.models import loaded_models
    from tests.unit.encoders.test_weights import corpus_texts

    corpus = tmp_path / "docs.jsonl"
    texts = corpus_texts()
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    store = Store(str(tmp_path / "store"))
    manifest = shard_corpus(str(corpus), store, shard_rows=50)
    models = [str(tiny_model_dir), "lexical"]
    steps.fit_encoder(store, manifest, "lexical")
    got = embed_models(store, manifest, models, batch_size=8, guard_seed=0)

    assert [r.embedded_documents for r in got] == [len(texts), len(texts)]  # the guard's texts are not counted
    tiny_key, lexical_key = (r.model_key for r in got)
    guard = {kind: steps.guard_shard(manifest, 0, kind) for kind in GUARD_KINDS}
    assert not any(store.exists(embedding_path(lexical_key, g)) for g in guard.values())
    pq = steps.pseudo_queries(texts, steps.SELF_QUERIES, 0)  # the guard's sample is the whole corpus here
    tiny = load_encoder(str(tiny_model_dir))
    for kind, side in zip(GUARD_KINDS, (pq.queries, pq.answers)):
        table = store.read_parquet(embedding_path(tiny_key, guard[kind]))
        np.testing.assert_allclose(steps.vectors_of(table), tiny.encode(side, kind), atol=1e-5)

    files = {p: store.read_bytes(p) for p in store.glob("**/*.parquet")}
    again = embed_models(store, manifest, models, batch_size=8, guard_seed=0)
    assert [r.embedded_documents for r in again] == [0, 0]
    assert {p: store.read_bytes(p) for p in store.glob("**/*.parquet")} == files

    config = PipelineConfig(corpus=str(corpus), store=store.url, models=tuple(models), decoder_policy="retrain")
    keys = [tiny_key, lexical_key]
    parts = steps.sample_parts(store, manifest, keys, config.decoder.max_train_rows, config.decoder.seed)
    loaded = loaded_models(monkeypatch)
    pooled = steps.fit_model_weights(parts, config, store, manifest, keys)
    assert loaded == ["lexical"]
    for g in guard.values():
        store.fs.rm(store.path(embedding_path(tiny_key, g)))
    assert steps.fit_model_weights(parts, config, store, manifest, keys)[0] == pooled[0]  # encoded in process
    assert loaded == ["lexical", str(tiny_model_dir), "lexical"]


def test_bf16_embeddings_are_kept_apart_from_the_default_ones(two_actor_ray, tmp_path, tiny_model_dir):
    """The pool's actors load the model in the run's precision, and its vectors land under their
    own model key: a bf16 run never reuses (or overwrites) the default run's vectors."""
    from cecq.catalog.layout import embedding_path
    from cecq.pipeline.corpus import shard_corpus
    from cecq.pipeline.fanout import embed_models
    from cecq.pipeline.steps import vectors_of

    corpus, store = tmp_path / "docs.jsonl", Store(str(tmp_path / "store"))
    write_corpus(corpus, n=120)
    manifest = shard_corpus(str(corpus), store, shard_rows=60)
    model = str(tiny_model_dir)
    [auto] = embed_models(store, manifest, [model], batch_size=16)
    [bf16] = embed_models(store, manifest, [model], batch_size=16, precision="bf16")
    assert bf16.model_key == auto.model_key + "-bf16"
    assert bf16.embedded_documents == auto.embedded_documents == 120 and bf16.skipped_shards == 0
    a, b = (
        np.concatenate([vectors_of(store.read_parquet(embedding_path(r.model_key, s))) for s in manifest.shards])
        for r in (auto, bf16)
    )
    assert a.shape == b.shape == (120, 32) and not np.array_equal(a, b)
    assert float((a * b).sum(axis=1).min()) > 0.99  # normalised, and close: the same model, rounded
