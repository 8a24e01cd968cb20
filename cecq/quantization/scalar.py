"""Scalar codes: per-dimension percentile thresholds, bit-packed, dequantized to bin centroids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from cecq.errors import ConfigError
from cecq.quantization.base import CodeQuantizer, SizedBy
from cecq.quantization.packing import VALID_BITS, byte_table, bytes_per_vector, pack_codes, per_byte, unpack_codes

_CHUNK = 8192  # rows per block: keeps temporaries in cache-sized pieces


@dataclass
class Quantizer(CodeQuantizer):
    """``thresholds``: ``(dim, 2**bits - 1)`` ascending; ``centroids``: ``(dim, 2**bits)``."""

    kind: ClassVar[str] = "scalar"
    unnamed_in_run_ids: ClassVar[bool] = True
    sized_by: ClassVar[SizedBy] = "bits"

    bits: int
    thresholds: np.ndarray
    centroids: np.ndarray

    @classmethod
    def check(cls, dims: int, bits: int | None, budget_bytes: int | None) -> None:
        if bits not in VALID_BITS:
            raise ConfigError(f"bits must be one of {VALID_BITS}, got {bits}")

    @classmethod
    def fit_sample(cls, sample: np.ndarray, *, bits: int | None, budget_bytes: int | None, seed: int = 0) -> Quantizer:
        return cls.fit(sample, int(bits or 0))

    @property
    def dim(self) -> int:
        return int(self.thresholds.shape[0])

    @property
    def kept_dims(self) -> int:
        return self.dim

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
            block, out = x[a : a + _CHUNK], codes[a : a + _CHUNK]
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
        return (
            np.take_along_axis(self.centroids.T, codes.astype(np.intp), axis=0)
            if codes.shape[0]
            else np.zeros((0, self.dim), np.float32)
        )

    def dequantize_packed(self, packed: np.ndarray) -> np.ndarray:
        """``dequantize(unpack(packed))`` in one gather: a table maps every (byte position,
        byte value) to the centroids of the codes that byte holds, so no code array is built."""
        packed = np.asarray(packed, dtype=np.uint8)
        if packed.ndim != 2 or packed.shape[1] != self.bytes_per_vector:
            raise ValueError(f"packed codes of shape {packed.shape} do not hold {self.dim} dims at {self.bits} bits")
        per, width = per_byte(self.bits), self.bytes_per_vector
        cents = np.zeros((width * per, 1 << self.bits), dtype=np.float32)  # padded to whole bytes
        cents[: self.dim] = self.centroids
        table = cents[np.arange(width * per).reshape(width, 1, per), byte_table(self.bits)[None]]  # (width, 256, per)
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

    def to_table(self) -> tuple[pa.Table, dict[str, Any]]:
        """A row per dimension, with thresholds and centroids as lists."""
        levels = 1 << self.bits
        table = pa.table(
            {
                "dim": pa.array(np.arange(self.dim, dtype=np.int32)),
                "thresholds": pa.FixedSizeListArray.from_arrays(pa.array(self.thresholds.ravel()), levels - 1),
                "centroids": pa.FixedSizeListArray.from_arrays(pa.array(self.centroids.ravel()), levels),
            }
        )
        return table, {"bits": self.bits, "dim": self.dim}

    @classmethod
    def from_table(cls, table: pa.Table, meta: dict) -> Quantizer:
        bits, dim = int(meta["bits"]), int(meta["dim"])
        levels = 1 << bits
        thresholds = table.column("thresholds").combine_chunks().flatten().to_numpy().reshape(dim, levels - 1)
        centroids = table.column("centroids").combine_chunks().flatten().to_numpy().reshape(dim, levels)
        return cls(bits, thresholds.astype(np.float32), centroids.astype(np.float32))
