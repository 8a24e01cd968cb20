from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from cecq.catalog import CodesShard, CorpusManifest, EmbeddingResult
from cecq.config import PipelineConfig
from cecq.pipeline.publish import describe_run, publish
from cecq.storage import Store
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
    lease_owner: str | None = None,
) -> int:
    """Publish the compressed shards as the next catalog version (checking that the run
    still holds the store's lease ``lease_owner``), with a summary artifact."""
    store = Store(config.store)
    manifest = CorpusManifest.from_dict(store.read_json(manifest_path))
    run = describe_run(store, config, run_id, manifest, embedding, decoder, quantizer, compressor_id, started)
    version = publish(store, run, shards, lease_owner)
    rows = "\n".join(
        f"| {m.model} | {m.embedded_documents} | {m.skipped_shards} | {m.seconds:.1f} |" for m in run.embedding
    )
    create_markdown_artifact(
        key="cecq-run-summary",
        description=f"cecq run {run.run_id}",
        markdown=(
            f"# cecq catalog v{version}\n\n"
            f"run `{run.run_id}` · corpus `{run.corpus}` · store `{config.store}`\n\n"
            f"documents: {run.documents} · shards: {len(shards)} · {run.dims} dims, "
            f"{config.quantizer.describe(run.bits, run.budget_bytes)} "
            f"= {run.bytes_per_doc} bytes/doc ({run.compression:.1f}x)\n\n"
            "| model | embedded documents | shards skipped | actor seconds |\n|---|---|---|---|\n" + rows
        ),
    )
    return version
