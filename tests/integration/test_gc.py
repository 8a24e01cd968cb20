"""``cecq gc`` on a real store with history (a copy of ``tests/fixtures/legacy-store``: three
published versions of three runs) with the leftovers crashes leave planted in it: what it
removes, what it never touches, and that it refuses while a run holds the store."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from cecq.catalog import connect, current_manifest, read_manifest
from cecq.catalog.leftovers import INDEX_UPLOAD_GRACE_S, find_leftovers, referenced_paths
from cecq.cli import main
from cecq.errors import StoreBusyError
from cecq.pipeline.publish import claim_store, collect_garbage
from cecq.storage import Store
from tests.helpers.paths import FIXTURES

V1, V2, V3 = "run-ca0eceed1b092d2d", "run-1159ae859ee948c3", "run-78e4e93f0562c700"


def files(root: Path) -> dict[str, str]:
    """Every file's digest, but the lease's (gc itself claims the store)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and p.name != "lease.json"
    }


@pytest.fixture
def store_dir(tmp_path) -> Path:
    """The legacy store, with what crashes leave: temporary files, a crashed run's decoder
    and partial codes, and a version claimed by a run that died before publishing it."""
    root = tmp_path / "store"
    shutil.copytree(FIXTURES / "legacy-store" / "store", root)
    (root / "codes" / V3 / "x.parquet.tmp-0123abcd").write_bytes(b"half a shard")
    (root / "catalog" / "current.json.tmp-4567ef01").write_bytes(b"{")
    (root / "runs" / "run-crashed" / "decoder").mkdir(parents=True)
    (root / "runs" / "run-crashed" / "decoder" / "decoder.safetensors").write_bytes(b"weights")
    (root / "codes" / "run-crashed").mkdir()
    (root / "codes" / "run-crashed" / "s-00000.parquet").write_bytes(b"codes")
    orphan = (root / "catalog" / "v000003" / "manifest.json").read_text().replace(V3, "run-crashed")
    (root / "catalog" / "v000004").mkdir()
    (root / "catalog" / "v000004" / "manifest.json").write_text(orphan.replace('"version": 3', '"version": 4'))
    (root / "notes.txt").write_text("the user's own file")
    return root


def test_gc_removes_leftovers_and_what_only_older_versions_use(store_dir, capsys):
    store = Store(str(store_dir))
    before = files(store_dir)
    published = connect(store).execute("SELECT id, code FROM documents ORDER BY id").fetchall()
    needed, folders = referenced_paths(store, current_manifest(store))

    assert main(["gc", "--store", str(store_dir), "--keep", "3", "--dry-run"]) == 0
    assert files(store_dir) == before  # a dry run removes nothing
    keep3 = find_leftovers(store, keep=3)
    assert keep3.kept_versions == [1, 2, 3]
    assert keep3.temporary == ["catalog/current.json.tmp-4567ef01", f"codes/{V3}/x.parquet.tmp-0123abcd"]
    assert keep3.unreferenced == ["codes/run-crashed/s-00000.parquet", "runs/run-crashed/decoder/decoder.safetensors"]

    assert main(["gc", "--store", str(store_dir)]) == 0  # --keep 1: only the published version
    out = capsys.readouterr().out
    assert "removed 2 temporary and" in out and "kept versions [3]" in out
    after = files(store_dir)
    removed = set(before) - set(after)
    assert not set(after) - set(before) and all(after[p] == before[p] for p in after)  # nothing rewritten
    assert {p for p in removed if p.startswith(("codes/", "runs/"))} == {
        *(f"codes/{r}/{p.name}" for r in (V1, V2) for p in (FIXTURES / "legacy-store/store/codes" / r).iterdir()),
        *(f"runs/{r}/{f}" for r in (V1, V2) for f in ("decoder/decoder.json", "decoder/decoder.safetensors")),
        *(f"runs/{r}/quantizer.parquet" for r in (V1, V2)),
        f"codes/{V3}/x.parquet.tmp-0123abcd",
        "codes/run-crashed/s-00000.parquet",
        "runs/run-crashed/decoder/decoder.safetensors",
    }
    assert removed - {p for p in removed if p.startswith(("codes/", "runs/"))} == {"catalog/current.json.tmp-4567ef01"}
    # What the published version needs (its corpus, embeddings, fitted model, compressor, codes)
    # stays, as do every version's manifest, every run record and the user's own files.
    assert needed <= set(after) and all(any(p.startswith(d + "/") for p in after) for d in folders)
    assert {f"catalog/v00000{v}/manifest.json" for v in (1, 2, 3, 4)} <= set(after)
    assert {f"runs/{r}/run.json" for r in (V1, V2, V3)} <= set(after) and "notes.txt" in after
    assert not (store_dir / "codes" / V1).exists()  # emptied folders go too
    con = connect(store)
    assert con.execute("SELECT id, code FROM documents ORDER BY id").fetchall() == published
    assert [r[0] for r in con.execute("SELECT version FROM versions ORDER BY version").fetchall()] == [1, 2, 3, 4]
    assert read_manifest(store, 4).run_id == "run-crashed"
    assert find_leftovers(store, keep=1).paths == []  # a second gc has nothing to do


def test_gc_refuses_while_a_run_holds_the_store(store_dir, capsys):
    store = Store(str(store_dir))
    before = files(store_dir)
    with claim_store(store, "embed-corpus"):
        with pytest.raises(StoreBusyError, match="claimed by embed-corpus"):
            collect_garbage(store)
        assert main(["gc", "--store", str(store_dir)]) == 2
        assert "claimed by embed-corpus" in capsys.readouterr().err
    assert files(store_dir) == before
    assert main(["gc", "--store", str(store_dir), "--keep", "0"]) == 2
    assert "--keep must be >= 1" in capsys.readouterr().err


def test_an_index_upload_in_flight_is_left_alone_and_a_crashed_ones_removed_later(store_dir):
    """cecq index build holds no lease: gc spares a young temporary file of an index upload
    and removes it once it is older than the grace a crashed upload gets."""
    upload = store_dir / "catalog" / "v000003" / "index" / "flat.faiss.tmp-89ab"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(b"half an index")
    store = Store(str(store_dir))
    assert "catalog/v000003/index/flat.faiss.tmp-89ab" not in find_leftovers(store).temporary
    assert "catalog/current.json.tmp-4567ef01" in find_leftovers(store).temporary  # other temporaries go
    old = time.time() - INDEX_UPLOAD_GRACE_S - 60
    os.utime(upload, (old, old))
    assert "catalog/v000003/index/flat.faiss.tmp-89ab" in find_leftovers(store).temporary
