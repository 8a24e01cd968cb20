from __future__ import annotations

from prefect import get_run_logger, task

from cecq.catalog import CatalogManifest, CorpusManifest, NoCatalogError, current_manifest
from cecq.catalog.layout import manifest_path
from cecq.pipeline.corpus import shard_corpus
from cecq.pipeline.steps import fit_encoder
from cecq.storage import Store
from tasks.retry import retry_unless_bad_input


@task(name="shard-corpus", retry_condition_fn=retry_unless_bad_input, retries=2, retry_delay_seconds=5)
def shard_corpus_task(
    corpus: str, store_url: str, shard_rows: int, id_column: str | None = None, text_columns: list[str] | None = None
) -> str:
    """Cut the corpus into committed shards; return the manifest's path."""
    store = Store(store_url)
    manifest = shard_corpus(corpus, store, shard_rows, id_column, text_columns)
    get_run_logger().info(
        "corpus %s: %d documents, %d shards, %d empty texts",
        manifest.corpus_url,  # redacted
        manifest.rows,
        len(manifest.shards),
        manifest.empty_texts,
    )
    return manifest_path(manifest)


@task(name="fit-encoder", retry_condition_fn=retry_unless_bad_input, retries=1)
def fit_encoder_task(store_url: str, manifest_path: str, model: str) -> str:
    """Fit a corpus-fitted encoder (e.g. lexical) on the corpus once; return its folder."""
    store = Store(store_url)
    return fit_encoder(store, CorpusManifest.from_dict(store.read_json(manifest_path)), model)


@task(name="load-previous")
def load_previous_task(store_url: str) -> CatalogManifest | None:
    """The published catalog manifest of the store, or None for a new store."""
    try:
        return current_manifest(Store(store_url))
    except NoCatalogError:
        return None
