from __future__ import annotations

from prefect import get_run_logger, task

from cecq.catalog import CorpusManifest, EmbeddingResult
from cecq.config import Precision
from cecq.encoders import model_fingerprint
from cecq.pipeline.fanout import embed_models
from cecq.storage import Store
from tasks.progress import progress_reporter
from tasks.retry import retry_unless_bad_input


@task(name="embed-models", retry_condition_fn=retry_unless_bad_input, retries=2, retry_delay_seconds=10)
def embed_models_task(
    store_url: str,
    manifest_path: str,
    models: list[str],
    batch_size: int = 64,
    ray_address: str | None = None,
    previous_manifest_path: str | None = None,
    fingerprints: list[str | None] | None = None,
    guard_seed: int | None = None,
    precision: Precision = "auto",
) -> list[EmbeddingResult]:
    """Embed every shard with every base model (weights ``fingerprints``) on one pool of Ray
    actors; committed shards are skipped. One result per model. With ``guard_seed``, the
    pretrained models also embed the guarded weights' pseudo-queries cut with that seed.
    ``precision``: the pretrained models' number format (``auto``: fp16 on a GPU, fp32 on the CPU)."""
    store = Store(store_url)
    manifest = CorpusManifest.from_dict(store.read_json(manifest_path))
    previous = CorpusManifest.from_dict(store.read_json(previous_manifest_path)) if previous_manifest_path else None
    results = embed_models(
        store,
        manifest,
        models,
        batch_size,
        ray_address,
        previous,
        progress={m: progress_reporter(f"embed {m}") for m in models},
        fingerprints=fingerprints,
        guard_seed=guard_seed,
        precision=precision,
    )
    for result in results:
        get_run_logger().info(
            "%s: embedded %d documents (%d shards already committed), %.1f docs/s of actor time",
            result.model,
            result.embedded_documents,
            result.skipped_shards,
            result.embedded_documents / max(result.seconds, 1e-9),
        )
    return results


@task(name="fingerprint-models", retry_condition_fn=retry_unless_bad_input, retries=1)
def fingerprint_models_task(models: list[str]) -> list[str | None]:
    """The fingerprint of every base model's weights, where the run starts (its actors check theirs)."""
    fingerprints = [model_fingerprint(m) for m in models]
    get_run_logger().info("model weights: %s", ", ".join(f"{m} {f or '-'}" for m, f in zip(models, fingerprints)))
    return fingerprints
