"""All of cecq's configuration in one typed place, validated when constructed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Bits = Literal[1, 2, 4, 8]
Scoring = Literal["float", "symmetric", "asymmetric"]
DecoderKind = Literal["linear", "mlp"]
DecoderInit = Literal["pca", "random"]
DecoderLoss = Literal["mse", "neighbours"]
Selection = Literal["prefix", "ads"]
ModelWeights = Literal["equal", "spread"]
Quantization = Literal["scalar", "product"]

VALID_BITS: tuple[int, ...] = (1, 2, 4, 8)
DEFAULT_MODELS: tuple[str, ...] = ("all-MiniLM-L6-v2", "lexical")
DEFAULT_PREFIX_SIZES: tuple[int, ...] = (32, 64, 128, 256, 384, 512, 768, 1024)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the value."""


@dataclass(frozen=True)
class ModelSpec:
    """One base model: a Hugging Face id, a local path, or a built-in encoder name.

    ``query_prompt``/``document_prompt`` are literal prefixes (e5: ``"query: "``);
    ``query_prompt_name``/``document_prompt_name`` select prompts stored in the model's
    own sentence-transformers config. ``None`` means: use the preset for known models.
    """

    name: str
    query_prompt: str | None = None
    document_prompt: str | None = None
    query_prompt_name: str | None = None
    document_prompt_name: str | None = None
    max_seq_length: int | None = None
    batch_size: int = 64
    device: str | None = None
    dim: int | None = None  # output dimension of fitted encoders (lexical)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"model name must be a non-empty string, got {self.name!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_seq_length is not None and self.max_seq_length < 1:
            raise ConfigError(f"max_seq_length must be >= 1, got {self.max_seq_length}")


@dataclass(frozen=True)
class DecoderConfig:
    """Decoder architecture and its MRL training schedule."""

    out_dim: int = 768
    kind: DecoderKind = "linear"
    init: DecoderInit = "pca"  # linear decoders start as the (uncentred) PCA projection
    hidden_dim: int = 1024
    prefix_sizes: tuple[int, ...] = DEFAULT_PREFIX_SIZES
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 512
    max_epochs: int = 40
    patience: int = 4
    val_fraction: float = 0.1
    max_train_rows: int = 200_000
    seed: int = 0
    # Training strategy (see STRATEGIES). "neighbours" up-weights the pairs where one document
    # is among the other's `neighbours` nearest in the input, by `neighbour_weight`.
    loss: DecoderLoss = "mse"
    neighbours: int = 10
    neighbour_weight: float = 4.0
    sequential: bool = False  # SMEC sequential MRL: largest prefix first, freeze, shrink
    selection: Selection = "prefix"  # "ads": learned importance picks the kept dims
    memory_size: int = 0  # S-XBM: rows of past batches kept as extra (hard) neighbours; 0 = off
    memory_neighbours: int = 32
    memory_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "mlp"):
            raise ConfigError(f"decoder kind must be 'linear' or 'mlp', got {self.kind!r}")
        if self.init not in ("pca", "random"):
            raise ConfigError(f"decoder init must be 'pca' or 'random', got {self.init!r}")
        if self.out_dim < 1:
            raise ConfigError(f"out_dim must be >= 1, got {self.out_dim}")
        if not self.prefix_sizes or any(int(p) < 1 for p in self.prefix_sizes):
            raise ConfigError(f"prefix_sizes must be positive integers, got {self.prefix_sizes}")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in [0, 0.5), got {self.val_fraction}")
        if self.batch_size < 4:
            raise ConfigError(f"batch_size must be >= 4 (in-batch similarities), got {self.batch_size}")
        if self.max_epochs < 1 or self.patience < 1:
            raise ConfigError("max_epochs and patience must be >= 1")
        if self.max_train_rows < 4:
            raise ConfigError(f"max_train_rows must be >= 4 (in-batch similarities), got {self.max_train_rows}")
        if self.loss not in ("mse", "neighbours"):
            raise ConfigError(f"decoder loss must be 'mse' or 'neighbours', got {self.loss!r}")
        if self.neighbours < 1 or self.neighbour_weight < 0:
            raise ConfigError(f"neighbours must be >= 1 and neighbour_weight >= 0, got {self.neighbours}, {self.neighbour_weight}")
        if self.selection not in ("prefix", "ads"):
            raise ConfigError(f"selection must be 'prefix' or 'ads', got {self.selection!r}")
        if self.sequential and self.kind != "linear":
            # Freezing output rows only freezes output dims when nothing upstream is shared.
            raise ConfigError("sequential MRL freezes output rows of a linear decoder: use kind='linear'")
        if self.memory_size < 0:
            raise ConfigError(f"memory_size must be >= 0, got {self.memory_size}")
        if self.memory_size and not 1 <= self.memory_neighbours <= self.memory_size:
            raise ConfigError(f"memory_neighbours must be in 1..memory_size ({self.memory_size}), got {self.memory_neighbours}")
        if self.memory_weight < 0:
            raise ConfigError(f"memory_weight must be >= 0, got {self.memory_weight}")

    def effective_prefix_sizes(self, out_dim: int | None = None) -> tuple[int, ...]:
        """Prefix sizes that fit in the output, always including the full output size."""
        top = out_dim or self.out_dim
        sizes = sorted({int(p) for p in self.prefix_sizes if int(p) <= top} | {top})
        return tuple(sizes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prefix_sizes"] = list(self.prefix_sizes)
        return d

    def with_strategy(self, name: str) -> DecoderConfig:
        """This config with the training strategy ``name`` of :data:`STRATEGIES` applied."""
        if name not in STRATEGIES:
            raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
        return replace(self, **STRATEGIES[name])


# Named training strategies, as overrides of DecoderConfig ("mrl" is the plain joint MRL loss).
STRATEGIES: dict[str, dict[str, Any]] = {
    "mrl": {"loss": "mse", "sequential": False, "selection": "prefix", "memory_size": 0},
    "neighbours": {"loss": "neighbours", "sequential": False, "selection": "prefix", "memory_size": 0},
    "sequential": {"loss": "mse", "sequential": True, "selection": "prefix", "memory_size": 0},
    "ads": {"loss": "mse", "sequential": False, "selection": "ads", "memory_size": 0},
    "xbm": {"loss": "mse", "sequential": False, "selection": "prefix", "memory_size": 4096},
    "smec": {"loss": "mse", "sequential": True, "selection": "ads", "memory_size": 4096},
}


@dataclass(frozen=True)
class QuantizerConfig:
    """Percentile quantization: ``bits`` per dimension fitted on a calibration sample."""

    bits: int = 2
    calibration_rows: int = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bits not in VALID_BITS:
            raise ConfigError(f"bits must be one of {VALID_BITS}, got {self.bits!r}")
        if self.calibration_rows < 2:
            raise ConfigError(f"calibration_rows must be >= 2, got {self.calibration_rows}")


@dataclass(frozen=True)
class EvalConfig:
    """What ``cecq eval`` measures."""

    models: tuple[ModelSpec, ...] = field(default_factory=lambda: tuple(ModelSpec(m) for m in DEFAULT_MODELS))
    dims: tuple[int, ...] = (128, 256, 512)
    bits: tuple[int, ...] = (1, 2, 4)
    scorings: tuple[Scoring, ...] = ("symmetric", "asymmetric")
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    split: str = "test"
    rescore: int = 0  # rescore this many top candidates with float vectors (0 = off)
    baselines: bool = False  # also score the baselines of cecq.baselines (PQ, PCA, plain MRL, binary)
    strategies: tuple[str, ...] = ()  # extra decoders, one per STRATEGIES name, scored as cecq[<name>]-*
    pairs: tuple[tuple[int, int], ...] = ()  # (dims, bits) to score; empty: every dims x bits
    budgets: tuple[int, ...] = ()  # bytes a document at which to score cecq with fitted per-dim bits
    model_weights: ModelWeights = "spread"  # cecq.encoders.spread_weights, fitted on the corpus; or "equal"

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("at least one model is required")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"a model is listed twice: {names}")
        for b in self.bits:
            if b not in VALID_BITS:
                raise ConfigError(f"bits must be among {VALID_BITS}, got {b!r}")
        for d in self.dims:
            if d < 1:
                raise ConfigError(f"dims must be positive, got {d}")
        for s in self.scorings:
            if s not in ("symmetric", "asymmetric"):
                raise ConfigError(f"scoring must be 'symmetric' or 'asymmetric', got {s!r}")
        if self.rescore < 0:
            raise ConfigError(f"rescore must be >= 0, got {self.rescore}")
        for name in self.strategies:
            self.decoder.with_strategy(name)  # fail now, not after embedding: unknown name, or e.g. sequential + mlp
        if self.model_weights not in ("equal", "spread"):
            raise ConfigError(f"model_weights must be 'equal' or 'spread', got {self.model_weights!r}")
        if any(b < 1 for b in self.budgets):
            raise ConfigError(f"budgets are bytes a document, >= 1; got {self.budgets}")
        for d, b in self.pairs:
            if d < 1 or b not in VALID_BITS:
                raise ConfigError(f"(dims, bits) pairs need dims >= 1 and bits among {VALID_BITS}, got {(d, b)}")

    def configurations(self) -> list[tuple[int, int]]:
        """The (dims, bits) pairs to score, by dims then bits."""
        if self.pairs:
            return sorted(set(self.pairs))
        return [(d, b) for d in sorted(self.dims) for b in sorted(self.bits)] if self.dims else []
