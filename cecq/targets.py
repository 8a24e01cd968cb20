"""A compression target instead of four knobs: ``--compression R`` picks the decoder's output
size, the published dims, the byte budget and the quantizer kind from the base models' total
dimension and the corpus size. The one place that holds the rule and its defaults.

The rule is what the project measured (README, quality benchmark at 48x; ADI held out):

- bytes a document: the float32 concatenation's bytes divided by R, rounded
  (640 dims x 4 bytes / 48 = 53 bytes, 48.3x, for all-MiniLM-L6-v2 + lexical);
- kind: the first of :data:`PREFERRED_KINDS` whose quantizer has enough calibration rows
  (``CodeQuantizer.min_calibration_rows``): product codes (98.0% / 96.8% retention asymmetric /
  symmetric at 53 bytes) where the corpus has at least 1,024 documents, fitted scalar bits
  (``mixed``: 97.8% / 93.6% there, and 94.8% / 94.4% on ADI's 82 documents, where product codes
  memorise the corpus: 94.7% / 91.4%) below that;
- dims: the prefix of the benchmark's 768 outputs (:data:`PLAN_DIMS`, raised where the kind
  needs more dims for the budget) that the kind's codes read (``CodeQuantizer.reads``: the
  first 4 x B for product codes, all of them for fitted bits), normalised on its own;
- out_dim: for codes sized by a byte budget, those dims: the decoder is trained with only the
  outputs the codes read (212 at 53 bytes, and it stores 543,568 B, not 1,969,152); for
  bit-sized codes, 768 or the dims if more, the published decoder keeping the dims' rows;
- prefix sizes: where the plan sized the decoder and the codes read all its outputs through
  a rotation (product codes of ``4 x B`` dims), the MRL loss at that one size, unless the
  strategy works through smaller sizes (:meth:`cecq.config.DecoderConfig.for_codes`);
  otherwise, and with an explicit ``--out-dim``, the decoder's sizes from 32 up.

A budget the corpus cannot fill is refused: the embeddings of n documents span at most
``min(n, total dim)`` directions, and 4 bits (the widest code) for each of them is the most a
document's code can carry; the error names the nearest feasible ratio.

Explicit ``dims``/``bits``/``budget_bytes``/``quantization``/``out_dim`` override the parts
of the plan they name; what they leave open still follows the target.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from cecq.config import DecoderConfig, PipelineConfig
from cecq.errors import ConfigError
from cecq.quantization.mixed import ALLOCATION_WIDTHS
from cecq.quantization.packing import VALID_BITS, bytes_per_vector
from cecq.quantization.registry import quantizer_class, resolve_kind

DEFAULT_COMPRESSION = 48.0  # x the float32 concatenation: the README's headline index
PREFERRED_KINDS: tuple[str, ...] = ("product", "mixed")  # best measured at 48x first
PLAN_DIMS = DecoderConfig.out_dim  # the benchmark's decoder: 768 outputs, all published
FLOAT_BYTES = 4  # float32
MAX_BITS = max(ALLOCATION_WIDTHS)  # the most bits fitted codes give a dimension (4)


@dataclass(frozen=True)
class CompressionPlan:
    """What a target chose, and why (stored in the run record as ``compression_plan``)."""

    target: float | None  # None: every size was set explicitly
    out_dim: int
    dims: int
    bits: int
    budget_bytes: int | None
    quantization: str
    bytes_per_doc: int  # planned; the fitted quantizer's own count is the run's bytes_per_doc
    compression: float
    reason: str
    # The plan sized the decoder and order-free codes read its every output (product codes
    # rotate them), so DecoderConfig.for_codes trains it at that size alone, unless the
    # strategy works through smaller sizes (sequential, ADS). False in plans recorded
    # before round 14, and with an explicit --out-dim.
    whole_output_coded: bool = False

    def apply(self, config: PipelineConfig) -> PipelineConfig:
        """``config`` with this plan's sizes and kind (validated again)."""
        return replace(
            config,
            dims=self.dims,
            bits=self.bits,
            budget_bytes=self.budget_bytes,
            quantization=self.quantization,
            decoder=config.decoder.for_codes(self.out_dim, self.whole_output_coded),
        )

    def describe(self) -> str:
        """One line for logs and the summary."""
        kind = quantizer_class(self.quantization)
        decoder = (
            f"a {self.out_dim}-dim decoder"
            if self.dims == self.out_dim
            else f"{self.dims} dims of a {self.out_dim}-dim decoder"
        )
        return (
            f"{decoder}, {kind.describe(self.bits, self.budget_bytes)}: "
            f"{self.bytes_per_doc} bytes a document, {self.compression:.1f}x ({self.reason})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompressionPlan:
        return cls(**d)


@dataclass(frozen=True)
class CompressionTarget:
    """A ratio ``compression`` and the explicit overrides; :meth:`plan` resolves them."""

    compression: float = DEFAULT_COMPRESSION
    dims: int | None = None
    bits: int | None = None
    budget_bytes: int | None = None
    quantization: str | None = None
    out_dim: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.compression, (int, float)) and math.isfinite(self.compression)) or (
            self.compression <= 1
        ):
            raise ConfigError(f"compression must be a ratio above 1 (e.g. 48), got {self.compression!r}")
        if self.bits is not None and self.bits not in VALID_BITS:
            raise ConfigError(f"bits must be one of {VALID_BITS}, got {self.bits}")
        for name in ("dims", "budget_bytes", "out_dim"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.dims is not None and self.out_dim is not None and self.dims > self.out_dim:
            raise ConfigError(f"dims must be in 1..{self.out_dim} (the decoder's output), got {self.dims}")
        if self.quantization is not None:
            kind = quantizer_class(self.quantization)  # an unknown kind fails now, not after embedding
            if self.dims is not None and (self.budget_bytes is not None or kind.sized_by == "bits"):
                kind.check(self.dims, self.bits or PipelineConfig.bits, self.budget_bytes)

    @property
    def explicit(self) -> bool:
        """Whether the overrides fix the code size, so the ratio is not used."""
        return self.budget_bytes is not None or (self.dims is not None and self.bits is not None)

    def plan(self, total_dim: int, rows: int) -> CompressionPlan:
        """The configuration for base models of ``total_dim`` dims in all and a corpus of
        ``rows`` documents (the decoder's training sample: the corpus up to its cap)."""
        float_bytes = FLOAT_BYTES * total_dim
        overrides = self._overrides()
        if self.budget_bytes is not None:
            budget, why = self.budget_bytes, f"set by {overrides}"
        elif self.explicit:
            budget, why = bytes_per_vector(int(self.dims or 0), int(self.bits or 0)), f"set by {overrides}"
        else:
            budget = self._target_bytes(float_bytes, total_dim, rows)
            why = f"target {self.compression:g}x of the {float_bytes:,}-byte float32 concatenation"
            if overrides:
                why += f", with {overrides}"
        kind = self._kind(budget, rows)
        cls = quantizer_class(kind)
        bits = self.bits or PipelineConfig.bits
        if cls.sized_by == "bits":
            dims = width = self.dims or max(1, (8 * budget) // bits)
            planned_bytes, budget_bytes = bytes_per_vector(dims, bits), None
        else:
            width = self._budget_dims(cls, bits, budget)  # the decoder's output the kind codes from
            dims = self.dims or cls.reads(width, bits, budget)
            planned_bytes, budget_bytes = budget, budget
        # A decoder of only the outputs the codes read (product codes' 4 x B prefix): on
        # SciFact's dev split, five seeds, nDCG@10 level with the 768-output decoder the 212
        # dims were cut from (-0.1 asymmetric, +0.2 symmetric), and training 3x faster
        # (docs/quality-round2.md, section 13). Bit-sized codes keep the benchmark's 768.
        out_dim = self.out_dim or (dims if cls.sized_by == "budget" else max(PLAN_DIMS, width, dims))
        # Only where the plan sized the decoder: an explicit --out-dim keeps the decoder (and
        # the run id) such a command line always gave, every MRL prefix size included.
        whole = self.out_dim is None and cls.order_free and dims == out_dim == cls.reads(dims, bits, budget_bytes)
        if self.quantization is None and not self.bits:
            why += f"; {self._kind_reason(kind, rows)}"
        return CompressionPlan(
            target=None if self.explicit else float(self.compression),
            out_dim=out_dim,
            dims=dims,
            bits=bits,
            budget_bytes=budget_bytes,
            quantization=kind,
            bytes_per_doc=planned_bytes,
            compression=round(float_bytes / planned_bytes, 2),
            reason=why,
            whole_output_coded=whole,
        )

    # -- the rule's parts -------------------------------------------------------------------

    def _overrides(self) -> str:
        flags = [
            f"--{name.replace('_', '-')} {value}"
            for name, value in (
                ("out_dim", self.out_dim),
                ("dims", self.dims),
                ("bits", self.bits),
                ("budget_bytes", self.budget_bytes),
                ("quantization", self.quantization),
            )
            if value is not None
        ]
        return " ".join(flags)

    def _target_bytes(self, float_bytes: int, total_dim: int, rows: int) -> int:
        budget = round(float_bytes / self.compression)
        most = max(1, min(rows, total_dim) * MAX_BITS // 8)
        if budget < 1:
            raise ConfigError(
                f"{self.compression:g}x is more than a 1-byte code gives the {float_bytes:,}-byte float32 "
                f"concatenation of these models: the nearest feasible ratio is {float_bytes}x "
                f"(--compression {float_bytes})"
            )
        if budget > most:
            nearest = math.ceil(10 * float_bytes / (most + 0.5)) / 10  # round(bytes / ratio) <= most
            while round(float_bytes / nearest) > most:  # round() may still land one byte over
                nearest = round(nearest + 0.1, 1)
            raise ConfigError(
                f"a corpus of {rows:,} documents is too small for {self.compression:g}x: {budget} bytes a "
                f"document, but its {total_dim}-dim embeddings span at most {min(rows, total_dim)} directions, "
                f"which {MAX_BITS}-bit codes fill with {most} bytes; the nearest feasible ratio is "
                f"{nearest:.1f}x (--compression {nearest:.1f}), or set --budget-bytes"
            )
        return budget

    def _kind(self, budget: int, rows: int) -> str:
        if self.quantization is not None:
            return resolve_kind(self.quantization, self.budget_bytes)
        if self.bits is not None and self.budget_bytes is None:
            return resolve_kind(None, None)  # the kind sized by bits
        for kind in PREFERRED_KINDS:
            if rows >= quantizer_class(kind).min_calibration_rows:
                return kind
        return PREFERRED_KINDS[-1]

    @staticmethod
    def _kind_reason(kind: str, rows: int) -> str:
        first = quantizer_class(PREFERRED_KINDS[0])
        if kind == PREFERRED_KINDS[0]:
            return f"{kind} codes: the corpus has {rows:,} documents, enough for their codebooks"
        return (
            f"{kind} codes: {rows:,} documents are fewer than the {first.min_calibration_rows:,} "
            f"{first.kind} codes need (their codebooks would memorise the corpus)"
        )

    def _budget_dims(self, cls: type, bits: int, budget: int) -> int:
        """:data:`PLAN_DIMS` (or ``out_dim``), raised to the fewest dims the kind needs."""
        dims = self.out_dim or PLAN_DIMS

        def fits(d: int) -> bool:
            try:
                cls.check(d, bits, budget)
            except ConfigError:
                return False
            return True

        if fits(dims) or self.out_dim is not None:
            return dims
        high = max(dims, 8 * budget)
        while not fits(high):
            high *= 2
        low = dims
        while low < high:  # check() is monotone in dims: the fewest that fit
            mid = (low + high) // 2
            low, high = (mid + 1, high) if not fits(mid) else (low, mid)
        return high
