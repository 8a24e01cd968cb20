"""What a run published, in words a person reads at the end of ``embed-corpus`` and
``reindex``: documents new, changed, unchanged and deleted against the previous version,
models, bytes a document, seconds per step, and the commands to try next."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from cecq.catalog.records import CorpusManifest, RunRecord
from cecq.quantization.registry import quantizer_class
from cecq.storage import Store

QUERY_WORDS = 6  # words of the first document's text in the suggested search


@dataclass
class DocumentChanges:
    """Documents of a corpus against the previous published version's corpus (by id and content hash)."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0

    @property
    def embedded(self) -> int:
        return self.new + self.changed


def id_hashes(store: Store, paths: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in paths:
        t = store.read_parquet(p, ["id", "content_hash"])
        out.update(zip(t.column("id").to_pylist(), t.column("content_hash").to_pylist()))
    return out


def document_changes(store: Store, manifest: CorpusManifest, previous: CorpusManifest | None) -> DocumentChanges:
    """Compare two corpus manifests. Shards present in both (same name and content) are
    unchanged without being read; only the others are read, ids and hashes only."""
    if previous is None:
        return DocumentChanges(new=manifest.rows)
    before, after = {s.key: s for s in previous.shards}, {s.key: s for s in manifest.shards}
    same = before.keys() & after.keys()
    old = id_hashes(store, [s.path for k, s in before.items() if k not in same])
    now = id_hashes(store, [s.path for k, s in after.items() if k not in same])
    return compare_documents(old, now, unchanged=sum(after[k].rows for k in same))


def compare_documents(old: dict[str, str], now: dict[str, str], unchanged: int = 0) -> DocumentChanges:
    """Count ``id -> content hash`` maps against each other (plus ``unchanged`` counted elsewhere)."""
    changes = DocumentChanges(unchanged=unchanged)
    for doc, digest in now.items():
        if doc not in old:
            changes.new += 1
        elif old[doc] == digest:
            changes.unchanged += 1
        else:
            changes.changed += 1
    changes.deleted = sum(1 for doc in old if doc not in now)
    return changes


def first_words(store: Store, manifest: CorpusManifest, words: int = QUERY_WORDS) -> str:
    """The opening words of the corpus's first non-empty text: a query that finds something."""
    for shard in manifest.shards:
        for text in store.read_parquet(shard.path, ["text"]).column("text").to_pylist():
            if text and text.strip():
                return " ".join(text.split()[:words])
    return "example query"


@dataclass
class RunSummary:
    """The end-of-run summary: printed as a table by the CLI, a Markdown artifact in Prefect."""

    run_id: str
    catalog_version: int
    store: str
    corpus: str
    documents: int
    changes: DocumentChanges
    models: list[str]
    embedded: dict[str, int]  # documents each model embedded in this run
    dims: int
    code_layout: str
    bytes_per_doc: int
    compression: float
    compressor: str  # "trained" or "reused from <id>"
    plan: str | None = None  # the compression target's choice and reason
    seconds: dict[str, float] = field(default_factory=dict)
    query: str = "example query"

    @property
    def commands(self) -> list[str]:
        store = shlex.quote(self.store)
        sql = "SELECT count(*) AS documents, any_value(octet_length(code)) AS bytes FROM documents"
        return [
            f"cecq sql --store {store} {shlex.quote(sql)}",
            f"cecq search --store {store} {shlex.quote(self.query)} -k 5",
            f"cecq status --store {store}",
        ]

    def rows(self) -> list[tuple[str, str]]:
        c = self.changes
        rows = [
            ("catalog version", f"v{self.catalog_version} (run {self.run_id})"),
            ("store", self.store),
            ("corpus", self.corpus),
            (
                "documents published",
                f"{self.documents:,}: {c.new:,} new, {c.changed:,} changed, {c.unchanged:,} unchanged, "
                f"{c.deleted:,} deleted",
            ),
            ("models", ", ".join(f"{m} ({self.embedded.get(m, 0):,} embedded)" for m in self.models)),
            (
                "codes",
                f"{self.bytes_per_doc} bytes a document ({self.compression:.1f}x): {self.dims} dims, "
                f"{self.code_layout}",
            ),
            ("compressor", self.compressor),
        ]
        if self.plan:
            rows.append(("chosen by", self.plan))
        rows += [(f"{step} (s)", f"{s:.1f}") for step, s in self.seconds.items()]
        rows.append(("total (s)", f"{sum(self.seconds.values()):.1f}"))
        return rows

    def table(self) -> str:
        """A plain-text table and the commands to try next."""
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        lines = [f"cecq: published catalog v{self.catalog_version}", ""]
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        lines += ["", "try next:"] + [f"  {c}" for c in self.commands]
        return "\n".join(lines)

    def markdown(self) -> str:
        cell = str.maketrans({"|": "\\|", "\n": " "})
        body = "\n".join(f"| {k} | {v.translate(cell)} |" for k, v in self.rows())
        commands = "\n".join(self.commands)
        return (
            f"# cecq catalog v{self.catalog_version}\n\n| | |\n|---|---|\n{body}\n\n"
            f"Try next:\n\n```sh\n{commands}\n```\n"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["commands"] = self.commands
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSummary:
        d = {k: v for k, v in d.items() if k != "commands"}
        d["changes"] = DocumentChanges(**d["changes"])
        return cls(**d)


def summarise_run(
    store: Store,
    run: RunRecord,
    version: int,
    changes: DocumentChanges,
    manifest: CorpusManifest,
    seconds: dict[str, float],
) -> RunSummary:
    """The summary of a published run."""
    plan = run.compression_plan
    return RunSummary(
        run_id=run.run_id,
        catalog_version=version,
        store=store.url,
        corpus=run.corpus,
        documents=run.documents,
        changes=changes,
        models=list(run.models),
        embedded={e.model: e.embedded_documents for e in run.embedding},
        dims=run.dims,
        code_layout=quantizer_class(run.quantization).describe(run.bits, run.budget_bytes),
        bytes_per_doc=run.bytes_per_doc,
        compression=run.compression,
        compressor="trained in this run" if run.compressor_id == run.run_id else f"reused from {run.compressor_id}",
        plan=plan["reason"] if plan else None,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        query=first_words(store, manifest),
    )
