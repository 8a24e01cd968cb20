"""Fitted bits: percentile codes with a bit width per dimension, spending a byte budget where
the measured quantization error falls most."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from cecq.errors import ConfigError
from cecq.quantization.base import CodeQuantizer, SizedBy
from cecq.quantization.packing import bytes_per_vector
from cecq.quantization.scalar import Quantizer

# Widths an allocation may step a dimension through (0 = dropped), in order.
ALLOCATION_WIDTHS: tuple[int, ...] = (1, 2, 4)


def allocate_bits(x: np.ndarray, budget_bytes: int, widths: Sequence[int] = ALLOCATION_WIDTHS) -> np.ndarray:
    """Bits per dimension of ``x`` (a calibration sample) within ``budget_bytes`` a vector.

    Measures each dimension's squared error at every width (dropped: its mean square), then
    spends bits greedily where they remove the most error per bit, moving a dimension
    0 -> 1 -> 2 -> 4 bits. High-variance dimensions (the decoder's first) get more bits,
    the tail fewer or none: the split of a budget into dims x bits is fitted, not fixed.
    """
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
class MixedQuantizer(CodeQuantizer):
    """Percentile quantization with a bit width per dimension (see :func:`allocate_bits`).

    ``parts`` holds, per width, the input columns it codes and their :class:`Quantizer`.
    Codes are the parts' codes side by side; packed codes are the parts' packed bytes side
    by side; dequantized vectors have the input's dimension, zero where a column is dropped.
    It has :class:`Quantizer`'s search interface, so :func:`cecq.search.search_codes` takes it.
    """

    kind: ClassVar[str] = "mixed"
    unnamed_in_run_ids: ClassVar[bool] = True
    sized_by: ClassVar[SizedBy] = "budget"

    input_dim: int
    parts: list[tuple[np.ndarray, Quantizer]]

    @classmethod
    def check(cls, dims: int, bits: int | None, budget_bytes: int | None) -> None:
        if budget_bytes is None or not 1 <= budget_bytes <= dims // 2:
            raise ConfigError(
                f"budget_bytes must be in 1..{dims // 2} (4 bits for each of the {dims} dims), got {budget_bytes}"
            )

    @classmethod
    def fit_sample(
        cls, sample: np.ndarray, *, bits: int | None, budget_bytes: int | None, seed: int = 0
    ) -> MixedQuantizer:
        return cls.fit(sample, int(budget_bytes or 0))

    @classmethod
    def describe(cls, bits: int | None, budget_bytes: int | None) -> str:
        return f"bits fitted within {budget_bytes} bytes"

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

    def to_table(self) -> tuple[pa.Table, dict[str, Any]]:
        """A row per kept dimension in code order (its input column, bits, thresholds and
        centroids as lists); dropped columns have no row."""
        cols = np.concatenate([c for c, _ in self.parts]).astype(np.int32)
        bits = np.concatenate([np.full(len(c), q.bits, np.int8) for c, q in self.parts])
        table = pa.table(
            {
                "dim": pa.array(cols),
                "bits": pa.array(bits),
                "thresholds": pa.array(
                    [row.tolist() for _, q in self.parts for row in q.thresholds], pa.list_(pa.float32())
                ),
                "centroids": pa.array(
                    [row.tolist() for _, q in self.parts for row in q.centroids], pa.list_(pa.float32())
                ),
            }
        )
        return table, {"input_dim": self.input_dim}

    @classmethod
    def from_table(cls, table: pa.Table, meta: dict) -> MixedQuantizer:
        cols, bits = table.column("dim").to_numpy(), table.column("bits").to_numpy()
        thresholds, centroids = table.column("thresholds").to_pylist(), table.column("centroids").to_pylist()
        parts = []
        for b in dict.fromkeys(bits.tolist()):  # widths in code order
            rows = np.flatnonzero(bits == b)
            parts.append(
                (
                    cols[rows].astype(np.int64),
                    Quantizer(
                        int(b),
                        np.array([thresholds[i] for i in rows], np.float32).reshape(len(rows), (1 << b) - 1),
                        np.array([centroids[i] for i in rows], np.float32).reshape(len(rows), 1 << b),
                    ),
                )
            )
        return cls(int(meta["input_dim"]), parts)
