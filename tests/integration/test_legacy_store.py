"""A store written by cecq before the house reshaping (``tests/fixtures/legacy-store``, made
by main at 47a3de8) is read, searched, resumed and reindexed by today's code without
retraining or rewriting any committed file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from cecq.catalog import connect, current_manifest, read_run, search_store
from cecq.catalog.records import SCHEMA_VERSION
from cecq.storage import Store
from tests.helpers.paths import FIXTURES

pytestmark = pytest.mark.slow

LEGACY = FIXTURES / "legacy-store"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


def _flag(args: list[str], name: str, default=None):
    return args[args.index(name) + 1] if name in args else default


def flow_kwargs(args: list[str]) -> dict:
    """The embed-corpus flow's parameters for the CLI arguments a fixture run was made with."""
    budget = _flag(args, "--budget-bytes")
    return {
        "models": ["lexical"],
        "shard_rows": int(_flag(args, "--shard-rows")),
        "out_dim": int(_flag(args, "--out-dim")),
        "dims": int(_flag(args, "--dims")),
        "max_epochs": int(_flag(args, "--max-epochs")),
        "bits": int(_flag(args, "--bits", 2)),
        "budget_bytes": int(budget) if budget else None,
        "quantization": _flag(args, "--quantization"),
    }


def digests(root: Path) -> dict[str, str]:
    """Every file's digest, but the store's lease (each run claims and releases it: a lock, not an artifact)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and str(p.relative_to(root)) != "catalog/lease.json"
    }


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """A copy of the fixture as the working directory (its runs name ``corpus.jsonl`` and
    ``store`` relatively), with a local Ray started there and Prefect's harness."""
    import ray
    from prefect.testing.utilities import prefect_test_harness

    work = tmp_path_factory.mktemp("legacy") / "legacy-store"
    shutil.copytree(LEGACY, work)
    before = os.getcwd()
    os.chdir(work)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with prefect_test_harness(server_startup_timeout=180):
            yield work
    finally:
        ray.shutdown()
        os.chdir(before)


def test_read_and_search_as_the_old_code_did(legacy):
    store = Store("store")
    manifest = current_manifest(store)
    assert manifest.version == 3 and manifest.quantization == "product" and manifest.schema_version == SCHEMA_VERSION
    # Version 2 was written before kinds had names: fitted bits spelt "scalar" with a budget.
    assert json.loads((legacy / "store/catalog/v000002/manifest.json").read_text())["quantization"] == "scalar"
    assert read_run(store, EXPECTED["runs"][1]["run_id"]).quantization == "mixed"
    con = connect(store)
    codes = {i: c.hex() for i, c in con.execute("SELECT id, code FROM documents").fetchall()}
    assert codes == EXPECTED["documents"]
    assert con.execute("SELECT count(*) FROM versions").fetchone()[0] == 3
    assert sorted(r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()) == sorted(
        r["run_id"] for r in EXPECTED["runs"]
    )
    hits = search_store(store, EXPECTED["search"]["query"], k=EXPECTED["search"]["k"])
    assert hits == EXPECTED["search"]["hits"]


def test_rerunning_the_published_run_finds_it_and_writes_nothing(legacy):
    from flows.embed_corpus import embed_corpus

    before = digests(legacy / "store")
    last = EXPECTED["runs"][-1]
    result = embed_corpus(corpus="corpus.jsonl", store="store", **flow_kwargs(last["args"]))
    assert result["run_id"] == last["run_id"] and result["catalog_version"] == last["catalog_version"]
    assert digests(legacy / "store") == before


def test_rerunning_an_older_run_reuses_all_it_committed(legacy):
    from flows.embed_corpus import embed_corpus

    before = digests(legacy / "store")
    mixed = EXPECTED["runs"][1]
    result = embed_corpus(corpus="corpus.jsonl", store="store", **flow_kwargs(mixed["args"]))
    assert result["run_id"] == mixed["run_id"] and result["catalog_version"] == 4
    after = digests(legacy / "store")
    changed = {p for p in before if after.get(p) != before[p]}
    added = set(after) - set(before)
    # Publishing writes the new version, points current.json at it and marks the run's record.
    assert changed == {"catalog/current.json", f"runs/{mixed['run_id']}/run.json"}
    assert added == {"catalog/v000004/manifest.json", "catalog/v000004/shards.parquet"}
    assert current_manifest(Store("store")).quantization == "mixed"


def test_reindex_reuses_the_legacy_compressor_and_unchanged_shards(legacy):
    from flows.reindex import reindex

    corpus = legacy / "corpus.jsonl"
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    docs[45]["text"] = "an edited comet and telescope"  # the last shard changes
    docs.append({"_id": "d900", "title": "new", "text": "a new document about kernels and threads"})
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    before = digests(legacy / "store")
    mixed = EXPECTED["runs"][1]["run_id"]
    result = reindex(corpus="corpus.jsonl", store="store", decoder_policy="reuse")
    assert result["compressor_id"] == mixed  # the decoder and quantizer of the old run, not retrained
    after = digests(legacy / "store")
    assert not any(
        p.startswith("runs/") and p.endswith(("decoder.safetensors", "quantizer.parquet"))
        for p in set(after) - set(before)
    )
    assert all(after[p] == h for p, h in before.items() if not p.startswith("catalog/") and not p.endswith("run.json"))
    published = dict(connect(Store("store")).execute("SELECT id, code FROM documents").fetchall())
    assert len(published) == 49 and "d900" in published
    first_shard = [p for p in before if p.startswith(f"codes/{mixed}/") and "-00000-" in p]
    assert first_shard and all(after[p] == before[p] for p in first_shard)  # unchanged shards: not rewritten
