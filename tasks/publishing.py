from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from cecq.catalog import CodesShard, CorpusManifest, EmbeddingResult, read_run
from cecq.config import PipelineConfig
from cecq.pipeline.publish import describe_run, publish
from cecq.pipeline.summary import document_changes, summarise_run
from cecq.storage import Store
from cecq.targets import CompressionPlan
from tasks.retry import retry_unless_bad_input


@task(name="publish-catalog", retry_condition_fn=retry_unless_bad_input, retries=2, retry_delay_seconds=5)
def publish_task(
    config: PipelineConfig,
    run_id: str,
    manifest_path: str,
    embedding: list[EmbeddingResult],
    decoder: str,
    quantizer: str,
    compressor_id: str,
    started: str,
    shards: list[CodesShard],
    plan: CompressionPlan | None = None,
    lease_owner: str | None = None,
) -> int:
    """Publish the compressed shards as the next catalog version, checking that the run
    still holds the store's lease ``lease_owner``."""
    store = Store(config.store)
    manifest = CorpusManifest.from_dict(store.read_json(manifest_path))
    run = describe_run(store, config, run_id, manifest, embedding, decoder, quantizer, compressor_id, started, plan)
    return publish(store, run, shards, lease_owner)


@task(name="summarise-run")
def summarise_task(
    store_url: str,
    run_id: str,
    version: int,
    manifest_path: str,
    previous_manifest_path: str | None,
    seconds: dict[str, float],
) -> dict:
    """The run's summary (documents new/changed/unchanged/deleted, sizes, timings, next
    commands) as a Markdown artifact and a log line; returned as a dict."""
    store = Store(store_url)
    manifest = CorpusManifest.from_dict(store.read_json(manifest_path))
    previous = CorpusManifest.from_dict(store.read_json(previous_manifest_path)) if previous_manifest_path else None
    summary = summarise_run(
        store, read_run(store, run_id), version, document_changes(store, manifest, previous), manifest, seconds
    )
    create_markdown_artifact(key="cecq-run-summary", description=f"cecq run {run_id}", markdown=summary.markdown())
    get_run_logger().info(
        "published catalog v%d: %d documents, %d bytes a document (%.1fx); the summary is artifact cecq-run-summary",
        version,
        summary.documents,
        summary.bytes_per_doc,
        summary.compression,
    )
    return summary.to_dict()
