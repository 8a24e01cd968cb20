from __future__ import annotations

from prefect import get_run_logger, task

from cecq.catalog import CatalogManifest, CodesShard, CorpusManifest, EmbeddingResult
from cecq.config import PipelineConfig
from cecq.pipeline.fanout import compress_corpus
from cecq.pipeline.publish import choose_compressor
from cecq.pipeline.steps import reusable_compressor, train_compressor
from cecq.storage import Store
from tasks.progress import progress_reporter
from tasks.retry import retry_unless_bad_input


@task(name="train-compressor", retry_condition_fn=retry_unless_bad_input, retries=1)
def train_compressor_task(
    config: PipelineConfig, manifest_path: str, run_id: str, model_keys: list[str]
) -> tuple[str, str]:
    """Train the decoder and fit the quantizer on a sample; return their paths."""
    store = Store(config.store)
    manifest = CorpusManifest.from_dict(store.read_json(manifest_path))
    paths = train_compressor(store, run_id, manifest, model_keys, config, progress_reporter("train decoder", "epochs"))
    get_run_logger().info("decoder %s, quantizer %s", *paths)
    return paths


@task(name="compress", retry_condition_fn=retry_unless_bad_input, retries=2, retry_delay_seconds=10)
def compress_task(
    store_url: str,
    manifest_path: str,
    model_keys: list[str],
    decoder: str,
    quantizer: str,
    compressor_id: str,
    ray_address: str | None = None,
) -> list[CodesShard]:
    """Compress every shard into packed codes on Ray; committed shards are skipped."""
    store = Store(store_url)
    manifest = CorpusManifest.from_dict(store.read_json(manifest_path))
    results = compress_corpus(
        store,
        manifest,
        model_keys,
        decoder,
        quantizer,
        compressor_id,
        ray_address,
        progress=progress_reporter("compress"),
    )
    get_run_logger().info("compressed %d shards (%d already committed)", len(results), sum(r.skipped for r in results))
    return results


@task(name="plan-compressor")
def plan_compressor_task(
    config: PipelineConfig, manifest_path: str, previous: CatalogManifest | None, embedding: list[EmbeddingResult]
) -> tuple[str, str, str] | None:
    """The previous (compressor_id, decoder, quantizer) to reuse, or None to train a new one."""
    store = Store(config.store)
    rows = CorpusManifest.from_dict(store.read_json(manifest_path)).rows
    changed = max((e.embedded_documents for e in embedding), default=0) / max(1, rows)
    reused = reusable_compressor(
        store,
        choose_compressor(config, previous, changed, [e.fingerprint for e in embedding]),
        config.decoder_policy,
    )
    get_run_logger().info(
        "%.1f%% of documents new or changed; %s",
        100 * changed,
        f"reusing compressor {reused[0]}" if reused else "training a new compressor",
    )
    return reused
