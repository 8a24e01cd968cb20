"""FAISS indexes over published codes, on small hand-published stores with real FAISS:
product codes go in byte for byte with the store's own codebooks, a flat index ranks as
the exhaustive scan does, IVF recalls it, and bad indexes are refused by name."""

from __future__ import annotations

import io
import json

import faiss
import numpy as np
import pyarrow as pa
import pytest

from cecq.bench.perf_compute import build_store
from cecq.catalog import current_manifest, index_records, plan_search, search_published
from cecq.catalog.layout import index_file_path, index_record_path
from cecq.config import IndexConfig
from cecq.errors import ConfigError, IndexFileError, NoIndexStructureError
from cecq.index import code_layout, inner_index
from cecq.pipeline.index import build_index
from cecq.quantization import MixedQuantizer, ProductQuantizer, Quantizer
from cecq.storage import Store, digest

N, DIM = 3000, 48


def clustered(n: int, seed: int) -> np.ndarray:
    """Decoder-like rows: clusters, and norms that vary (as unnormalised decoder outputs do)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((30, DIM)).astype(np.float32)
    x = centres[rng.integers(0, 30, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (x * rng.uniform(0.5, 2.0, (n, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return clustered(N, 0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered(25, 1)


def make_store(tmp_path, quantizer, rows, shard_rows=700, empty=()) -> tuple[Store, np.ndarray]:
    packed = quantizer.quantize(rows)
    store = build_store(tmp_path / "store", packed, quantizer, shard_rows)
    if empty:  # mark some documents as without text (their codes stay as published)
        m = current_manifest(store)
        start = 0
        for path in m.codes:
            t = store.read_parquet(path)
            flags = np.zeros(t.num_rows, bool)
            for e in empty:
                if start <= e < start + t.num_rows:
                    flags[e - start] = True
            store.write_parquet(path, t.set_column(t.schema.get_field_index("empty"), "empty", pa.array(flags)))
            start += t.num_rows
    return store, packed


@pytest.fixture(scope="module")
def pq(rows) -> ProductQuantizer:
    return ProductQuantizer.fit(rows[:2000], 10)


def ranked(hits):
    return [[h["id"] for h in row] for row in hits], np.array([[h["score"] for h in row] for row in hits])


def test_product_codes_are_faiss_pq_codes_byte_for_byte(tmp_path, pq, rows):
    store, packed = make_store(tmp_path, pq, rows)
    for kind in ("flat", "ivf"):
        record = build_index(store, IndexConfig(kind=kind, nlist=16))
        index = faiss.deserialize_index(np.frombuffer(store.read_bytes(record.file), np.uint8))
        inner = inner_index(index)
        assert not inner.by_residual  # residual codes would be re-quantized codes
        stored = {}
        for lst in range(inner.nlist):
            n = inner.invlists.list_size(lst)
            if n:
                ids = faiss.rev_swig_ptr(inner.invlists.get_ids(lst), n).copy()
                codes = faiss.rev_swig_ptr(inner.invlists.get_codes(lst), n * pq.subspaces).copy()
                stored.update(zip(ids.tolist(), codes.reshape(n, pq.subspaces)))
        assert sorted(stored) == list(range(N))
        assert np.array_equal(np.stack([stored[i] for i in range(N)]), packed), kind
        np.testing.assert_array_equal(faiss.vector_to_array(inner.pq.centroids), pq.codebooks.ravel())
        # the quantizer's prefix cut and rotation are the file's pre-transform: raw decoder
        # outputs in, the published code space out
        transform = faiss.downcast_VectorTransform(faiss.downcast_index(index).chain.at(0))
        np.testing.assert_allclose(transform.apply(rows[:5]), pq.project(rows[:5]), atol=1e-5)


@pytest.mark.parametrize("kind", ["product", "scalar", "mixed"])
def test_a_flat_index_ranks_as_the_exhaustive_scan(tmp_path, rows, queries, pq, kind):
    quantizer = {
        "product": pq,
        "scalar": Quantizer.fit(rows[:2000], 2),
        "mixed": MixedQuantizer.fit(rows[:2000], 12),
    }[kind]
    store, _ = make_store(tmp_path, quantizer, rows, empty=(5, 1700))
    exact = search_published(store, queries, 10, plan=plan_search(store, exact=True))
    build_index(store, IndexConfig(kind="flat"))
    plan = plan_search(store)
    assert plan.index is not None and plan.index.record.name == "flat"
    assert "FAISS index flat" in plan.describe()
    found = search_published(store, queries, 10, plan=plan)
    ids, scores = ranked(found)
    ref_ids, ref_scores = ranked(exact)
    np.testing.assert_allclose(scores, ref_scores, atol=2e-5)
    assert ids == ref_ids


def test_ivf_recalls_the_flat_top_10_and_nprobe_is_checked(tmp_path, rows, queries, pq):
    store, _ = make_store(tmp_path, pq, rows)
    flat = build_index(store, IndexConfig(kind="flat"))
    exact_ids, _ = ranked(search_published(store, queries, 10, plan=plan_search(store, index=flat.name)))
    ivf = build_index(store, IndexConfig(kind="ivf", nlist=32, nprobe=8))
    assert ivf.name == "ivf-nlist32" and ivf.nprobe == 8
    assert plan_search(store).index.record.name == ivf.name  # the newest index is the default
    recall = {}
    for nprobe in (1, 8, 32):
        ids, _ = ranked(search_published(store, queries, 10, plan=plan_search(store, nprobe=nprobe)))
        recall[nprobe] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact_ids)])
    assert recall[32] == 1.0  # every list probed: the flat result
    assert recall[1] < recall[8] <= recall[32]
    assert recall[8] >= 0.9
    for bad in (0, 33):
        with pytest.raises(ConfigError, match=r"nprobe must be in 1\.\.32"):
            plan_search(store, nprobe=bad)
    with pytest.raises(ConfigError, match="nprobe applies to IVF"):
        plan_search(store, index="flat", nprobe=4)
    with pytest.raises(ConfigError, match=r"nlist must be in 1\.\.3000"):
        build_index(store, IndexConfig(kind="ivf", nlist=3001))
    with pytest.raises(ConfigError, match="nlist must be >= 1"):
        IndexConfig(kind="ivf", nlist=0)
    assert [r.name for r in index_records(store, 1)] == ["flat", "ivf-nlist32"]


def test_a_rebuild_finds_the_index_and_bad_files_are_refused_by_name(tmp_path, rows, queries, pq):
    store, _ = make_store(tmp_path, pq, rows)
    record = build_index(store, IndexConfig(kind="flat"))
    data = store.read_bytes(record.file)
    assert build_index(store, IndexConfig(kind="flat")) == record  # immutable: found, not rebuilt
    assert store.read_bytes(record.file) == data
    path = store.uri(record.file)

    store.write_bytes(record.file, data[: len(data) // 2])  # truncated
    with pytest.raises(IndexFileError, match=rf"{path}.*catalog v1.*truncated"):
        plan_search(store)
    assert plan_search(store, exact=True).index is None  # the exact scan stays available

    store.write_bytes(record.file, data)
    meta = json.loads(store.read_bytes(index_record_path(1, "flat")))
    store.write_json(index_record_path(1, "flat"), {**meta, "version": 7})  # copied from another version
    with pytest.raises(IndexFileError, match=rf"{path}.*built for catalog v7.*not v1"):
        plan_search(store)

    other = ProductQuantizer.fit(rows[1000:3000], 10, seed=3)  # other codebooks, same shape
    store.write_json(index_record_path(1, "flat"), meta)
    buf = io.BytesIO()
    other.save(buf)
    saved = store.read_bytes("runs/bench/quantizer.parquet")
    store.write_bytes("runs/bench/quantizer.parquet", buf.getvalue())
    with pytest.raises(IndexFileError, match=rf"{path}.*other codebooks"):
        plan_search(store)
    store.write_bytes("runs/bench/quantizer.parquet", saved)
    assert plan_search(store).index is not None
    junk = b"not a faiss index" + b"\0" * 40
    store.write_bytes(index_file_path(1, "flat"), junk)
    store.write_json(index_record_path(1, "flat"), {**meta, "file_bytes": len(junk), "file_sha256": digest(junk)})
    with pytest.raises(IndexFileError, match=rf"{path}.*not a readable FAISS index"):
        plan_search(store)
    with pytest.raises(ConfigError, match=r"no index 'ivf-nlist4'.*flat"):
        plan_search(store, index="ivf-nlist4")


def test_a_quantizer_without_an_index_structure_is_a_clear_error(tmp_path):
    from cecq.quantization import unregister_quantizer
    from tests.helpers.toy_quantizer import ToyQuantizer  # registers the toy kind: removed below

    try:
        with pytest.raises(NoIndexStructureError, match=r"no FAISS index structure.*--exact"):
            code_layout(ToyQuantizer.fit_sample(np.ones((4, 8), np.float32), bits=None, budget_bytes=1))
    finally:
        unregister_quantizer(ToyQuantizer.kind)


def test_an_empty_catalog_version_has_nothing_to_index(tmp_path, pq):
    store, _ = make_store(tmp_path, pq, np.zeros((0, DIM), np.float32))
    with pytest.raises(ValueError, match=r"catalog v1 .* has no documents"):
        build_index(store, IndexConfig())
