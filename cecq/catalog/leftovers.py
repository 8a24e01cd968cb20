"""What a store holds that no kept catalog version needs: temporary files left by crashes,
and artifacts (corpus and embedding shards, fitted models, runs' compressors, codes) that
only older versions, or runs that never published, refer to. Read only: ``cecq gc``
deletes what :func:`find_leftovers` lists; ``cecq status`` can show it.

Kept: the published version and the ``keep - 1`` versions below it. Never listed: anything
under ``catalog/`` but temporary files (every version's manifest stays, so the ``versions``
view stays whole), run records (``runs/<id>/run.json``: the ``runs`` view keeps its
history), and anything outside the artifact folders cecq writes. A temporary file of a
search index younger than :data:`INDEX_UPLOAD_GRACE_S` is not listed either: ``cecq index
build`` holds no lease (it would wait for a running embed-corpus), so it may be uploading it.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from cecq.catalog.layout import ARTIFACT_FOLDERS, GUARD_KINDS, LEASE, embedding_path, guard_shard
from cecq.catalog.reader import current_version, read_manifest
from cecq.catalog.records import CatalogManifest, CorpusManifest
from cecq.storage import Store

TEMPORARY = ".tmp-"  # the infix of Store.write_bytes's temporary files
INDEX_UPLOADS = "catalog/v*/index/*"  # where cecq index build writes, without the lease
INDEX_UPLOAD_GRACE_S = 3600.0  # an index of 10M codes uploads in minutes; a crashed one waits an hour


@dataclass
class Leftovers:
    """Relative paths a ``cecq gc`` would remove, and the versions it keeps."""

    kept_versions: list[int]
    temporary: list[str] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return sorted(self.temporary + self.unreferenced)


def referenced_paths(store: Store, manifest: CatalogManifest) -> tuple[set[str], set[str]]:
    """``(files, folders)`` a version needs to be read, searched and reindexed."""
    corpus = CorpusManifest.from_dict(store.read_json(manifest.corpus_manifest))
    files = {*manifest.codes, *manifest.corpus_shards, manifest.corpus_manifest, manifest.quantizer}
    files.update(embedding_path(k, s) for k in manifest.model_keys for s in corpus.shards)
    folders = {manifest.decoder, *(f"models/{k}" for k in manifest.model_keys)}
    return files, folders


def guard_paths(store: Store, manifest: CatalogManifest) -> set[str]:
    """The guarded weights' pseudo-queries and their embeddings that a version's run may have
    written (not needed to read the version: kept so that a rerun of its run skips them)."""
    corpus = CorpusManifest.from_dict(store.read_json(manifest.corpus_manifest))
    guard = [guard_shard(corpus, manifest.pipeline_config.decoder.seed, kind) for kind in GUARD_KINDS]
    return {g.path for g in guard} | {embedding_path(k, g) for k in manifest.model_keys for g in guard}


def find_leftovers(store: Store, keep: int = 1, listing: Iterable[str] | None = None) -> Leftovers:
    """The leftovers of ``store`` when the published version and ``keep - 1`` below it are kept.
    ``listing``: the store's relative paths where the caller has just listed them (else listed here)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the published version is always kept), got {keep}")
    current = current_version(store)
    kept = list(range(max(1, current - keep + 1), current + 1)) if current else []
    files: set[str] = set()
    folders: set[str] = set()
    for v in kept:
        manifest = read_manifest(store, v)
        f, d = referenced_paths(store, manifest)
        files |= f | guard_paths(store, manifest)
        folders |= d
    out = Leftovers(kept)
    if listing is None:
        store.forget()
        listing = store.walk_files("")
    for rel in sorted(listing):
        top = rel.split("/", 1)[0]
        if TEMPORARY in rel.rsplit("/", 1)[-1]:
            ours = (top in ARTIFACT_FOLDERS or top == "catalog") and not rel.startswith(LEASE)  # the lease: live
            if ours and not (fnmatch.fnmatchcase(rel, INDEX_UPLOADS) and _recent(store, rel)):
                out.temporary.append(rel)
        elif (
            top in ARTIFACT_FOLDERS
            and rel not in files
            and not rel.endswith("/run.json")
            and not any(rel.startswith(d + "/") for d in folders)
        ):
            out.unreferenced.append(rel)
    return out


def _recent(store: Store, rel: str) -> bool:
    """Whether ``rel`` was written to within :data:`INDEX_UPLOAD_GRACE_S` (an upload in flight)."""
    modified = store.modified(rel)
    return modified is not None and time.time() - modified < INDEX_UPLOAD_GRACE_S
