"""The end-of-run summary: documents new, changed, unchanged and deleted against the
previous corpus, and the table / Markdown a person reads."""

from __future__ import annotations

import json

from cecq.pipeline.corpus import shard_corpus
from cecq.pipeline.summary import DocumentChanges, RunSummary, document_changes
from cecq.storage import Store


def _corpus(path, docs):
    path.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in docs.items()))
    return str(path)


def test_changes_count_new_changed_unchanged_and_deleted(tmp_path):
    store = Store(str(tmp_path / "store"))
    docs = {f"d{i:02d}": f"text {i}" for i in range(10)}
    first = shard_corpus(_corpus(tmp_path / "c.jsonl", docs), store, shard_rows=4)
    assert document_changes(store, first, None) == DocumentChanges(new=10)
    del docs["d01"], docs["d08"]  # deletions move later documents into other shards
    docs["d05"] = "an edited text"
    docs["d99"] = "a new one"
    second = shard_corpus(_corpus(tmp_path / "c.jsonl", docs), store, shard_rows=4)
    assert document_changes(store, second, first) == DocumentChanges(new=1, changed=1, unchanged=7, deleted=2)
    assert document_changes(store, second, second) == DocumentChanges(unchanged=9)


def test_the_table_and_markdown_say_what_was_published_and_what_to_try():
    summary = RunSummary(
        run_id="run-1",
        catalog_version=2,
        store="s3://bucket/my store",
        corpus="docs|2.jsonl",
        documents=9,
        changes=DocumentChanges(new=1, changed=1, unchanged=7, deleted=2),
        models=["all-MiniLM-L6-v2", "lexical"],
        embedded={"all-MiniLM-L6-v2": 2, "lexical": 2},
        dims=768,
        code_layout="product codes of 53 bytes",
        bytes_per_doc=53,
        compression=48.3,
        compressor="reused from run-0",
        plan="target 48x",
        seconds={"shard": 1.0, "embed lexical": 2.5},
        query="vitamin D | bones",
    )
    table = summary.table()
    assert "9: 1 new, 1 changed, 7 unchanged, 2 deleted" in table
    assert "53 bytes a document (48.3x)" in table and "total (s)" in table and "3.5" in table
    assert "cecq search --store 's3://bucket/my store' 'vitamin D | bones' -k 5" in table
    assert "cecq sql --store 's3://bucket/my store' 'SELECT count(*)" in table
    assert "| docs\\|2.jsonl |" in summary.markdown()  # table cells escaped
    assert RunSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary
