"""``cecq reindex --dry-run`` on a real store (the legacy fixture): it says what would be
embedded, reused and deleted and whether ``auto`` would retrain, and writes nothing."""

from __future__ import annotations

import hashlib
import json
import shutil

from cecq.cli import main
from tests.helpers.paths import FIXTURES


def _digests(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_dry_run_counts_and_writes_nothing(tmp_path, monkeypatch, capsys):
    work = tmp_path / "legacy"
    shutil.copytree(FIXTURES / "legacy-store", work)
    monkeypatch.chdir(work)  # the fixture's runs name corpus.jsonl and store relatively
    docs = [json.loads(line) for line in (work / "corpus.jsonl").read_text().splitlines()]
    n = len(docs)
    docs[45]["text"] = "an edited comet and telescope"  # the last shard changes
    deleted = docs.pop(44)["_id"]
    docs.append({"_id": "d900", "title": "new", "text": "a new document about kernels"})
    (work / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    before = _digests(work / "store")

    assert main(["reindex", "corpus.jsonl", "--store", "store", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["changes"] == {"new": 1, "changed": 1, "unchanged": n - 2, "deleted": 1}, plan
    [model] = plan["models"]
    assert model["model"] == "lexical" and model["embed"] == 2 and model["embed"] + model["reuse"] == n
    assert plan["retrain"] is False and plan["decoder_policy"] == "auto"  # 2 of 46 is under 25%

    assert main(["reindex", "corpus.jsonl", "--store", "store", "--dry-run", "--retrain-fraction", "0.01"]) == 0
    table = capsys.readouterr().out
    assert "nothing written" in table and "1 deleted" in table and "retrain the decoder" in table
    assert "lexical: embed 2, reuse" in table
    assert _digests(work / "store") == before, f"{deleted} deleted: the store must stay byte-identical"
