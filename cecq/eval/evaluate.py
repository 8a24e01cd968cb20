"""Retrieval evaluation of base models, their float concatenation and compressed variants,
scored with mteb's retrieval evaluator on a local BEIR folder."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cecq.config import DecoderConfig, EvalConfig, ModelSpec
from cecq.decoder import Decoder, decode, train_decoder
from cecq.encoders import Encoder, TextKind, concatenate, fit_weights, is_fitted, load_encoder, nonempty_rows
from cecq.eval.baselines import (
    budget_quantizers,
    decoder_bytes,
    quantized_search,
    run_baselines,
)
from cecq.eval.beir import RetrievalTask, load_beir_corpus
from cecq.eval.metrics import RETRIEVE_K, ranking_scores
from cecq.quantization import CodeQuantizer, quantizer_class
from cecq.quantization.registry import DEFAULT_KINDS
from cecq.search import search_float

logger = logging.getLogger(__name__)


@dataclass
class EvalRecord:
    """One evaluated configuration."""

    task: str
    name: str
    scoring: str  # float | symmetric | asymmetric
    ndcg_at_10: float
    recall_at_100: float
    bytes_per_doc: int
    compression: float
    retention: float = float("nan")
    dims: int | None = None
    bits: int | None = None
    method: str | None = None  # what made the vectors: cecq, cecq[<strategy>], pca, mrl, pq-<model>, ...
    quantization: str | None = None  # the quantizer kind of compressed records
    budget_bytes: int | None = None  # the byte budget of records of a budget kind
    fixed_bytes: int = 0  # stored once for the whole index: decoder, quantizer file (codebooks, rotation), projection
    bytes_per_doc_amortized: float = float("nan")  # bytes_per_doc + fixed_bytes / documents, at this corpus size
    bytes_per_doc_amortized_1m: float = float("nan")  # the same at 1,000,000 documents
    # With a fit fraction below 1: nDCG@10 and retention on the documents that fitted the
    # compressor (in) and on those it never saw (out), each ranked among its own half.
    ndcg_at_10_in: float | None = None
    ndcg_at_10_out: float | None = None
    retention_in: float | None = None
    retention_out: float | None = None
    # The corpus everything was fitted on: the task's own (its name), or --fit-corpus's folder name.
    fitted_on: str | None = None


AMORTIZE_AT = 1_000_000


class _VariantDecoders:
    """The decoders of one training variant, trained on first use, each recorded in the
    fitted-artifacts ``sink`` as it is trained: the variant's own (:meth:`get` of its config),
    and the one a budget's codes read, as the pipeline plans it (cecq/targets.py): exactly
    the ``width`` outputs the codes read (212 at 53 B, not the first 212 of 768), trained at
    that size alone where the codes are order-free (:meth:`cecq.config.DecoderConfig.for_codes`)."""

    def __init__(
        self,
        config: DecoderConfig,
        docs: np.ndarray,
        queries: np.ndarray,
        fitting: np.ndarray,
        show_progress: bool,
        sink: list[bytes] | None,
        label: str,
    ) -> None:
        self.decoders: dict[DecoderConfig, Decoder] = {}
        self.docs, self.queries, self.fitting = docs, queries, fitting
        self.config, self.show_progress, self.sink, self.label = config, show_progress, sink, label

    def get(self, cfg: DecoderConfig) -> Decoder:
        """The decoder of ``cfg``, trained on this variant's fitting rows the first time."""
        if cfg not in self.decoders:
            decoder, stats = train_decoder(self.docs[self.fitting], cfg, show_progress=self.show_progress)
            if self.sink is not None:
                self.sink += [v.detach().cpu().numpy().tobytes() for v in decoder.state_dict().values()]
            sizes = ", ".join(map(str, cfg.effective_prefix_sizes()))
            logger.info(
                "%s of %d outputs (prefixes %s) trained in %.1fs (%d epochs)",
                self.label,
                cfg.out_dim,
                sizes,
                stats.seconds,
                stats.epochs,
            )
            self.decoders[cfg] = decoder
        return self.decoders[cfg]

    def __call__(self, width: int, kind: type[CodeQuantizer]) -> Decoder:
        """The decoder ``kind`` codes of ``width`` dims read."""
        return self.get(self.config.for_codes(width, kind.order_free))

    def prefix(self, width: int, kind: type[CodeQuantizer]) -> tuple[np.ndarray, np.ndarray]:
        """Documents and queries through the decoder ``kind`` codes of ``width`` dims read."""
        decoder = self(width, kind)
        return decode(decoder, self.docs, width), decode(decoder, self.queries, width)


def fit_mask(documents: int, fraction: float, seed: int) -> np.ndarray:
    """The seeded random ``fraction`` of ``documents`` that fits weights, decoder and quantizers."""
    mask = np.zeros(documents, dtype=bool)
    if fraction >= 1.0:
        mask[:] = True
    else:
        mask[np.random.default_rng(seed + 7).permutation(documents)[: max(2, round(fraction * documents))]] = True
    return mask


def subset_task(task: RetrievalTask, keep: np.ndarray, suffix: str) -> RetrievalTask:
    """``task`` with only the documents in the mask ``keep`` judged (queries left without a
    relevant document dropped): a ranking filtered to those documents scores as a search of them."""
    kept = {d for d, k in zip(task.doc_ids, keep) if k}
    qrels = {q: {d: r for d, r in rel.items() if d in kept} for q, rel in task.qrels.items()}
    qrels = {q: r for q, r in qrels.items() if any(v > 0 for v in r.values())}
    qids = [q for q in task.query_ids if q in qrels]
    texts = dict(zip(task.query_ids, task.query_texts))
    return replace(task, name=f"{task.name}{suffix}", query_ids=qids, query_texts=[texts[q] for q in qids], qrels=qrels)


def mteb_scores(
    task: RetrievalTask,
    scores: np.ndarray,
    indices: np.ndarray,
    keep: np.ndarray | None = None,
    judged: RetrievalTask | None = None,
) -> dict[str, float]:
    """nDCG@k and recall@k of a ranked result (rows of document indices, one per query of
    ``task``), through mteb's evaluator. With ``keep`` (a document mask) only those documents
    are ranked, judged by ``judged`` (the :func:`subset_task` of the same mask)."""
    judged = judged or task
    wanted = set(judged.query_ids)
    return ranking_scores(
        judged,
        {
            qid: {task.doc_ids[int(j)]: float(s) for s, j in zip(srow, irow) if keep is None or keep[int(j)]}
            for qid, srow, irow in zip(task.query_ids, scores, indices)
            if qid in wanted
        },
    )


def _digest(head: str, texts: Iterable[str]) -> str:
    """sha256 of ``head`` and each text, NUL-terminated, in hex: the cache keys' one hash."""
    h = hashlib.sha256(head.encode())
    for text in texts:
        h.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def embedding_key(task: RetrievalTask, model: str, seed: int | str) -> str:
    """A cache key for one model's embeddings of a task: changes with any text."""
    digest = _digest(f"{model}\0{seed}", (*task.doc_texts, "\0queries\0", *task.query_texts))
    return f"{task.name}-{digest[:16]}"


def corpus_key(task: RetrievalTask) -> str:
    """A short digest of a corpus's documents (for cache keys of what was fitted on it)."""
    return _digest("", task.doc_texts)[:12]


def texts_key(name: str, model: str, seed: int | str, texts: Sequence[str], side: str) -> str:
    """A cache key for one model's embeddings of one side's texts (``docs`` or ``queries``):
    changes with any text, so another split's queries reuse the corpus's documents."""
    digest = _digest(f"{model}\0{seed}\0{side}", texts)
    return f"{name}-{digest[:16]}.{side}"


def _cached(path: Path | None, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()``, read from / written to ``path`` + ``.npy`` if given (written whole, then renamed)."""
    if path is None:
        return compute()
    file = path.with_name(path.name + ".npy")
    if file.is_file():
        return np.load(file)
    array = compute()
    file.parent.mkdir(parents=True, exist_ok=True)
    # A name of this process's own: two runs sharing a cache write the same key at once
    # without mixing their bytes; a run killed mid-write leaves no half file under the key.
    partial = file.with_name(f"{file.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial.npy")
    try:
        np.save(partial, array)
        partial.replace(file)
    finally:
        partial.unlink(missing_ok=True)
    return array


def _key_name(spec: ModelSpec, enc: Encoder) -> str:
    """The model's part of a cache key: another number format, other vectors, so an explicit
    precision is part of it."""
    return enc.name if spec.precision == "auto" else f"{enc.name}@{spec.precision}"


class CachedEncoder(Encoder):
    """A pretrained encoder whose embeddings of any texts are read from / written to an eval
    cache folder, under the keys :func:`embed_task` gives the task's own texts: the
    pseudo-queries and answers a weighting rule embeds are cached too, so a re-run with the
    same seed embeds nothing (with mpnet the guard's ~600 texts took most of a cached run)."""

    def __init__(self, inner: Encoder, cache_dir: str | Path, prefix: str, key_name: str):
        if inner.fitted:
            raise TypeError(f"{inner.name} is fitted on a corpus: its vectors depend on what it was fitted on")
        self.inner, self.cache_dir, self.prefix, self.key_name = inner, Path(cache_dir), prefix, key_name
        self.name, self.dim = inner.name, inner.dim

    def _encode(self, texts: list[str], kind: TextKind, show_progress: bool) -> np.ndarray:
        side = "queries" if kind == "query" else "docs"
        path = self.cache_dir / texts_key(self.prefix, self.key_name, 0, texts, side)
        return _cached(path, lambda: self.inner.encode(texts, kind, show_progress))

    def to_device(self, device: str) -> None:
        self.inner.to_device(device)

    @property
    def truncated(self) -> int:  # type: ignore[override]
        return self.inner.truncated

    def info(self) -> dict[str, Any]:
        return self.inner.info()


def embed_task(
    task: RetrievalTask,
    config: EvalConfig,
    show_progress: bool = False,
    cache_dir: str | Path | None = None,
    fit: np.ndarray | None = None,
    fit_corpus: RetrievalTask | None = None,
) -> tuple[list[Encoder], list[np.ndarray], list[np.ndarray]]:
    """Every base model's document and query embeddings of ``task`` (and the encoders); a
    corpus-fitted model is fitted on the documents of the mask ``fit`` (default: all), or on
    ``fit_corpus``'s documents when given: their embeddings then follow the task's documents
    in each returned document array (rows ``len(task.doc_ids)`` on).
    With ``cache_dir``, embeddings are read from / written to ``.npy`` files there, keyed
    by model, seed, what a fitted model was fitted on and the texts, so repeated benchmarks embed once;
    the pretrained encoders returned are then :class:`CachedEncoder` s, which cache whatever else
    they embed (a weighting rule's pseudo-queries)."""
    if fit_corpus is not None:
        fit_texts = fit_corpus.doc_texts
    else:
        fit_texts = task.doc_texts if fit is None else [t for t, k in zip(task.doc_texts, fit) if k]
    encoders = [
        load_encoder(s, fit_texts=fit_texts if is_fitted(s) else None, seed=config.decoder.seed) for s in config.models
    ]
    doc_parts, query_parts = [], []
    for spec, enc in zip(config.models, encoders):
        # Only a fitted encoder's vectors depend on the seed: a pretrained model's cache serves every seed.
        seed: int | str = config.decoder.seed if is_fitted(spec) else 0
        if is_fitted(spec) and config.fit_fraction < 1.0:
            seed = f"{seed}-fit{config.fit_fraction}"
        if is_fitted(spec) and fit_corpus is not None:
            seed = f"{seed}-fitcorpus-{fit_corpus.name}-{corpus_key(fit_corpus)}"

        name = _key_name(spec, enc)

        def cache_file(t: RetrievalTask, side: str, name: str = name, seed: int | str = seed) -> Path | None:
            texts = t.doc_texts if side == "docs" else t.query_texts
            return Path(cache_dir) / texts_key(t.name, name, seed, texts, side) if cache_dir else None

        def embed(texts: Sequence[str], kind: str, what: str, enc: Encoder = enc) -> Callable[[], np.ndarray]:
            def run() -> np.ndarray:
                logger.info("%s: embedding %d %s", enc.name, len(texts), what)
                return enc.encode(texts, kind, show_progress)

            return run

        d = _cached(cache_file(task, "docs"), embed(task.doc_texts, "document", "documents"))
        q = _cached(cache_file(task, "queries"), embed(task.query_texts, "query", "queries"))
        if fit_corpus is not None:
            fit_docs = embed(fit_corpus.doc_texts, "document", "documents to fit on")
            d = np.concatenate([d, _cached(cache_file(fit_corpus, "docs"), fit_docs)])
        doc_parts.append(d)
        query_parts.append(q)
    if cache_dir:
        encoders = [
            e if e.fitted else CachedEncoder(e, cache_dir, task.name, _key_name(s, e))
            for s, e in zip(config.models, encoders)
        ]
    return encoders, doc_parts, query_parts


def evaluate_task(
    task: RetrievalTask,
    config: EvalConfig = EvalConfig(),
    show_progress: bool = False,
    cache_dir: str | Path | None = None,
    fitted: list[bytes] | None = None,
    coded: list[bytes] | None = None,
) -> list[EvalRecord]:
    """Embed the task with every base model, train the compressor on its corpus (or on
    ``config.fit_corpus``'s documents), and score every configuration (with
    ``config.strategies``, one more decoder per strategy; with ``config.baselines``, the
    baselines of :mod:`cecq.baselines` too, at the same bytes per document). Nothing is fitted
    on queries or judgements: ``fitted``, when given, receives the bytes of everything fitted
    (weights, each decoder, each quantizer file, baselines' included), and ``coded`` the
    bytes of every set of codes of the task's documents."""
    started = time.perf_counter()
    documents = len(task.doc_ids)
    fit_corpus = load_beir_corpus(config.fit_corpus) if config.fit_corpus is not None else None
    if fit_corpus is None:
        fit = fit_mask(documents, config.fit_fraction, config.decoder.seed)
        fit_texts = [t for t, k in zip(task.doc_texts, fit) if k]
    else:
        # The fit corpus's documents follow the task's in every document array: they fit
        # everything, and only the task's first `documents` rows are coded and searched.
        fit = np.concatenate([np.zeros(documents, bool), np.ones(len(fit_corpus.doc_ids), bool)])
        fit_texts = list(fit_corpus.doc_texts)
        logger.info("%s: fitting on the %d documents of %s", task.name, len(fit_texts), fit_corpus.name)
        for spec in (s for s in config.models if is_fitted(s)):
            # Measured (docs/quality-round2.md, section 15): fitted on SciFact, lexical scores 0.139
            # on CISI against 0.335 fitted on CISI, the weights fitted on SciFact keep it, and the
            # default 53 B index falls below sentence-transformers' binary codes of MiniLM.
            logger.warning(
                "%s is fitted on the documents of %s: words of %s it never saw there add nothing to its "
                "vectors, and weights fitted there cannot tell; score pretrained models only, or fit on the "
                "task's own corpus",
                spec.name,
                fit_corpus.name,
                task.name,
            )
    fitted_on = task.name if fit_corpus is None else fit_corpus.name
    encoders, doc_parts, query_parts = embed_task(task, config, show_progress, cache_dir, fit, fit_corpus)
    halves = (
        {"in": (fit, subset_task(task, fit, "[in]")), "out": (~fit, subset_task(task, ~fit, "[out]"))}
        if config.fit_fraction < 1.0
        else {}
    )

    records: list[EvalRecord] = []
    concat_dim = sum(p.shape[1] for p in doc_parts)
    float_bytes = 4 * concat_dim

    def record(
        name: str,
        scoring: str,
        scores: np.ndarray,
        indices: np.ndarray,
        nbytes: int,
        dims: int | None = None,
        bits: int | None = None,
        method: str | None = None,
        quantization: str | None = None,
        budget_bytes: int | None = None,
        fixed_bytes: int = 0,
    ) -> None:
        m = mteb_scores(task, scores, indices)
        part = {
            f"ndcg_at_10_{half}": mteb_scores(task, scores, indices, keep, judged)["ndcg_at_10"]
            for half, (keep, judged) in halves.items()
        }
        records.append(
            EvalRecord(
                task.name,
                name,
                scoring,
                m["ndcg_at_10"],
                m["recall_at_100"],
                nbytes,
                float_bytes / nbytes,
                dims=dims,
                bits=bits,
                method=method,
                quantization=quantization,
                budget_bytes=budget_bytes,
                fixed_bytes=fixed_bytes,
                bytes_per_doc_amortized=nbytes + fixed_bytes / documents,
                bytes_per_doc_amortized_1m=nbytes + fixed_bytes / AMORTIZE_AT,
                fitted_on=fitted_on,
                **part,
            )
        )
        logger.info("%s %-28s %-10s nDCG@10 %.4f", task.name, name, scoring, m["ndcg_at_10"])

    for enc, d, q in zip(encoders, doc_parts, query_parts):
        record(
            f"model:{enc.name}", "float", *search_float(q, d[:documents], RETRIEVE_K), 4 * d.shape[1], dims=d.shape[1]
        )
    weights, weight_fit = (
        fit_weights(config.model_weights, encoders, fit_texts, [p[fit] for p in doc_parts], config.decoder.seed)
        if len(encoders) > 1
        else (None, {"rule": "equal"})
    )
    if weights is not None:
        logger.info("%s: model weights %s", task.name, dict(zip((e.name for e in encoders), weights)))
    if fitted is not None:
        fitted.append(json.dumps(weight_fit, sort_keys=True).encode())
    docs = concatenate(doc_parts, weights)
    queries = concatenate(query_parts, weights)
    if len(encoders) > 1:
        # the other rules' concatenations, for comparison (not the reference)
        others = () if weights is None else ("equal",) if config.model_weights == "spread" else ("equal", "spread")
        for rule in others:
            w, _ = fit_weights(rule, encoders, fit_texts, [p[fit] for p in doc_parts], config.decoder.seed)
            record(
                f"concat[{rule}]",
                "float",
                *search_float(concatenate(query_parts, w), concatenate(doc_parts, w)[:documents], RETRIEVE_K),
                float_bytes,
                dims=concat_dim,
            )
        record("concat", "float", *search_float(queries, docs[:documents], RETRIEVE_K), float_bytes, dims=concat_dim)

    pairs = config.configurations()
    dcfg = config.decoder
    if pairs and dcfg.out_dim < max(d for d, _ in pairs):
        dcfg = replace(dcfg, out_dim=max(d for d, _ in pairs))
    empty = ~nonempty_rows(docs)
    fitting = fit & ~empty
    scalar = quantizer_class(DEFAULT_KINDS["bits"])  # the fixed-bits kind the (dims, bits) pairs use
    variants = [("", dcfg)] + [(f"[{s}]", dcfg.with_strategy(s)) for s in config.strategies]
    for tag, cfg in variants:
        decoder_for = _VariantDecoders(cfg, docs, queries, fitting, show_progress, fitted, f"{task.name}: decoder{tag}")
        decoder = decoder_for.get(cfg)
        for dim in sorted({d for d, _ in pairs}):
            d_docs, d_queries = decode(decoder, docs, dim), decode(decoder, queries, dim)
            record(
                f"decoder{tag}-{dim}",
                "float",
                *search_float(d_queries, d_docs[:documents], RETRIEVE_K),
                4 * dim,
                dims=dim,
            )
            for bits in sorted(b for d, b in pairs if d == dim):
                for scoring, s, i, nbytes, qbytes in quantized_search(
                    d_docs,
                    d_queries,
                    bits,
                    RETRIEVE_K,
                    config.scorings,
                    config.rescore,
                    empty,
                    fit=fit,
                    sink=fitted,
                    coded=documents,
                    codes_sink=coded,
                ):
                    record(
                        f"cecq{tag}-{scalar.label(dim, bits, None)}",
                        scoring,
                        s,
                        i,
                        nbytes,
                        dims=dim,
                        bits=bits,
                        method=f"cecq{tag}",
                        quantization=scalar.kind,
                        fixed_bytes=decoder_bytes(decoder, dim) + qbytes,
                    )
        if config.budgets:
            # Each budget kind codes the prefix it reads (product codes: 4 dims a byte; fitted
            # bits: the whole output, the budget picking dims and bits), normalised on its own,
            # from the decoder the pipeline would train for it (_VariantDecoders).
            for budget in sorted(config.budgets):
                for quantizer, b_docs, b_queries in budget_quantizers(
                    decoder_for.prefix, decoder.out_dim, fit, budget, config.decoder.seed
                ):
                    for scoring, s, i, nbytes, qbytes in quantized_search(
                        b_docs,
                        b_queries,
                        None,
                        RETRIEVE_K,
                        config.scorings,
                        config.rescore,
                        empty,
                        quantizer=quantizer,
                        sink=fitted,
                        coded=documents,
                        codes_sink=coded,
                    ):
                        record(
                            f"cecq{tag}-{quantizer.label(quantizer.dim, None, budget)}",
                            scoring,
                            s,
                            i,
                            nbytes,
                            dims=quantizer.kept_dims,
                            method=f"cecq{tag}",
                            quantization=quantizer.kind,
                            budget_bytes=budget,
                            fixed_bytes=decoder_bytes(decoder_for(quantizer.dim, type(quantizer)), quantizer.dim)
                            + qbytes,
                        )

    if config.baselines:
        for b in run_baselines(
            encoders,
            doc_parts,
            query_parts,
            docs,
            queries,
            config,
            dcfg,
            RETRIEVE_K,
            show_progress,
            fit,
            coded=documents,
            sink=fitted,
        ):
            record(
                b.name,
                b.scoring,
                b.scores,
                b.indices,
                b.bytes_per_doc,
                dims=b.dims,
                bits=b.bits,
                method=b.method,
                quantization=b.quantization,
                budget_bytes=b.budget_bytes,
                fixed_bytes=b.fixed_bytes,
            )

    ref_name = "concat" if len(encoders) > 1 else f"model:{encoders[0].name}"
    ref = next((r for r in records if r.name == ref_name), None)
    for r in records:
        r.retention = r.ndcg_at_10 / ref.ndcg_at_10 if ref and ref.ndcg_at_10 else float("nan")
        if ref is not None and halves:
            r.retention_in = r.ndcg_at_10_in / ref.ndcg_at_10_in if ref.ndcg_at_10_in else float("nan")
            r.retention_out = r.ndcg_at_10_out / ref.ndcg_at_10_out if ref.ndcg_at_10_out else float("nan")
    logger.info("%s: weights %s (fitted on %s)", task.name, json.dumps(weight_fit), fitted_on)
    logger.info("%s evaluated in %.1fs", task.name, time.perf_counter() - started)
    return records


def format_table(records: Sequence[EvalRecord]) -> str:
    """A Markdown table of records: codes-only compression beside the amortized one (fixed
    bytes spread over this corpus, and over 1M documents), and, when fitted on part of the
    corpus, retention on the fitted and on the unseen documents."""
    lines = [
        "| task | configuration | scoring | nDCG@10 | retention | retention in / out of sample | bytes/doc "
        "| fixed bytes | compression (codes) | amortized (here / 1M docs) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        halves = f"{r.retention_in:.1%} / {r.retention_out:.1%}" if r.retention_out is not None else "n/a"
        float_bytes = r.compression * r.bytes_per_doc
        lines.append(
            f"| {r.task} | {r.name} | {r.scoring} | {r.ndcg_at_10:.4f} | {r.retention:.1%} | {halves} "
            f"| {r.bytes_per_doc} | {r.fixed_bytes} | {r.compression:.1f}x "
            f"| {float_bytes / r.bytes_per_doc_amortized:.1f}x / {float_bytes / r.bytes_per_doc_amortized_1m:.1f}x |"
        )
    return "\n".join(lines)


def write_json(records: Sequence[EvalRecord], path: str | Path) -> None:
    Path(path).write_text(json.dumps([asdict(r) for r in records], indent=2))
