"""The pipeline's model weights (``fit_model_weights``): the guarded rule reads a sample of
the corpus shards' texts, loads the run's models and drops a view that finds its own
documents' pseudo-queries far worse than the best view, where the spread rule alone would
weigh that view highest. Where the embed stage embedded the guard's pseudo-queries
(``write_guard``), training reads those vectors and loads no model, to the same weights."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pyarrow as pa
import pytest

from cecq.catalog.layout import GUARD_KINDS, embedding_path, guard_shard
from cecq.config import ModelSpec, PipelineConfig
from cecq.encoders import registry, spread_weights
from cecq.pipeline import steps
from cecq.pipeline.corpus import shard_corpus
from cecq.storage import Store
from tests.helpers.models import loaded_models
from tests.helpers.toy_encoder import HashEncoder
from tests.unit.encoders.test_weights import WideNoiseEncoder, corpus_texts


class StoreNoise(WideNoiseEncoder):
    @classmethod
    def from_spec(cls, spec: ModelSpec) -> StoreNoise:
        return cls()


MODELS = ("toy-hash", "wide-noise")


def _embedded_corpus(tmp_path: Path, monkeypatch) -> tuple[Store, object, PipelineConfig]:
    """A corpus of several shards embedded with both toy models (each model's key is its name)."""
    monkeypatch.setitem(registry._ENCODERS, "toy-hash", HashEncoder)
    monkeypatch.setitem(registry._ENCODERS, "wide-noise", StoreNoise)
    texts = corpus_texts()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    store = Store(str(tmp_path / "store"))
    manifest = shard_corpus(str(corpus), store, shard_rows=45)
    assert len(manifest.shards) > 1
    for encoder in (HashEncoder("toy-hash"), StoreNoise()):
        for shard in manifest.shards:
            steps.embed_shard(store, encoder, shard, embedding_path(encoder.name, shard))
    return store, manifest, PipelineConfig(corpus=str(corpus), store=str(store.url), models=MODELS)


def test_guarded_pipeline_weights_drop_the_view_that_finds_nothing(tmp_path: Path, monkeypatch, caplog):
    store, manifest, config = _embedded_corpus(tmp_path, monkeypatch)
    models = MODELS
    assert config.model_weights == "guarded"  # the default
    parts = steps.sample_parts(store, manifest, models, config.decoder.max_train_rows, config.decoder.seed)
    spread = spread_weights(parts)
    assert spread[1] == 1.0 and spread[0] < 1.0  # spread alone trusts the noise most

    with caplog.at_level(logging.WARNING, "cecq.pipeline.steps"):
        weights, fit = steps.fit_model_weights(parts, config, store, manifest, models)

    assert weights == [1.0, 0.0]
    assert fit["rule"] == "guarded" and fit["spread"] == spread and len(fit["candidates"]) == 2
    assert "model wide-noise dropped from the concatenation" in caplog.text
    assert steps.fit_model_weights(parts, config, store, manifest, models) == (weights, fit)  # seeded
    as_spread = dataclasses.replace(config, model_weights="spread")
    assert steps.fit_model_weights(parts, as_spread, store, manifest, models)[0] == spread
    as_equal = dataclasses.replace(config, model_weights="equal")
    assert steps.fit_model_weights(parts, as_equal, store, manifest, models)[0] == [1.0, 1.0]


def test_weights_from_the_guard_vectors_the_embed_stage_committed_load_no_model(tmp_path: Path, monkeypatch, caplog):
    store, manifest, config = _embedded_corpus(tmp_path, monkeypatch)
    seed = config.decoder.seed
    parts = steps.sample_parts(store, manifest, MODELS, config.decoder.max_train_rows, seed)
    in_process = steps.fit_model_weights(parts, config, store, manifest, MODELS)  # loads both models

    guard = steps.write_guard(store, manifest, seed)
    assert sorted(guard) == sorted(GUARD_KINDS) and guard["query"].rows == guard["document"].rows >= 20
    assert steps.write_guard(store, manifest, seed) == guard  # idempotent: named by the manifest and seed
    assert guard["query"] == guard_shard(manifest, seed, "query", guard["query"].rows)
    for encoder in (HashEncoder("toy-hash"), StoreNoise()):
        for kind, shard in guard.items():  # as the embed stage's jobs do
            steps.embed_shard(store, encoder, shard, embedding_path(encoder.name, shard), kind=kind)
    loaded = loaded_models(monkeypatch)
    with caplog.at_level(logging.INFO, "cecq.pipeline.steps"):
        assert steps.fit_model_weights(parts, config, store, manifest, MODELS) == in_process
    assert loaded == [] and "2 of 2 models' vectors from the embed stage" in caplog.text

    # Pseudo-queries written by another cut (other texts under the same name): not trusted,
    # both models encode their own, to the same weights.
    other = guard["query"]
    texts = store.read_parquet(other.path).column("text").to_pylist()
    table = store.read_parquet(other.path).set_column(1, "text", pa.array(texts[::-1]))
    store.write_parquet(other.path, table, "corpus")
    assert steps.fit_model_weights(parts, config, store, manifest, MODELS) == in_process
    assert loaded == list(MODELS)
    # One model's guard vectors missing: only that model is loaded.
    store.write_parquet(other.path, table.set_column(1, "text", pa.array(texts)), "corpus")
    store.fs.rm(store.path(embedding_path("wide-noise", guard["document"])))
    loaded.clear()
    assert steps.fit_model_weights(parts, config, store, manifest, MODELS) == in_process
    assert loaded == ["wide-noise"]


@pytest.mark.parametrize(
    ("change", "needed"),
    [
        ({}, True),
        ({"model_weights": "spread"}, False),
        ({"decoder_policy": "auto"}, False),
        ({"models": ("all-MiniLM-L6-v2",)}, False),
        ({"models": ("lexical",)}, False),
    ],
)
def test_the_embed_stage_embeds_the_guard_only_for_runs_that_train_guarded_weights(change, needed):
    config = PipelineConfig(corpus="c", store="s", decoder_policy="retrain")
    assert config.models == ("all-MiniLM-L6-v2", "lexical")  # the defaults: MiniLM is pretrained
    assert steps.needs_guard(dataclasses.replace(config, **change)) is needed
