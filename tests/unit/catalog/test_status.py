"""``cecq status`` on a real store (the legacy fixture, three published versions): what is
published, sizes per artifact kind, leftovers of crashes, and health."""

from __future__ import annotations

import json
import shutil

import pytest

from cecq.catalog.leftovers import find_leftovers
from cecq.catalog.status import store_status
from cecq.cli import main
from cecq.storage import Store
from tests.helpers.paths import FIXTURES

EXPECTED = json.loads((FIXTURES / "legacy-store" / "expected.json").read_text())


@pytest.fixture
def store_dir(tmp_path):
    shutil.copytree(FIXTURES / "legacy-store" / "store", tmp_path / "store")
    return tmp_path / "store"


def test_a_published_store_is_healthy_with_its_versions_runs_and_sizes(store_dir, capsys):
    status = store_status(Store(str(store_dir)))
    assert status.healthy and status.published_version == 3
    assert status.published_run == EXPECTED["runs"][-1]["run_id"]
    assert [v.version for v in status.versions] == [1, 2, 3]
    assert {r.run_id for r in status.runs} == {r["run_id"] for r in EXPECTED["runs"]}
    on_disk = {p.relative_to(store_dir).parts[0]: 0 for p in store_dir.rglob("*") if p.is_file()}
    for p in store_dir.rglob("*"):
        if p.is_file():
            on_disk[p.relative_to(store_dir).parts[0]] += p.stat().st_size
    assert status.bytes_by_kind == on_disk
    assert all(r.bytes["runs"] > 0 and r.bytes["codes"] > 0 for r in status.runs)
    assert not status.leftovers.paths
    assert main(["status", "--store", str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert "published: catalog v3" in out and "healthy: yes" in out and "leftovers: 0 files" in out


def test_leftovers_of_crashes_are_listed_and_a_broken_version_is_unhealthy(store_dir, capsys):
    (store_dir / "codes" / "x.parquet.tmp-0123abcd").write_bytes(b"half")
    dead = store_dir / "runs" / "run-0000000000000000" / "decoder"
    dead.mkdir(parents=True)
    (dead / "decoder.safetensors").write_bytes(b"weights")
    (store_dir / "codes" / "run-0000000000000000").mkdir()
    (store_dir / "codes" / "run-0000000000000000" / "s.parquet").write_bytes(b"codes")
    store = Store(str(store_dir))
    left = find_leftovers(store, keep=3)  # what status lists: every version kept
    assert left.temporary == ["codes/x.parquet.tmp-0123abcd"]
    assert left.unreferenced == [
        "codes/run-0000000000000000/s.parquet",
        "runs/run-0000000000000000/decoder/decoder.safetensors",
    ]
    assert store_status(store).leftovers.paths == left.paths
    assert store_status(store).leftover_bytes == 4 + 7 + 5 and store_status(store).healthy  # leftovers are no fault
    before = {p: p.read_bytes() for p in store_dir.rglob("*") if p.is_file()}
    published = store_status(store).versions[-1]
    gone = store_dir / json.loads((store_dir / "catalog/v000003/manifest.json").read_text())["codes"][0]
    gone.unlink()
    assert main(["status", "--store", str(store_dir), "--json"]) == 1
    status = json.loads(capsys.readouterr().out)
    assert status["healthy"] is False and "catalog v3 lacks 1 files" in status["problems"][0]
    assert published.version == 3
    after = {p: p.read_bytes() for p in store_dir.rglob("*") if p.is_file()}
    assert after == {p: b for p, b in before.items() if p != gone}  # status writes nothing
