"""The embed-corpus pipeline as plain steps over a storage root.

corpus -> per-model embedding shards -> decoder -> quantizer -> compressed shards -> catalog.
Each step reads and writes named artifacts under the root and returns their relative
paths, so any step can be re-run, skipped when its output exists, or run elsewhere.
Orchestration (Prefect) and fan-out (Ray) live outside this module.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa

from cecq.config import DEFAULT_MODELS, VALID_BITS, ConfigError, DecoderConfig, ModelSpec, ModelWeights, Quantization
from cecq.corpus import CorpusManifest, ShardInfo, manifest_path
from cecq.decoder import decode, load_decoder, save_decoder, train_decoder
from cecq.encoders import (LEXICAL, Encoder, LexicalEncoder, concatenate, load_encoder, nonempty_rows, resolve_model,
                           spread_weights)
from cecq.product_quantizer import DEFAULT_SUB_DIM, ProductQuantizer
from cecq.quantizer import AnyQuantizer, MixedQuantizer, Quantizer
from cecq.quantizer import load_quantizer as read_quantizer
from cecq.storage import Store, digest, slug

logger = logging.getLogger(__name__)

DecoderPolicy = Literal["reuse", "retrain", "auto"]


@dataclass(frozen=True)
class PipelineConfig:
    """Parameters of one embed-corpus (or reindex) run, validated at construction."""

    corpus: str
    store: str
    models: tuple[str, ...] = DEFAULT_MODELS
    shard_rows: int = 50_000
    dims: int = 256
    bits: int = 2
    budget_bytes: int | None = None  # bits fitted per dimension within this many bytes a document (bits unused)
    quantization: Quantization = "scalar"  # "product": budget_bytes subspaces of 4 dims, a byte each
    id_column: str | None = None
    text_columns: tuple[str, ...] | None = None
    decoder: DecoderConfig = field(default_factory=lambda: DecoderConfig(out_dim=512, max_epochs=20))
    calibration_rows: int = 100_000
    decoder_policy: DecoderPolicy = "auto"
    retrain_fraction: float = 0.25  # with policy 'auto': retrain when this share of documents is new or changed
    batch_size: int = 64
    model_weights: ModelWeights = "spread"  # per-model concatenation weights, fitted on the corpus (or "equal")

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
        if self.quantization not in ("scalar", "product"):
            raise ConfigError(f"quantization must be 'scalar' or 'product', got {self.quantization!r}")
        if self.quantization == "product":
            if self.budget_bytes is None:
                raise ConfigError("product quantization spends a byte budget: set budget_bytes")
            if not 1 <= self.budget_bytes <= self.dims // DEFAULT_SUB_DIM:
                raise ConfigError(f"budget_bytes must be in 1..{self.dims // DEFAULT_SUB_DIM} for product quantization "
                                  f"(a byte codes {DEFAULT_SUB_DIM} of the {self.dims} dims), got {self.budget_bytes}")
        elif self.budget_bytes is not None and not 1 <= self.budget_bytes <= self.dims // 2:
            raise ConfigError(f"budget_bytes must be in 1..{self.dims // 2} (4 bits for each of the {self.dims} dims), "
                              f"got {self.budget_bytes}")
        if self.model_weights not in ("equal", "spread"):
            raise ConfigError(f"model_weights must be 'equal' or 'spread', got {self.model_weights!r}")
        if self.decoder_policy not in ("reuse", "retrain", "auto"):
            raise ConfigError(f"decoder_policy must be reuse, retrain or auto, got {self.decoder_policy!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["decoder"] = self.decoder.to_dict()
        return d


# ---------------------------------------------------------------- layout

def model_key(model: str, corpus_key: str) -> str:
    """Folder name of a model's embeddings; fitted encoders are per corpus."""
    return f"{LEXICAL}-{corpus_key}" if model == LEXICAL else slug(model)


def embedding_path(mkey: str, shard: ShardInfo) -> str:
    return f"embeddings/{mkey}/{shard.key}.parquet"


def codes_path(compressor_id: str, shard: ShardInfo) -> str:
    return f"codes/{compressor_id}/{shard.key}.parquet"


def lexical_path(corpus_key: str) -> str:
    return f"models/{LEXICAL}-{corpus_key}"


def run_id_for(config: PipelineConfig, corpus_manifest_path: str) -> str:
    """The id of a run: a digest of its configuration and of the corpus content.

    Deterministic, so that a rerun after a crash finds (and skips) what the crashed run
    committed under ``runs/<id>/`` and ``codes/<id>/`` and writes byte-identical shards.
    The store's own URL is left out: the same inputs give the same run in any store.
    """
    # Settings added later are left out at their defaults, so runs configured before they existed keep their ids.
    added = {"budget_bytes": None, "quantization": "scalar"}
    settings = {k: v for k, v in config.to_dict().items() if k != "store" and not (k in added and v == added[k])}
    return "run-" + digest(json.dumps(settings, sort_keys=True), corpus_manifest_path)[:16]


# ---------------------------------------------------------------- encoders

def fit_lexical(store: Store, manifest: CorpusManifest, max_rows: int = 100_000, dim: int = 256, seed: int = 0) -> str:
    """Fit the lexical encoder on (a sample of) the corpus once; later runs reuse it."""
    rel = lexical_path(manifest.corpus_key)
    if store.exists(f"{rel}/lexical.json"):
        return rel
    rng = np.random.default_rng(seed)
    per_shard = max(1, max_rows // max(1, len(manifest.shards)))
    texts: list[str] = []
    for shard in manifest.shards:
        col = store.read_parquet(shard.path, ["text"]).column("text").to_pylist()
        take = rng.choice(len(col), min(per_shard, len(col)), replace=False)
        texts.extend(col[i] for i in sorted(take))
    enc = LexicalEncoder.fit(texts, dim=dim, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        enc.save(tmp)
        store.upload(tmp, rel, ["lexical.safetensors", "lexical.json"])  # the json marks it complete
    return rel


def load_pipeline_encoder(store: Store, model: str, corpus_key: str, batch_size: int = 64, device: str | None = None) -> Encoder:
    """A base model as the pipeline uses it (the lexical encoder comes from the store)."""
    if model == LEXICAL:
        with tempfile.TemporaryDirectory() as tmp:
            return LexicalEncoder.load(store.local_copy(lexical_path(corpus_key), tmp))
    return load_encoder(ModelSpec(model, batch_size=batch_size, device=device))


# ---------------------------------------------------------------- embedding

def embedding_table(ids: Sequence[str], hashes: Sequence[str], vectors: np.ndarray) -> pa.Table:
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "content_hash": pa.array(hashes, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
    })


def vectors_of(table: pa.Table, column: str = "embedding") -> np.ndarray:
    col = table.column(column).combine_chunks()
    dim = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def embed_shard(store: Store, encoder: Encoder, shard: ShardInfo, out_rel: str,
                previous: dict[tuple[str, str], np.ndarray] | None = None) -> dict:
    """Embed one corpus shard with one encoder and commit the embedding shard.

    Skipped when ``out_rel`` already exists. ``previous`` maps ``(id, content_hash)`` to a
    vector from an earlier run: those documents are not embedded again.
    """
    if store.exists(out_rel):
        return {"path": out_rel, "rows": shard.rows, "embedded": 0, "skipped": True, "seconds": 0.0}
    started = time.perf_counter()
    table = store.read_parquet(shard.path)
    ids = table.column("id").to_pylist()
    texts = table.column("text").to_pylist()
    hashes = table.column("content_hash").to_pylist()
    vectors = np.zeros((len(ids), encoder.dim), dtype=np.float32)
    todo = [i for i, key in enumerate(zip(ids, hashes)) if not previous or key not in previous]
    for i in set(range(len(ids))) - set(todo):
        vectors[i] = previous[(ids[i], hashes[i])]
    truncated_before = getattr(encoder, "truncated", 0)
    if todo:
        vectors[todo] = encoder.encode([texts[i] for i in todo], "document")
    nbytes = store.write_parquet(out_rel, embedding_table(ids, hashes, vectors))
    return {"path": out_rel, "rows": len(ids), "embedded": len(todo), "skipped": False, "bytes": nbytes,
            "truncated": getattr(encoder, "truncated", 0) - truncated_before, "seconds": time.perf_counter() - started}


def load_parts(store: Store, paths: Sequence[str], rows: np.ndarray | None = None) -> tuple[pa.Array, pa.Array, list[np.ndarray]]:
    """One shard's embeddings from each model (same ids, same order), as ``(ids,
    content_hashes, per-model vectors)``; ids and hashes stay Arrow arrays (they are written
    straight back to Parquet, never needed as Python strings)."""
    parts, ids, hashes = [], None, None
    for p in paths:
        t = store.read_parquet(p)
        if ids is None:
            ids, hashes = t.column("id").combine_chunks(), t.column("content_hash").combine_chunks()
        elif not t.column("id").combine_chunks().equals(ids):
            raise ValueError(f"embedding shard {p} does not hold the same ids, in the same order, as {paths[0]}")
        v = vectors_of(t)
        parts.append(v if rows is None else v[rows])
    if rows is not None:
        ids, hashes = ids.take(pa.array(rows)), hashes.take(pa.array(rows))
    return ids, hashes, parts


def load_concatenated(store: Store, paths: Sequence[str], rows: np.ndarray | None = None,
                      weights: Sequence[float] | None = None) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """:func:`load_parts`, concatenated with the per-model ``weights``."""
    ids, hashes, parts = load_parts(store, paths, rows)
    return ids, hashes, concatenate(parts, weights)


# ---------------------------------------------------------------- training

def sample_parts(store: Store, manifest: CorpusManifest, model_keys: Sequence[str], max_rows: int, seed: int) -> list[np.ndarray]:
    """A seeded sample of at most ``max_rows`` documents' embeddings, per model, spread over
    shards; documents empty for every model are left out (they carry no similarity signal)."""
    rng = np.random.default_rng(seed)
    share = min(1.0, max_rows / max(1, manifest.rows))
    out: list[list[np.ndarray]] = [[] for _ in model_keys]
    for shard in manifest.shards:
        take = np.sort(rng.choice(shard.rows, max(1, int(round(shard.rows * share))), replace=False))
        for acc, part in zip(out, load_parts(store, [embedding_path(k, shard) for k in model_keys], take)[2]):
            acc.append(part)
    parts = [np.concatenate(p) for p in out]
    keep = np.any([nonempty_rows(p) for p in parts], axis=0)
    return [p[keep] for p in parts]


def fit_model_weights(parts: Sequence[np.ndarray], how: ModelWeights, seed: int = 0) -> list[float]:
    """Per-model concatenation weights: fitted on corpus embeddings (``spread``) or all 1."""
    return spread_weights(parts, seed=seed) if how == "spread" else [1.0] * len(parts)


def train_compressor(store: Store, run_id: str, manifest: CorpusManifest, model_keys: Sequence[str],
                     config: PipelineConfig) -> tuple[str, str]:
    """Train the decoder and fit the quantizer; return their relative paths."""
    decoder_rel, quantizer_rel = f"runs/{run_id}/decoder", f"runs/{run_id}/quantizer.parquet"
    if store.exists(f"{decoder_rel}/decoder.json") and store.exists(quantizer_rel):
        return decoder_rel, quantizer_rel
    parts = sample_parts(store, manifest, model_keys, config.decoder.max_train_rows, config.decoder.seed)
    weights = fit_model_weights(parts, config.model_weights, config.decoder.seed)
    x = concatenate(parts, weights)
    del parts
    decoder, stats = train_decoder(x, config.decoder)
    with tempfile.TemporaryDirectory() as tmp:
        save_decoder(decoder, tmp, {"models": list(config.models), "model_keys": list(model_keys), "model_weights": weights,
                                    "prefix_sizes": list(config.decoder.effective_prefix_sizes()), "training": asdict(stats)})
        store.upload(tmp, decoder_rel, ["decoder.safetensors", "decoder.json"])
    calib = x[np.random.default_rng(config.decoder.seed + 1).permutation(len(x))[: config.calibration_rows]]
    prefix = decode(decoder, calib, config.dims)
    quantizer: AnyQuantizer
    if config.budget_bytes is None:
        quantizer = Quantizer.fit(prefix, config.bits)
    elif config.quantization == "product":
        quantizer = ProductQuantizer.fit(prefix, config.budget_bytes, seed=config.decoder.seed)
    else:
        quantizer = MixedQuantizer.fit(prefix, config.budget_bytes)
    buf = io.BytesIO()
    quantizer.save(buf)
    store.write_bytes(quantizer_rel, buf.getvalue())
    return decoder_rel, quantizer_rel


def load_quantizer(store: Store, quantizer_rel: str) -> AnyQuantizer:
    with store.fs.open(store.path(quantizer_rel), "rb") as f:
        return read_quantizer(f)


def load_compressor(store: Store, decoder_rel: str, quantizer_rel: str):
    with tempfile.TemporaryDirectory() as tmp:
        decoder, meta = load_decoder(store.local_copy(decoder_rel, tmp))
    return decoder, meta, load_quantizer(store, quantizer_rel)




def compress_shard(store: Store, shard: ShardInfo, embedding_paths: Sequence[str], decoder_rel: str, quantizer_rel: str,
                   out_rel: str, compressor=None) -> dict:
    """Concatenate, decode, take the prefix, quantize and pack one shard; commit the codes shard."""
    if store.exists(out_rel):
        return {"path": out_rel, "rows": shard.rows, "skipped": True, "bytes": store.size(out_rel)}
    decoder, meta, quantizer = compressor or load_compressor(store, decoder_rel, quantizer_rel)
    ids, hashes, x = load_concatenated(store, embedding_paths, weights=meta.get("model_weights"))
    nbytes = store.write_parquet(out_rel, codes_table(shard.name, ids, hashes, x, decoder, quantizer))
    return {"path": out_rel, "rows": len(ids), "skipped": False, "bytes": nbytes}


def codes_table(shard_name: str, ids: pa.Array, hashes: pa.Array, x: np.ndarray, decoder, quantizer: AnyQuantizer) -> pa.Table:
    """Decode, take the prefix, quantize and pack concatenated embeddings into a codes table."""
    packed = np.ascontiguousarray(quantizer.quantize(decode(decoder, x, quantizer.dim)))
    width = quantizer.bytes_per_vector
    return pa.table({
        "id": ids,
        "shard": pa.array([shard_name] * len(ids), pa.string()),
        "content_hash": hashes,
        # The packed rows are already one contiguous buffer: wrap it, no per-row bytes objects.
        "code": pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(ids), [None, pa.py_buffer(packed)]),
        "empty": pa.array(~nonempty_rows(x), pa.bool_()),
    })


# ---------------------------------------------------------------- fan-out (through cecq.ray_pool)

def previous_vectors(store: Store, paths: Sequence[str]) -> dict[tuple[str, str], np.ndarray]:
    """``(id, content_hash) -> vector`` from earlier embedding shards, for re-indexing."""
    out: dict[tuple[str, str], np.ndarray] = {}
    for p in paths:
        if store.exists(p):
            t = store.read_parquet(p)
            for i, h, v in zip(t.column("id").to_pylist(), t.column("content_hash").to_pylist(), vectors_of(t)):
                out[(i, h)] = v
    return out


def embed_model(store: Store, manifest: CorpusManifest, model: str, batch_size: int = 64, ray_address: str | None = None,
                previous: CorpusManifest | None = None, progress=None) -> dict:
    """Embed every shard of the corpus with one model on Ray; shards already committed are
    skipped, and with ``previous`` unchanged documents reuse their earlier vectors."""
    from cecq.ray_pool import EmbedJob, embed_shards, init_ray

    if model != LEXICAL:
        resolve_model(model)  # a missing local path fails here, before any actor starts
    mkey = model_key(model, manifest.corpus_key)
    prev_by_name = {s.name: s for s in previous.shards} if previous else {}
    jobs, skipped = [], 0
    for shard in manifest.shards:
        out = embedding_path(mkey, shard)
        if store.exists(out):
            skipped += 1
            continue
        prev = prev_by_name.get(shard.name)
        jobs.append(EmbedJob(shard.__dict__.copy(), out, [embedding_path(mkey, prev)] if prev else []))
    results = []
    if jobs:
        init_ray(ray_address)
        results = embed_shards(store.url, store.storage_options, model, manifest.corpus_key, jobs, batch_size, progress=progress)
    return {
        "model": model, "model_key": mkey, "shards": len(manifest.shards), "skipped_shards": skipped,
        "embedded_documents": sum(r["embedded"] for r in results),
        "truncated_documents": sum(r.get("truncated", 0) for r in results),  # longer than the model's limit
        "seconds": sum(r.get("seconds", 0.0) for r in results),
        "nodes": sorted({r["node"] for r in results}),
        "info": results[0]["model_info"] if results else None,
    }


def _compress_job(store_url: str, storage_options: dict, shard: dict, embedding_paths: list[str], decoder_rel: str,
                  quantizer_rel: str, out_rel: str) -> dict:
    import torch

    torch.set_num_threads(1)
    store = Store(store_url, storage_options)
    info = ShardInfo(**shard)
    result = compress_shard(store, info, embedding_paths, decoder_rel, quantizer_rel, out_rel)
    return {**result, "name": info.name, "fingerprint": info.fingerprint, "corpus_path": info.path}


def compress_corpus(store: Store, manifest: CorpusManifest, model_keys: Sequence[str], decoder_rel: str, quantizer_rel: str,
                    compressor_id: str, ray_address: str | None = None, progress=None) -> list[dict]:
    """Compress every shard (as Ray tasks); committed shards are skipped, not rewritten."""
    from cecq.ray_pool import cpus_per_task, init_ray, run_tasks

    init_ray(ray_address)
    jobs = [(store.url, store.storage_options, s.__dict__.copy(), [embedding_path(k, s) for k in model_keys],
             decoder_rel, quantizer_rel, codes_path(compressor_id, s)) for s in manifest.shards]
    results = run_tasks(_compress_job, jobs, num_cpus=cpus_per_task(), progress=progress)
    order = {s.name: i for i, s in enumerate(manifest.shards)}
    return sorted(results, key=lambda r: order[r["name"]])


# ---------------------------------------------------------------- run records

def choose_compressor(policy: DecoderPolicy, previous: dict | None, models: Sequence[str], dims: int, bits: int,
                      changed_fraction: float, retrain_fraction: float, budget_bytes: int | None = None,
                      quantization: Quantization = "scalar") -> tuple[str, str, str] | None:
    """The previous run's (compressor_id, decoder, quantizer) to reuse, or None to train anew.

    Reuse needs the same base models, dims and bits (or byte budget and quantization); 'auto' also needs the
    share of new or changed documents to be at most ``retrain_fraction``.
    """
    if previous is None or policy == "retrain":
        return None
    same_codes = (previous.get("budget_bytes") == budget_bytes
                  and previous.get("quantization", "scalar") == quantization
                  and (budget_bytes is not None or previous["bits"] == bits))
    compatible = list(previous["models"]) == list(models) and previous["dims"] == dims and same_codes
    if not compatible:
        if policy == "reuse":
            raise ConfigError(f"cannot reuse the decoder: the store was built with models {previous['models']}, "
                              f"{previous['dims']} dims, {_code_layout(previous['bits'], previous.get('budget_bytes'), previous.get('quantization', 'scalar'))}")
        return None
    if policy == "auto" and changed_fraction > retrain_fraction:
        return None
    return previous["compressor_id"], previous["decoder"], previous["quantizer"]


def _code_layout(bits: int | None, budget_bytes: int | None, quantization: str = "scalar") -> str:
    if quantization == "product":
        return f"product codes of {budget_bytes} bytes"
    return f"bits fitted within {budget_bytes} bytes" if budget_bytes else f"{bits} bits"


def describe_run(store: Store, config: PipelineConfig, run_id: str, manifest: CorpusManifest, embedding: list[dict],
                 decoder_rel: str, quantizer_rel: str, compressor_id: str, started: str) -> dict:
    """The run record stored in ``runs/<id>/run.json`` and shown by the ``runs`` view."""
    decoder_meta = store.read_json(f"{decoder_rel}/decoder.json")
    bytes_per_doc = load_quantizer(store, quantizer_rel).bytes_per_vector
    return {
        "run_id": run_id, "started": started, "corpus": config.corpus, "corpus_key": manifest.corpus_key,
        "documents": manifest.rows, "empty_texts": manifest.empty_texts, "shards": len(manifest.shards),
        "models": list(config.models), "model_keys": [e["model_key"] for e in embedding],
        "embedding": embedding, "corpus_manifest": manifest_path(manifest),
        "decoder": decoder_rel, "quantizer": quantizer_rel, "compressor_id": compressor_id,
        "decoder_training": decoder_meta.get("training", {}), "model_weights": decoder_meta.get("model_weights"),
        # bits is null where a byte budget fitted the bits of each dimension
        "dims": config.dims, "bits": None if config.budget_bytes else config.bits, "budget_bytes": config.budget_bytes,
        "quantization": config.quantization,
        "bytes_per_doc": bytes_per_doc,
        "compression": 4 * decoder_meta["in_dim"] / bytes_per_doc, "config": config.to_dict(),
    }
