"""``cecq gc`` after a crash: a second ``cecq embed-corpus`` (some documents edited) is
SIGKILLed with its process group while compressing, by the kill mechanism of
``test_crash_resume.py``; ``cecq gc`` refuses while that run is alive and, after the kill,
removes exactly what the dead run added, leaving the published version byte for byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cecq.catalog import connect
from cecq.errors import StoreBusyError
from cecq.pipeline.publish import collect_garbage
from cecq.storage import Store
from tests.e2e.test_crash_resume import CECQ, DOCS, cecq_command, committed, env_for, run_until
from tests.helpers.corpora import write_corpus
from tests.helpers.e2e import run_cli

pytestmark = pytest.mark.slow


def files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and p.name != "lease.json"
    }


def test_gc_after_a_run_killed_mid_compress_removes_exactly_what_it_added(tmp_path, tiny_model_dir):
    corpus, store = tmp_path / "docs.jsonl", tmp_path / "store"
    env = env_for(tmp_path)
    write_corpus(corpus, n=DOCS)
    assert not run_until(cecq_command(corpus, store, tiny_model_dir), env, None)
    published = files(store)
    [first_codes] = {p.parent.name for p in committed(store, "codes/*/*.parquet")}
    ids = connect(Store(str(store))).execute("SELECT id, code FROM documents ORDER BY id").fetchall()

    write_corpus(corpus, n=DOCS, edits={0: "a changed first document", 100: "another edit"})
    refused: list[str] = []

    def while_running() -> bool:
        lease = store / "catalog" / "lease.json"
        if not refused and lease.exists() and not json.loads(lease.read_text())["released"]:
            try:
                collect_garbage(Store(str(store)))
                refused.append("gc ran while the run held the store")
            except StoreBusyError as e:
                refused.append(str(e))
        return any(p.parent.name != first_codes for p in committed(store, "codes/*/*.parquet"))

    assert run_until(cecq_command(corpus, store, tiny_model_dir), env, while_running)
    assert refused and "claimed by embed-corpus" in refused[0], refused
    added = set(files(store)) - set(published)
    assert any(p.startswith("codes/") for p in added) and any(p.startswith("embeddings/") for p in added)

    out = run_cli([CECQ, "gc", "--store", str(store), "--json"], env).stdout
    removed = json.loads(out)["removed"]
    assert files(store) == published  # what the dead run added is gone; nothing published was touched
    assert set(removed) >= added and not set(removed) & set(published)
    assert connect(Store(str(store))).execute("SELECT id, code FROM documents ORDER BY id").fetchall() == ids
