"""The quantizer interface every code kind implements (faiss's shape: fit, compute codes, decode).

A kind is a subclass of :class:`CodeQuantizer` registered in :mod:`cecq.quantization.registry`;
configuration checks, the CLI's choices, the pipeline, the catalog, the evaluator and the
baselines all reach kinds through the registry, never by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

import numpy as np
import pyarrow as pa

from cecq.quantization.file import named_errors, read_quantizer_table, write_quantizer_table

SizedBy = Literal["bits", "budget"]


class CodeQuantizer(ABC):
    """Maps decoder outputs (``dim`` wide) to fixed-width packed codes and back.

    Class attributes describe the kind: ``kind`` (its one name: registry key, the
    ``quantization`` of a run, the ``kind`` in its Parquet file, the suffix of its
    evaluation records), ``sized_by`` (``"bits"``: ``bits`` per dimension set its size;
    ``"budget"``: it spends ``budget_bytes`` a vector), ``min_calibration_rows`` (the corpus
    rows it needs to fit well; :mod:`cecq.targets` picks another kind below), ``order_free``
    (True when its codes depend on the prefix it reads as a whole, not on how the decoder
    orders its dims: a random rotation mixes them; the decoder for it is then trained at that
    one size, see :meth:`cecq.config.DecoderConfig.for_codes`) and ``unnamed_in_run_ids`` (True only
    for the kinds whose runs were hashed before kinds had names; see
    :func:`cecq.catalog.records.run_identity`).
    """

    kind: ClassVar[str]
    sized_by: ClassVar[SizedBy]
    unnamed_in_run_ids: ClassVar[bool] = False
    min_calibration_rows: ClassVar[int] = 0  # fewer corpus rows than this fit it poorly (codebooks memorise them)
    order_free: ClassVar[bool] = False

    # -- the kind ---------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def check(cls, dims: int, bits: int | None, budget_bytes: int | None) -> None:
        """Raise :class:`~cecq.errors.ConfigError` unless this kind can code ``dims`` dims at
        ``bits`` bits or within ``budget_bytes`` bytes (whichever it is sized by)."""

    @classmethod
    @abstractmethod
    def fit_sample(
        cls, sample: np.ndarray, *, bits: int | None, budget_bytes: int | None, seed: int = 0
    ) -> CodeQuantizer:
        """Fit on a calibration sample of corpus rows (never queries)."""

    @classmethod
    def reads(cls, dims: int, bits: int | None, budget_bytes: int | None) -> int:
        """How many leading dims of ``dims``-wide decoder outputs this kind codes at these
        sizes, known before it is fitted: all of them, unless its layout drops a tail. An
        index fits and codes that prefix normalised on its own (``decode(decoder, x, reads)``),
        so it stores only those rows of the decoder."""
        return dims

    @classmethod
    def describe(cls, bits: int | None, budget_bytes: int | None) -> str:
        """The code layout in words, for messages: e.g. ``2 bits``, ``product codes of 53 bytes``."""
        return f"{bits} bits" if cls.sized_by == "bits" else f"{cls.kind} codes of {budget_bytes} bytes"

    @classmethod
    def label(cls, dims: int, bits: int | None, budget_bytes: int | None) -> str:
        """The size part of an evaluation record's name: ``256d-2b`` or ``48B-product``."""
        return f"{dims}d-{bits}b" if cls.sized_by == "bits" else f"{budget_bytes}B-{cls.kind}"

    # -- an instance ------------------------------------------------------------------------

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of the float rows it takes."""

    @property
    @abstractmethod
    def kept_dims(self) -> int:
        """Width of the rows it stores information about (its code space)."""

    @property
    @abstractmethod
    def bytes_per_vector(self) -> int:
        """Bytes of one packed code."""

    @abstractmethod
    def project(self, x: np.ndarray) -> np.ndarray:
        """Float rows in the space dequantized codes live in (asymmetric scoring's query side)."""

    @abstractmethod
    def encode(self, x: np.ndarray) -> np.ndarray:
        """Unpacked codes of float rows."""

    @abstractmethod
    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Packed codes ``(n, bytes_per_vector)`` uint8 of float rows."""

    @abstractmethod
    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """Unpacked codes of packed ones."""

    @abstractmethod
    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        """Code-space float rows of unpacked codes."""

    @abstractmethod
    def dequantize_packed(self, packed: np.ndarray) -> np.ndarray:
        """``dequantize(unpack(packed))``, usually in one gather."""

    @abstractmethod
    def to_table(self) -> tuple[pa.Table, dict[str, Any]]:
        """Its parameters as a table and JSON metadata (the Parquet file's content)."""

    @classmethod
    @abstractmethod
    def from_table(cls, table: pa.Table, meta: dict[str, Any]) -> CodeQuantizer:
        """Inverse of :meth:`to_table`."""

    # -- files ------------------------------------------------------------------------------

    def save(self, path: str | Path | BinaryIO, filesystem: Any = None) -> None:
        """One Parquet file (see :mod:`cecq.quantization.file`); no pickle."""
        table, meta = self.to_table()
        write_quantizer_table(table, {"kind": self.kind, **meta}, path, filesystem)

    @classmethod
    def load(cls, path: str | Path | BinaryIO, filesystem: Any = None) -> CodeQuantizer:
        """A file written by :meth:`save` of this kind."""
        table, meta = read_quantizer_table(path, filesystem)
        if meta["kind"] != cls.kind:
            raise ValueError(f"{path}: a {meta['kind']!r} quantizer file, not {cls.kind!r}")
        with named_errors(path):
            return cls.from_table(table, meta)
