"""Typed, versioned records of a store: what a run produced, what a catalog version lists.

Each record owns its serialisation (``to_dict`` / ``from_dict``) and the defaults that
records written by older cecq versions need; nothing else patches old records. Run
records and catalog manifests carry ``schema_version`` on disk (:data:`SCHEMA_VERSION`;
records without it are version 1, written before it existed). A record of a newer
version is refused with :class:`~cecq.errors.RecordVersionError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cecq.config import PipelineConfig
from cecq.errors import RecordVersionError, check_version
from cecq.quantization.registry import quantizer_class, resolve_kind
from cecq.storage import PARQUET_FORMATS, digest, redact_url

SCHEMA_VERSION = 2  # 1: records before versioning; 2: schema_version key, quantization names the kind


def check_schema(d: dict[str, Any], what: str) -> int:
    """The record's schema version; refuse one newer than this cecq reads."""
    version = int(d.get("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise RecordVersionError(
            f"{what} has schema version {version}; this cecq reads up to {SCHEMA_VERSION}: "
            "upgrade cecq to read this store"
        )
    return version


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _kind(d: dict[str, Any]) -> str:
    """The quantizer kind of a stored run or manifest (version 1 spelt fitted bits ``scalar``
    with a budget, and plain scalar codes with no quantization at all)."""
    return resolve_kind(d.get("quantization"), d.get("budget_bytes"))


@dataclass
class ShardInfo:
    """One committed corpus shard."""

    name: str
    path: str  # relative to the storage root
    rows: int
    fingerprint: str

    @property
    def key(self) -> str:
        """Name and content together: equal keys mean byte-identical inputs."""
        return f"{self.name}-{self.fingerprint[:12]}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CorpusManifest:
    """The corpus as sharded: written last by sharding, it commits the plan."""

    corpus_url: str
    corpus_key: str
    id_column: str
    text_columns: list[str]
    shards: list[ShardInfo] = field(default_factory=list)
    rows: int = 0
    empty_texts: int = 0
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shards"] = [s.to_dict() for s in self.shards]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorpusManifest:
        check_schema(d, f"corpus manifest of {d.get('corpus_url')}")
        d = dict(d)
        d["shards"] = [ShardInfo(**s) for s in d["shards"]]
        d["schema_version"] = SCHEMA_VERSION
        return cls(**d)


@dataclass
class EmbedShardResult:
    """What embedding one corpus shard with one model did."""

    path: str
    rows: int
    embedded: int = 0
    skipped: bool = False
    bytes: int = 0
    truncated: int = 0  # texts longer than the model's limit
    seconds: float = 0.0  # actor-seconds: summed over its parts where several actors embedded it at once
    node: str | None = None
    pid: int | None = None
    model_info: dict[str, Any] | None = None


@dataclass
class EmbeddingResult:
    """One model's embedding step over the whole corpus (an entry of a run's ``embedding``)."""

    model: str
    model_key: str
    shards: int
    skipped_shards: int = 0
    embedded_documents: int = 0
    truncated_documents: int = 0
    seconds: float = 0.0  # actor-seconds over its shards (which run at once on several actors): not wall time
    nodes: list[str] = field(default_factory=list)
    info: dict[str, Any] | None = None
    fingerprint: str | None = None  # the weights' (Encoder.fingerprint); None: fitted, or unknown

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbeddingResult:
        return cls(**_known(cls, d))


@dataclass
class CodesShard:
    """One committed codes shard, as the publish step lists it."""

    name: str
    path: str
    rows: int
    bytes: int
    fingerprint: str
    corpus_path: str
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunRecord:
    """``runs/<id>/run.json``, a row of the ``runs`` view."""

    run_id: str
    started: str
    corpus: str
    corpus_key: str
    documents: int
    shards: int
    models: list[str]
    model_keys: list[str]
    embedding: list[EmbeddingResult]
    corpus_manifest: str
    decoder: str
    quantizer: str
    compressor_id: str
    dims: int
    bits: int | None  # null where a byte budget sets the code size
    bytes_per_doc: int
    compression: float
    config: dict[str, Any]
    quantization: str = "scalar"
    budget_bytes: int | None = None
    empty_texts: int = 0
    decoder_training: dict[str, Any] = field(default_factory=dict)
    model_weights: list[float] | None = None  # None: equal (stores before weights were fitted)
    compression_plan: dict[str, Any] | None = None  # cecq.targets.CompressionPlan: the choice and its reason
    model_fingerprints: list[str | None] | None = None  # per model; None: stores before fingerprints
    status: str = "compressed"
    catalog_version: int | None = None
    finished: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["embedding"] = [e.to_dict() for e in self.embedding]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        check_schema(d, f"run record {d.get('run_id')}")
        d = _known(cls, d)
        d["quantization"] = _kind(d)
        d["embedding"] = [EmbeddingResult.from_dict(e) for e in d.get("embedding", [])]
        d["schema_version"] = SCHEMA_VERSION
        return cls(**d)


@dataclass
class CatalogManifest:
    """``catalog/v<N>/manifest.json``: one published version (a row of the ``versions`` view)."""

    version: int
    published: str
    run_id: str
    codes: list[str]
    corpus_shards: list[str]
    models: list[str]
    model_keys: list[str]
    corpus_key: str
    corpus_manifest: str
    decoder: str
    quantizer: str
    dims: int
    bits: int | None
    compressor_id: str
    config: dict[str, Any]
    previous_version: int | None = None
    budget_bytes: int | None = None
    quantization: str = "scalar"
    model_fingerprints: list[str | None] | None = None  # per model; None: stores before fingerprints
    # format versions of the Parquet shards it lists (codes, corpus, its shards.parquet), by
    # kind; read by DuckDB, which never sees their stamps. Absent (older stores): all 1.
    formats: dict[str, int] = field(default_factory=lambda: dict(PARQUET_FORMATS))
    schema_version: int = SCHEMA_VERSION

    @property
    def pipeline_config(self) -> PipelineConfig:
        """The configuration the published run was made with."""
        return PipelineConfig.from_dict(self.config)

    @property
    def code_layout(self) -> str:
        """The codes in words, for messages."""
        return quantizer_class(self.quantization).describe(self.bits, self.budget_bytes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CatalogManifest:
        check_schema(d, f"catalog manifest v{d.get('version')}")
        for artifact, version in d.get("formats", {}).items():
            check_version(
                f"catalog manifest v{d.get('version')} ({artifact} shards)", version, PARQUET_FORMATS.get(artifact, 0)
            )
        d = _known(cls, d)
        d["formats"] = dict(d.get("formats", {}))
        d["quantization"] = _kind(d)
        d["schema_version"] = SCHEMA_VERSION
        return cls(**d)


@dataclass
class IndexRecord:
    """``catalog/v<N>/index/<name>.json``: a FAISS search index over one catalog version's
    codes (a row of the ``indexes`` view). Written after the index file, so it commits it.

    ``quantizer_sha256`` and ``file_sha256`` tie the file to the codebooks and bytes it was
    built from; ``shard_rows`` maps its row ids (catalog order) back to the codes shards;
    ``empty_rows`` are the documents without text (they score 0, as in the exact scan);
    list ``c * (groups + 1) + g`` holds cluster ``c``'s documents of norm group ``g``
    (``norm_edges``), the last group of a cluster its documents without text.
    """

    name: str
    kind: str
    layout: str
    version: int
    run_id: str
    quantizer: str
    quantizer_sha256: str
    file: str
    file_bytes: int
    file_sha256: str
    rows: int
    shard_rows: list[int]
    params: dict[str, Any] = field(default_factory=dict)
    nprobe: int | None = None  # default lists searched a query (IVF)
    shortlist: int = 10
    empty_rows: list[int] = field(default_factory=list)
    clusters: int = 1  # flat: 1; IVF: nlist
    norm_edges: list[float] = field(default_factory=lambda: [1.0, 1.0])  # norm groups within a cluster
    built: str = ""
    seconds: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexRecord:
        check_schema(d, f"index record {d.get('name')}")
        d = _known(cls, d)
        d["schema_version"] = SCHEMA_VERSION
        return cls(**d)


# ---------------------------------------------------------------- run ids

# What a run id hashes: the fields that decide what a run publishes, frozen as of the
# first versioned release so that upgrading cecq never changes the id of an existing run
# (a rerun after an upgrade must find, not redo, what the crashed or finished run
# committed). A field added to PipelineConfig or DecoderConfig later joins the hash only
# when it differs from its default, and a new field's default must reproduce the old
# behaviour. The quantizer kind joins as its name, except for the kinds whose runs were
# hashed before kinds had names (``CodeQuantizer.unnamed_in_run_ids``).
RUN_ID_SCHEME = 1
RUN_ID_FIELDS: tuple[str, ...] = (
    "corpus",
    "models",
    "shard_rows",
    "dims",
    "bits",
    "id_column",
    "text_columns",
    "calibration_rows",
    "decoder_policy",
    "retrain_fraction",
    "batch_size",
    "model_weights",
)
DECODER_ID_FIELDS: tuple[str, ...] = (
    "out_dim",
    "kind",
    "init",
    "hidden_dim",
    "prefix_sizes",
    "lr",
    "weight_decay",
    "batch_size",
    "max_epochs",
    "patience",
    "val_fraction",
    "max_train_rows",
    "seed",
    "loss",
    "neighbours",
    "neighbour_weight",
    "sequential",
    "selection",
    "memory_size",
    "memory_neighbours",
    "memory_weight",
)
_NOT_HASHED = {"store", "decoder", "budget_bytes", "quantization"}  # the store's URL; the rest hashed below


def _identity(
    values: dict[str, Any], frozen: tuple[str, ...], defaults: dict[str, Any], skip: set[str]
) -> dict[str, Any]:
    out = {k: values[k] for k in frozen}
    out.update({k: v for k, v in values.items() if k not in frozen and k not in skip and v != defaults.get(k)})
    return out


def _defaults(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls)}


def stored_config(config: PipelineConfig) -> dict[str, Any]:
    """``config`` as a run record stores it: its corpus URL redacted (no credentials)."""
    return {**config.to_dict(), "corpus": redact_url(config.corpus)}


def run_identity(config: PipelineConfig) -> dict[str, Any]:
    """The values a run id hashes (see :data:`RUN_ID_FIELDS`), of the config as stored."""
    values = stored_config(config)
    identity = _identity(values, RUN_ID_FIELDS, _defaults(type(config)), _NOT_HASHED)
    identity["decoder"] = _identity(values["decoder"], DECODER_ID_FIELDS, _defaults(type(config.decoder)), set())
    if config.budget_bytes is not None:
        identity["budget_bytes"] = config.budget_bytes
    if not config.quantizer.unnamed_in_run_ids:
        identity["quantization"] = config.quantization
    if len(config.models) == 1 and identity["model_weights"] == "guarded":
        # One model weighs 1 under both rules: runs keep the ids they had when spread was the default.
        identity["model_weights"] = "spread"
    return identity


def run_id_for(config: PipelineConfig, corpus_manifest_path: str, fingerprints: list[str | None] | None = None) -> str:
    """The id of a run: a digest of its identity, of the corpus content and of the base
    models' weights (``fingerprints``, hashed only when one is known, so runs of fitted
    models only keep the ids they had before fingerprints).

    Deterministic, so that a rerun after a crash finds (and skips) what the crashed run
    committed under ``runs/<id>/`` and ``codes/<id>/`` and writes byte-identical shards.
    The store's own URL is left out: the same inputs give the same run in any store.
    """
    identity = run_identity(config)
    if fingerprints and any(fingerprints):
        identity["model_fingerprints"] = list(fingerprints)
    if RUN_ID_SCHEME > 1:  # scheme 1 is the hash of the ids stores already hold
        identity["run_id_scheme"] = RUN_ID_SCHEME
    return "run-" + digest(json.dumps(identity, sort_keys=True), corpus_manifest_path)[:16]
