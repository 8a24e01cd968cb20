"""The last steps of a run: decide whether the published compressor is reused, describe the
run, and publish its codes shards as the next catalog version."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pyarrow as pa

from cecq.catalog.layout import CURRENT, CURRENT_FORMAT, manifest_path, run_record_path, version_dir
from cecq.catalog.reader import current_version, is_whole, load_quantizer, read_manifest
from cecq.catalog.records import CatalogManifest, CodesShard, CorpusManifest, EmbeddingResult, RunRecord
from cecq.config import PipelineConfig
from cecq.decoder import CONFIG_FILE
from cecq.errors import ConfigError
from cecq.killpoints import kill_point
from cecq.storage import Store


def choose_compressor(
    config: PipelineConfig, previous: CatalogManifest | None, changed_fraction: float
) -> tuple[str, str, str] | None:
    """The previous run's (compressor_id, decoder, quantizer) to reuse, or None to train anew.

    Reuse needs the same base models, dims and codes (kind, and bits or byte budget);
    policy 'auto' also needs the share of new or changed documents to be at most
    ``config.retrain_fraction``; 'reuse' refuses an incompatible store.
    """
    policy = config.decoder_policy
    if previous is None or policy == "retrain":
        return None
    same_codes = (
        previous.quantization == config.quantization
        and previous.budget_bytes == config.budget_bytes
        and previous.bits == config.code_bits
    )
    if not (list(previous.models) == list(config.models) and previous.dims == config.dims and same_codes):
        if policy == "reuse":
            raise ConfigError(
                f"cannot reuse the decoder: the store was built with models {previous.models}, "
                f"{previous.dims} dims, {previous.code_layout}"
            )
        return None
    if policy == "auto" and changed_fraction > config.retrain_fraction:
        return None
    return previous.compressor_id, previous.decoder, previous.quantizer


def describe_run(
    store: Store,
    config: PipelineConfig,
    run_id: str,
    manifest: CorpusManifest,
    embedding: Sequence[EmbeddingResult],
    decoder_rel: str,
    quantizer_rel: str,
    compressor_id: str,
    started: str,
) -> RunRecord:
    """The run record stored in ``runs/<id>/run.json`` and shown by the ``runs`` view."""
    decoder_meta = store.read_json(f"{decoder_rel}/{CONFIG_FILE}")
    bytes_per_doc = load_quantizer(store, quantizer_rel).bytes_per_vector
    return RunRecord(
        run_id=run_id,
        started=started,
        corpus=config.corpus,
        corpus_key=manifest.corpus_key,
        documents=manifest.rows,
        empty_texts=manifest.empty_texts,
        shards=len(manifest.shards),
        models=list(config.models),
        model_keys=[e.model_key for e in embedding],
        embedding=list(embedding),
        corpus_manifest=manifest_path(manifest),
        decoder=decoder_rel,
        quantizer=quantizer_rel,
        compressor_id=compressor_id,
        decoder_training=decoder_meta.get("training", {}),
        model_weights=decoder_meta.get("model_weights"),
        dims=config.dims,
        bits=config.code_bits,
        budget_bytes=config.budget_bytes,
        quantization=str(config.quantization),
        bytes_per_doc=bytes_per_doc,
        compression=4 * decoder_meta["in_dim"] / bytes_per_doc,
        config=config.to_dict(),
    )


def publish(store: Store, run: RunRecord, shards: Sequence[CodesShard]) -> int:
    """Publish a run's compressed shards as the next catalog version; return the version.

    Idempotent: when the published version already holds this run's shards (a rerun of a
    run that finished), it is returned and nothing is written.
    """
    previous = current_version(store)
    if previous:
        current = read_manifest(store, previous)
        if current.run_id == run.run_id and current.codes == [s.path for s in shards]:
            if not is_whole(store, run_record_path(run.run_id)):  # a damaged run record is rewritten
                run.status, run.catalog_version, run.finished = "published", previous, current.published
                store.write_json(run_record_path(run.run_id), run.to_dict())
            return previous
    version = previous + 1
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    table = pa.table(
        {
            "version": pa.array([version] * len(shards), pa.int64()),
            "run_id": pa.array([run.run_id] * len(shards), pa.string()),
            "name": pa.array([s.name for s in shards], pa.string()),
            "path": pa.array([store.uri(s.path) for s in shards], pa.string()),
            "rows": pa.array([int(s.rows) for s in shards], pa.int64()),
            "bytes": pa.array([int(s.bytes) for s in shards], pa.int64()),
            "fingerprint": pa.array([s.fingerprint for s in shards], pa.string()),
            "status": pa.array(["committed"] * len(shards), pa.string()),
        }
    )
    vdir = version_dir(version)
    store.write_parquet(f"{vdir}/shards.parquet", table, "catalog-shards")
    kill_point("publishing")  # crash tests: between the version's shards.parquet and catalog/current.json
    manifest = CatalogManifest(
        version=version,
        published=now,
        run_id=run.run_id,
        previous_version=previous or None,
        codes=[s.path for s in shards],
        corpus_shards=[s.corpus_path for s in shards],
        models=list(run.models),
        model_keys=list(run.model_keys),
        corpus_key=run.corpus_key,
        corpus_manifest=run.corpus_manifest,
        decoder=run.decoder,
        quantizer=run.quantizer,
        dims=run.dims,
        bits=run.bits,
        compressor_id=run.compressor_id,
        config=run.config,
        budget_bytes=run.budget_bytes,
        quantization=run.quantization,
    )
    store.write_json(f"{vdir}/manifest.json", manifest.to_dict())
    run.status, run.catalog_version, run.finished = "published", version, now
    store.write_json(run_record_path(run.run_id), run.to_dict())
    store.write_json(CURRENT, {"version": version, "published": now, "format_version": CURRENT_FORMAT})
    return version
