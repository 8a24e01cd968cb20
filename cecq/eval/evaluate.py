"""Retrieval evaluation of base models, their float concatenation and compressed variants,
scored with mteb's retrieval evaluator on a local BEIR folder."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from cecq.config import EvalConfig
from cecq.decoder import decode, train_decoder
from cecq.encoders import Encoder, concatenate, is_fitted, load_encoder, nonempty_rows, spread_weights
from cecq.eval.baselines import ALLOCATION_ROWS, budget_quantizers, quantized_search, run_baselines
from cecq.eval.beir import RetrievalTask
from cecq.eval.metrics import RETRIEVE_K, ranking_scores
from cecq.quantization import quantizer_class
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


def mteb_scores(task: RetrievalTask, scores: np.ndarray, indices: np.ndarray) -> dict[str, float]:
    """nDCG@k and recall@k of a ranked result (rows of document indices), through mteb's evaluator."""
    return ranking_scores(
        task,
        {
            qid: {task.doc_ids[int(j)]: float(s) for s, j in zip(srow, irow)}
            for qid, srow, irow in zip(task.query_ids, scores, indices)
        },
    )


def embedding_key(task: RetrievalTask, model: str, seed: int) -> str:
    """A cache key for one model's embeddings of a task: changes with any text."""
    h = hashlib.sha256(f"{model}\0{seed}".encode())
    for text in (*task.doc_texts, "\0queries\0", *task.query_texts):
        h.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return f"{task.name}-{h.hexdigest()[:16]}"


def embed_task(
    task: RetrievalTask, config: EvalConfig, show_progress: bool = False, cache_dir: str | Path | None = None
) -> tuple[list[Encoder], list[np.ndarray], list[np.ndarray]]:
    """Every base model's document and query embeddings of ``task`` (and the encoders).
    With ``cache_dir``, embeddings are read from / written to ``.npy`` files there, keyed
    by model, seed and the texts, so repeated benchmarks embed once."""
    encoders = [
        load_encoder(s, fit_texts=task.doc_texts if is_fitted(s) else None, seed=config.decoder.seed)
        for s in config.models
    ]
    doc_parts, query_parts = [], []
    for spec, enc in zip(config.models, encoders):
        # Only a fitted encoder's vectors depend on the seed: a pretrained model's cache serves every seed.
        seed = config.decoder.seed if is_fitted(spec) else 0
        cached = Path(cache_dir) / embedding_key(task, enc.name, seed) if cache_dir else None
        if (
            cached is not None
            and cached.with_suffix(".docs.npy").is_file()
            and cached.with_suffix(".queries.npy").is_file()
        ):
            doc_parts.append(np.load(cached.with_suffix(".docs.npy")))
            query_parts.append(np.load(cached.with_suffix(".queries.npy")))
            continue
        logger.info("%s: embedding %d documents and %d queries", enc.name, len(task.doc_texts), len(task.query_texts))
        doc_parts.append(enc.encode(task.doc_texts, "document", show_progress))
        query_parts.append(enc.encode(task.query_texts, "query", show_progress))
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached.with_suffix(".docs.npy"), doc_parts[-1])
            np.save(cached.with_suffix(".queries.npy"), query_parts[-1])
    return encoders, doc_parts, query_parts


def evaluate_task(
    task: RetrievalTask,
    config: EvalConfig = EvalConfig(),
    show_progress: bool = False,
    cache_dir: str | Path | None = None,
) -> list[EvalRecord]:
    """Embed the task with every base model, train the compressor on its corpus, and score
    every configuration (with ``config.strategies``, one more decoder per strategy; with
    ``config.baselines``, the baselines of :mod:`cecq.baselines` too, at the same bytes per
    document). Nothing is fitted on queries or judgements."""
    started = time.perf_counter()
    encoders, doc_parts, query_parts = embed_task(task, config, show_progress, cache_dir)

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
    ) -> None:
        m = mteb_scores(task, scores, indices)
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
            )
        )
        logger.info("%s %-28s %-10s nDCG@10 %.4f", task.name, name, scoring, m["ndcg_at_10"])

    for enc, d, q in zip(encoders, doc_parts, query_parts):
        record(f"model:{enc.name}", "float", *search_float(q, d, RETRIEVE_K), 4 * d.shape[1], dims=d.shape[1])
    weights = spread_weights(doc_parts, seed=config.decoder.seed) if config.model_weights == "spread" else None
    if weights is not None:
        logger.info("%s: model weights %s", task.name, dict(zip((e.name for e in encoders), weights)))
    docs = concatenate(doc_parts, weights)
    queries = concatenate(query_parts, weights)
    if len(encoders) > 1:
        if weights is not None:  # the unweighted concatenation, for comparison (not the reference)
            record(
                "concat[equal]",
                "float",
                *search_float(concatenate(query_parts), concatenate(doc_parts), RETRIEVE_K),
                float_bytes,
                dims=concat_dim,
            )
        record("concat", "float", *search_float(queries, docs, RETRIEVE_K), float_bytes, dims=concat_dim)

    pairs = config.configurations()
    dcfg = config.decoder
    if pairs and dcfg.out_dim < max(d for d, _ in pairs):
        dcfg = replace(dcfg, out_dim=max(d for d, _ in pairs))
    empty = ~nonempty_rows(docs)
    scalar = quantizer_class(DEFAULT_KINDS["bits"])  # the fixed-bits kind the (dims, bits) pairs use
    variants = [("", dcfg)] + [(f"[{s}]", dcfg.with_strategy(s)) for s in config.strategies]
    for tag, cfg in variants:
        decoder, stats = train_decoder(docs[~empty], cfg, show_progress=show_progress)
        logger.info("%s: decoder%s trained in %.1fs (%d epochs)", task.name, tag, stats.seconds, stats.epochs)
        for dim in sorted({d for d, _ in pairs}):
            d_docs, d_queries = decode(decoder, docs, dim), decode(decoder, queries, dim)
            record(f"decoder{tag}-{dim}", "float", *search_float(d_queries, d_docs, RETRIEVE_K), 4 * dim, dims=dim)
            for bits in sorted(b for d, b in pairs if d == dim):
                for scoring, s, i, nbytes in quantized_search(
                    d_docs, d_queries, bits, RETRIEVE_K, config.scorings, config.rescore, empty
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
                    )
        if config.budgets:
            # Fitted bits per dimension over the whole output: the budget picks dims and bits.
            f_docs, f_queries = decode(decoder, docs), decode(decoder, queries)
            for budget in sorted(config.budgets):
                for quantizer in budget_quantizers(f_docs[~empty][:ALLOCATION_ROWS], budget, config.decoder.seed):
                    for scoring, s, i, nbytes in quantized_search(
                        f_docs, f_queries, None, RETRIEVE_K, config.scorings, config.rescore, empty, quantizer=quantizer
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
                        )

    if config.baselines:
        for b in run_baselines(
            encoders, doc_parts, query_parts, docs, queries, config, dcfg, RETRIEVE_K, show_progress
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
            )

    reference = next(
        (r.ndcg_at_10 for r in records if r.name == ("concat" if len(encoders) > 1 else f"model:{encoders[0].name}")),
        None,
    )
    for r in records:
        r.retention = r.ndcg_at_10 / reference if reference else float("nan")
    logger.info("%s evaluated in %.1fs", task.name, time.perf_counter() - started)
    return records


def format_table(records: Sequence[EvalRecord]) -> str:
    """A Markdown table of records."""
    lines = [
        "| task | configuration | scoring | nDCG@10 | retention | bytes/doc | compression |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r.task} | {r.name} | {r.scoring} | {r.ndcg_at_10:.4f} | {r.retention:.1%} | {r.bytes_per_doc} "
            f"| {r.compression:.1f}x |"
        )
    return "\n".join(lines)


def write_json(records: Sequence[EvalRecord], path: str | Path) -> None:
    Path(path).write_text(json.dumps([asdict(r) for r in records], indent=2))
