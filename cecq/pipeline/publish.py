"""The last steps of a run: decide whether the published compressor is reused, describe the
run, and publish its codes shards as the next catalog version, under the store's lease;
and ``cecq gc``, which removes what no kept version needs under the same lease."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import replace

import pyarrow as pa

from cecq.catalog.layout import CURRENT, CURRENT_FORMAT, LEASE, manifest_path, run_record_path, version_dir
from cecq.catalog.leftovers import Leftovers, find_leftovers
from cecq.catalog.reader import current_version, is_whole, latest_version, load_quantizer, read_manifest
from cecq.catalog.records import (
    CatalogManifest,
    CodesShard,
    CorpusManifest,
    EmbeddingResult,
    RunRecord,
    stored_config,
)
from cecq.config import DecoderPolicy, LeaseConfig, PipelineConfig
from cecq.decoder import CONFIG_FILE
from cecq.errors import ConfigError, StoreBusyError
from cecq.killpoints import kill_point
from cecq.storage import Store, StoreLease, check_lease, json_bytes
from cecq.targets import CompressionPlan


def choose_compressor(
    config: PipelineConfig,
    previous: CatalogManifest | None,
    changed_fraction: float,
    fingerprints: Sequence[str | None] | None = None,
) -> tuple[str, str, str] | None:
    """The previous run's (compressor_id, decoder, quantizer) to reuse, or None to train anew.

    Reuse needs the same base models with the same weights (``fingerprints``, where the
    previous run recorded them), dims and codes (kind, and bits or byte budget); policy
    'auto' also needs the share of new or changed documents to be at most
    ``config.retrain_fraction``; 'reuse' refuses an incompatible store.
    """
    policy = config.decoder_policy
    if previous is None or policy == "retrain":
        return None
    if previous.model_fingerprints is not None and fingerprints is not None:
        now = dict(zip(config.models, fingerprints))
        changed = [
            f"{m} ({was} -> {now[m]})"
            for m, was in zip(previous.models, previous.model_fingerprints)
            if m in now and was != now[m]
        ]
        if changed:
            if policy == "reuse":
                raise ConfigError(
                    f"cannot reuse the decoder: the weights of base model(s) {', '.join(changed)} changed since "
                    f"catalog v{previous.version}; every document is embedded again, so retrain "
                    "(--decoder-policy auto or retrain)"
                )
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


def reindex_config(
    previous: CatalogManifest, corpus: str, store: str, decoder_policy: DecoderPolicy, retrain_fraction: float
) -> PipelineConfig:
    """A reindex's configuration: the published run's, for another corpus URL and policy."""
    return PipelineConfig.from_dict(
        previous.config,
        corpus=corpus,
        store=store,
        models=tuple(previous.models),
        decoder_policy=decoder_policy,
        retrain_fraction=retrain_fraction,
    )


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
    plan: CompressionPlan | None = None,
) -> RunRecord:
    """The run record stored in ``runs/<id>/run.json`` and shown by the ``runs`` view."""
    decoder_meta = store.read_json(f"{decoder_rel}/{CONFIG_FILE}")
    bytes_per_doc = load_quantizer(store, quantizer_rel).bytes_per_vector
    stored = stored_config(config)  # a URL's credentials are never stored
    return RunRecord(
        run_id=run_id,
        started=started,
        corpus=stored["corpus"],
        corpus_key=manifest.corpus_key,
        documents=manifest.rows,
        empty_texts=manifest.empty_texts,
        shards=len(manifest.shards),
        models=list(config.models),
        model_keys=[e.model_key for e in embedding],
        model_fingerprints=[e.fingerprint for e in embedding],
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
        config=stored,
        compression_plan=plan.to_dict() if plan else None,
    )


def claim_store(store: Store, purpose: str, lease: LeaseConfig | None = None) -> StoreLease:
    """The store's publishing lease (not yet acquired: use it as a context manager). A run
    holds it from reading the published version to publishing the next; ``cecq gc`` too."""
    lease = lease or LeaseConfig.from_env()
    return StoreLease(store, LEASE, purpose, ttl=lease.ttl_s, wait=lease.wait_s)


def publish(store: Store, run: RunRecord, shards: Sequence[CodesShard], lease_owner: str | None = None) -> int:
    """Publish a run's compressed shards as the next catalog version; return the version.

    Idempotent: when the latest version already holds this run's shards (a rerun of a run
    that finished, or that stopped while publishing), it is returned, finished if need be.
    The version is claimed by creating its manifest exclusively (:meth:`Store.create_bytes`),
    so two publishers never write the same version; ``current.json`` only moves forward, by
    compare-and-swap. ``lease_owner`` (the :class:`StoreLease` owner of the run) is checked
    to still hold the store's lease before the version is claimed and before it is made
    current; a store without conditional writes needs one.
    """
    if lease_owner is not None:
        check_lease(store, LEASE, lease_owner)
    elif not store.conditional_writes:
        raise StoreBusyError(
            f"{store.url} ({store.protocol}) has no conditional writes: publish under claim_store()'s lease"
        )
    codes = [s.path for s in shards]
    while True:
        latest = latest_version(store)  # drops cached listings first
        previous = current_version(store)
        claimed = None
        if latest:
            last = read_manifest(store, latest)
            if last.run_id == run.run_id and last.codes == codes:
                if latest == previous:
                    if not is_whole(store, run_record_path(run.run_id)):  # a damaged run record is rewritten
                        run.status, run.catalog_version, run.finished = "published", latest, last.published
                        store.write_json(run_record_path(run.run_id), run.to_dict())
                    return latest
                claimed = last  # a publish that stopped half-way: finish it
        if claimed is None:
            claimed = _manifest(run, shards, latest + 1, previous)
            if not store.create_json(f"{version_dir(claimed.version)}/manifest.json", claimed.to_dict()):
                continue  # another run claimed that version first: take the next one
        if _finish(store, run, shards, claimed, lease_owner):
            return claimed.version
        # a later version was published meanwhile (by a run without the lease): this one stays
        # listed, never current, and the run publishes again on top


def _manifest(run: RunRecord, shards: Sequence[CodesShard], version: int, previous: int) -> CatalogManifest:
    return CatalogManifest(
        version=version,
        published=dt.datetime.now(dt.timezone.utc).isoformat(),
        run_id=run.run_id,
        previous_version=previous or None,
        codes=[s.path for s in shards],
        corpus_shards=[s.corpus_path for s in shards],
        models=list(run.models),
        model_keys=list(run.model_keys),
        model_fingerprints=run.model_fingerprints,
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


def _finish(
    store: Store, run: RunRecord, shards: Sequence[CodesShard], manifest: CatalogManifest, lease_owner: str | None
) -> bool:
    """Write a claimed version's shard list and run record, then point ``current.json`` at
    it; False (and ``current.json`` untouched) when a later version is already current."""
    version = manifest.version
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
    store.write_parquet(f"{version_dir(version)}/shards.parquet", table, "catalog-shards")
    kill_point("publishing")  # crash tests: between the version's shards.parquet and catalog/current.json
    run.status, run.catalog_version, run.finished = "published", version, manifest.published
    store.write_json(run_record_path(run.run_id), run.to_dict())
    pointer = json_bytes({"version": version, "published": manifest.published, "format_version": CURRENT_FORMAT})
    while True:
        if lease_owner is not None:
            check_lease(store, LEASE, lease_owner)
        seen = store.read_versioned(CURRENT)
        if seen is not None and int(json.loads(seen[0])["version"]) >= version:
            return False
        if store.swap_bytes(CURRENT, pointer, None if seen is None else seen[1]):
            return True


def collect_garbage(store: Store, keep: int = 1, dry_run: bool = False) -> Leftovers:
    """Remove what :func:`~cecq.catalog.leftovers.find_leftovers` lists, under the store's
    lease: a run in progress (which holds it) makes this fail at once, naming the run,
    rather than delete the artifacts it has not published yet. Returns what was (with
    ``dry_run``: would be) removed."""
    with claim_store(store, "gc", replace(LeaseConfig.from_env(), wait_s=0.0)):
        leftovers = find_leftovers(store, keep)
        if not dry_run:
            for rel in leftovers.paths:
                store.delete(rel)
    return leftovers
