"""Flow ``embed-corpus``: shard -> embed with every model (one Ray pool) -> train -> compress -> publish.
Its parameters' defaults are :class:`cecq.config.PipelineConfig`'s."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace

from prefect import flow

from cecq.catalog import CatalogManifest, run_id_for
from cecq.config import PIPELINE_DECODER, IndexConfig, PipelineConfig
from cecq.encoders import is_fitted
from cecq.pipeline.publish import claim_store
from cecq.pipeline.steps import needs_guard
from cecq.storage import Store
from cecq.targets import CompressionTarget
from tasks import (
    build_index_task,
    compress_task,
    embed_models_task,
    fingerprint_models_task,
    fit_encoder_task,
    load_previous_task,
    plan_compression_task,
    plan_compressor_task,
    publish_task,
    shard_corpus_task,
    summarise_task,
    train_compressor_task,
)

P = PipelineConfig  # the defaults of every parameter below
T = CompressionTarget


class _Timer:
    """Wall seconds per step, for the summary."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._step, self._started = "", 0.0

    def __call__(self, step: str) -> _Timer:
        self._step = step
        return self

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds[self._step] = self.seconds.get(self._step, 0.0) + time.perf_counter() - self._started


def run_steps(
    config: PipelineConfig,
    ray_address: str | None,
    previous: CatalogManifest | None,
    target: CompressionTarget | None = None,
    lease_owner: str | None = None,
    index: str | None = None,
    nlist: int | None = None,
) -> dict:
    """The steps both flows share. ``previous`` is the store's published manifest (or None),
    read under the store's lease, whose owner is ``lease_owner``. With a ``target``, the
    codes' sizes and kind of ``config`` are replaced by the target's plan for this corpus
    and these models once they are embedded. ``index``: also build a search index of this
    kind (flat, ivf) for the new version."""
    started = dt.datetime.now(dt.timezone.utc).isoformat()
    step = _Timer()
    with step("shard"):
        manifest_path = shard_corpus_task(
            config.corpus,
            config.store,
            config.shard_rows,
            config.id_column,
            list(config.text_columns) if config.text_columns else None,
        )
    fingerprints = fingerprint_models_task(list(config.models))
    for model in config.models:
        if is_fitted(model):
            with step(f"fit {model}"):
                fit_encoder_task(config.store, manifest_path, model)
    previous_manifest = previous.corpus_manifest if previous else None
    with step("embed"):  # every model on one pool: no model's tail leaves actors idle
        embedding = embed_models_task(
            config.store,
            manifest_path,
            list(config.models),
            config.batch_size,
            ray_address,
            previous_manifest,
            fingerprints,
            # the guard's pseudo-queries too, so that training loads no model
            config.decoder.seed if needs_guard(config) else None,
            config.precision,
        )
    model_keys = [e.model_key for e in embedding]
    plan = None
    if target is not None:
        plan = plan_compression_task(config.store, manifest_path, model_keys, target, config.decoder.max_train_rows)
        config = plan.apply(config)
    run_id = run_id_for(config, manifest_path, fingerprints)
    with step("train decoder + quantizer"):
        reused = plan_compressor_task(config, manifest_path, previous, embedding)
        if reused is None:
            compressor_id = run_id
            decoder, quantizer = train_compressor_task(config, manifest_path, run_id, model_keys)
        else:
            compressor_id, decoder, quantizer = reused
    with step("compress"):
        shards = compress_task(config.store, manifest_path, model_keys, decoder, quantizer, compressor_id, ray_address)
    with step("publish"):
        version = publish_task(
            config,
            run_id,
            manifest_path,
            embedding,
            decoder,
            quantizer,
            compressor_id,
            started,
            shards,
            plan,
            lease_owner,
        )
    built = None
    if index:
        with step("index"):
            built = build_index_task(config.store, version, index, nlist)
    summary = summarise_task(config.store, run_id, version, manifest_path, previous_manifest, step.seconds)
    result = {
        "run_id": run_id,
        "catalog_version": version,
        "store": config.store,
        "compressor_id": compressor_id,
        "summary": summary,
    }
    if built is not None:
        result["index"] = built
    return result


@flow(name="embed-corpus", log_prints=True)
def embed_corpus(
    corpus: str,
    store: str,
    models: list[str] = list(P.models),  # noqa: B006 - the default the deployment shows; never mutated
    compression: float = T.compression,
    shard_rows: int = P.shard_rows,
    dims: int | None = T.dims,
    bits: int | None = T.bits,
    budget_bytes: int | None = T.budget_bytes,
    quantization: str | None = T.quantization,
    ray_address: str | None = None,
    id_column: str | None = P.id_column,
    text_columns: list[str] | None = None,
    batch_size: int = P.batch_size,
    out_dim: int | None = T.out_dim,
    max_epochs: int = PIPELINE_DECODER.max_epochs,
    max_train_rows: int = PIPELINE_DECODER.max_train_rows,
    model_weights: str = P.model_weights,
    precision: str = P.precision,
    seed: int = PIPELINE_DECODER.seed,
    index: str | None = None,
    nlist: int | None = IndexConfig.nlist,
) -> dict:
    """Embed ``corpus`` with every base model, train the compressor, and publish compressed,
    quantized embeddings under ``store`` (any fsspec URL); with ``index`` (flat, ivf), also a
    FAISS search index of the published version.

    ``compression`` (x the float32 concatenation) picks the decoder size, dims, byte budget
    and quantizer kind for these models and this corpus (:mod:`cecq.targets`); ``dims``,
    ``bits``, ``budget_bytes``, ``quantization`` and ``out_dim`` override the parts they name."""
    target = CompressionTarget(compression, dims, bits, budget_bytes, quantization, out_dim)  # checked before any work
    config = PipelineConfig(
        corpus=corpus,
        store=store,
        models=tuple(models),
        shard_rows=shard_rows,
        id_column=id_column,
        text_columns=tuple(text_columns) if text_columns else None,
        batch_size=batch_size,
        decoder=replace(PIPELINE_DECODER, max_epochs=max_epochs, max_train_rows=max_train_rows, seed=seed),
        decoder_policy="retrain",
        model_weights=model_weights,
        precision=precision,
    )
    with claim_store(Store(store), "embed-corpus") as lease:
        return run_steps(config, ray_address, load_previous_task(store), target, lease.owner, index, nlist)
