"""Percentile quantization, bit packing, centroids and the Parquet file."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from cecq.errors import ConfigError
from cecq.quantization import Quantizer, bytes_per_vector, pack_codes, unpack_codes

BITS = (1, 2, 4, 8)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("dim", [1, 3, 8, 13, 64, 77])
def test_pack_unpack_round_trip(bits, dim):
    rng = np.random.default_rng(bits * 100 + dim)
    codes = rng.integers(0, 1 << bits, size=(37, dim), dtype=np.uint8)
    codes[0] = (1 << bits) - 1  # all-ones row
    codes[1] = 0
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.shape == (37, bytes_per_vector(dim, bits))
    out = unpack_codes(packed, dim, bits)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, codes)


def test_pack_layout_is_most_significant_bit_first():
    # 2-bit codes 3,0,1,2 -> bits 11 00 01 10 -> 0b11000110
    assert pack_codes(np.array([[3, 0, 1, 2]]), 2).tolist() == [[0b11000110]]
    # 1-bit codes, 9 dims -> two bytes, the second padded with zeros
    assert pack_codes(np.array([[1, 0, 0, 0, 0, 0, 0, 1, 1]]), 1).tolist() == [[0b10000001, 0b10000000]]
    assert pack_codes(np.array([[15, 1]]), 4).tolist() == [[0xF1]]


def test_pack_handles_no_rows():
    packed = pack_codes(np.zeros((0, 10), np.uint8), 2)
    assert packed.shape == (0, 3)
    assert unpack_codes(packed, 10, 2).shape == (0, 10)


@pytest.mark.parametrize(
    "dim,bits,expected",
    [
        (13, 1, 2),
        (13, 2, 4),
        (13, 4, 7),
        (13, 8, 13),
        (768, 2, 192),
        (256, 4, 128),
        (512, 2, 128),
        (1, 1, 1),
        (8, 1, 1),
        (9, 1, 2),
    ],
)
def test_bytes_per_vector(dim, bits, expected):
    assert bytes_per_vector(dim, bits) == expected
    q = Quantizer(bits, np.zeros((dim, (1 << bits) - 1), np.float32), np.zeros((dim, 1 << bits), np.float32))
    assert q.bytes_per_vector == expected
    assert q.quantize(np.zeros((2, dim), np.float32)).shape == (2, expected)


def test_invalid_bits_and_codes_raise():
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    for bad in (0, 3, 5, 16):
        with pytest.raises(ValueError):
            Quantizer.fit(x, bad)
        with pytest.raises(ValueError):
            pack_codes(np.zeros((2, 4), np.uint8), bad)
        with pytest.raises(ConfigError):
            Quantizer.check(4, bad, None)
    with pytest.raises(ValueError):
        pack_codes(np.array([[4, 0]]), 2)  # code does not fit in 2 bits
    with pytest.raises(ValueError):
        unpack_codes(np.zeros((2, 3), np.uint8), 10, 1)  # wrong packed width
    with pytest.raises(ValueError):
        Quantizer.fit(x[:1], 2)
    nan = x.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError):
        Quantizer.fit(nan, 2)


@pytest.mark.parametrize("bits", BITS)
def test_thresholds_are_equal_frequency(bits):
    # 2560 distinct values per dimension (0..2559, shuffled differently in every column):
    # with 2^b bins each bin must hold exactly 2560 / 2^b of the sample.
    n, dim, levels = 2560, 5, 1 << bits
    rng = np.random.default_rng(bits)
    x = np.stack([rng.permutation(n) for _ in range(dim)], axis=1).astype(np.float32)
    q = Quantizer.fit(x, bits)
    assert q.thresholds.shape == (dim, levels - 1) and q.centroids.shape == (dim, levels)
    assert np.all(np.diff(q.thresholds, axis=1) > 0)
    codes = q.encode(x)
    for j in range(dim):
        counts = np.bincount(codes[:, j], minlength=levels)
        assert counts.tolist() == [n // levels] * levels
    # bin k holds the values k*n/L .. (k+1)*n/L - 1
    np.testing.assert_array_equal(codes[:, 0], (x[:, 0] // (n // levels)).astype(np.uint8))


def test_thresholds_match_known_percentiles():
    x = np.tile(np.arange(1000, dtype=np.float32)[:, None], (1, 3))
    q1 = Quantizer.fit(x, 1)
    np.testing.assert_allclose(q1.thresholds, 499.5)
    assert np.bincount(q1.encode(x)[:, 0]).tolist() == [500, 500]
    q2 = Quantizer.fit(x, 2)
    np.testing.assert_allclose(q2.thresholds[0], [249.75, 499.5, 749.25])
    assert np.bincount(q2.encode(x)[:, 1]).tolist() == [250, 250, 250, 250]


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_centroids_are_bin_means(bits):
    rng = np.random.default_rng(10 + bits)
    x = np.concatenate([rng.normal(size=(400, 3)), rng.exponential(size=(400, 3))], axis=1).astype(np.float32)
    q = Quantizer.fit(x, bits)
    for j in range(x.shape[1]):
        # bin index computed independently of Quantizer.encode
        bins = np.digitize(x[:, j], q.thresholds[j], right=False)
        for b in range(1 << bits):
            members = x[bins == b, j]
            assert members.size > 0
            assert q.centroids[j, b] == pytest.approx(members.mean(), rel=1e-5, abs=1e-6)
            assert (b == 0 or members.min() >= q.thresholds[j, b - 1]) and (
                b == (1 << bits) - 1 or members.max() < q.thresholds[j, b]
            )
    # dequantize replaces every code by its centroid
    codes = q.encode(x)
    deq = q.dequantize(codes)
    assert deq.shape == x.shape
    np.testing.assert_array_equal(deq, q.centroids[np.arange(x.shape[1])[None, :], codes])
    # centroids are ascending, so dequantized values keep the order of the codes
    assert np.all(np.diff(q.centroids, axis=1) > 0)


def test_constant_dimension_gives_finite_centroids():
    rng = np.random.default_rng(0)
    x = np.stack([np.full(100, 0.25), rng.normal(size=100)], axis=1).astype(np.float32)
    q = Quantizer.fit(x, 2)
    assert np.all(np.isfinite(q.centroids))
    np.testing.assert_allclose(q.dequantize(q.encode(x))[:, 0], 0.25)


def test_encode_checks_dimension_and_quantize_unpack_agree():
    x = np.random.default_rng(1).normal(size=(60, 10)).astype(np.float32)
    q = Quantizer.fit(x, 4)
    np.testing.assert_array_equal(q.unpack(q.quantize(x)), q.encode(x))
    with pytest.raises(ValueError):
        q.encode(x[:, :9])
    assert q.dequantize(np.zeros((0, 10), np.uint8)).shape == (0, 10)


@pytest.mark.parametrize("bits", BITS)
def test_save_load_parquet_round_trip(tmp_path, bits):
    x = np.random.default_rng(bits).normal(size=(300, 7)).astype(np.float32)
    q = Quantizer.fit(x, bits)
    path = tmp_path / "quantizer.parquet"
    q.save(path)
    assert path.read_bytes()[:4] == b"PAR1"  # a Parquet file, not a pickle
    table = pq.read_table(path)
    assert table.num_rows == 7 and set(table.column_names) == {"dim", "thresholds", "centroids"}
    loaded = Quantizer.load(path)
    assert loaded.bits == bits and loaded.dim == 7
    assert loaded.thresholds.dtype == np.float32 and loaded.centroids.dtype == np.float32
    np.testing.assert_array_equal(loaded.thresholds, q.thresholds)
    np.testing.assert_array_equal(loaded.centroids, q.centroids)
    np.testing.assert_array_equal(loaded.quantize(x), q.quantize(x))


# --- per-dimension bit allocation -------------------------------------------------------------


def decaying_sample(n: int = 400, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Columns whose standard deviations fall from 1 to 0.01: the first deserve the most bits."""
    return (np.random.default_rng(seed).normal(size=(n, dim)) * np.geomspace(1, 0.01, dim)).astype(np.float32)


@pytest.mark.parametrize("budget", [1, 3, 4, 9])
def test_allocate_bits_fits_the_budget_and_favours_high_variance(budget):
    from cecq.quantization import allocate_bits

    x = decaying_sample()
    bits = allocate_bits(x, budget)
    assert set(np.unique(bits)) <= {0, 1, 2, 4}
    assert sum(bytes_per_vector(int((bits == b).sum()), b) for b in (1, 2, 4)) <= budget
    assert bits.sum() >= 8 * budget - 8  # little is left unused
    assert np.all(np.diff(bits) <= 0)  # variance falls along the columns, so do the bits
    assert bits[0] >= 2 or budget == 1


def test_mixed_quantizer_round_trip_and_search_interface():
    from cecq.quantization import MixedQuantizer
    from cecq.search import search_codes

    x = decaying_sample(seed=1)
    mq = MixedQuantizer.fit(x, 6)
    assert mq.dim == 32 and mq.bytes_per_vector <= 6
    assert mq.kept_dims == int((mq.bits_per_dim > 0).sum())
    packed = mq.quantize(x)
    assert packed.shape == (400, mq.bytes_per_vector) and packed.dtype == np.uint8
    codes = mq.unpack(packed)
    np.testing.assert_array_equal(codes, mq.encode(x))
    deq = mq.dequantize(codes)
    assert deq.shape == x.shape
    assert np.all(deq[:, mq.bits_per_dim == 0] == 0)
    kept = mq.bits_per_dim > 0
    assert np.mean((deq[:, kept] - x[:, kept]) ** 2) < 0.5 * np.mean(x[:, kept] ** 2)
    _scores, idx = search_codes(x[:5], packed, mq, k=3)
    assert idx.shape == (5, 3) and np.all(idx[:, 0] == np.arange(5))  # each row finds itself
    with pytest.raises(ValueError):
        mq.encode(x[:, :10])


@pytest.mark.parametrize("budget", [3, 9])
def test_mixed_quantizer_file_round_trip_and_load_quantizer_dispatch(tmp_path, budget):
    from cecq.quantization import MixedQuantizer, load_quantizer

    x = decaying_sample(seed=2)
    mq = MixedQuantizer.fit(x, budget)
    mq.save(tmp_path / "mixed.parquet")
    loaded = load_quantizer(tmp_path / "mixed.parquet")
    assert isinstance(loaded, MixedQuantizer) and loaded.input_dim == 32
    np.testing.assert_array_equal(loaded.bits_per_dim, mq.bits_per_dim)
    np.testing.assert_array_equal(loaded.quantize(x), mq.quantize(x))  # same code layout, byte for byte
    np.testing.assert_array_equal(loaded.dequantize_packed(mq.quantize(x)), mq.dequantize_packed(mq.quantize(x)))
    Quantizer.fit(x, 2).save(tmp_path / "fixed.parquet")
    assert type(load_quantizer(tmp_path / "fixed.parquet")) is Quantizer
    pq.write_table(pq.read_table(tmp_path / "fixed.parquet").replace_schema_metadata({}), tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="not a cecq quantizer file"):
        load_quantizer(tmp_path / "plain.parquet")
