"""The embed-corpus pipeline's per-shard and per-run steps, over a storage root.

corpus -> per-model embedding shards -> decoder -> quantizer -> compressed shards.
Each step reads and writes named artifacts under the root (:mod:`cecq.catalog.layout`)
and returns their relative paths or a typed result, so any step can be re-run, skipped
when its output exists, or run elsewhere. Fan-out is in :mod:`cecq.pipeline.fanout`,
orchestration (Prefect) outside the library.
"""

from __future__ import annotations

import functools
import io
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cecq.catalog.layout import (
    GUARD_KINDS,
    decoder_path,
    embedding_path,
    fitted_model_path,
    guard_shard,
    quantizer_path,
)
from cecq.catalog.reader import check_artifact, compressor_is_whole, is_whole, load_compressor, load_store_encoder
from cecq.catalog.records import CodesShard, CorpusManifest, EmbedShardResult, ShardInfo
from cecq.config import DecoderPolicy, ModelSpec, PipelineConfig, Precision
from cecq.decoder import CONFIG_FILE, WEIGHTS_FILE, Decoder, decode, save_decoder, train_decoder, trimmed
from cecq.decoder.training import TrainingProgress
from cecq.encoders import (
    Encoder,
    concatenate,
    encoder_class,
    fit_weights,
    guarded_weights,
    is_fitted,
    nonempty_rows,
    spread_weights,
)
from cecq.encoders.weights import (
    GUARD_RATIO,
    MIN_PSEUDO_QUERIES,
    SELF_POOL,
    SELF_QUERIES,
    Encoded,
    PseudoQueries,
    pseudo_queries,
)
from cecq.errors import ModelLoadError
from cecq.killpoints import kill_point
from cecq.pipeline import corpus
from cecq.pipeline.ray_pool import ActorContext
from cecq.quantization import CodeQuantizer, fit_quantizer
from cecq.storage import Store
from cecq.targets import CompressionPlan, CompressionTarget

logger = logging.getLogger(__name__)

FIT_ROWS = 100_000  # documents a fitted encoder (lexical) is fitted on, sampled over shards
# Documents encoded at once: progress is reported between chunks (on 2 CPU cores MiniLM embeds
# about 100 a second, so a report every few seconds), and length bucketing still sorts 512 texts.
PROGRESS_CHUNK = 512


# ---------------------------------------------------------------- fitted encoders


def fit_encoder(store: Store, manifest: CorpusManifest, model: str, max_rows: int = FIT_ROWS, seed: int = 0) -> str:
    """Fit a corpus-fitted encoder on (a sample of) the corpus once; later runs reuse it."""
    cls = encoder_class(model)
    rel = fitted_model_path(model, manifest.corpus_key)
    if all(is_whole(store, f"{rel}/{name}") for name in cls.files):  # a damaged file is refitted
        return rel
    rng = np.random.default_rng(seed)
    per_shard = max(1, max_rows // max(1, len(manifest.shards)))
    texts: list[str] = []
    for shard in manifest.shards:
        col = store.read_parquet(shard.path, ["text"]).column("text").to_pylist()
        take = rng.choice(len(col), min(per_shard, len(col)), replace=False)
        texts.extend(col[i] for i in sorted(take))
    enc = cls.fit_corpus(texts, ModelSpec(model), seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        enc.save(tmp)
        store.upload(tmp, rel, list(cls.files))  # the last file marks the folder complete
    return rel


# ---------------------------------------------------------------- embedding


def embedding_table(ids: Sequence[str], hashes: Sequence[str], vectors: np.ndarray) -> pa.Table:
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "content_hash": pa.array(hashes, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
        }
    )


def vectors_of(table: pa.Table, column: str = "embedding") -> np.ndarray:
    col = table.column(column).combine_chunks()
    dim = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


@dataclass
class EmbeddedPart:
    """Part ``part`` of ``parts`` of one shard, embedded: the shard's ``rows`` (positions) it
    holds, their ``ids``, ``hashes`` (content hashes) and ``vectors``, before they are
    committed (:func:`commit_parts`, which so need not read the shard again)."""

    part: int
    parts: int
    rows: np.ndarray
    ids: list[str]
    hashes: list[str]
    vectors: np.ndarray
    embedded: int = 0
    truncated: int = 0
    seconds: float = 0.0
    model_info: dict[str, Any] | None = None


def part_rows(texts: Sequence[str], part: int = 0, parts: int = 1) -> np.ndarray:
    """The positions of part ``part`` of ``parts`` of a shard of ``texts``: every ``parts``-th
    text, longest first by characters, so that the parts cost alike (a shard's texts may come
    sorted)."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} of {parts}")
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # stable: ties keep their order
    return np.asarray(order[part::parts], dtype=np.int64)


def embed_part(
    store: Store,
    encoder: Encoder,
    shard: ShardInfo,
    part: int = 0,
    parts: int = 1,
    previous: dict[tuple[str, str], np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
    kind: str = "document",
) -> EmbeddedPart:
    """Embed part ``part`` of ``parts`` of one corpus shard (:func:`part_rows`) with one
    encoder, as ``kind`` texts (the guard's pseudo-queries are 'query'); nothing is written.
    ``previous`` maps ``(id, content_hash)`` to a vector from an earlier run: those documents
    are not embedded again. Texts are encoded
    :data:`PROGRESS_CHUNK` at a time, longest first, and ``progress(documents done)`` called
    between chunks."""
    started = time.perf_counter()
    table = store.read_parquet(shard.path, columns=["id", "text", "content_hash"])
    ids = table.column("id").to_pylist()
    texts = table.column("text").to_pylist()
    hashes = table.column("content_hash").to_pylist()
    # Longest first by characters across the whole part, then chunks: the encoder sorts only
    # within what it is given, so chunks taken in corpus order mixed short and long texts
    # (MiniLM's padded tokens, 1,000 long-tailed SciFact texts: 1.68x the real ones in chunks
    # of 512, 1.29x sorted first, 1.28x sorted whole; natural SciFact 1.034x, 1.013x, 1.004x).
    rows = part_rows(texts, part, parts)
    vectors = np.zeros((len(rows), encoder.dim), dtype=np.float32)
    todo = []
    for j, i in enumerate(rows):
        key = (ids[i], hashes[i])
        if previous and key in previous:
            vectors[j] = previous[key]
        else:
            todo.append(j)
    truncated_before = encoder.truncated
    done = len(rows) - len(todo)  # reused vectors are done at once
    for start in range(0, len(todo), PROGRESS_CHUNK):
        if progress:
            progress(done)
        chunk = todo[start : start + PROGRESS_CHUNK]
        vectors[chunk] = encoder.encode([texts[rows[j]] for j in chunk], kind)
        done += len(chunk)
    if progress:
        progress(done)
    return EmbeddedPart(
        part,
        parts,
        rows,
        [ids[i] for i in rows],
        [hashes[i] for i in rows],
        vectors,
        embedded=len(todo),
        truncated=encoder.truncated - truncated_before,
        seconds=time.perf_counter() - started,
    )


def commit_parts(store: Store, shard: ShardInfo, out_rel: str, parts: Sequence[EmbeddedPart]) -> EmbedShardResult:
    """Write every part of one shard, in the shard's row order, as its embedding shard."""
    if sorted(p.part for p in parts) != list(range(len(parts))) or any(p.parts != len(parts) for p in parts):
        raise ValueError(f"{out_rel}: parts {sorted((p.part, p.parts) for p in parts)} are not one whole shard")
    rows = np.concatenate([p.rows for p in parts])
    if len(rows) != shard.rows or len(np.unique(rows)) != shard.rows:
        raise ValueError(f"{out_rel}: parts hold {len(rows)} rows, the shard {shard.rows}")
    vectors = np.zeros((shard.rows, parts[0].vectors.shape[1]), dtype=np.float32)
    ids, hashes = [""] * shard.rows, [""] * shard.rows
    for p in parts:
        vectors[p.rows] = p.vectors
        for i, doc_id, content_hash in zip(p.rows.tolist(), p.ids, p.hashes):
            ids[i], hashes[i] = doc_id, content_hash
    nbytes = store.write_parquet(out_rel, embedding_table(ids, hashes, vectors), "embeddings")
    return EmbedShardResult(
        out_rel,
        shard.rows,
        embedded=sum(p.embedded for p in parts),
        bytes=nbytes,
        truncated=sum(p.truncated for p in parts),
        seconds=sum(p.seconds for p in parts),
    )


def embed_shard(
    store: Store,
    encoder: Encoder,
    shard: ShardInfo,
    out_rel: str,
    previous: dict[tuple[str, str], np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
    kind: str = "document",
) -> EmbedShardResult:
    """Embed one corpus shard with one encoder (:func:`embed_part`, whole, as ``kind`` texts) and commit the
    embedding shard; skipped when ``out_rel`` is already committed whole (a damaged one is
    rewritten). Vectors are written in the shard's row order."""
    if is_whole(store, out_rel, shard.rows):
        return EmbedShardResult(out_rel, shard.rows, skipped=True)
    started = time.perf_counter()
    result = commit_parts(store, shard, out_rel, [embed_part(store, encoder, shard, 0, 1, previous, progress, kind)])
    result.seconds = time.perf_counter() - started
    return result


def load_parts(
    store: Store, paths: Sequence[str], rows: np.ndarray | None = None
) -> tuple[pa.Array, pa.Array, list[np.ndarray]]:
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


def load_concatenated(
    store: Store, paths: Sequence[str], rows: np.ndarray | None = None, weights: Sequence[float] | None = None
) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """:func:`load_parts`, concatenated with the per-model ``weights``."""
    ids, hashes, parts = load_parts(store, paths, rows)
    return ids, hashes, concatenate(parts, weights)


# ---------------------------------------------------------------- planning


def embedding_dim(store: Store, rel: str) -> int:
    """Width of an embedding shard's vectors, from its Parquet schema (no rows read)."""
    with store.fs.open(store.path(rel), "rb") as f:
        return int(pq.read_schema(f).field("embedding").type.list_size)


def plan_compression(
    store: Store, manifest: CorpusManifest, model_keys: Sequence[str], target: CompressionTarget, max_train_rows: int
) -> CompressionPlan:
    """Resolve a compression target for this corpus: the models' total dimension (read from
    their committed embedding shards) and the documents the decoder is trained on."""
    total_dim = sum(embedding_dim(store, embedding_path(k, manifest.shards[0])) for k in model_keys)
    rows = min(max(1, manifest.rows - manifest.empty_texts), max_train_rows)
    plan = target.plan(total_dim, rows)
    logger.info("compression: %s", plan.describe())
    return plan


# ---------------------------------------------------------------- training


def sample_documents(
    store: Store, manifest: CorpusManifest, model_keys: Sequence[str], max_rows: int, seed: int, texts: bool = False
) -> tuple[list[str], list[np.ndarray]]:
    """A seeded sample of at most about ``max_rows`` documents, spread over the shards: their
    texts as embedded (if ``texts``, else none) and each model's embeddings of them."""
    rng = np.random.default_rng(seed)
    share = min(1.0, max_rows / max(1, manifest.rows))
    out_texts: list[str] = []
    out: list[list[np.ndarray]] = [[] for _ in model_keys]
    for shard in manifest.shards:
        take = np.sort(rng.choice(shard.rows, max(1, round(shard.rows * share)), replace=False))
        if texts:
            col = store.read_parquet(shard.path, ["text"]).column("text").to_pylist()
            out_texts.extend(col[i] for i in take)
        if model_keys:
            for acc, part in zip(out, load_parts(store, [embedding_path(k, shard) for k in model_keys], take)[2]):
                acc.append(part)
    return out_texts, [np.concatenate(p) for p in out]


def sample_parts(
    store: Store, manifest: CorpusManifest, model_keys: Sequence[str], max_rows: int, seed: int
) -> list[np.ndarray]:
    """A seeded sample of at most ``max_rows`` documents' embeddings, per model, spread over
    shards; documents empty for every model are left out (they carry no similarity signal)."""
    parts = sample_documents(store, manifest, model_keys, max_rows, seed)[1]
    keep = np.any([nonempty_rows(p) for p in parts], axis=0)
    return [p[keep] for p in parts]


def needs_guard(config: PipelineConfig) -> bool:
    """Whether the run fits guarded weights that need pretrained models' vectors of the
    guard's pseudo-queries, which the embed stage then embeds beside the corpus (runs that
    retrain only: under the reuse and auto policies of ``reindex`` the decoder is mostly
    reused, and a retraining one encodes them in its own process)."""
    return (
        config.model_weights == "guarded"
        and config.decoder_policy == "retrain"
        and len(config.models) > 1
        and not all(is_fitted(m) for m in config.models)
    )


def _guard_sample(
    store: Store, manifest: CorpusManifest, seed: int, model_keys: Sequence[str] = ()
) -> tuple[list[str], list[np.ndarray], PseudoQueries]:
    """The guard's sample of the corpus: its texts, each of ``model_keys``' embeddings of them,
    and the pseudo-queries cut from them; the same at the embed stage (:func:`write_guard`)
    and at training (:func:`fit_model_weights`)."""
    texts, parts = sample_documents(store, manifest, model_keys, SELF_POOL, seed + 3, texts=True)
    return texts, parts, pseudo_queries(texts, SELF_QUERIES, seed)


def write_guard(store: Store, manifest: CorpusManifest, seed: int) -> dict[str, ShardInfo]:
    """Write the guard's pseudo-queries and their answers as two corpus-like shards (by kind,
    :func:`cecq.catalog.layout.guard_shard`), for the embedding pool to embed with every
    pretrained model; shards already written whole are kept. None (``{}``) where the corpus
    gives too few pseudo-queries to judge (a corpus of titles)."""
    pq = _guard_sample(store, manifest, seed)[2]
    if len(pq.rows) < MIN_PSEUDO_QUERIES:
        return {}
    out = {}
    for kind, texts in zip(GUARD_KINDS, (pq.queries, pq.answers)):
        shard = guard_shard(manifest, seed, kind, len(texts))
        if not is_whole(store, shard.path, shard.rows):
            ids = [f"{shard.name}-{i}" for i in range(len(texts))]
            hashes = [corpus.content_hash(t) for t in texts]
            table = pa.table([ids, texts, hashes], schema=corpus.CORPUS_SCHEMA)
            store.write_parquet(shard.path, table, "corpus")
        out[kind] = shard
    return out


def pooled_guard(
    store: Store, manifest: CorpusManifest, seed: int, model_keys: Sequence[str], pq: PseudoQueries
) -> dict[int, Encoded]:
    """The models (by position) whose vectors of the guard's pseudo-queries ``pq`` and their
    answers the embed stage committed (:func:`write_guard`), those vectors read back. A
    model is left out (and so encodes them itself) where a file is missing or damaged, or
    where the texts written are not ``pq``'s (written by another cut of the pseudo-queries)."""
    shards = [guard_shard(manifest, seed, kind, len(pq.rows)) for kind in GUARD_KINDS]
    expected = (pq.queries, pq.answers)
    if not all(is_whole(store, s.path, s.rows) for s in shards) or any(
        store.read_parquet(s.path, ["text"]).column("text").to_pylist() != t for s, t in zip(shards, expected)
    ):
        return {}
    out = {}
    for i, key in enumerate(model_keys):
        paths = [embedding_path(key, s) for s in shards]
        if all(is_whole(store, p, len(pq.rows)) for p in paths):
            queries, answers = (vectors_of(store.read_parquet(p)) for p in paths)
            out[i] = Encoded(queries, answers)
    return out


def fit_model_weights(
    parts: Sequence[np.ndarray],
    config: PipelineConfig,
    store: Store,
    manifest: CorpusManifest,
    model_keys: Sequence[str],
) -> tuple[list[float], dict[str, Any]]:
    """Per-model concatenation weights fitted on the corpus (rule ``config.model_weights``)
    and a description of the fit: ``spread`` from the sampled embeddings ``parts``;
    ``guarded`` also checks each model on pseudo-queries cut from a sample of at most
    ``SELF_POOL`` documents' texts (read from ``store``): a pretrained model's vectors of the
    pseudo-queries and their answers are those the embed stage committed (:func:`write_guard`),
    else it is loaded here and encodes those 600 or so texts; a fitted one is refitted on the
    sample and encodes it. A model the guard drops is logged as a warning."""
    how, seed = config.model_weights, config.decoder.seed
    if how != "guarded" or len(parts) == 1:  # one model: the guard has nothing to compare
        weights, fit_info = fit_weights("spread" if how == "guarded" else how, [], [], parts, seed)
        return weights or [1.0] * len(parts), fit_info
    started = time.perf_counter()
    texts, guard_parts, pq = _guard_sample(store, manifest, seed, model_keys)
    pooled = pooled_guard(store, manifest, seed, model_keys, pq)
    # trusted: the run's models, named by the user (or checked when the run was reindexed)
    encoders = [
        pooled.get(i) or load_store_encoder(store, m, manifest.corpus_key, trusted=True, precision=config.precision)
        for i, m in enumerate(config.models)
    ]
    fit = guarded_weights(encoders, texts, guard_parts, seed=seed, spread=spread_weights(parts, seed=seed))
    logger.info(
        "model weights (guarded, %d pseudo-queries, %.1f s, %d of %d models' vectors from the embed stage): "
        "%s, from spread %s; pseudo nDCG@10 alone %s",
        fit.queries,
        time.perf_counter() - started,
        len(pooled),
        len(encoders),
        [round(w, 4) for w in fit.weights],
        [round(w, 4) for w in fit.spread or fit.weights],
        [c["ndcg_at_10"] for c in fit.candidates],
    )
    if fit.candidates and 0.0 in fit.weights:
        alone = [c["ndcg_at_10"] for c in fit.candidates]
        best = int(np.argmax(alone))
        for model, w, score in zip(config.models, fit.weights, alone):
            if w == 0.0:
                logger.warning(
                    "model %s dropped from the concatenation (weight 0): alone it finds the corpus's "
                    "pseudo-queries at nDCG@10 %.3f, %.2f of %s's %.3f (the guard keeps a model at %.2f)",
                    model,
                    score,
                    score / alone[best] if alone[best] else 0.0,
                    config.models[best],
                    alone[best],
                    GUARD_RATIO,
                )
    return fit.weights, fit.to_dict()


def train_compressor(
    store: Store,
    run_id: str,
    manifest: CorpusManifest,
    model_keys: Sequence[str],
    config: PipelineConfig,
    progress: TrainingProgress | None = None,
) -> tuple[str, str]:
    """Train the decoder (``progress`` counts its epochs) and fit the quantizer; return their relative paths."""
    decoder_rel, quantizer_rel = decoder_path(run_id), quantizer_path(run_id)
    if compressor_is_whole(store, decoder_rel, quantizer_rel):  # else (re)trained: seeded, so byte-identical
        return decoder_rel, quantizer_rel
    parts = sample_parts(store, manifest, model_keys, config.decoder.max_train_rows, config.decoder.seed)
    weights, weights_fit = fit_model_weights(parts, config, store, manifest, model_keys)
    x = concatenate(parts, weights)
    del parts
    decoder, stats = train_decoder(x, config.decoder, progress=progress)
    # The codes read the first ``dims`` outputs only: the index stores just those rows.
    decoder = trimmed(decoder, config.dims)
    with tempfile.TemporaryDirectory() as tmp:
        save_decoder(
            decoder,
            tmp,
            {
                "models": list(config.models),
                "model_keys": list(model_keys),
                "model_weights": weights,
                "model_weights_fit": weights_fit,
                "trained_out_dim": config.decoder.out_dim,
                "prefix_sizes": list(config.decoder.effective_prefix_sizes()),
                "training": asdict(stats),
            },
        )
        store.upload(tmp, decoder_rel, [WEIGHTS_FILE, CONFIG_FILE])
    calib = x[np.random.default_rng(config.decoder.seed + 1).permutation(len(x))[: config.calibration_rows]]
    prefix = decode(decoder, calib, config.dims)
    quantizer = fit_quantizer(
        str(config.quantization), prefix, bits=config.bits, budget_bytes=config.budget_bytes, seed=config.decoder.seed
    )
    buf = io.BytesIO()
    quantizer.save(buf)
    store.write_bytes(quantizer_rel, buf.getvalue())
    return decoder_rel, quantizer_rel


def reusable_compressor(
    store: Store, reused: tuple[str, str, str] | None, policy: DecoderPolicy
) -> tuple[str, str, str] | None:
    """``reused`` (compressor id, decoder, quantizer) if its files read whole. A damaged one is
    refused under policy 'reuse' (naming the file) and retrained otherwise (None)."""
    if reused is None or compressor_is_whole(store, reused[1], reused[2]):
        return reused
    if policy == "reuse":
        for rel in (f"{reused[1]}/{CONFIG_FILE}", f"{reused[1]}/{WEIGHTS_FILE}", reused[2]):
            if not store.exists(rel):
                raise store.damaged(rel, "missing")
            check_artifact(store, rel)
    logger.warning("the published compressor %s is damaged: training a new one", reused[0])
    return None


def compress_shard(
    store: Store,
    shard: ShardInfo,
    embedding_paths: Sequence[str],
    decoder_rel: str,
    quantizer_rel: str,
    out_rel: str,
    compressor: tuple[Decoder, dict[str, Any], CodeQuantizer] | None = None,
) -> CodesShard:
    """Concatenate, decode, take the prefix, quantize and pack one shard; commit the codes shard."""
    if is_whole(store, out_rel, shard.rows):  # a damaged codes shard is recompressed
        return CodesShard(
            shard.name, out_rel, shard.rows, store.size(out_rel), shard.fingerprint, shard.path, skipped=True
        )
    decoder, meta, quantizer = compressor or load_compressor(store, decoder_rel, quantizer_rel)
    ids, hashes, x = load_concatenated(store, embedding_paths, weights=meta.get("model_weights"))
    nbytes = store.write_parquet(out_rel, codes_table(shard.name, ids, hashes, x, decoder, quantizer), "codes")
    kill_point("compressing")  # crash tests: a codes shard committed
    return CodesShard(shard.name, out_rel, len(ids), nbytes, shard.fingerprint, shard.path)


def codes_table(
    shard_name: str, ids: pa.Array, hashes: pa.Array, x: np.ndarray, decoder: Decoder, quantizer: CodeQuantizer
) -> pa.Table:
    """Decode, take the prefix, quantize and pack concatenated embeddings into a codes table."""
    packed = np.ascontiguousarray(quantizer.quantize(decode(decoder, x, quantizer.dim)))
    width = quantizer.bytes_per_vector
    return pa.table(
        {
            "id": ids,
            "shard": pa.array([shard_name] * len(ids), pa.string()),
            "content_hash": hashes,
            # The packed rows are already one contiguous buffer: wrap it, no per-row bytes objects.
            "code": pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(ids), [None, pa.py_buffer(packed)]),
            "empty": pa.array(~nonempty_rows(x), pa.bool_()),
        }
    )


def previous_vectors(store: Store, paths: Sequence[str]) -> dict[tuple[str, str], np.ndarray]:
    """``(id, content_hash) -> vector`` from earlier embedding shards, for re-indexing."""
    out: dict[tuple[str, str], np.ndarray] = {}
    for p in paths:
        if is_whole(store, p):  # only a cache: a damaged earlier shard is embedded anew
            t = store.read_parquet(p)
            for i, h, v in zip(t.column("id").to_pylist(), t.column("content_hash").to_pylist(), vectors_of(t)):
                out[(i, h)] = v
    return out


class EmbedWorker:
    """What an embedding actor holds: one base model, loaded once, embedding shard after
    shard (:mod:`cecq.pipeline.ray_pool` runs it; it knows nothing of Ray)."""

    def __init__(
        self,
        store_url: str,
        storage_options: dict[str, Any],
        model: str,
        corpus_key: str,
        batch_size: int,
        fingerprint: str | None,
        precision: Precision,
        context: ActorContext,
    ):
        import torch  # heavy: only actors need it

        torch.set_num_threads(context.threads)
        if fingerprint is not None and (here := encoder_class(model).fingerprint(model)) != fingerprint:
            raise ModelLoadError(
                f"model {model!r} here has weights {here}, not the run's {fingerprint}: "
                "every node must hold the same model files"
            )
        self.store = Store(store_url, storage_options)
        self.report = context.report
        # trusted: the run's models were named by the user, or checked where they came from a store (reindex)
        self.encoder = load_store_encoder(
            self.store, model, corpus_key, batch_size, context.device, trusted=True, precision=precision
        )
        self.encoder.to_device(context.device)

    def __call__(self, job: Any) -> EmbedShardResult | EmbeddedPart:
        """Embed ``job``'s shard and commit it, or, where the job is one of several parts of
        its shard (``job.parts > 1``), embed that part and return it for the driver to commit."""
        previous = previous_vectors(self.store, job.previous_paths) if job.previous_paths else None
        shard = ShardInfo(**job.shard)
        if job.parts > 1:
            part = embed_part(self.store, self.encoder, shard, job.part, job.parts, previous, self.report, job.kind)
            part.model_info = self.encoder.info()
            return part
        result = embed_shard(self.store, self.encoder, shard, job.out_path, previous, self.report, job.kind)
        result.model_info = self.encoder.info()  # skipped shards too: a retried job still says which model ran
        if not result.skipped:
            kill_point("embedding")  # crash tests: a shard committed, others still to embed
        return result


def embed_worker_factory(
    store_url: str,
    storage_options: dict[str, Any],
    model: str,
    corpus_key: str,
    batch_size: int,
    fingerprint: str | None = None,
    precision: Precision = "auto",
) -> Callable[[ActorContext], EmbedWorker]:
    """The factory an actor calls once, with its context, to build its :class:`EmbedWorker`
    (which checks that its copy of the model has the weights ``fingerprint``)."""
    return functools.partial(
        EmbedWorker, store_url, storage_options, model, corpus_key, batch_size, fingerprint, precision
    )
