"""The main job as a user meets it, on the S3 test endpoint and on a local store: a run with
no expert flags gets the configuration its compression target picks, every run ends with a
summary, and documents deleted from the corpus leave the next version and are counted."""

from __future__ import annotations

import json

import pytest

from cecq.cli import main
from cecq.storage import Store
from tests.helpers.corpora import write_corpus

pytestmark = pytest.mark.slow


def _upload(store: Store, rel: str, path) -> str:
    store.write_bytes(rel, path.read_bytes())
    return store.uri(rel)


def test_default_run_and_reindex_with_deletions_on_s3(tmp_path, s3_endpoint, ray_cluster, prefect_api, capsys):
    from cecq.catalog import connect, read_run
    from cecq.catalog.status import list_files

    store = Store("s3://cecq-test/ux")
    local = tmp_path / "docs.jsonl"
    write_corpus(local, n=40)
    corpus = _upload(store, "input/docs.jsonl", local)
    args = ["--store", store.url, "--model", "lexical", "--shard-rows", "15", "--max-epochs", "2"]
    assert main(["embed-corpus", corpus, *args]) == 0
    table = capsys.readouterr().out
    assert "published catalog v1" in table and "40: 40 new, 0 changed, 0 unchanged, 0 deleted" in table
    assert "fewer than the 1,024 product codes need" in table  # the target's choice, with its reason
    assert f"cecq search --store {store.url} " in table and "try next:" in table
    [run_id] = [r[0] for r in connect(store).execute("SELECT run_id FROM runs").fetchall()]
    run = read_run(store, run_id)
    plan = run.compression_plan
    assert plan["target"] == 48.0 and plan["quantization"] == run.quantization == "mixed"
    assert run.budget_bytes == plan["budget_bytes"] == run.bytes_per_doc
    assert run.dims == plan["dims"] == 768 and abs(run.compression - 48) < 48 / plan["budget_bytes"] * 4

    docs = [json.loads(line) for line in local.read_text().splitlines()]
    docs = [d for d in docs if d["_id"] not in ("d007", "d020")]  # two deleted
    docs[10]["text"] = "an edited text about compilers"
    docs.append({"_id": "d900", "title": "new", "text": "a new document about telescopes"})
    local.write_text("".join(json.dumps(d) + "\n" for d in docs))
    _upload(store, "input/docs.jsonl", local)
    objects = {p: store.read_bytes(p) for p in list_files(store)}
    assert main(["reindex", corpus, "--store", store.url, "--dry-run", "--json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert {p: store.read_bytes(p) for p in list_files(store)} == objects  # a dry run writes nothing
    assert main(["reindex", corpus, "--store", store.url, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert dry["changes"] == result["summary"]["changes"]  # the dry run said what the run did
    assert {m["model"]: m["embed"] for m in dry["models"]} == result["summary"]["embedded"]
    changes = result["summary"]["changes"]
    assert changes == {"new": 1, "changed": 1, "unchanged": 37, "deleted": 2}, changes
    assert result["catalog_version"] == 2 and result["summary"]["documents"] == 39
    store.fs.invalidate_cache()  # this process listed the store before the reindex wrote to it (a CLI starts afresh)
    ids = {r[0] for r in connect(store).execute("SELECT id FROM documents").fetchall()}
    assert len(ids) == 39 and "d900" in ids and not ids & {"d007", "d020"}

    assert main(["status", "--store", store.url]) == 0
    status = capsys.readouterr().out
    assert "published: catalog v2" in status and "healthy: yes" in status and "leftovers: 0 files" in status


class _SlowWorker:
    """Reports half of its job, works, then finishes: the pool must see the half."""

    def __init__(self, context):
        self.report = context.report

    def __call__(self, job):
        import time

        self.report(job.size // 2)
        time.sleep(5)
        return job.size


class _Job:
    name, size = "one shard", 1000


def _slow_factory(context):
    return _SlowWorker(context)


def test_actors_report_progress_within_a_job(ray_cluster):
    from cecq.pipeline import ray_pool

    seen: list[tuple[int, int]] = []
    placed = ray_pool.run_on_actors(_slow_factory, [_Job()], progress=lambda d, t: seen.append((d, t)))
    assert [p.value for p in placed] == [1000]
    assert (500, 1000) in seen and seen[-1] == (1000, 1000), seen
