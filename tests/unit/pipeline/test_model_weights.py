"""The pipeline's model weights (``fit_model_weights``): the guarded rule reads a sample of
the corpus shards' texts, loads the run's models and drops a view that finds its own
documents' pseudo-queries far worse than the best view, where the spread rule alone would
weigh that view highest."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from cecq.catalog.layout import embedding_path
from cecq.config import ModelSpec, PipelineConfig
from cecq.encoders import registry, spread_weights
from cecq.pipeline import steps
from cecq.pipeline.corpus import shard_corpus
from cecq.storage import Store
from tests.helpers.toy_encoder import HashEncoder
from tests.unit.encoders.test_weights import WideNoiseEncoder, corpus_texts


class StoreNoise(WideNoiseEncoder):
    @classmethod
    def from_spec(cls, spec: ModelSpec) -> StoreNoise:
        return cls()


def test_guarded_pipeline_weights_drop_the_view_that_finds_nothing(tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setitem(registry._ENCODERS, "toy-hash", HashEncoder)
    monkeypatch.setitem(registry._ENCODERS, "wide-noise", StoreNoise)
    texts = corpus_texts()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    store = Store(str(tmp_path / "store"))
    manifest = shard_corpus(str(corpus), store, shard_rows=45)
    assert len(manifest.shards) > 1
    models = ("toy-hash", "wide-noise")
    for encoder in (HashEncoder("toy-hash"), StoreNoise()):
        for shard in manifest.shards:
            steps.embed_shard(store, encoder, shard, embedding_path(encoder.name, shard))
    config = PipelineConfig(corpus=str(corpus), store=str(store.url), models=models)
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
