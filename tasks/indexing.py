"""The optional index step of embed-corpus and reindex: a FAISS index of the version just
published (see :mod:`cecq.pipeline.index`)."""

from __future__ import annotations

from prefect import task

from cecq.catalog import read_manifest
from cecq.config import IndexConfig
from cecq.pipeline.index import build_index
from cecq.storage import Store
from tasks.retry import retry_unless_bad_input


@task(name="build-index", retry_condition_fn=retry_unless_bad_input, retries=2, retry_delay_seconds=5)
def build_index_task(store_url: str, version: int, kind: str, nlist: int | None = None) -> str:
    """Build (or find) the ``kind`` index of catalog ``version``; return its name."""
    store = Store(store_url)
    return build_index(store, IndexConfig(kind=kind, nlist=nlist), read_manifest(store, version)).name
