"""The state of a store without SQL: the published version and its run, every version and
run with its size on storage, the leftovers of crashes, and whether the store is healthy.

Its leftovers are :func:`cecq.catalog.leftovers.find_leftovers`'s with every version up to
the published one kept: what ``cecq gc --keep <versions>`` would remove.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from cecq.catalog.layout import CURRENT
from cecq.catalog.leftovers import Leftovers, find_leftovers
from cecq.catalog.reader import current_version, read_manifest, read_run
from cecq.catalog.records import CatalogManifest, RunRecord
from cecq.storage import Store

_VERSION = re.compile(r"^catalog/v(\d+)/manifest\.json$")


def list_files(store: Store) -> dict[str, int]:
    """Every file under the root, temporary ones included: relative path -> bytes."""
    root = store.path("")
    if not store.fs.exists(root):
        return {}
    found = store.fs.find(root, detail=True)
    return {p[len(root) + 1 :]: int(info.get("size") or 0) for p, info in found.items() if p != root}


def artifact_kind(rel: str) -> str:
    """The top-level folder of an artifact: corpus, models, embeddings, runs, codes or catalog."""
    return rel.split("/", 1)[0] if "/" in rel else "(root)"


@dataclass
class VersionStatus:
    version: int
    published: str
    run_id: str
    compressor_id: str
    documents: int
    codes_bytes: int  # the version's codes shards on storage
    missing: list[str] = field(default_factory=list)  # files the version needs that are not there


@dataclass
class RunStatus:
    run_id: str
    status: str  # "published" or "compressed" (record written by publishing only)
    catalog_version: int | None
    documents: int
    bytes_per_doc: int
    compression: float
    bytes: dict[str, int]  # "runs" (decoder, quantizer, record) and "codes" of this run on storage


@dataclass
class StoreStatus:
    store: str
    published_version: int
    published_run: str | None
    versions: list[VersionStatus]
    runs: list[RunStatus]
    bytes_by_kind: dict[str, int]
    leftovers: Leftovers
    leftover_bytes: int
    problems: list[str]

    @property
    def healthy(self) -> bool:
        """A published version whose every file is there (leftovers are reported, not a fault)."""
        return self.published_version > 0 and not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["healthy"] = self.healthy
        return d

    def table(self) -> str:
        """The status in words and tables, for a person."""
        out = [f"store {self.store}"]
        if self.published_version:
            out.append(f"published: catalog v{self.published_version} (run {self.published_run})")
        else:
            out.append("published: nothing yet (run 'cecq embed-corpus')")
        out += ["", "versions:", "  version  run                   compressor            documents  codes"]
        for v in self.versions:
            mark = "  <- published" if v.version == self.published_version else ""
            out.append(
                f"  v{v.version:<7} {v.run_id:<21} {v.compressor_id:<21} {v.documents:>9,}  "
                f"{_size(v.codes_bytes)}{mark}"
            )
        out += ["", "runs:", "  run                   status      version  documents  bytes/doc  compression  storage"]
        for r in self.runs:
            version = f"v{r.catalog_version}" if r.catalog_version else "-"
            storage = ", ".join(f"{k} {_size(b)}" for k, b in r.bytes.items())
            out.append(
                f"  {r.run_id:<21} {r.status:<11} {version:<8} {r.documents:>9,}  {r.bytes_per_doc:>9}  "
                f"{r.compression:>10.1f}x  {storage}"
            )
        out += ["", "storage by artifact kind:"]
        out += [f"  {k:<11} {_size(b)}" for k, b in sorted(self.bytes_by_kind.items())]
        out.append(f"  {'total':<11} {_size(sum(self.bytes_by_kind.values()))}")
        left = self.leftovers
        out += ["", f"leftovers: {len(left.paths)} files, {_size(self.leftover_bytes)}"]
        if left.temporary:
            out.append(f"  {len(left.temporary)} temporary files of interrupted writes, e.g. {left.temporary[0]}")
        if left.unreferenced:
            out.append(
                f"  {len(left.unreferenced)} files no catalog version uses (runs that never published), "
                f"e.g. {left.unreferenced[0]}; 'cecq gc' removes them"
            )
        out.append("")
        if self.healthy:
            out.append("healthy: yes")
        else:
            out.append("healthy: NO")
            out += [f"  {p}" for p in self.problems]
        return "\n".join(out)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _version_status(store: Store, m: CatalogManifest, files: dict[str, int]) -> VersionStatus:
    needed = [*m.codes, *m.corpus_shards, m.quantizer, f"{m.decoder}/decoder.json", m.corpus_manifest]
    rows = 0
    shards = f"catalog/v{m.version:06d}/shards.parquet"
    if shards in files:
        rows = sum(store.read_parquet(shards, ["rows"]).column("rows").to_pylist())
    else:
        needed.append(shards)
    return VersionStatus(
        version=m.version,
        published=m.published,
        run_id=m.run_id,
        compressor_id=m.compressor_id,
        documents=rows,
        codes_bytes=sum(files.get(p, 0) for p in m.codes),
        missing=[p for p in needed if p not in files],
    )


def _run_status(run: RunRecord, files: dict[str, int]) -> RunStatus:
    sizes = {
        kind: sum(b for p, b in files.items() if p.startswith(f"{kind}/{run.run_id}/")) for kind in ("runs", "codes")
    }
    return RunStatus(
        run_id=run.run_id,
        status=run.status,
        catalog_version=run.catalog_version,
        documents=run.documents,
        bytes_per_doc=run.bytes_per_doc,
        compression=run.compression,
        bytes=sizes,
    )


def store_status(store: Store) -> StoreStatus:
    """Read the store once (one listing, the versions' manifests, the runs' records)."""
    files = list_files(store)
    problems: list[str] = []
    published = 0
    if CURRENT in files:
        try:
            published = current_version(store)
        except ValueError as e:  # a corrupt pointer: say so, do not fail the status
            problems.append(f"{CURRENT} cannot be read: {e}")
    versions = []
    for rel in sorted(files):
        if _VERSION.match(rel):
            versions.append(_version_status(store, read_manifest(store, int(_VERSION.match(rel).group(1))), files))
    runs = [
        _run_status(read_run(store, rel.split("/")[1]), files)
        for rel in sorted(files)
        if rel.startswith("runs/") and rel.endswith("/run.json") and rel.count("/") == 2
    ]
    if published and not any(v.version == published for v in versions):
        problems.append(f"{CURRENT} names catalog v{published}, which has no manifest")
    for v in versions:
        if v.version == published and v.missing:
            problems.append(f"catalog v{v.version} lacks {len(v.missing)} files it needs, e.g. {v.missing[0]}")
    by_kind: dict[str, int] = defaultdict(int)
    for rel, size in files.items():
        by_kind[artifact_kind(rel)] += size
    try:
        leftovers = find_leftovers(store, keep=max(1, published), listing=files)  # one listing
    except (ValueError, OSError) as e:  # a damaged version: reported, the status still prints
        problems.append(f"leftovers cannot be listed: {e}")
        leftovers = Leftovers(kept_versions=[])
    published_run = next((v.run_id for v in versions if v.version == published), None)
    return StoreStatus(
        store=store.url,
        published_version=published,
        published_run=published_run,
        versions=versions,
        runs=runs,
        bytes_by_kind=dict(by_kind),
        leftovers=leftovers,
        leftover_bytes=sum(files.get(p, 0) for p in leftovers.paths),
        problems=problems,
    )
