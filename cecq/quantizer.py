"""Per-dimension percentile quantization, bit packing, and bin-centroid dequantization."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from cecq.config import VALID_BITS
from cecq.product_quantizer import ProductQuantizer
from cecq.quantizer_file import read_quantizer_table, write_quantizer_table

QUANTIZER_FILE = "quantizer.parquet"


def bytes_per_vector(dim: int, bits: int) -> int:
    return (dim * bits + 7) // 8


_CHUNK = 8192  # rows per block: keeps temporaries in cache-sized pieces


def _per_byte(bits: int) -> int:
    return 8 // bits  # codes a byte holds (8 bits: one)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Bit-pack ``(n, dim)`` codes below ``2**bits`` into ``(n, ceil(dim*bits/8))`` uint8.

    Codes are laid out in order, each most significant bit first (``np.packbits`` order).
    """
    if bits not in VALID_BITS:
        raise ValueError(f"bits must be one of {VALID_BITS}, got {bits}")
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D, got shape {codes.shape}")
    if bits == 8:
        return codes.astype(np.uint8, copy=True)
    if codes.size and int(codes.max()) >= (1 << bits):
        raise ValueError(f"a code is >= 2**{bits}")
    # bits divides 8: a byte holds 8 // bits whole codes, so shift and OR them together
    # (no per-bit planes: an (n, dim, bits) temporary costs more than the packing itself).
    n, dim = codes.shape
    per = _per_byte(bits)
    width = bytes_per_vector(dim, bits)
    padded = np.zeros((n, width * per), dtype=np.uint8)
    padded[:, :dim] = codes
    out = np.zeros((n, width), dtype=np.uint8)
    for j in range(per):
        out |= padded[:, j::per] << np.uint8(8 - bits * (j + 1))
    return out


def _byte_table(bits: int) -> np.ndarray:
    """``(256, 8 // bits)`` uint8: the codes each byte value holds, in order."""
    per = _per_byte(bits)
    shifts = np.array([8 - bits * (j + 1) for j in range(per)], dtype=np.uint8)
    return ((np.arange(256, dtype=np.uint8)[:, None] >> shifts) & np.uint8((1 << bits) - 1)).astype(np.uint8)


def unpack_codes(packed: np.ndarray, dim: int, bits: int) -> np.ndarray:
    """Exact inverse of :func:`pack_codes`."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.ndim != 2 or packed.shape[1] != bytes_per_vector(dim, bits):
        raise ValueError(f"packed codes of shape {packed.shape} do not hold {dim} dims at {bits} bits")
    if bits == 8:
        return packed.copy()
    # One table lookup per byte instead of unpacking bits and summing planes.
    return _byte_table(bits)[packed].reshape(packed.shape[0], packed.shape[1] * _per_byte(bits))[:, :dim]


@dataclass
class Quantizer:
    """``thresholds``: ``(dim, 2**bits - 1)`` ascending; ``centroids``: ``(dim, 2**bits)``."""

    bits: int
    thresholds: np.ndarray
    centroids: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.thresholds.shape[0])

    @property
    def bytes_per_vector(self) -> int:
        return bytes_per_vector(self.dim, self.bits)

    @classmethod
    def fit(cls, sample: np.ndarray, bits: int) -> Quantizer:
        """Thresholds at equal-frequency percentiles of ``sample``, per dimension; centroids are
        the mean sample value in each bin (the bin's midpoint where a bin is empty)."""
        if bits not in VALID_BITS:
            raise ValueError(f"bits must be one of {VALID_BITS}, got {bits}")
        x = np.asarray(sample, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"calibration sample must be 2-D with at least 2 rows, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("calibration sample contains NaN or infinity")
        levels = 1 << bits
        qs = np.arange(1, levels) / levels
        thresholds = np.quantile(x, qs, axis=0).T.astype(np.float32)  # (dim, levels-1)
        q = cls(bits, thresholds, np.zeros((x.shape[1], levels), dtype=np.float32))
        codes = q.encode(x)
        sums = np.zeros((x.shape[1], levels), dtype=np.float64)
        counts = np.zeros((x.shape[1], levels), dtype=np.int64)
        cols = np.broadcast_to(np.arange(x.shape[1]), x.shape)
        np.add.at(sums, (cols, codes), x)
        np.add.at(counts, (cols, codes), 1)
        edges = np.concatenate([x.min(0)[:, None], thresholds, x.max(0)[:, None]], axis=1)
        midpoints = (edges[:, :-1] + edges[:, 1:]) / 2
        q.centroids = np.where(counts > 0, sums / np.maximum(counts, 1), midpoints).astype(np.float32)
        return q

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Bin index of every value (the number of thresholds <= it): ``(n, dim)`` uint8."""
        x = self.project(x)
        codes = np.empty(x.shape, dtype=np.uint8)
        levels = 1 << self.bits
        thr_t = np.ascontiguousarray(self.thresholds.T)  # (levels-1, dim): row k is every dim's k-th threshold
        for a in range(0, x.shape[0], _CHUNK):
            block, out = x[a:a + _CHUNK], codes[a:a + _CHUNK]
            if self.bits <= 4:
                # Few thresholds: count them with whole-row comparisons (vectorised over
                # dims, unlike a searchsorted per dim, which walks strided columns).
                out[:] = 0
                for k in range(levels - 1):
                    out += block >= thr_t[k]
            else:
                # Binary search, one vectorised step a bit: thresholds are ascending, so
                # "threshold[c - 1] <= x" is monotone in c.
                out[:] = 0
                flat, cols = thr_t.ravel(), np.arange(self.dim)
                for step in (levels >> s for s in range(1, self.bits + 1)):
                    cand = out.astype(np.intp) + step
                    np.copyto(out, cand.astype(np.uint8), where=block >= flat[(cand - 1) * self.dim + cols])
        return codes

    def project(self, x: np.ndarray) -> np.ndarray:
        """Float rows in the space dequantized codes live in: here the input space itself."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"quantizer expects {self.dim}-dim rows, got shape {x.shape}")
        return x

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        """Replace each code by its bin centroid."""
        codes = np.asarray(codes)
        return np.take_along_axis(self.centroids.T, codes.astype(np.intp), axis=0) if codes.shape[0] else np.zeros((0, self.dim), np.float32)

    def dequantize_packed(self, packed: np.ndarray) -> np.ndarray:
        """``dequantize(unpack(packed))`` in one gather: a table maps every (byte position,
        byte value) to the centroids of the codes that byte holds, so no code array is built."""
        packed = np.asarray(packed, dtype=np.uint8)
        if packed.ndim != 2 or packed.shape[1] != self.bytes_per_vector:
            raise ValueError(f"packed codes of shape {packed.shape} do not hold {self.dim} dims at {self.bits} bits")
        per, width = _per_byte(self.bits), self.bytes_per_vector
        cents = np.zeros((width * per, 1 << self.bits), dtype=np.float32)  # padded to whole bytes
        cents[: self.dim] = self.centroids
        table = cents[np.arange(width * per).reshape(width, 1, per), _byte_table(self.bits)[None]]  # (width, 256, per)
        # One table entry is a byte's `per` centroids: viewed as one opaque item, np.take
        # copies it whole, several times faster than NumPy's fancy indexing of the floats.
        items = np.ascontiguousarray(table).view(np.dtype((np.void, 4 * per))).reshape(width * 256)
        index = packed.astype(np.intp)
        index += np.arange(0, width * 256, 256, dtype=np.intp)
        rows = np.take(items, index).view(np.float32)  # (n, width * per)
        return rows.reshape(packed.shape[0], width * per)[:, : self.dim]

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Encode and bit-pack: ``(n, bytes_per_vector)`` uint8."""
        return pack_codes(self.encode(x), self.bits)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        return unpack_codes(packed, self.dim, self.bits)

    def save(self, path: str | Path | BinaryIO, filesystem=None) -> None:
        """One Parquet file: a row per dimension, with thresholds and centroids as lists."""
        levels = 1 << self.bits
        table = pa.table({
            "dim": pa.array(np.arange(self.dim, dtype=np.int32)),
            "thresholds": pa.FixedSizeListArray.from_arrays(pa.array(self.thresholds.ravel()), levels - 1),
            "centroids": pa.FixedSizeListArray.from_arrays(pa.array(self.centroids.ravel()), levels),
        })
        write_quantizer_table(table, {"bits": self.bits, "dim": self.dim}, path, filesystem)

    @classmethod
    def load(cls, path: str | Path | BinaryIO, filesystem=None) -> Quantizer:
        return cls.from_table(*read_quantizer_table(path, filesystem))

    @classmethod
    def from_table(cls, table: pa.Table, meta: dict) -> Quantizer:
        bits, dim = int(meta["bits"]), int(meta["dim"])
        levels = 1 << bits
        thresholds = table.column("thresholds").combine_chunks().flatten().to_numpy().reshape(dim, levels - 1)
        centroids = table.column("centroids").combine_chunks().flatten().to_numpy().reshape(dim, levels)
        return cls(bits, thresholds.astype(np.float32), centroids.astype(np.float32))


# Widths an allocation may step a dimension through (0 = dropped), in order.
ALLOCATION_WIDTHS: tuple[int, ...] = (1, 2, 4)


def allocate_bits(x: np.ndarray, budget_bytes: int, widths: Sequence[int] = ALLOCATION_WIDTHS) -> np.ndarray:
    """Bits per dimension of ``x`` (a calibration sample) within ``budget_bytes`` a vector.

    Measures each dimension's squared error at every width (dropped: its mean square), then
    spends bits greedily where they remove the most error per bit, moving a dimension
    0 -> 1 -> 2 -> 4 bits. High-variance dimensions (the decoder's first) get more bits,
    the tail fewer or none: the split of a budget into dims x bits is fitted, not fixed.
    """
    import heapq

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need a 2-D calibration sample of at least 2 rows, got shape {x.shape}")
    if budget_bytes < 1:
        raise ValueError(f"budget_bytes must be >= 1, got {budget_bytes}")
    widths = sorted(widths)
    error = {0: (x.astype(np.float64) ** 2).mean(axis=0)}
    for b in widths:
        q = Quantizer.fit(x, b)
        error[b] = ((x - q.dequantize(q.encode(x))).astype(np.float64) ** 2).mean(axis=0)
    following = dict(zip([0, *widths], widths))
    heap = [(-(error[0][j] - error[widths[0]][j]) / widths[0], j, 0) for j in range(x.shape[1])]
    heapq.heapify(heap)
    bits = np.zeros(x.shape[1], dtype=np.int64)
    used, steps = 0, []
    while heap:
        _, j, start = heapq.heappop(heap)
        end = following[start]
        if used + end - start > 8 * budget_bytes:
            continue  # this step no longer fits; cheaper steps of other dims may
        bits[j], used = end, used + end - start
        steps.append((j, start))
        if end in following:
            nxt = following[end]
            heapq.heappush(heap, (-(error[end][j] - error[nxt][j]) / (nxt - end), j, end))

    def packed_bytes() -> int:
        return sum(bytes_per_vector(int((bits == b).sum()), b) for b in widths)

    while packed_bytes() > budget_bytes:  # each width packs to whole bytes: give back the last steps
        j, start = steps.pop()
        bits[j] = start
    return bits


@dataclass
class MixedQuantizer:
    """Percentile quantization with a bit width per dimension (see :func:`allocate_bits`).

    ``parts`` holds, per width, the input columns it codes and their :class:`Quantizer`.
    Codes are the parts' codes side by side; packed codes are the parts' packed bytes side
    by side; dequantized vectors have the input's dimension, zero where a column is dropped.
    It has :class:`Quantizer`'s search interface, so :func:`cecq.search.search_codes` takes it.
    """

    input_dim: int
    parts: list[tuple[np.ndarray, Quantizer]]

    @classmethod
    def fit(cls, x: np.ndarray, budget_bytes: int, widths: Sequence[int] = ALLOCATION_WIDTHS) -> MixedQuantizer:
        x = np.asarray(x, dtype=np.float32)
        bits = allocate_bits(x, budget_bytes, widths)
        parts = [(cols, Quantizer.fit(x[:, cols], b)) for b in sorted(widths) if len(cols := np.flatnonzero(bits == b))]
        return cls(x.shape[1], parts)

    @property
    def dim(self) -> int:
        return self.input_dim

    @property
    def kept_dims(self) -> int:
        return sum(len(cols) for cols, _ in self.parts)

    @property
    def bits_per_dim(self) -> np.ndarray:
        out = np.zeros(self.input_dim, dtype=np.int64)
        for cols, q in self.parts:
            out[cols] = q.bits
        return out

    @property
    def bytes_per_vector(self) -> int:
        return sum(q.bytes_per_vector for _, q in self.parts)

    def _rows(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"quantizer expects {self.input_dim}-dim rows, got shape {x.shape}")
        return x

    def project(self, x: np.ndarray) -> np.ndarray:
        """Float rows in the space dequantized codes live in: the input space (dropped dims are zero there)."""
        return self._rows(x)

    def encode(self, x: np.ndarray) -> np.ndarray:
        x = self._rows(x)
        return np.concatenate([q.encode(x[:, cols]) for cols, q in self.parts], axis=1)

    def _split(self, array: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
        return np.split(array, np.cumsum(sizes)[:-1], axis=1)

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        out = np.zeros((codes.shape[0], self.input_dim), dtype=np.float32)
        for (cols, q), part in zip(self.parts, self._split(codes, [len(c) for c, _ in self.parts])):
            out[:, cols] = q.dequantize(part)
        return out

    def quantize(self, x: np.ndarray) -> np.ndarray:
        x = self._rows(x)
        return np.concatenate([q.quantize(x[:, cols]) for cols, q in self.parts], axis=1)

    def _packed_parts(self, packed: np.ndarray) -> list[np.ndarray]:
        return self._split(np.asarray(packed, dtype=np.uint8), [q.bytes_per_vector for _, q in self.parts])

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        return np.concatenate([q.unpack(p) for (_, q), p in zip(self.parts, self._packed_parts(packed))], axis=1)

    def dequantize_packed(self, packed: np.ndarray) -> np.ndarray:
        """``dequantize(unpack(packed))``, each width through :meth:`Quantizer.dequantize_packed`."""
        packed = np.asarray(packed, dtype=np.uint8)
        out = np.zeros((packed.shape[0], self.input_dim), dtype=np.float32)
        for (cols, q), part in zip(self.parts, self._packed_parts(packed)):
            out[:, cols] = q.dequantize_packed(part)
        return out

    def save(self, path: str | Path | BinaryIO, filesystem=None) -> None:
        """One Parquet file: a row per kept dimension in code order (its input column, bits,
        thresholds and centroids as lists); dropped columns have no row."""
        cols = np.concatenate([c for c, _ in self.parts]).astype(np.int32)
        bits = np.concatenate([np.full(len(c), q.bits, np.int8) for c, q in self.parts])
        table = pa.table({
            "dim": pa.array(cols),
            "bits": pa.array(bits),
            "thresholds": pa.array([row.tolist() for _, q in self.parts for row in q.thresholds], pa.list_(pa.float32())),
            "centroids": pa.array([row.tolist() for _, q in self.parts for row in q.centroids], pa.list_(pa.float32())),
        })
        write_quantizer_table(table, {"kind": "mixed", "input_dim": self.input_dim}, path, filesystem)

    @classmethod
    def load(cls, path: str | Path | BinaryIO, filesystem=None) -> MixedQuantizer:
        return cls.from_table(*read_quantizer_table(path, filesystem))

    @classmethod
    def from_table(cls, table: pa.Table, meta: dict) -> MixedQuantizer:
        cols, bits = table.column("dim").to_numpy(), table.column("bits").to_numpy()
        thresholds, centroids = table.column("thresholds").to_pylist(), table.column("centroids").to_pylist()
        parts = []
        for b in dict.fromkeys(bits.tolist()):  # widths in code order
            rows = np.flatnonzero(bits == b)
            parts.append((cols[rows].astype(np.int64), Quantizer(
                int(b), np.array([thresholds[i] for i in rows], np.float32).reshape(len(rows), (1 << b) - 1),
                np.array([centroids[i] for i in rows], np.float32).reshape(len(rows), 1 << b))))
        return cls(int(meta["input_dim"]), parts)


AnyQuantizer = Quantizer | MixedQuantizer | ProductQuantizer


_KINDS: dict[str, type[AnyQuantizer]] = {"scalar": Quantizer, "mixed": MixedQuantizer, "product": ProductQuantizer}


def load_quantizer(path: str | Path | BinaryIO, filesystem=None) -> AnyQuantizer:
    """A quantizer file written by the ``save`` of any quantizer kind, read once."""
    table, meta = read_quantizer_table(path, filesystem)
    kind = meta.get("kind", "scalar")  # files of plain Quantizers carry no kind
    if kind not in _KINDS:
        raise ValueError(f"{path}: unknown quantizer kind {kind!r} (this cecq reads {sorted(_KINDS)})")
    return _KINDS[kind].from_table(table, meta)
