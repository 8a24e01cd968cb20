"""Search over a store's published codes: encode a text query with the store's models and
decoder, score it against the codes (with the version's FAISS index where one exists, else
streamed by DuckDB in an exhaustive scan), and return ids and texts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from cecq.catalog.reader import (
    connect,
    current_manifest,
    diagnosed,
    duckdb_connection,
    index_records,
    load_compressor,
    load_quantizer,
    load_store_encoder,
    sql_list,
    sql_string,
)
from cecq.catalog.records import CatalogManifest, IndexRecord
from cecq.decoder import decode
from cecq.encoders import concatenate
from cecq.errors import ConfigError, IndexFileError
from cecq.index import CodeLayout, GroupedSearcher, code_layout, from_bytes, index_kind, inner_index
from cecq.quantization import CodeQuantizer
from cecq.search import CodeScoring, prepare_queries, search_code_batches
from cecq.storage import Store, digest


@dataclass
class LoadedIndex:
    """A FAISS index of a catalog version, checked against the version it is used with."""

    record: IndexRecord
    index: Any  # the FAISS index as stored (pre-transform included)
    layout: CodeLayout
    searcher: GroupedSearcher

    def nprobe(self, nprobe: int | None) -> int:
        """Clusters a query searches (validated): ``nprobe``, else the index's default."""
        return index_kind(self.record.kind).check_nprobe(
            self.record.clusters, nprobe if nprobe is not None else self.record.nprobe
        )


@dataclass
class SearchPlan:
    """How a search reads a version's codes: with ``index`` (FAISS), else an exhaustive scan."""

    manifest: CatalogManifest
    index: LoadedIndex | None = None
    nprobe: int | None = None
    reason: str = ""

    def describe(self) -> str:
        """Which path a search took, in words (the CLI prints it)."""
        v = f"catalog v{self.manifest.version}"
        if self.index is None:
            return f"exhaustive scan of {v} ({self.reason})"
        r = self.index.record
        probe = ""
        if r.nprobe is not None:
            n = self.index.nprobe(self.nprobe)
            probe = f", nprobe {n} of {r.clusters} lists" + (": every list, as flat" if n == r.clusters else "")
        return f"FAISS index {r.name} of {v} ({r.layout} codes{probe}; {r.file})"

    def to_dict(self) -> dict[str, Any]:
        r = self.index.record if self.index else None
        return {
            "path": "index" if r else "exact",
            "index": r.name if r else None,
            "nprobe": self.index.nprobe(self.nprobe) if self.index and r and r.nprobe is not None else None,
            "catalog_version": self.manifest.version,
            "description": self.describe(),
        }


def load_index(store: Store, manifest: CatalogManifest, record: IndexRecord, quantizer: CodeQuantizer) -> LoadedIndex:
    """The index of ``record``, refused with IndexFileError unless it was built for this
    catalog version, its codebooks and its codes, and its file is whole."""
    where = f"index {store.uri(record.file)} (catalog v{manifest.version})"
    if record.version != manifest.version or record.run_id != manifest.run_id:
        raise IndexFileError(
            f"{where} was built for catalog v{record.version} (run {record.run_id}), not v{manifest.version} "
            f"(run {manifest.run_id}): rebuild it with 'cecq index build', or search with --exact"
        )
    same_codebooks = record.quantizer_sha256 == digest(store.read_bytes(manifest.quantizer))
    if record.quantizer != manifest.quantizer or not same_codebooks:
        raise IndexFileError(f"{where} was built with other codebooks than {manifest.quantizer}: rebuild it")
    if not store.exists(record.file):
        raise IndexFileError(f"{where} is missing: rebuild it with 'cecq index build', or search with --exact")
    data = store.read_bytes(record.file)
    if len(data) != record.file_bytes or digest(data) != record.file_sha256:
        raise IndexFileError(
            f"{where} is truncated or altered ({len(data)} bytes, its record says {record.file_bytes}): rebuild it"
        )
    index = from_bytes(data, where)
    layout = code_layout(quantizer)
    inner = inner_index(index)
    if (
        inner.ntotal != record.rows
        or len(record.shard_rows) != len(manifest.codes)
        or inner.d != layout.dim
        or inner.nlist != record.clusters * len(record.norm_edges)
        or not layout.matches(inner)
    ):
        raise IndexFileError(
            f"{where} does not hold this version's codes ({inner.ntotal} rows of {inner.d} dims in {inner.nlist} "
            "lists, other codebooks or another layout): rebuild it"
        )
    return LoadedIndex(record, index, layout, GroupedSearcher(index, layout, record.clusters, record.norm_edges))


def plan_search(
    store: Store,
    manifest: CatalogManifest | None = None,
    quantizer: CodeQuantizer | None = None,
    exact: bool = False,
    index: str | None = None,
    nprobe: int | None = None,
) -> SearchPlan:
    """The search path for a version (default: the published one): the index named
    ``index``, else its most recently built one, else (or with ``exact``) the exhaustive scan."""
    m = manifest or current_manifest(store)
    if exact:
        if index is not None or nprobe is not None:
            raise ConfigError("--exact scans every code: it takes no --index or --nprobe")
        return SearchPlan(m, reason="--exact")
    records = index_records(store, m.version)
    if index is not None:
        records = [r for r in records if r.name == index]
        if not records:
            names = ", ".join(r.name for r in index_records(store, m.version)) or "none"
            raise ConfigError(f"catalog v{m.version} has no index {index!r} (it has: {names})")
    if not records:
        if nprobe is not None:
            raise ConfigError(f"--nprobe needs an IVF index; catalog v{m.version} has none")
        return SearchPlan(m, reason="no index built for it")
    loaded = load_index(store, m, records[-1], quantizer or load_quantizer(store, m.quantizer))
    plan = SearchPlan(m, loaded, nprobe)
    loaded.nprobe(nprobe)  # validate nprobe now
    return plan


def query_encoder(store: Store, manifest: CatalogManifest) -> tuple[Any, CodeQuantizer]:
    """``encode(texts, show_progress=False)`` -> decoded query rows (the quantizer's input
    width) with the version's models, weights and decoder; and its quantizer."""
    encoders = [load_store_encoder(store, name, manifest.corpus_key) for name in manifest.models]
    decoder, meta, quantizer = load_compressor(store, manifest.decoder, manifest.quantizer)

    def encode(texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        parts = [e.encode(list(texts), "query", show_progress=show_progress) for e in encoders]
        return decode(decoder, concatenate(parts, meta.get("model_weights")), quantizer.dim)  # no weights: equal

    return encode, quantizer


def search_store(
    store: Store, query: str, k: int = 10, scoring: CodeScoring = "asymmetric", plan: SearchPlan | None = None
) -> list[dict[str, Any]]:
    """Top-k published documents for a text query, scored against the compressed codes
    (the float query, or with ``scoring="symmetric"`` the query's own codes), through
    ``plan`` (default :func:`plan_search`: the version's index where it has one)."""
    return search_store_batch(store, [query], k, scoring=scoring, plan=plan)[0]


def search_store_batch(
    store: Store,
    queries: Sequence[str],
    k: int = 10,
    show_progress: bool = False,
    manifest: CatalogManifest | None = None,
    scoring: CodeScoring = "asymmetric",
    plan: SearchPlan | None = None,
) -> list[list[dict[str, Any]]]:
    """:func:`search_store` for many queries in one pass (over ``plan``'s catalog version,
    else ``manifest``'s, default the current one)."""
    m = plan.manifest if plan else manifest or current_manifest(store)
    encode, quantizer = query_encoder(store, m)
    q = encode(queries, show_progress)
    return search_published(store, q, k, m, quantizer, scoring=scoring, plan=plan)


def search_published(
    store: Store,
    queries: np.ndarray,
    k: int = 10,
    manifest: CatalogManifest | None = None,
    quantizer: CodeQuantizer | None = None,
    batch_rows: int = 65536,
    scoring: CodeScoring = "asymmetric",
    plan: SearchPlan | None = None,
) -> list[list[dict[str, Any]]]:
    """Top-k published documents for decoded query vectors, texts included.

    With an index (``plan``, default :func:`plan_search`) FAISS ranks the codes. Without,
    DuckDB streams the codes shard by shard in record batches (memory bounded by a batch,
    whatever the corpus size), then fetches the hits' ids by row number and their texts
    from only the corpus shards that hold hits; no catalog views are built. A shard that
    does not read is named (:class:`~cecq.errors.CorruptArtifactError`).
    """
    m = plan.manifest if plan else manifest or current_manifest(store)
    quantizer = quantizer or load_quantizer(store, m.quantizer)
    plan = plan or plan_search(store, m, quantizer)
    if plan.index is not None:
        loaded = plan.index
        scores, idx = loaded.searcher.search(
            prepare_queries(queries, quantizer, scoring),
            k,
            loaded.nprobe(plan.nprobe),
            loaded.record.shortlist,
            np.asarray(loaded.record.empty_rows, dtype=np.int64),
        )
        starts = np.concatenate([[0], np.cumsum(loaded.record.shard_rows)[:-1]]).astype(np.int64)
        return diagnosed(store, list(m.corpus_shards), lambda: hits_with_texts(store, m, scores, idx, starts))
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
    starts: list[int] = []  # first global row of every codes shard

    def batches():
        total = 0
        for path in m.codes:
            starts.append(total)
            for batch in code_batches(con, store.uri(path), quantizer.bytes_per_vector, batch_rows):
                total += len(batch[0])
                yield batch

    scores, idx = search_code_batches(queries, batches(), quantizer, k, scoring)
    return hits_with_texts(store, m, scores, idx, np.asarray(starts, dtype=np.int64), con)


def code_batches(
    con: duckdb.DuckDBPyConnection, uri: str, width: int, batch_rows: int = 65536
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(packed codes, empty flags)`` of one codes shard, streamed by DuckDB in record batches."""
    reader = con.sql(f"SELECT code, empty FROM read_parquet({sql_string(uri)})").to_arrow_reader(batch_rows)
    for batch in reader:
        yield _packed(batch.column(0), width), batch.column(1).to_numpy(zero_copy_only=False)


def hits_with_texts(
    store: Store,
    m: CatalogManifest,
    scores: np.ndarray,
    idx: np.ndarray,
    starts_arr: np.ndarray,
    con: Any = None,
) -> list[list[dict[str, Any]]]:
    """Hits as dicts (rank, id, score, text) for catalog row ids ``idx`` (``-1``: none found),
    ``starts_arr`` the first row of every codes shard; ids and texts fetched by DuckDB."""
    con = con or duckdb_connection(store)
    codes, corpus = [store.uri(p) for p in m.codes], [store.uri(p) for p in m.corpus_shards]
    found_mask = idx >= 0
    shard_of = np.searchsorted(starts_arr, idx, side="right") - 1
    ids: dict[int, str] = {}
    for shard in np.unique(shard_of[found_mask]):
        rows = (idx[(shard_of == shard) & found_mask] - starts_arr[shard]).tolist()
        found = con.execute(
            f"SELECT file_row_number, id FROM read_parquet({sql_string(codes[shard])}, file_row_number = true) "
            "WHERE file_row_number IN (SELECT unnest(?::BIGINT[]))",
            [rows],
        ).fetchall()
        ids.update((int(r) + int(starts_arr[shard]), i) for r, i in found)
    texts = (
        dict(
            con.execute(
                f"SELECT id, text FROM read_parquet({sql_list([corpus[s] for s in np.unique(shard_of[found_mask])])}) "
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
            if j >= 0
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


SQL_SEARCH_FUNCTION = "cecq_search"
SQL_HIT_TYPE = "STRUCT(rank INTEGER, id VARCHAR, score DOUBLE)[]"


def connect_with_search(store: Store, plan: SearchPlan | None = None) -> duckdb.DuckDBPyConnection:
    """:func:`~cecq.catalog.reader.connect`'s views plus ``cecq_search(query, k)``: the
    top-k documents for a text query as a list of ``(rank, id, score)`` structs, through
    ``plan`` (default: the published version's index where it has one). Unnest it and join
    the other views, e.g. ``SELECT h.*, c.text FROM (SELECT unnest(cecq_search($1, 10),
    recursive := true)) h JOIN corpus c USING (id)``. Models load on the first call."""
    con = connect(store)
    state: dict[str, Any] = {}

    def cecq_search(query: str, k: int) -> list[dict[str, Any]]:
        if query is None or k is None or k < 1:
            raise ValueError(f"{SQL_SEARCH_FUNCTION}(query, k) needs a query and k >= 1, got {query!r}, {k!r}")
        if "plan" not in state:
            state["plan"] = plan or plan_search(store)
            state["encode"], state["quantizer"] = query_encoder(store, state["plan"].manifest)
        q = state["encode"]([query])
        [hits] = search_published(store, q, int(k), quantizer=state["quantizer"], plan=state["plan"])
        return [{"rank": h["rank"], "id": h["id"], "score": h["score"]} for h in hits]

    con.create_function(SQL_SEARCH_FUNCTION, cecq_search, ["VARCHAR", "BIGINT"], SQL_HIT_TYPE, side_effects=False)
    return con
