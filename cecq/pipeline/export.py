"""``cecq export --format faiss``: a published version as one FAISS index file (taking the
decoder's output rows) plus a JSON sidecar and the document ids in index order, for a
service that loads them with FAISS and :func:`serving_encoder` alone."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cecq.catalog.reader import current_manifest, index_records, load_compressor, read_manifest
from cecq.catalog.search import load_index, query_encoder
from cecq.config import IndexConfig
from cecq.errors import ConfigError
from cecq.pipeline.index import build_index
from cecq.storage import Store, stage_local

SIDECAR_FORMAT = 1


def export_faiss(store: Store, out: str, index: str | None = None) -> dict[str, Any]:
    """Write ``out`` (the version's index, built flat if it has none), ``out.json`` and
    ``out.ids.parquet``; return what was written."""
    m = current_manifest(store)
    records = index_records(store, m.version)
    if index is not None:
        records = [r for r in records if r.name == index]
        if not records:
            raise ConfigError(f"catalog v{m.version} has no index {index!r}")
    if os.path.isdir(out):
        raise ConfigError(f"export to {out!r}: that is a folder; give the index file's path (e.g. {out}/served.faiss)")
    if store.is_local and (os.path.realpath(out) + os.sep).startswith(os.path.realpath(store.root) + os.sep):
        raise ConfigError(f"export to {out!r} would write inside the store {store.url}: choose a path outside it")
    record = records[-1] if records else build_index(store, IndexConfig(), m)
    _, meta, quantizer = load_compressor(store, m.decoder, m.quantizer)
    load_index(store, m, record, quantizer)  # refuses a stale or damaged file before it is copied
    ids = pa.concat_arrays(
        [store.read_parquet(p, ["id"]).column("id").combine_chunks().cast(pa.string()) for p in m.codes]
    )
    index_bytes = store.read_bytes(record.file)  # everything is read before anything is written
    ids_file = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": ids}), ids_file)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "store": store.url,
        "catalog_version": m.version,
        "run_id": m.run_id,
        "index": record.name,
        "index_kind": record.kind,
        "layout": record.layout,
        "nprobe": record.nprobe,
        "models": m.models,
        "model_weights": meta.get("model_weights"),
        "decoder": m.decoder,
        "quantizer": m.quantizer,
        "input_dim": quantizer.dim,
        "index_dim": int(quantizer.kept_dims),
        "quantization": m.quantization,
        "documents": record.rows,
        "ids": os.path.basename(out) + ".ids.parquet",
        "metric": "inner product (normalise queries; product codes: FAISS's ranking before cecq's cosine re-scoring)",
    }
    # Every file is written whole beside its target first, then each is renamed over its old
    # copy, the sidecar (which names the others) last: a failure while writing (a full disk)
    # leaves the earlier export as it was, not a new index beside the old ids. (Only a crash
    # between two renames, which do not fail on one filesystem, could mix the two.)
    staged: list[tuple[str, str]] = []
    try:
        for path, data in (
            (out, index_bytes),
            (out + ".ids.parquet", ids_file.getvalue().to_pybytes()),
            (out + ".json", json.dumps(sidecar, indent=2).encode()),
        ):
            staged.append((stage_local(path, data), path))
        while staged:
            os.replace(*staged[0])
            staged.pop(0)
    finally:
        for tmp, _ in staged:  # what was not renamed: a failure's leftovers
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
    return {"index": out, "sidecar": out + ".json", "ids": out + ".ids.parquet", "catalog_version": m.version}


def serving_encoder(sidecar_path: str) -> Any:
    """The query encoder a sidecar names: ``encode(texts) -> (n, input_dim)`` float32 rows,
    L2-normalised, ready for the exported index's ``search``."""
    with open(sidecar_path) as f:
        sidecar = json.load(f)
    store = Store(sidecar["store"])
    encode, _ = query_encoder(store, read_manifest(store, int(sidecar["catalog_version"])))

    def encode_texts(texts: list[str]) -> np.ndarray:
        q = np.asarray(encode(texts), dtype=np.float32)
        return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)

    return encode_texts
