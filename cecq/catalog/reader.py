"""Reading a store: the published catalog version, its records, its compressor and base
models, and DuckDB views over it. The read path: nothing here writes.

``catalog/current.json`` names the published version; ``catalog/v<N>/manifest.json`` and
``catalog/v<N>/shards.parquet`` describe it. ``current.json`` is written last, so a crash
while publishing leaves the previous version in place.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cecq.catalog.layout import (
    CURRENT,
    CURRENT_FORMAT,
    fitted_model_path,
    index_dir,
    run_record_path,
    version_dir,
    version_of,
)
from cecq.catalog.records import CatalogManifest, IndexRecord, RunRecord
from cecq.config import ModelSpec, ModelTrust, Precision
from cecq.decoder import CONFIG_FILE, WEIGHTS_FILE, Decoder, load_decoder
from cecq.encoders import Encoder, encoder_class, load_encoder
from cecq.errors import CorruptArtifactError, NoCatalogError, RecordVersionError, UntrustedModelError, check_version
from cecq.quantization import CodeQuantizer
from cecq.quantization import load_quantizer as read_quantizer_file
from cecq.storage import Store, check_parquet_format

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


def check_artifact(store: Store, rel: str, rows: int | None = None) -> None:
    """Raise :class:`CorruptArtifactError` (naming the file and how to recover it) unless the
    committed file ``rel`` reads whole: JSON parses, a Parquet footer reads (with ``rows``
    rows if given), a safetensors header covers exactly the file's bytes."""
    if rel.endswith(".json"):
        store.read_json(rel)
    elif rel.endswith(".parquet"):
        with store.fs.open(store.path(rel), "rb") as f:
            try:
                meta = pq.read_metadata(f)
            except pa.ArrowInvalid as e:
                raise store.damaged(rel, e) from e
        check_parquet_format(meta.metadata, store.uri(rel))
        found = meta.num_rows
        if rows is not None and found != rows:
            raise store.damaged(rel, f"{found} rows, expected {rows}")
    elif rel.endswith(".safetensors"):
        problem = _safetensors_problem(store.read_bytes(rel))
        if problem:
            raise store.damaged(rel, problem)


def _safetensors_problem(data: bytes) -> str | None:
    """What is wrong with a safetensors file's framing (8-byte header size, JSON header, data
    that ends where the last tensor does), or None."""
    if len(data) < 8:
        return f"{len(data)} bytes, shorter than the header size"
    size = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + size])
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        return f"unreadable header: {e}"
    if len(data) != 8 + size + end:
        return f"{len(data)} bytes, the header describes {8 + size + end}"
    return None


def is_whole(store: Store, rel: str, rows: int | None = None) -> bool:
    """Whether ``rel`` is committed and reads whole; a damaged file is logged (a writer that
    would skip it rewrites it instead)."""
    if not store.exists(rel):
        return False
    try:
        check_artifact(store, rel, rows)
    except CorruptArtifactError as e:
        logger.warning("rewriting a damaged file: %s", e)
        return False
    return True


def compressor_is_whole(store: Store, decoder_rel: str, quantizer_rel: str) -> bool:
    """Whether a run's decoder files and quantizer are committed and read whole."""
    files = (f"{decoder_rel}/{CONFIG_FILE}", f"{decoder_rel}/{WEIGHTS_FILE}", quantizer_rel)
    return all(is_whole(store, rel) for rel in files)


def diagnosed(store: Store, rels: Sequence[str], read: Callable[[], _T]) -> _T:
    """``read()``; if it fails, the failure is explained by the first of ``rels`` that is
    damaged (a :class:`CorruptArtifactError` naming it), else re-raised as it was."""
    try:
        return read()
    except (CorruptArtifactError, RecordVersionError, NoCatalogError):
        raise
    except Exception as error:
        for rel in rels:
            if store.exists(rel):
                check_artifact(store, rel)
        raise error


def current_version(store: Store) -> int:
    """The published version number (0 for a store with none)."""
    if not store.exists(CURRENT):
        return 0
    pointer = store.read_json(CURRENT)
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), int):
        raise store.damaged(CURRENT, f"no version number in {pointer!r:.80}")
    check_version(store.uri(CURRENT), int(pointer.get("format_version", 1)), CURRENT_FORMAT)
    return pointer["version"]


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
    def read() -> CodeQuantizer:
        with store.fs.open(store.path(quantizer_rel), "rb") as f:
            return read_quantizer_file(f)

    return diagnosed(store, [quantizer_rel], read)


def load_compressor(
    store: Store, decoder_rel: str, quantizer_rel: str
) -> tuple[Decoder, dict[str, Any], CodeQuantizer]:
    """A run's decoder, its metadata (models, weights, training) and its quantizer."""
    with tempfile.TemporaryDirectory() as tmp:
        decoder, meta = diagnosed(
            store,
            [f"{decoder_rel}/{CONFIG_FILE}", f"{decoder_rel}/{WEIGHTS_FILE}"],
            lambda: load_decoder(store.local_copy(decoder_rel, tmp)),
        )
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
    precision: Precision = "auto",
) -> Encoder:
    """A base model as the store uses it: a fitted encoder from the store's files, a
    pretrained one by name. Unless ``trusted`` (a model the user named, not the store),
    :func:`check_store_models` decides first whether it may be loaded."""
    if not trusted:
        check_store_models(store, [model])
    cls = encoder_class(model)
    if cls.fitted:
        rel = fitted_model_path(model, corpus_key)
        with tempfile.TemporaryDirectory() as tmp:
            return diagnosed(store, [f"{rel}/{n}" for n in cls.files], lambda: cls.load(store.local_copy(rel, tmp)))
    return load_encoder(ModelSpec(model, batch_size=batch_size, device=device, precision=precision))


def sql_string(value: str) -> str:
    """A SQL string literal (for paths from the catalog, never for user input)."""
    return "'" + value.replace("'", "''") + "'"


def sql_list(paths: Sequence[str]) -> str:
    return "[" + ", ".join(sql_string(p) for p in paths) + "]"


def _views(store: Store) -> list[tuple[str, list[str]]]:
    """``CREATE VIEW`` statements for indexes, runs, shards, documents, corpus and versions,
    each with the files (relative paths) it reads."""
    m = current_manifest(store)
    vdir = version_dir(m.version)
    runs, versions = store.glob("runs/*/run.json"), store.glob("catalog/v*/manifest.json")
    indexes = store.glob("catalog/v*/index/*.json")

    def uris(rels: Sequence[str]) -> str:
        return sql_list([store.uri(p) for p in rels])

    # indexes: one row per search index (any version); runs and versions list theirs by name
    listed = "(SELECT {key}, list(name ORDER BY name) AS indexes FROM indexes GROUP BY {key})"
    return [
        (
            "CREATE OR REPLACE VIEW indexes AS "
            + (
                "SELECT name, kind, layout, version, run_id, rows, params, nprobe, file, file_bytes, built, seconds "
                f"FROM read_json_auto({uris(indexes)}, union_by_name = true)"
                if indexes
                else "SELECT NULL::VARCHAR AS name, NULL::VARCHAR AS kind, NULL::VARCHAR AS layout, "
                "NULL::BIGINT AS version, NULL::VARCHAR AS run_id, NULL::BIGINT AS rows, NULL::JSON AS params, "
                "NULL::BIGINT AS nprobe, NULL::VARCHAR AS file, NULL::BIGINT AS file_bytes, NULL::VARCHAR AS built, "
                "NULL::DOUBLE AS seconds WHERE false"
            ),
            indexes,
        ),
        (
            f"CREATE OR REPLACE VIEW runs AS SELECT r.*, coalesce(i.indexes, []) AS indexes FROM read_json_auto("
            f"{uris(runs)}, union_by_name = true) r LEFT JOIN {listed.format(key='run_id')} i USING (run_id)",
            runs,
        ),
        (
            f"CREATE OR REPLACE VIEW shards AS SELECT * FROM read_parquet({uris([f'{vdir}/shards.parquet'])})",
            [f"{vdir}/shards.parquet"],
        ),
        (
            "CREATE OR REPLACE VIEW documents AS SELECT id, code, shard, content_hash, empty FROM "
            f"read_parquet({uris(m.codes)})",
            list(m.codes),
        ),
        (
            "CREATE OR REPLACE VIEW corpus AS SELECT id, text, content_hash FROM "
            f"read_parquet({uris(m.corpus_shards)})",
            list(m.corpus_shards),
        ),
        (
            f"CREATE OR REPLACE VIEW versions AS SELECT v.*, coalesce(i.indexes, []) AS indexes FROM read_json_auto("
            f"{uris(versions)}, union_by_name = true) v LEFT JOIN {listed.format(key='version')} i USING (version)",
            versions,
        ),
    ]


def view_statements(store: Store) -> list[str]:
    """``CREATE VIEW`` statements for runs, shards, documents, corpus and versions."""
    return [stmt for stmt, _ in _views(store)]


def view_files(store: Store) -> list[str]:
    """Every file the catalog views read (to explain a query that fails on a damaged one)."""
    return [rel for _, rels in _views(store) for rel in rels]


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
    for stmt, rels in _views(store):
        diagnosed(store, rels, lambda stmt=stmt: con.execute(stmt))
    return con
