"""Flow ``embed-corpus``: shard -> embed with every model (Ray) -> train -> compress -> publish.
Its parameters' defaults are :class:`cecq.config.PipelineConfig`'s."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from prefect import flow

from cecq.catalog import CatalogManifest, run_id_for
from cecq.config import PIPELINE_DECODER, IndexConfig, PipelineConfig
from cecq.encoders import is_fitted
from tasks import (
    build_index_task,
    compress_task,
    embed_model_task,
    fit_encoder_task,
    load_previous_task,
    plan_compressor_task,
    publish_task,
    shard_corpus_task,
    train_compressor_task,
)

P = PipelineConfig  # the defaults of every parameter below


def run_steps(
    config: PipelineConfig,
    ray_address: str | None,
    previous: CatalogManifest | None,
    index: str | None = None,
    nlist: int | None = None,
) -> dict:
    """The steps both flows share. ``previous`` is the store's published manifest (or None);
    ``index``: also build a search index of this kind (flat, ivf) for the new version."""
    started = dt.datetime.now(dt.timezone.utc).isoformat()
    manifest_path = shard_corpus_task(
        config.corpus,
        config.store,
        config.shard_rows,
        config.id_column,
        list(config.text_columns) if config.text_columns else None,
    )
    run_id = run_id_for(config, manifest_path)
    for model in config.models:
        if is_fitted(model):
            fit_encoder_task(config.store, manifest_path, model)
    previous_manifest = previous.corpus_manifest if previous else None
    embedding = [
        embed_model_task(config.store, manifest_path, m, config.batch_size, ray_address, previous_manifest)
        for m in config.models
    ]
    model_keys = [e.model_key for e in embedding]
    reused = plan_compressor_task(config, manifest_path, previous, embedding)
    if reused is None:
        compressor_id = run_id
        decoder, quantizer = train_compressor_task(config, manifest_path, run_id, model_keys)
    else:
        compressor_id, decoder, quantizer = reused
    shards = compress_task(config.store, manifest_path, model_keys, decoder, quantizer, compressor_id, ray_address)
    version = publish_task(config, run_id, manifest_path, embedding, decoder, quantizer, compressor_id, started, shards)
    result = {"run_id": run_id, "catalog_version": version, "store": config.store, "compressor_id": compressor_id}
    if index:
        result["index"] = build_index_task(config.store, version, index, nlist)
    return result


@flow(name="embed-corpus", log_prints=True)
def embed_corpus(
    corpus: str,
    store: str,
    models: list[str] = list(P.models),  # noqa: B006 - the default the deployment shows; never mutated
    shard_rows: int = P.shard_rows,
    dims: int = P.dims,
    bits: int = P.bits,
    budget_bytes: int | None = P.budget_bytes,
    quantization: str | None = P.quantization,
    ray_address: str | None = None,
    id_column: str | None = P.id_column,
    text_columns: list[str] | None = None,
    batch_size: int = P.batch_size,
    out_dim: int = PIPELINE_DECODER.out_dim,
    max_epochs: int = PIPELINE_DECODER.max_epochs,
    max_train_rows: int = PIPELINE_DECODER.max_train_rows,
    model_weights: str = P.model_weights,
    seed: int = PIPELINE_DECODER.seed,
    index: str | None = None,
    nlist: int | None = IndexConfig.nlist,
) -> dict:
    """Embed ``corpus`` with every base model, train the compressor, and publish compressed,
    quantized embeddings under ``store`` (any fsspec URL); with ``index`` (flat, ivf), also a
    FAISS search index of the published version."""
    config = PipelineConfig(
        corpus=corpus,
        store=store,
        models=tuple(models),
        shard_rows=shard_rows,
        dims=dims,
        bits=bits,
        budget_bytes=budget_bytes,
        quantization=quantization,
        id_column=id_column,
        text_columns=tuple(text_columns) if text_columns else None,
        batch_size=batch_size,
        decoder=replace(
            PIPELINE_DECODER, out_dim=out_dim, max_epochs=max_epochs, max_train_rows=max_train_rows, seed=seed
        ),
        decoder_policy="retrain",
        model_weights=model_weights,
    )
    return run_steps(config, ray_address, load_previous_task(store), index, nlist)
