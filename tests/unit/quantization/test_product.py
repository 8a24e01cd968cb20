"""Product quantization: shapes, the rotation, k-means, search, the Parquet file and errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as parquet
import pytest

from cecq.encoders import l2_normalize
from cecq.errors import ConfigError, CorruptArtifactError, RecordVersionError
from cecq.quantization import MixedQuantizer, Quantizer, load_quantizer, quantizer_class
from cecq.quantization.product import (
    CODEBOOK_SIZE,
    ROTATION_GENERATOR,
    ProductQuantizer,
    _Draws,
    random_rotation,
    rotation_sha256,
)
from cecq.search import search_codes
from tests.helpers.paths import FIXTURES


def correlated(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Rows with decreasing per-dim variance and correlated dims, like a PCA-initialised decoder's."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    return (rng.standard_normal((n, dim)) * np.linspace(2.0, 0.2, dim)) @ (np.eye(dim) + 0.5 * mix)


def test_fit_codes_a_rotated_prefix_one_byte_a_subspace():
    x = correlated(1200, 40).astype(np.float32)
    pq = ProductQuantizer.fit(x, budget_bytes=6, sub_dim=4)
    assert (pq.dim, pq.kept_dims, pq.subspaces, pq.sub_dim, pq.bytes_per_vector) == (40, 24, 6, 4, 6)
    assert pq.codebooks.shape == (6, CODEBOOK_SIZE, 4)
    np.testing.assert_allclose(pq.rotation @ pq.rotation.T, np.eye(24), atol=1e-5)
    # code space is the rotated 24-dim prefix: inner products of the prefix are kept
    y = pq.project(x[:5])
    np.testing.assert_allclose(y @ y.T, x[:5, :24] @ x[:5, :24].T, rtol=1e-4, atol=1e-3)
    codes = pq.quantize(x)
    assert codes.dtype == np.uint8 and codes.shape == (1200, 6)
    np.testing.assert_array_equal(codes, pq.encode(x))
    np.testing.assert_array_equal(pq.unpack(codes), codes)
    manual = np.concatenate([pq.codebooks[j, codes[:, j]] for j in range(6)], axis=1)
    np.testing.assert_array_equal(pq.dequantize_packed(codes), manual)
    np.testing.assert_array_equal(pq.dequantize(codes), manual)


def test_each_code_is_the_nearest_centroid():
    x = correlated(500, 16, seed=1).astype(np.float32)
    pq = ProductQuantizer.fit(x, budget_bytes=4, sub_dim=4)
    y = pq.project(x).reshape(500, 4, 4)
    codes = pq.encode(x)
    for j in range(4):
        d = ((y[:, j, None, :] - pq.codebooks[j][None]) ** 2).sum(-1)
        np.testing.assert_allclose(d[np.arange(500), codes[:, j]], d.min(1), rtol=1e-5, atol=1e-6)


def test_kmeans_codes_beat_scalar_codes_of_the_same_bytes_on_held_out_rows():
    # 256 centroids a 4-dim subspace against 2 bits on each of the 4 dims (256 grid cells):
    # k-means fits the data's shape, the grid does not.
    x = correlated(6000, 32, seed=2).astype(np.float32)
    train, held_out = x[:4000], x[4000:]
    pq = ProductQuantizer.fit(train, budget_bytes=8, sub_dim=4)
    y = pq.project(held_out)
    pq_error = ((y - pq.dequantize(pq.encode(held_out))) ** 2).sum(1).mean()
    sq = Quantizer.fit(pq.project(train), 2)
    sq_error = ((y - sq.dequantize(sq.encode(y))) ** 2).sum(1).mean()
    assert pq.bytes_per_vector == sq.bytes_per_vector == 8
    assert pq_error < 0.9 * sq_error, (pq_error, sq_error)


@pytest.mark.parametrize("scoring", ["symmetric", "asymmetric"])
def test_search_finds_each_document_from_its_own_vector(scoring):
    docs = l2_normalize(correlated(400, 48, seed=3).astype(np.float32))
    pq = ProductQuantizer.fit(docs, budget_bytes=12, sub_dim=4)
    _, idx = search_codes(docs, pq.quantize(docs), pq, k=3, scoring=scoring)
    assert (idx[:, 0] == np.arange(400)).mean() > 0.9
    assert (idx == np.arange(400)[:, None]).any(1).mean() > 0.97


def test_fit_is_deterministic_and_the_seed_matters():
    x = correlated(700, 16, seed=4).astype(np.float32)
    a, b = ProductQuantizer.fit(x, 4, seed=0), ProductQuantizer.fit(x, 4, seed=0)
    np.testing.assert_array_equal(a.codebooks, b.codebooks)
    np.testing.assert_array_equal(a.rotation, b.rotation)
    assert not np.array_equal(a.rotation, ProductQuantizer.fit(x, 4, seed=1).rotation)
    np.testing.assert_allclose(random_rotation(8, 3).T @ random_rotation(8, 3), np.eye(8), atol=1e-5)


def test_fewer_rows_than_centroids_still_fit_and_reconstruct_the_sample_exactly(caplog):
    x = correlated(40, 8, seed=5).astype(np.float32)
    with caplog.at_level("WARNING", logger="cecq.product_quantizer"):
        pq = ProductQuantizer.fit(x, 2, sub_dim=4)
    assert "fitted on 40 rows" in caplog.text
    np.testing.assert_allclose(pq.dequantize(pq.encode(x)), pq.project(x), atol=1e-5)


def test_file_round_trip_and_load_quantizer_dispatch(tmp_path):
    x = correlated(800, 20, seed=6).astype(np.float32)
    pq = ProductQuantizer.fit(x, budget_bytes=5, sub_dim=4)
    pq.save(tmp_path / "q.parquet")
    loaded = load_quantizer(tmp_path / "q.parquet")
    assert isinstance(loaded, ProductQuantizer) and loaded.input_dim == 20
    np.testing.assert_array_equal(loaded.rotation, pq.rotation)
    np.testing.assert_array_equal(loaded.codebooks, pq.codebooks)
    np.testing.assert_array_equal(loaded.quantize(x), pq.quantize(x))
    # the other kinds still load as themselves
    Quantizer.fit(x, 2).save(tmp_path / "s.parquet")
    MixedQuantizer.fit(x, 5).save(tmp_path / "m.parquet")
    assert type(load_quantizer(tmp_path / "s.parquet")) is Quantizer
    assert type(load_quantizer(tmp_path / "m.parquet")) is MixedQuantizer


def test_an_unknown_quantizer_kind_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"x": [1]}).replace_schema_metadata({"cecq.quantizer": json.dumps({"kind": "lattice"})})
    pq.write_table(table, tmp_path / "q.parquet")
    with pytest.raises(ValueError, match="unknown quantizer kind 'lattice'"):
        load_quantizer(tmp_path / "q.parquet")


def test_product_codes_read_four_dims_a_byte_and_other_kinds_all_dims():
    assert quantizer_class("product").reads(768, None, 53) == 212
    assert quantizer_class("product").reads(212, None, 53) == 212
    assert quantizer_class("mixed").reads(768, None, 53) == 768  # its allocation picks the dims
    assert quantizer_class("scalar").reads(256, 2, None) == 256
    with pytest.raises(ConfigError, match=r"budget_bytes must be in 1\.\.53"):
        quantizer_class("product").reads(212, None, 54)


def test_bad_arguments_are_refused_with_the_reason():
    x = correlated(100, 16).astype(np.float32)
    with pytest.raises(ValueError, match="5 bytes of 4-dim subspaces code 20 dims, but the vectors have 16"):
        ProductQuantizer.fit(x, 5)
    with pytest.raises(ValueError, match="at least 2 rows"):
        ProductQuantizer.fit(x[:1], 2)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        ProductQuantizer.fit(bad, 2)
    pq = ProductQuantizer.fit(x, 2)
    with pytest.raises(ValueError, match="expects 16-dim rows"):
        pq.encode(x[:, :8])
    with pytest.raises(ValueError, match="do not hold 2 subspaces"):
        pq.dequantize_packed(np.zeros((3, 5), np.uint8))


def _meta(path) -> dict:
    return json.loads(parquet.read_schema(path).metadata[b"cecq.quantizer"])


def _rewrite_meta(path, meta: dict) -> None:
    table = parquet.read_table(path)
    parquet.write_table(table.replace_schema_metadata({"cecq.quantizer": json.dumps(meta)}), path)


def test_a_fitted_rotation_is_stored_as_its_seed_and_the_file_is_smaller_by_the_matrix(tmp_path):
    x = correlated(1200, 48, seed=7).astype(np.float32)
    pq = ProductQuantizer.fit(x, budget_bytes=10, sub_dim=4, seed=3)
    pq.save(tmp_path / "seeded.parquet")
    # the same quantizer with no known seed (as a version-1 file loads) stores the matrix
    ProductQuantizer(pq.input_dim, pq.rotation, pq.codebooks).save(tmp_path / "matrix.parquet")
    meta = _meta(tmp_path / "seeded.parquet")
    assert meta["format_version"] == 2 and meta["rotation"]["seed"] == 3
    assert meta["rotation"]["generator"] == ROTATION_GENERATOR
    assert "format_version" not in _meta(tmp_path / "matrix.parquet")  # the version-1 file, unstamped
    assert parquet.read_schema(tmp_path / "seeded.parquet").names == ["subspace", "centroids"]
    saved = (tmp_path / "matrix.parquet").stat().st_size - (tmp_path / "seeded.parquet").stat().st_size
    assert saved >= pq.rotation.nbytes, (saved, pq.rotation.nbytes)  # 40 x 40 float32s at least
    for name in ("seeded.parquet", "matrix.parquet"):
        loaded = load_quantizer(tmp_path / name)
        assert loaded.rotation.tobytes() == pq.rotation.tobytes()
        np.testing.assert_array_equal(loaded.codebooks, pq.codebooks)
        np.testing.assert_array_equal(loaded.quantize(x), pq.quantize(x))
    # a loaded seeded file writes back byte for byte
    load_quantizer(tmp_path / "seeded.parquet").save(tmp_path / "again.parquet")
    assert (tmp_path / "again.parquet").read_bytes() == (tmp_path / "seeded.parquet").read_bytes()


def test_a_rotation_the_seed_does_not_regenerate_keeps_its_matrix(tmp_path):
    x = correlated(800, 16, seed=8).astype(np.float32)
    pq = ProductQuantizer.fit(x, 4, seed=0)
    nudged = pq.rotation.copy()
    nudged[0, 0] = np.nextafter(nudged[0, 0], np.float32(2))  # one ulp: no longer what seed 0 makes
    ProductQuantizer(pq.input_dim, nudged, pq.codebooks, rotation_seed=0).save(tmp_path / "q.parquet")
    assert "rotation" not in _meta(tmp_path / "q.parquet")
    assert load_quantizer(tmp_path / "q.parquet").rotation.tobytes() == nudged.tobytes()


def test_a_tampered_seed_or_generator_is_refused_naming_the_file(tmp_path):
    x = correlated(800, 16, seed=9).astype(np.float32)
    path = tmp_path / "q.parquet"
    ProductQuantizer.fit(x, 4, seed=0).save(path)
    meta = _meta(path)
    _rewrite_meta(path, {**meta, "rotation": {**meta["rotation"], "seed": 1}})
    with pytest.raises(CorruptArtifactError, match=rf"{path}: the rotation regenerated from seed 1 has sha256"):
        load_quantizer(path)
    with pytest.raises(CorruptArtifactError, match="regenerated from seed 1"):
        ProductQuantizer.load(path)
    _rewrite_meta(path, {**meta, "rotation": {**meta["rotation"], "generator": "sobol"}})
    with pytest.raises(RecordVersionError, match=rf"{path}: the rotation is made by generator 'sobol'.*upgrade cecq"):
        load_quantizer(path)
    for bad in ({"seed": "0"}, {**meta["rotation"], "seed": True}):
        _rewrite_meta(path, {**meta, "rotation": bad})
        with pytest.raises(CorruptArtifactError, match="lacks an integer seed"):
            load_quantizer(path)
    # a seeded file's shape is checked before its matrix is rebuilt (its size does not bound it)
    for shape in ({"kept_dims": 10**6}, {"kept_dims": 15}, {"sub_dim": 0}, {"kept_dims": 32, "input_dim": 20}):
        _rewrite_meta(path, {**meta, **shape})
        with pytest.raises(CorruptArtifactError, match=rf"{path}: a product quantizer of 4 subspaces"):
            load_quantizer(path)


def test_the_version_1_product_file_of_the_legacy_store_reads_and_writes_back_as_it_was(tmp_path):
    (legacy,) = (FIXTURES / "legacy-store" / "store" / "runs").glob("run-78e4*/quantizer.parquet")
    loaded = load_quantizer(legacy)
    assert isinstance(loaded, ProductQuantizer) and loaded.rotation_seed is None
    loaded.save(tmp_path / "q.parquet")
    again = parquet.read_table(tmp_path / "q.parquet")
    assert again.equals(parquet.read_table(legacy))  # the matrix column kept, and the values
    assert again.schema.metadata == parquet.read_schema(legacy).metadata  # unstamped: still version 1


def test_the_rotation_is_the_same_bytes_under_every_blas_kernel_and_thread_count():
    # A QR of a Gaussian gave other bytes at 768 dims under OpenBLAS's Prescott kernel, so a
    # seed could not stand for the matrix; the Givens layers use no BLAS at all.
    import subprocess
    import sys

    script = (
        "from cecq.quantization.product import random_rotation, rotation_sha256;"
        "print(','.join(rotation_sha256(random_rotation(d, 5)) for d in (212, 768)))"
    )
    found = set()
    for env in ({"OPENBLAS_CORETYPE": "Prescott"}, {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "2"}):
        out = subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, check=True
        )
        found.add(out.stdout.strip())
    here = ",".join(rotation_sha256(random_rotation(d, 5)) for d in (212, 768))
    assert found == {here}
    r = random_rotation(768, 5).astype(np.float64)
    np.testing.assert_allclose(r @ r.T, np.eye(768), atol=1e-6)
    assert random_rotation(1, 0).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="at least 1 dim"):
        random_rotation(0)


# random_rotation(212, 0): the 53 B rotation of seed 0, as every version-2 file since round 7 records it
PINNED_212 = "bd28f10a29dd7c24ec80b7cc0bf90e5c72cccac382d85171cec83a513b2da80d"


def test_the_rotations_draws_are_numpys_today_and_its_bytes_are_pinned():
    # The draws come from PCG64's raw stream, which NumPy keeps across releases; they match
    # Generator.permutation and Generator.random today, so files written before they replaced
    # those calls still regenerate. The pinned sha256 fails CI, not a user's store, if either changes.
    for seed in (0, 3, 2**40 + 7):
        rng, draws = np.random.default_rng(seed), _Draws(seed)
        for n in (1, 2, 5, 212, 768, 3):
            np.testing.assert_array_equal(draws.permutation(n), rng.permutation(n))
            assert draws.uniform(n).tobytes() == rng.random(n).tobytes()
    assert rotation_sha256(random_rotation(212, 0)) == PINNED_212


def test_seeds_beyond_a_c_int_fit():
    x = correlated(600, 16, seed=10).astype(np.float32)
    big = ProductQuantizer.fit(x, 4, seed=2**31 + 5, iterations=2)
    assert big.rotation_seed == 2**31 + 5 and big.codebooks.shape == (4, CODEBOOK_SIZE, 4)
