"""Typed, versioned records: serialisation, defaults for older stores, refusal of newer ones,
and run ids that only the identity fields change."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from cecq.catalog.records import (
    SCHEMA_VERSION,
    CatalogManifest,
    EmbeddingResult,
    RunRecord,
    run_id_for,
    run_identity,
)
from cecq.config import PIPELINE_DECODER, DecoderConfig, PipelineConfig
from cecq.errors import ConfigError, RecordVersionError
from tests.helpers.paths import FIXTURES

LEGACY = FIXTURES / "legacy-store"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


def legacy_manifest(version: int) -> dict:
    return json.loads((LEGACY / f"store/catalog/v{version:06d}/manifest.json").read_text())


def test_version_1_manifests_get_todays_names_and_defaults():
    scalar, mixed, product = (CatalogManifest.from_dict(legacy_manifest(v)) for v in (1, 2, 3))
    assert (scalar.quantization, scalar.bits, scalar.budget_bytes) == ("scalar", 2, None)
    assert (mixed.quantization, mixed.bits, mixed.budget_bytes) == ("mixed", None, 3)  # "scalar" + a budget on disk
    assert (product.quantization, product.budget_bytes) == ("product", 4)
    assert mixed.code_layout == "bits fitted within 3 bytes" and product.code_layout == "product codes of 4 bytes"
    assert all(m.schema_version == SCHEMA_VERSION for m in (scalar, mixed, product))


def test_a_stored_config_lacking_later_fields_gets_the_behaviour_of_its_time():
    stored = legacy_manifest(1)["config"]
    stored.pop("model_weights")
    stored.pop("quantization")
    stored.pop("budget_bytes")
    config = PipelineConfig.from_dict(stored)
    assert config.model_weights == "equal"  # stores from before fitted weights concatenated equally
    assert config.quantization == "scalar" and config.budget_bytes is None
    assert PipelineConfig.from_dict(legacy_manifest(2)["config"]).quantization == "mixed"


def test_records_round_trip_and_refuse_a_newer_schema():
    run = json.loads((LEGACY / f"store/runs/{EXPECTED['runs'][2]['run_id']}/run.json").read_text())
    record = RunRecord.from_dict(run)
    assert isinstance(record.embedding[0], EmbeddingResult) and record.quantization == "product"
    assert RunRecord.from_dict(record.to_dict()) == record
    assert record.to_dict()["schema_version"] == SCHEMA_VERSION
    with pytest.raises(
        RecordVersionError, match=f"schema version {SCHEMA_VERSION + 1}; this cecq reads up to {SCHEMA_VERSION}"
    ):
        RunRecord.from_dict({**run, "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(RecordVersionError, match="catalog manifest v3"):
        CatalogManifest.from_dict({**legacy_manifest(3), "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(ConfigError, match="unknown fields"):
        PipelineConfig.from_dict({**legacy_manifest(3)["config"], "from_the_future": 1})


@pytest.mark.parametrize("index", [0, 1, 2])
def test_run_ids_of_the_legacy_store_are_reproduced(index):
    """The ids of runs written before the identity was made explicit come out the same."""
    run = json.loads((LEGACY / f"store/runs/{EXPECTED['runs'][index]['run_id']}/run.json").read_text())
    config = PipelineConfig.from_dict(run["config"])
    assert run_id_for(config, run["corpus_manifest"]) == EXPECTED["runs"][index]["run_id"]


def test_run_ids_change_with_identity_fields_and_not_with_the_store():
    base = PipelineConfig(corpus="c.jsonl", store="a", decoder=PIPELINE_DECODER)
    rid = run_id_for(base, "corpus/m.json")
    assert run_id_for(replace(base, store="s3://elsewhere"), "corpus/m.json") == rid
    assert run_id_for(base, "corpus/other.json") != rid
    assert run_id_for(PipelineConfig(corpus="c.jsonl", store="a", dims=128), "corpus/m.json") != rid
    assert (
        run_id_for(
            PipelineConfig(corpus="c.jsonl", store="a", decoder=replace(PIPELINE_DECODER, seed=1)), "corpus/m.json"
        )
        != rid
    )
    product = PipelineConfig(corpus="c.jsonl", store="a", budget_bytes=8, quantization="product")
    mixed = PipelineConfig(corpus="c.jsonl", store="a", budget_bytes=8)
    assert run_identity(product)["quantization"] == "product" and "quantization" not in run_identity(mixed)
    assert run_id_for(product, "m") != run_id_for(mixed, "m")
    # a number format other than auto is a new run; auto, the default, keeps the ids stores hold
    assert "precision" not in run_identity(base)
    assert run_id_for(replace(base, precision="bf16"), "corpus/m.json") != rid


def test_guarded_weights_keep_one_model_run_ids_and_change_several_models_ones():
    """With one model the guarded default weighs as spread did, so such runs keep their ids
    across the upgrade (the legacy store's rerun must find, not redo, its runs); with
    several models the guard may drop one, so their runs are new."""
    one = PipelineConfig(corpus="c.jsonl", store="a", models=("lexical",))
    assert one.model_weights == "guarded"
    assert run_id_for(one, "m") == run_id_for(replace(one, model_weights="spread"), "m")
    assert run_id_for(one, "m") != run_id_for(replace(one, model_weights="equal"), "m")
    two = PipelineConfig(corpus="c.jsonl", store="a")
    assert run_id_for(two, "m") != run_id_for(replace(two, model_weights="spread"), "m")


def test_a_field_added_later_joins_the_identity_only_away_from_its_default(monkeypatch):
    """A new DecoderConfig field at its default must leave every existing run id alone."""
    from dataclasses import field, make_dataclass

    Later = make_dataclass("Later", [("temperature", float, field(default=1.0))], bases=(DecoderConfig,), frozen=True)
    config = PipelineConfig(corpus="c.jsonl", store="a")
    at_default = replace(
        config, decoder=Later(**PIPELINE_DECODER.to_dict() | {"prefix_sizes": PIPELINE_DECODER.prefix_sizes})
    )
    assert run_id_for(at_default, "m") == run_id_for(config, "m")
    changed = replace(at_default, decoder=replace(at_default.decoder, temperature=0.5))
    assert run_identity(changed)["decoder"]["temperature"] == 0.5
    assert run_id_for(changed, "m") != run_id_for(config, "m")
