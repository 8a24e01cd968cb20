"""Reading a store: the published catalog version, its records, its compressor and base
models, and DuckDB views over it. The read path: nothing here writes.

``catalog/current.json`` names the published version; ``catalog/v<N>/manifest.json`` and
``catalog/v<N>/shards.parquet`` describe it. ``current.json`` is written last, so a crash
while publishing leaves the previous version in place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import duckdb

from cecq.catalog.layout import CURRENT, fitted_model_path, index_dir, run_record_path, version_dir, version_of
from cecq.catalog.records import CatalogManifest, IndexRecord, RunRecord
from cecq.config import ModelSpec, ModelTrust
from cecq.decoder import Decoder, load_decoder
from cecq.encoders import Encoder, encoder_class, load_encoder
from cecq.errors import NoCatalogError, UntrustedModelError
from cecq.quantization import CodeQuantizer
from cecq.quantization import load_quantizer as read_quantizer_file
from cecq.storage import Store


def current_version(store: Store) -> int:
    """The published version number (0 for a store with none)."""
    return int(store.read_json(CURRENT)["version"]) if store.exists(CURRENT) else 0


def latest_version(store: Store) -> int:
    """The highest version with a manifest (0 for none): the published one, or one above it
    whose run stopped between claiming the version and publishing it."""
    store.forget("catalog")
    return max((version_of(p) for p in store.glob("catalog/v*/manifest.json")), default=0)


def read_manifest(store: Store, version: int) -> CatalogManifest:
    return CatalogManifest.from_dict(store.read_json(f"{version_dir(version)}/manifest.json"))


def current_manifest(store: Store) -> CatalogManifest:
    """The published version's manifest; NoCatalogError for a store with none."""
    version = current_version(store)
    if not version:
        raise NoCatalogError(f"no published catalog under {store.url} (run 'cecq embed-corpus' first)")
    return read_manifest(store, version)


def read_run(store: Store, run_id: str) -> RunRecord:
    return RunRecord.from_dict(store.read_json(run_record_path(run_id)))


def read_index_record(store: Store, rel: str) -> IndexRecord:
    return IndexRecord.from_dict(store.read_json(rel))


def index_records(store: Store, version: int) -> list[IndexRecord]:
    """The committed search indexes of a catalog version, oldest first."""
    records = [read_index_record(store, p) for p in store.list(index_dir(version), ".json")]
    return sorted(records, key=lambda r: (r.built, r.name))


def load_quantizer(store: Store, quantizer_rel: str) -> CodeQuantizer:
    with store.fs.open(store.path(quantizer_rel), "rb") as f:
        return read_quantizer_file(f)


def load_compressor(
    store: Store, decoder_rel: str, quantizer_rel: str
) -> tuple[Decoder, dict[str, Any], CodeQuantizer]:
    """A run's decoder, its metadata (models, weights, training) and its quantizer."""
    with tempfile.TemporaryDirectory() as tmp:
        decoder, meta = load_decoder(store.local_copy(decoder_rel, tmp))
    return decoder, meta, load_quantizer(store, quantizer_rel)


def check_store_models(store: Store, models: Sequence[str], trust: ModelTrust | None = None) -> None:
    """Refuse, with :class:`UntrustedModelError`, to load a base model a store names that
    the trust settings (:class:`~cecq.config.ModelTrust`, default from the environment) do
    not allow: a store's manifest must not make this machine load an arbitrary local folder."""
    trust = trust or ModelTrust.from_env()
    if trust.trust or (trust.trust is None and store.is_local):
        return
    for model in models:
        source = encoder_class(model).loads_from(model)
        if source is None:
            continue
        if trust.allowed is not None:
            folders = [os.path.abspath(os.path.expanduser(a)) for a in trust.allowed]
            if model in trust.allowed or any(source == f or source.startswith(f + os.sep) for f in folders):
                continue
            why = "it is not in CECQ_ALLOWED_MODELS"
        elif os.path.isabs(source):
            why = "it is a local folder, and the store is not local"
        else:
            continue  # a hub id
        raise UntrustedModelError(
            f"store {store.url} names the base model {model!r} ({source}); not loading it: {why}. "
            "If you trust the store, pass --trust-store-models (CECQ_TRUST_STORE_MODELS=1), "
            "or allow the model in CECQ_ALLOWED_MODELS"
        )


def load_store_encoder(
    store: Store,
    model: str,
    corpus_key: str,
    batch_size: int = 64,
    device: str | None = None,
    trusted: bool = False,
) -> Encoder:
    """A base model as the store uses it: a fitted encoder from the store's files, a
    pretrained one by name. Unless ``trusted`` (a model the user named, not the store),
    :func:`check_store_models` decides first whether it may be loaded."""
    if not trusted:
        check_store_models(store, [model])
    cls = encoder_class(model)
    if cls.fitted:
        with tempfile.TemporaryDirectory() as tmp:
            return cls.load(store.local_copy(fitted_model_path(model, corpus_key), tmp))
    return load_encoder(ModelSpec(model, batch_size=batch_size, device=device))


def sql_string(value: str) -> str:
    """A SQL string literal (for paths from the catalog, never for user input)."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(paths: Sequence[str]) -> str:
    return "[" + ", ".join(sql_string(p) for p in paths) + "]"


def view_statements(store: Store) -> list[str]:
    """``CREATE VIEW`` statements for indexes, runs, shards, documents, corpus and versions."""
    m = current_manifest(store)
    vdir = version_dir(m.version)
    runs = [store.uri(p) for p in store.glob("runs/*/run.json")]
    versions = [store.uri(p) for p in store.glob("catalog/v*/manifest.json")]
    indexes = [store.uri(p) for p in store.glob("catalog/v*/index/*.json")]
    # indexes: one row per search index (any version); runs and versions list theirs by name
    listed = "(SELECT {key}, list(name ORDER BY name) AS indexes FROM indexes GROUP BY {key})"
    return [
        "CREATE OR REPLACE VIEW indexes AS "
        + (
            "SELECT name, kind, layout, version, run_id, rows, params, nprobe, file, file_bytes, built, seconds "
            f"FROM read_json_auto({sql_list(indexes)}, union_by_name = true)"
            if indexes
            else "SELECT NULL::VARCHAR AS name, NULL::VARCHAR AS kind, NULL::VARCHAR AS layout, "
            "NULL::BIGINT AS version, NULL::VARCHAR AS run_id, NULL::BIGINT AS rows, NULL::JSON AS params, "
            "NULL::BIGINT AS nprobe, NULL::VARCHAR AS file, NULL::BIGINT AS file_bytes, NULL::VARCHAR AS built, "
            "NULL::DOUBLE AS seconds WHERE false"
        ),
        f"CREATE OR REPLACE VIEW runs AS SELECT r.*, coalesce(i.indexes, []) AS indexes FROM read_json_auto("
        f"{sql_list(runs)}, union_by_name = true) r LEFT JOIN {listed.format(key='run_id')} i USING (run_id)",
        "CREATE OR REPLACE VIEW shards AS SELECT * FROM "
        f"read_parquet({sql_string(store.uri(f'{vdir}/shards.parquet'))})",
        "CREATE OR REPLACE VIEW documents AS SELECT id, code, shard, content_hash, empty FROM "
        f"read_parquet({sql_list([store.uri(p) for p in m.codes])})",
        "CREATE OR REPLACE VIEW corpus AS SELECT id, text, content_hash FROM "
        f"read_parquet({sql_list([store.uri(p) for p in m.corpus_shards])})",
        f"CREATE OR REPLACE VIEW versions AS SELECT v.*, coalesce(i.indexes, []) AS indexes FROM read_json_auto("
        f"{sql_list(versions)}, union_by_name = true) v LEFT JOIN {listed.format(key='version')} i USING (version)",
    ]


def duckdb_connection(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that reads the store (its fsspec filesystem registered
    for object stores: DuckDB has no httpfs offline here)."""
    con = duckdb.connect()
    if not store.is_local:
        con.register_filesystem(store.fs)
    return con


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog's views."""
    con = duckdb_connection(store)
    for stmt in view_statements(store):
        con.execute(stmt)
    return con
