"""Search over a store's published codes: encode a text query with the store's models and
decoder, score it against the codes streamed by DuckDB, and return ids and texts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from cecq.catalog.reader import (
    current_manifest,
    diagnosed,
    duckdb_connection,
    load_compressor,
    load_quantizer,
    load_store_encoder,
    sql_list,
    sql_string,
)
from cecq.catalog.records import CatalogManifest
from cecq.decoder import decode
from cecq.encoders import concatenate
from cecq.quantization import CodeQuantizer
from cecq.search import CodeScoring, search_code_batches
from cecq.storage import Store


def search_store(store: Store, query: str, k: int = 10, scoring: CodeScoring = "asymmetric") -> list[dict[str, Any]]:
    """Top-k published documents for a text query, scored against the compressed codes
    (the float query, or with ``scoring="symmetric"`` the query's own codes)."""
    return search_store_batch(store, [query], k, scoring=scoring)[0]


def search_store_batch(
    store: Store,
    queries: Sequence[str],
    k: int = 10,
    show_progress: bool = False,
    manifest: CatalogManifest | None = None,
    scoring: CodeScoring = "asymmetric",
) -> list[list[dict[str, Any]]]:
    """:func:`search_store` for many queries in one scan of the codes (of ``manifest``'s
    catalog version; default the current one)."""
    m = manifest or current_manifest(store)
    encoders = [load_store_encoder(store, name, m.corpus_key) for name in m.models]
    decoder, meta, quantizer = load_compressor(store, m.decoder, m.quantizer)
    parts = [e.encode(list(queries), "query", show_progress=show_progress) for e in encoders]
    q = decode(decoder, concatenate(parts, meta.get("model_weights")), quantizer.dim)  # stores before weights: equal
    return search_published(store, q, k, m, quantizer, scoring=scoring)


def search_published(
    store: Store,
    queries: np.ndarray,
    k: int = 10,
    manifest: CatalogManifest | None = None,
    quantizer: CodeQuantizer | None = None,
    batch_rows: int = 65536,
    scoring: CodeScoring = "asymmetric",
) -> list[list[dict[str, Any]]]:
    """Top-k published documents for decoded query vectors, texts included.

    DuckDB streams the codes shard by shard in record batches (memory bounded by a batch,
    whatever the corpus size), then fetches the hits' ids by row number and their texts
    from only the corpus shards that hold hits; no catalog views are built. A shard that
    does not read is named (:class:`~cecq.errors.CorruptArtifactError`).
    """
    m = manifest or current_manifest(store)
    quantizer = quantizer or load_quantizer(store, m.quantizer)
    return diagnosed(
        store,
        [*m.codes, *m.corpus_shards],
        lambda: _search_codes(store, queries, k, m, quantizer, batch_rows, scoring),
    )


def _search_codes(
    store: Store,
    queries: np.ndarray,
    k: int,
    m: CatalogManifest,
    quantizer: CodeQuantizer,
    batch_rows: int,
    scoring: CodeScoring,
) -> list[list[dict[str, Any]]]:
    con = duckdb_connection(store)
    codes, corpus = [store.uri(p) for p in m.codes], [store.uri(p) for p in m.corpus_shards]
    starts: list[int] = []  # first global row of every codes shard

    def batches():
        total = 0
        for path in codes:
            starts.append(total)
            reader = con.sql(f"SELECT code, empty FROM read_parquet({sql_string(path)})").to_arrow_reader(batch_rows)
            for batch in reader:
                total += batch.num_rows
                yield (
                    _packed(batch.column(0), quantizer.bytes_per_vector),
                    batch.column(1).to_numpy(zero_copy_only=False),
                )

    scores, idx = search_code_batches(queries, batches(), quantizer, k, scoring)
    starts_arr = np.asarray(starts)
    shard_of = np.searchsorted(starts_arr, idx, side="right") - 1
    ids: dict[int, str] = {}
    for shard in np.unique(shard_of):
        rows = (idx[shard_of == shard] - starts_arr[shard]).tolist()
        found = con.execute(
            f"SELECT file_row_number, id FROM read_parquet({sql_string(codes[shard])}, file_row_number = true) "
            "WHERE file_row_number IN (SELECT unnest(?::BIGINT[]))",
            [rows],
        ).fetchall()
        ids.update((int(r) + int(starts_arr[shard]), i) for r, i in found)
    texts = (
        dict(
            con.execute(
                f"SELECT id, text FROM read_parquet({sql_list([corpus[s] for s in np.unique(shard_of)])}) "
                "WHERE id IN (SELECT unnest(?::VARCHAR[]))",
                [sorted(set(ids.values()))],
            ).fetchall()
        )
        if ids
        else {}
    )
    return [
        [
            {"rank": r + 1, "id": ids[int(j)], "score": round(float(sc), 6), "text": texts.get(ids[int(j)], "")}
            for r, (sc, j) in enumerate(zip(s_row, i_row))
        ]
        for s_row, i_row in zip(scores, idx)
    ]


def _packed(column: pa.Array, width: int) -> np.ndarray:
    """A BLOB column of equal-width codes as ``(n, width)`` uint8, without copying: DuckDB
    hands fixed-size binary back as variable-length binary over one contiguous buffer."""
    offsets = np.frombuffer(
        column.buffers()[1],
        dtype=np.int32 if column.type == pa.binary() else np.int64,
        count=len(column) + 1,
        offset=column.offset * (4 if column.type == pa.binary() else 8),
    )
    if column.null_count or offsets[-1] - offsets[0] != len(column) * width:
        raise ValueError(f"codes column does not hold {width}-byte codes")
    return np.frombuffer(
        column.buffers()[2], dtype=np.uint8, count=len(column) * width, offset=int(offsets[0])
    ).reshape(-1, width)
