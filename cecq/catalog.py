"""The catalog: published versions of a storage root, and DuckDB views over them.

``catalog/current.json`` names the published version; ``catalog/v<N>/manifest.json`` and
``catalog/v<N>/shards.parquet`` describe it. ``current.json`` is written last, so a crash
while publishing leaves the previous version in place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from cecq.quantizer import AnyQuantizer
from cecq.search import CodeScoring
from cecq.storage import Store

CURRENT = "catalog/current.json"


class NoCatalogError(FileNotFoundError):
    """The storage root has no published catalog yet."""


def version_dir(version: int) -> str:
    return f"catalog/v{version:06d}"


def current_manifest(store: Store) -> dict[str, Any]:
    if not store.exists(CURRENT):
        raise NoCatalogError(f"no published catalog under {store.url} (run 'cecq embed-corpus' first)")
    version = int(store.read_json(CURRENT)["version"])
    return store.read_json(f"{version_dir(version)}/manifest.json")


def publish(store: Store, run: dict[str, Any], shards: Sequence[dict[str, Any]]) -> int:
    """Publish a run's compressed shards as the next catalog version; return the version.

    Idempotent: when the published version already holds this run's shards (a rerun of a
    run that finished), it is returned and nothing is written.
    """
    previous = int(store.read_json(CURRENT)["version"]) if store.exists(CURRENT) else 0
    if previous:
        current = current_manifest(store)
        if current["run_id"] == run["run_id"] and current["codes"] == [s["path"] for s in shards]:
            return previous
    version = previous + 1
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    table = pa.table({
        "version": pa.array([version] * len(shards), pa.int64()),
        "run_id": pa.array([run["run_id"]] * len(shards), pa.string()),
        "name": pa.array([s["name"] for s in shards], pa.string()),
        "path": pa.array([store.uri(s["path"]) for s in shards], pa.string()),
        "rows": pa.array([int(s["rows"]) for s in shards], pa.int64()),
        "bytes": pa.array([int(s["bytes"]) for s in shards], pa.int64()),
        "fingerprint": pa.array([s["fingerprint"] for s in shards], pa.string()),
        "status": pa.array(["committed"] * len(shards), pa.string()),
    })
    vdir = version_dir(version)
    store.write_parquet(f"{vdir}/shards.parquet", table)
    manifest = {
        "version": version, "published": now, "run_id": run["run_id"], "previous_version": previous or None,
        "codes": [s["path"] for s in shards], "corpus_shards": [s["corpus_path"] for s in shards],
        **{k: run[k] for k in ("models", "model_keys", "corpus_key", "corpus_manifest", "decoder", "quantizer", "dims", "bits",
                                  "compressor_id", "config")},
        "budget_bytes": run.get("budget_bytes"), "quantization": run.get("quantization", "scalar"),
    }
    store.write_json(f"{vdir}/manifest.json", manifest)
    store.write_json(f"runs/{run['run_id']}/run.json", {**run, "status": "published", "catalog_version": version, "finished": now})
    store.write_json(CURRENT, {"version": version, "published": now})
    return version


def sql_string(value: str) -> str:
    """A SQL string literal (for paths from the catalog, never for user input)."""
    return "'" + value.replace("'", "''") + "'"


def _list(paths: Sequence[str]) -> str:
    return "[" + ", ".join(sql_string(p) for p in paths) + "]"


def view_statements(store: Store) -> list[str]:
    """``CREATE VIEW`` statements for runs, shards, documents, corpus and versions."""
    m = current_manifest(store)
    vdir = version_dir(m["version"])
    runs = [store.uri(p) for p in store.glob("runs/*/run.json")]
    versions = [store.uri(p) for p in store.glob("catalog/v*/manifest.json")]
    return [
        f"CREATE OR REPLACE VIEW runs AS SELECT * FROM read_json_auto({_list(runs)}, union_by_name = true)",
        f"CREATE OR REPLACE VIEW shards AS SELECT * FROM read_parquet({sql_string(store.uri(f'{vdir}/shards.parquet'))})",
        f"CREATE OR REPLACE VIEW documents AS SELECT id, code, shard, content_hash, empty FROM read_parquet({_list([store.uri(p) for p in m['codes']])})",
        f"CREATE OR REPLACE VIEW corpus AS SELECT id, text, content_hash FROM read_parquet({_list([store.uri(p) for p in m['corpus_shards']])})",
        f"CREATE OR REPLACE VIEW versions AS SELECT * FROM read_json_auto({_list(versions)}, union_by_name = true)",
    ]


def _duckdb(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that reads the store (its fsspec filesystem registered
    for object stores: DuckDB has no httpfs offline here)."""
    con = duckdb.connect()
    if not store.is_local:
        con.register_filesystem(store.fs)
    return con


def connect(store: Store) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog's views."""
    con = _duckdb(store)
    for stmt in view_statements(store):
        con.execute(stmt)
    return con


def search_store(store: Store, query: str, k: int = 10, scoring: CodeScoring = "asymmetric") -> list[dict[str, Any]]:
    """Top-k published documents for a text query, scored against the compressed codes
    (the float query, or with ``scoring="symmetric"`` the query's own codes)."""
    return search_store_batch(store, [query], k, scoring=scoring)[0]


def search_store_batch(store: Store, queries: Sequence[str], k: int = 10, show_progress: bool = False,
                       manifest: dict[str, Any] | None = None, scoring: CodeScoring = "asymmetric") -> list[list[dict[str, Any]]]:
    """:func:`search_store` for many queries in one scan of the codes (of ``manifest``'s
    catalog version; default the current one)."""
    from cecq.decoder import decode
    from cecq.encoders import concatenate
    from cecq.pipeline import load_compressor, load_pipeline_encoder

    m = manifest or current_manifest(store)
    encoders = [load_pipeline_encoder(store, name, m["corpus_key"]) for name in m["models"]]
    decoder, meta, quantizer = load_compressor(store, m["decoder"], m["quantizer"])
    parts = [e.encode(list(queries), "query", show_progress=show_progress) for e in encoders]
    q = decode(decoder, concatenate(parts, meta.get("model_weights")), quantizer.dim)  # stores before weights: equal
    return search_published(store, q, k, m, quantizer, scoring=scoring)


def search_published(store: Store, queries: np.ndarray, k: int = 10, manifest: dict[str, Any] | None = None,
                     quantizer: AnyQuantizer | None = None, batch_rows: int = 65536,
                     scoring: CodeScoring = "asymmetric") -> list[list[dict[str, Any]]]:
    """Top-k published documents for decoded query vectors, texts included.

    DuckDB streams the codes shard by shard in record batches (memory bounded by a batch,
    whatever the corpus size), then fetches the hits' ids by row number and their texts
    from only the corpus shards that hold hits; no catalog views are built.
    """
    from cecq.pipeline import load_quantizer
    from cecq.search import search_code_batches

    m = manifest or current_manifest(store)
    quantizer = quantizer or load_quantizer(store, m["quantizer"])
    con = _duckdb(store)
    codes, corpus = [store.uri(p) for p in m["codes"]], [store.uri(p) for p in m["corpus_shards"]]
    starts: list[int] = []  # first global row of every codes shard

    def batches():
        total = 0
        for path in codes:
            starts.append(total)
            reader = con.sql(f"SELECT code, empty FROM read_parquet({sql_string(path)})").to_arrow_reader(batch_rows)
            for batch in reader:
                total += batch.num_rows
                yield _packed(batch.column(0), quantizer.bytes_per_vector), batch.column(1).to_numpy(zero_copy_only=False)

    scores, idx = search_code_batches(queries, batches(), quantizer, k, scoring)
    starts_arr = np.asarray(starts)
    shard_of = np.searchsorted(starts_arr, idx, side="right") - 1
    ids: dict[int, str] = {}
    for shard in np.unique(shard_of):
        rows = (idx[shard_of == shard] - starts_arr[shard]).tolist()
        found = con.execute(f"SELECT file_row_number, id FROM read_parquet({sql_string(codes[shard])}, file_row_number = true) "
                            "WHERE file_row_number IN (SELECT unnest(?::BIGINT[]))", [rows]).fetchall()
        ids.update((int(r) + int(starts_arr[shard]), i) for r, i in found)
    texts = dict(con.execute(f"SELECT id, text FROM read_parquet({_list([corpus[s] for s in np.unique(shard_of)])}) "
                             "WHERE id IN (SELECT unnest(?::VARCHAR[]))", [sorted(set(ids.values()))]).fetchall()) if ids else {}
    return [[{"rank": r + 1, "id": ids[int(j)], "score": round(float(sc), 6), "text": texts.get(ids[int(j)], "")}
             for r, (sc, j) in enumerate(zip(s_row, i_row))] for s_row, i_row in zip(scores, idx)]


def _packed(column: pa.Array, width: int) -> np.ndarray:
    """A BLOB column of equal-width codes as ``(n, width)`` uint8, without copying: DuckDB
    hands fixed-size binary back as variable-length binary over one contiguous buffer."""
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32 if column.type == pa.binary() else np.int64,
                            count=len(column) + 1, offset=column.offset * (4 if column.type == pa.binary() else 8))
    if column.null_count or offsets[-1] - offsets[0] != len(column) * width:
        raise ValueError(f"codes column does not hold {width}-byte codes")
    return np.frombuffer(column.buffers()[2], dtype=np.uint8, count=len(column) * width, offset=int(offsets[0])).reshape(-1, width)
