"""A toy quantizer kind, as a user would add one outside cecq: one module and one registry
line. It keeps the sign of the first ``8 x budget_bytes`` dims (one bit each) and decodes a
bit to plus or minus that dim's mean absolute value on the calibration sample.

Loaded as a plugin (``CECQ_PLUGINS=tests.helpers.toy_quantizer``) it works through
``cecq eval --budget`` and ``cecq embed-corpus --quantization toy``, Ray workers included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from cecq.errors import ConfigError
from cecq.quantization import CodeQuantizer, register_quantizer
from cecq.quantization.base import SizedBy


@dataclass
class ToyQuantizer(CodeQuantizer):
    kind: ClassVar[str] = "toy"
    sized_by: ClassVar[SizedBy] = "budget"

    input_dim: int
    scale: np.ndarray  # (kept,) mean |x| of each coded dim

    @classmethod
    def check(cls, dims: int, bits: int | None, budget_bytes: int | None) -> None:
        if budget_bytes is None or not 1 <= 8 * budget_bytes <= dims:
            raise ConfigError(f"toy codes need 1..{dims // 8} bytes for {dims} dims, got {budget_bytes}")

    @classmethod
    def fit_sample(
        cls, sample: np.ndarray, *, bits: int | None, budget_bytes: int | None, seed: int = 0
    ) -> ToyQuantizer:
        x = np.asarray(sample, dtype=np.float32)
        cls.check(x.shape[1], bits, budget_bytes)
        return cls(x.shape[1], np.abs(x[:, : 8 * int(budget_bytes or 0)]).mean(axis=0).astype(np.float32))

    @property
    def dim(self) -> int:
        return self.input_dim

    @property
    def kept_dims(self) -> int:
        return int(self.scale.shape[0])

    @property
    def bytes_per_vector(self) -> int:
        return self.kept_dims // 8

    def project(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)[:, : self.kept_dims]

    def encode(self, x: np.ndarray) -> np.ndarray:
        return (self.project(x) > 0).astype(np.uint8)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return np.packbits(self.encode(x), axis=1)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        return np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, count=self.kept_dims)

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(codes) > 0, self.scale, -self.scale).astype(np.float32)

    def dequantize_packed(self, packed: np.ndarray) -> np.ndarray:
        return self.dequantize(self.unpack(packed))

    def to_table(self) -> tuple[pa.Table, dict[str, Any]]:
        return pa.table({"scale": pa.array(self.scale)}), {"input_dim": self.input_dim}

    @classmethod
    def from_table(cls, table: pa.Table, meta: dict[str, Any]) -> ToyQuantizer:
        return cls(int(meta["input_dim"]), table.column("scale").to_numpy().astype(np.float32))


register_quantizer(ToyQuantizer)
