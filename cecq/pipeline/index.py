"""The index step: a FAISS search index over a published catalog version's codes, written
into the store as an immutable named artifact (``catalog/v<N>/index/<name>.faiss`` plus its
record, written last). Codes are streamed shard by shard; product codes go into FAISS as
they stand (see :mod:`cecq.index.layouts`). A rerun finds the record and skips."""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cecq.catalog.layout import index_file_path, index_record_path
from cecq.catalog.reader import current_manifest, load_quantizer, read_index_record
from cecq.catalog.records import CatalogManifest, IndexRecord
from cecq.config import IndexConfig
from cecq.errors import DataError
from cecq.index import (
    add_documents,
    coarse_centroids,
    code_layout,
    index_kind,
    make_index,
    norm_edges,
    with_pre_transform,
    write_index_file,
)
from cecq.index.layouts import CodeLayout
from cecq.storage import Store, digest

logger = logging.getLogger(__name__)


def fixed_width_codes(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A fixed-size binary codes column as ``(n, width)`` uint8."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.type != pa.binary(width) or arr.null_count:
        raise DataError(f"codes column of type {arr.type} does not hold {width}-byte codes")
    return np.frombuffer(arr.buffers()[1], np.uint8, count=len(arr) * width, offset=arr.offset * width).reshape(
        -1, width
    )


def _read_codes(store: Store, path: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    table = store.read_parquet(path, ["code", "empty"])
    return fixed_width_codes(table.column("code"), width), table.column("empty").to_numpy(zero_copy_only=False)


def _first_pass(
    store: Store, manifest: CatalogManifest, shard_rows: list[int], rows: int, layout: CodeLayout, seed: int
) -> tuple[float, float, np.ndarray]:
    """One streamed pass over the codes: the least and greatest norm of the vectors FAISS
    scores (documents with text), and code-space vectors of up to ``rows`` documents drawn
    evenly at random (for k-means)."""
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(sum(shard_rows), size=min(rows, sum(shard_rows)), replace=False))
    parts, start, low, high = [], 0, np.inf, 0.0
    for path, count in zip(manifest.codes, shard_rows):
        packed, empty = _read_codes(store, path, layout.quantizer.bytes_per_vector)
        full = ~empty.astype(bool)
        if full.any():
            norms = layout.norms(layout.faiss_codes(packed[full], None)) if not layout.exact_scores else [1.0]
            low, high = min(low, float(np.min(norms))), max(high, float(np.max(norms)))
        local = keep[(keep >= start) & (keep < start + count)] - start
        local = local[full[local]]
        if len(local):
            parts.append(layout.vectors(packed[local], None))
        start += count
    sample = np.concatenate(parts) if parts else np.zeros((0, layout.dim), np.float32)
    return (low, high, sample) if high > 0 else (1.0, 1.0, sample)


def shard_row_counts(store: Store, manifest: CatalogManifest) -> list[int]:
    """Rows of every codes shard of a version, from the Parquet footers."""
    counts = []
    for path in manifest.codes:
        with store.fs.open(store.path(path), "rb") as f:
            counts.append(pq.ParquetFile(f).metadata.num_rows)
    return counts


def build_index(
    store: Store, config: IndexConfig = IndexConfig(), manifest: CatalogManifest | None = None
) -> IndexRecord:
    """Build (or find) the ``config.kind`` index of ``manifest``'s version (default: the
    published one) and return its record."""
    started = time.perf_counter()
    m = manifest or current_manifest(store)
    quantizer = load_quantizer(store, m.quantizer)
    layout = code_layout(quantizer)
    kind = index_kind(config.kind)
    shard_rows = shard_row_counts(store, m)
    n = sum(shard_rows)
    if n == 0:
        raise DataError(f"catalog v{m.version} of {store.url} has no documents: nothing to index")
    params = kind.params(n, config)
    name = kind.artifact_name(params)
    record_path = index_record_path(m.version, name)
    if store.exists(record_path):
        logger.info("index %s of catalog v%d exists: skipped", name, m.version)
        return read_index_record(store, record_path)
    low, high, sample = _first_pass(store, m, shard_rows, kind.train_rows(params, config), layout, config.seed)
    centroids = coarse_centroids(kind.centroids(layout.dim, sample if kind.trains else None, params, config.seed))
    edges = [low, high] if layout.exact_scores else norm_edges(low, high, config.norm_ratio)
    index = make_index(layout, centroids, len(edges) - 1)
    first, empty_rows = 0, []
    for path, count in zip(m.codes, shard_rows):
        packed, empty = _read_codes(store, path, quantizer.bytes_per_vector)
        if len(packed) != count:
            raise DataError(f"{store.uri(path)}: {len(packed)} rows, its footer says {count}")
        add_documents(index, layout, centroids, edges, packed, empty, first)
        empty_rows += (np.flatnonzero(empty) + first).tolist()
        first += count
    nprobe = min(config.nprobe, len(centroids)) if kind.trains else None
    index.nprobe = (nprobe or len(centroids)) * len(edges)  # plain FAISS search: whole clusters, all groups
    file_rel = index_file_path(m.version, name)
    with tempfile.TemporaryDirectory(prefix="cecq-index-") as tmp:
        local = os.path.join(tmp, "index.faiss")
        file_bytes, file_sha256 = write_index_file(with_pre_transform(index, layout), local)
        del index  # the lists are on disk: the upload needs only the file
        store.write_file(file_rel, local)
    record = IndexRecord(
        name=name,
        kind=kind.name,
        layout=layout.name,
        version=m.version,
        run_id=m.run_id,
        quantizer=m.quantizer,
        quantizer_sha256=digest(store.read_bytes(m.quantizer)),
        file=file_rel,
        file_bytes=file_bytes,
        file_sha256=file_sha256,
        rows=n,
        shard_rows=shard_rows,
        params=params,
        nprobe=nprobe,
        shortlist=config.shortlist,
        empty_rows=empty_rows,
        clusters=len(centroids),
        norm_edges=edges,
        built=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        seconds=round(time.perf_counter() - started, 3),
    )
    store.write_json(record_path, record.to_dict())
    return record
