"""All of cecq's configuration in one typed place, validated when constructed."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from cecq.errors import ConfigError
from cecq.quantization.base import CodeQuantizer
from cecq.quantization.packing import VALID_BITS
from cecq.quantization.registry import quantizer_class, resolve_kind

Scoring = Literal["float", "symmetric", "asymmetric"]
DecoderKind = Literal["linear", "mlp"]
DecoderInit = Literal["pca", "random"]
DecoderLoss = Literal["mse", "neighbours"]
Selection = Literal["prefix", "ads"]
# Per-model concatenation weights, fitted on the corpus (cecq.encoders.weights). "guarded" is
# the default of cecq eval and of the pipeline: spread weights, with a view dropped when it
# finds its own documents' pseudo-queries far worse than the best view. "spread" alone let a
# weak lexical view pull the float concatenation below MiniLM on two kept tasks.
ModelWeights = Literal["equal", "spread", "guarded"]
MODEL_WEIGHTS: tuple[str, ...] = ("equal", "spread", "guarded")
DEFAULT_MODEL_WEIGHTS: ModelWeights = "guarded"
# cecq eval also has "self": self-retrieval on pseudo-queries cut from the corpus chooses the
# weighting itself. It was measured against spread at -2.55 nDCG@10 points on Cranfield and
# -8.75 on ADI (+0.34 SciFact train, +0.06 CISI): its pseudo-queries flatter the lexical view.
EvalWeights = Literal["equal", "spread", "guarded", "self"]
EVAL_WEIGHTS: tuple[str, ...] = (*MODEL_WEIGHTS, "self")
DecoderPolicy = Literal["reuse", "retrain", "auto"]
# Number format of a neural base model's weights and activations at inference. "auto": fp16
# on a GPU (the models are frozen, inference only), fp32 on the CPU, where half precision
# has no fast kernels. `cecq bench perf --only gpu` times fp16 against bf16.
Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")


def check_precision(precision: str) -> None:
    """Raise :class:`ConfigError` naming ``precision`` unless it is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


DEFAULT_MODELS: tuple[str, ...] = ("all-MiniLM-L6-v2", "lexical")
DEFAULT_PREFIX_SIZES: tuple[int, ...] = (32, 64, 128, 256, 384, 512, 768, 1024)


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
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"model name must be a non-empty string, got {self.name!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_seq_length is not None and self.max_seq_length < 1:
            raise ConfigError(f"max_seq_length must be >= 1, got {self.max_seq_length}")
        check_precision(self.precision)


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
        # a tuple whatever the caller passed: configs are hashed (run ids, cecq eval's decoders)
        object.__setattr__(self, "prefix_sizes", tuple(int(p) for p in self.prefix_sizes))
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
            raise ConfigError(
                f"neighbours must be >= 1 and neighbour_weight >= 0, got {self.neighbours}, {self.neighbour_weight}"
            )
        if self.selection not in ("prefix", "ads"):
            raise ConfigError(f"selection must be 'prefix' or 'ads', got {self.selection!r}")
        if self.sequential and self.kind != "linear":
            # Freezing output rows only freezes output dims when nothing upstream is shared.
            raise ConfigError("sequential MRL freezes output rows of a linear decoder: use kind='linear'")
        if self.memory_size < 0:
            raise ConfigError(f"memory_size must be >= 0, got {self.memory_size}")
        if self.memory_size and not 1 <= self.memory_neighbours <= self.memory_size:
            raise ConfigError(
                f"memory_neighbours must be in 1..memory_size ({self.memory_size}), got {self.memory_neighbours}"
            )
        if self.memory_weight < 0:
            raise ConfigError(f"memory_weight must be >= 0, got {self.memory_weight}")

    def effective_prefix_sizes(self, out_dim: int | None = None) -> tuple[int, ...]:
        """Prefix sizes that fit in the output, always including the full output size."""
        top = out_dim or self.out_dim
        sizes = sorted({int(p) for p in self.prefix_sizes if int(p) <= top} | {top})
        return tuple(sizes)

    def for_codes(self, width: int, order_free: bool) -> DecoderConfig:
        """This config for codes that read the decoder's first ``width`` outputs: a decoder of
        exactly those outputs. Codes ``order_free`` (product codes rotate the prefix, so how the
        decoder orders its dims is lost) use only the ``width``-dim prefix, so the MRL loss is
        kept at that size alone, unless the strategy works through smaller sizes (sequential
        MRL shrinks to them, ADS selects dims for each). 212 outputs at 53 B, SciFact's dev
        split, five seeds, ``cecq eval``: +0.8 points of nDCG@10 asymmetric and +0.7
        symmetric, every seed up (docs/quality-round2.md, section 16)."""
        whole = order_free and not self.sequential and self.selection == "prefix"
        return replace(self, out_dim=width, prefix_sizes=(width,) if whole else self.prefix_sizes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prefix_sizes"] = list(self.prefix_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecoderConfig:
        """Inverse of :meth:`to_dict`; fields a stored config lacks take their defaults
        (every field added since the first release defaults to the old behaviour)."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"decoder config has unknown fields {sorted(unknown)} (written by a newer cecq?)")
        return cls(**d)  # __post_init__ makes a stored list of prefix sizes a tuple

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
    model_weights: EvalWeights = DEFAULT_MODEL_WEIGHTS
    fit_fraction: float = 1.0  # a seeded random share of the documents fits weights, decoder and quantizers
    # Another BEIR folder whose documents (corpus.jsonl only) fit everything instead of the task's own.
    fit_corpus: str | None = None

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
        if self.model_weights not in EVAL_WEIGHTS:
            raise ConfigError(f"model_weights must be one of {EVAL_WEIGHTS}, got {self.model_weights!r}")
        if not 0.0 < self.fit_fraction <= 1.0:
            raise ConfigError(f"fit_fraction must be in (0, 1], got {self.fit_fraction}")
        if self.fit_corpus is not None and self.fit_fraction < 1.0:
            raise ConfigError(
                f"fit_corpus ({self.fit_corpus!r}) and fit_fraction ({self.fit_fraction}) are mutually exclusive: "
                "fit on another corpus, or on a share of this one"
            )
        if self.fit_corpus is not None and not str(self.fit_corpus).strip():
            raise ConfigError("fit_corpus must name a BEIR folder, got an empty string")
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


# The decoder an embed-corpus run trains unless told otherwise: 512 outputs, 20 epochs
# (the pipeline trains on up to 200,000 rows, where 20 epochs reach the early stop).
PIPELINE_DECODER = DecoderConfig(out_dim=512, max_epochs=20)

# Values of fields that a stored pipeline config lacks because it was written before the
# field existed: the behaviour of that time. (Not the defaults of new runs.)
LEGACY_PIPELINE_VALUES: dict[str, Any] = {"budget_bytes": None, "quantization": None, "model_weights": "equal"}


@dataclass(frozen=True)
class PipelineConfig:
    """Parameters of one embed-corpus (or reindex) run, validated at construction. The
    flows' parameters and the CLI's options take their defaults from here.

    ``quantization`` names a kind of :mod:`cecq.quantization` (``None``: ``scalar`` for
    ``bits``, ``mixed`` for a ``budget_bytes``); it is resolved at construction.
    """

    corpus: str
    store: str
    models: tuple[str, ...] = DEFAULT_MODELS
    shard_rows: int = 50_000
    dims: int = 256
    bits: int = 2
    budget_bytes: int | None = None  # bytes a document, spent by a budget kind (bits then unused)
    quantization: str | None = None
    id_column: str | None = None
    text_columns: tuple[str, ...] | None = None
    decoder: DecoderConfig = PIPELINE_DECODER
    calibration_rows: int = 100_000
    decoder_policy: DecoderPolicy = "auto"
    retrain_fraction: float = 0.25  # with policy 'auto': retrain when this share of documents is new or changed
    batch_size: int = 64
    model_weights: ModelWeights = DEFAULT_MODEL_WEIGHTS  # per-model concatenation weights, fitted on the corpus
    precision: Precision = "auto"  # the neural base models' number format when embedding documents

    def __post_init__(self) -> None:
        if not self.corpus:
            raise ConfigError("corpus URL is required")
        if not self.store:
            raise ConfigError("store URL is required")
        if not self.models:
            raise ConfigError("at least one model is required")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"a model is listed twice: {list(self.models)}")
        if self.shard_rows < 1:
            raise ConfigError(f"shard_rows must be >= 1, got {self.shard_rows}")
        if self.bits not in VALID_BITS:
            raise ConfigError(f"bits must be one of {VALID_BITS}, got {self.bits}")
        if not 1 <= self.dims <= self.decoder.out_dim:
            raise ConfigError(f"dims must be in 1..{self.decoder.out_dim} (the decoder's output), got {self.dims}")
        kind = resolve_kind(self.quantization, self.budget_bytes)
        object.__setattr__(self, "quantization", kind)
        self.quantizer.check(self.dims, self.bits, self.budget_bytes)
        if self.model_weights not in MODEL_WEIGHTS:
            raise ConfigError(f"model_weights must be one of {MODEL_WEIGHTS}, got {self.model_weights!r}")
        check_precision(self.precision)
        if self.decoder_policy not in ("reuse", "retrain", "auto"):
            raise ConfigError(f"decoder_policy must be reuse, retrain or auto, got {self.decoder_policy!r}")

    @property
    def quantizer(self) -> type[CodeQuantizer]:
        """The quantizer class of this run's kind."""
        return quantizer_class(str(self.quantization))

    @property
    def code_bits(self) -> int | None:
        """Bits a dimension where the kind is sized by bits; ``None`` where a budget sets them."""
        return self.bits if self.quantizer.sized_by == "bits" else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decoder"] = self.decoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> PipelineConfig:
        """A config from :meth:`to_dict`'s output (as stored in runs and catalog manifests),
        stored by any cecq version, with ``overrides`` applied."""
        d = {**{k: v for k, v in LEGACY_PIPELINE_VALUES.items() if k not in d}, **d, **overrides}
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"pipeline config has unknown fields {sorted(unknown)} (written by a newer cecq?)")
        if isinstance(d.get("decoder"), dict):
            d["decoder"] = DecoderConfig.from_dict(d["decoder"])
        for key in ("models", "text_columns"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class LeaseConfig:
    """How a run claims a store for publishing (:func:`cecq.pipeline.publish.claim_store`):
    the lease expires ``ttl_s`` seconds after its holder's last heartbeat (one every third of
    it), and a second run waits up to ``wait_s`` for it before failing. Environment:
    ``CECQ_LEASE_TTL_S``, ``CECQ_LEASE_WAIT_S``."""

    ttl_s: float = 60.0
    wait_s: float = 180.0

    def __post_init__(self) -> None:
        if self.ttl_s <= 0 or self.wait_s < 0:
            raise ConfigError(f"lease ttl must be > 0 s and wait >= 0 s, got {self.ttl_s} and {self.wait_s}")

    @classmethod
    def from_env(cls) -> LeaseConfig:
        try:
            ttl, wait = (
                float(os.environ.get(k, d))
                for k, d in (("CECQ_LEASE_TTL_S", cls.ttl_s), ("CECQ_LEASE_WAIT_S", cls.wait_s))
            )
        except ValueError as e:
            raise ConfigError(f"CECQ_LEASE_TTL_S / CECQ_LEASE_WAIT_S must be numbers of seconds: {e}") from None
        return cls(ttl_s=ttl, wait_s=wait)


@dataclass(frozen=True)
class ModelTrust:
    """Which base models a store's manifest may make cecq load (search, eval-store, reindex).

    ``trust``: True loads whatever the store names; False only what ``allowed`` lists; None
    (the default) trusts a local store (the user's own disk) and, for any other store,
    loads hub ids but refuses local folders. ``allowed``: model names or folders (a folder
    allows the models under it); when given, an untrusted store's models must be in it.
    Environment: ``CECQ_TRUST_STORE_MODELS`` (1 or 0), ``CECQ_ALLOWED_MODELS`` (comma-separated).
    """

    trust: bool | None = None
    allowed: tuple[str, ...] | None = None

    @classmethod
    def from_env(cls) -> ModelTrust:
        raw = os.environ.get("CECQ_TRUST_STORE_MODELS", "").strip().lower()
        if raw not in ("", "1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"CECQ_TRUST_STORE_MODELS must be 1 or 0, got {raw!r}")
        allowed = os.environ.get("CECQ_ALLOWED_MODELS")
        return cls(
            trust=None if raw == "" else raw in ("1", "true", "yes"),
            allowed=None if allowed is None else tuple(a.strip() for a in allowed.split(",") if a.strip()),
        )


@dataclass(frozen=True)
class IndexConfig:
    """A FAISS search index over a catalog version's codes (``cecq index build``).

    ``kind``: a kind of :mod:`cecq.index` (``flat``: every code scored by FAISS; ``ivf``: an
    inverted file over a coarse k-means of the codes, ``nprobe`` lists searched a query).
    ``nlist`` ``None``: about the square root of the documents. ``shortlist``: candidates a
    query per result that FAISS hands over to be re-scored exactly from their codes, where
    FAISS's own score is not cecq's cosine (product codes).
    """

    kind: str = "flat"
    nlist: int | None = None
    nprobe: int = 32
    shortlist: int = 10
    train_rows_per_list: int = 50  # coarse k-means sample (FAISS asks for at least 39 a list)
    norm_ratio: float = 1.2  # documents are listed by norm in groups this wide (product codes)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.nlist is not None and self.nlist < 1:
            raise ConfigError(f"nlist must be >= 1, got {self.nlist}")
        if self.nprobe < 1:
            raise ConfigError(f"nprobe must be >= 1, got {self.nprobe}")
        if self.shortlist < 1:
            raise ConfigError(f"shortlist must be >= 1, got {self.shortlist}")
        if not self.norm_ratio > 1.0:
            raise ConfigError(f"norm_ratio must be > 1, got {self.norm_ratio}")
        if self.train_rows_per_list < 1:
            raise ConfigError(f"train_rows_per_list must be >= 1, got {self.train_rows_per_list}")
