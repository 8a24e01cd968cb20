"""Per-model concatenation weights, fitted on the corpus alone (never queries or judgements).

Three rules:

- ``spread``: each model's squared weight is proportional to the spread of its cosine
  similarities between documents (the first rule; it cannot tell a weak view from a strong
  one, and a corpus mixing titles with abstracts widens the lexical view's spread: on
  SciFact with half its documents cut to the title, its weight rose from 0.74 to 0.86).
- ``guarded`` (the default): the spread weights of the models that pass a self-retrieval
  guard. Each model alone finds the pseudo-queries' answers (below); a model whose nDCG@10
  is below ``GUARD_RATIO`` of the best model's is dropped, so a view that retrieves far
  worse than its peers no longer drags the concatenation below them.
- ``self`` (self-retrieval): pseudo-queries are cut from the documents themselves (one sentence,
  removed from its document; the rest of the document is the answer, the other documents are
  distractors). Every candidate weighting, each model alone included, is scored by the
  nDCG@10 with which it finds the answers. The rule is conservative: of the weightings within
  ``tolerance`` of the best score it keeps the sparsest (the smallest sum of squared weights,
  the largest weight being 1), so a model is dropped or down-weighted unless it clearly helps.
  A corpus-fitted model (lexical) is refitted without the pseudo-queries' sentences, or it
  would have learnt which words go with which document; exact shared words still flatter it,
  which is one more reason to prefer the sparser weighting (and why ``guarded`` only uses the
  pseudo-queries to drop a view, not to weigh one).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cecq.config import ModelSpec
from cecq.encoders.base import Encoder, l2_normalize, nonempty_rows

SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
WORD = re.compile(r"\w\w+")
WEIGHT_GRID = (0.0, 0.35, 0.5, 0.71, 1.0)  # per model; squared shares 0, 1/8, 1/4, 1/2, 1
SELF_QUERIES = 300  # pseudo-queries drawn from the corpus
SELF_POOL = 10_000  # documents searched (answers included)
SELF_TOLERANCE = 0.02  # pseudo nDCG@10 within which the sparsest weighting is preferred (chosen on SciFact train)
MIN_PSEUDO_QUERIES = 20  # with fewer (a corpus of titles), the spread rule decides
MIN_QUERY_WORDS = 4
# A view whose pseudo nDCG@10 alone is below this share of the best view's is dropped by the
# guarded rule. Set below every ratio the shared corpora gave the lexical view against MiniLM
# (the lowest, SciFact's, retrieves worse alone but still helps the concatenation): see
# docs/quality-round2.md, section 5.
GUARD_RATIO = 0.75


def spread_weights(parts: Sequence[np.ndarray], sample_rows: int = 2000, seed: int = 0) -> list[float]:
    """Per-model concatenation weights fitted on corpus embeddings, without judgements: each
    model's squared weight is proportional to the spread (standard deviation) of its cosine
    similarities between documents, the strongest-spread model at weight 1. A model whose
    similarities barely vary (e.g. sparse lexical vectors, mostly near 0) says less about
    which documents are close, so its share of the concatenated similarity is reduced."""
    idx = np.flatnonzero(np.all([nonempty_rows(p) for p in parts], axis=0))
    if len(idx) < 3:
        return [1.0] * len(parts)
    idx = np.random.default_rng(seed).choice(idx, min(sample_rows, len(idx)), replace=False)
    off = ~np.eye(len(idx), dtype=bool)
    spreads = []
    for p in parts:
        x = l2_normalize(p[idx])
        spreads.append(float((x @ x.T)[off].std()))
    top = max(spreads)
    return [float(np.sqrt(s / top)) if top > 0 else 1.0 for s in spreads]


@dataclass(frozen=True)
class PseudoQueries:
    """Pseudo-queries cut from documents: ``rows[i]`` is the document that ``queries[i]`` was
    cut from, and ``answers[i]`` is what is left of it."""

    rows: np.ndarray
    queries: list[str]
    answers: list[str]


@dataclass(frozen=True)
class Encoded:
    """A pretrained model's embeddings of the pseudo-queries (``queries``) and of their
    answers (``answers``, one row each), computed elsewhere: the pipeline's embedding pool
    embeds them beside the corpus, so the process that fits the weights loads no model."""

    queries: np.ndarray
    answers: np.ndarray


def _words(text: str) -> int:
    return len(text.split())


def pseudo_queries(
    texts: Sequence[str], n: int = SELF_QUERIES, seed: int = 0, overlap_drop: float = 0.0
) -> PseudoQueries:
    """At most ``n`` pseudo-queries from a seeded sample of ``texts``: one sentence of at least
    ``MIN_QUERY_WORDS`` words, drawn at random, is the query; every copy of it is removed
    from the document (a title repeated in the text goes too) and the rest is the answer.
    Documents of a single sentence (e.g. a title only) give none. ``overlap_drop``: each
    query word that also occurs in the answer is dropped with this probability (a sentence
    of its own document shares more words with it than a real query does with its answer)."""
    rng, drop_rng = np.random.default_rng(seed), np.random.default_rng(seed + 2)
    rows, queries, answers = [], [], []
    for i in rng.permutation(len(texts)):
        sentences = pieces(texts[i])
        choices = [s for s in dict.fromkeys(sentences) if _words(s) >= MIN_QUERY_WORDS]
        if len(set(sentences)) < 2 or not choices:
            continue
        query = choices[int(rng.integers(len(choices)))]
        rest = " ".join(s for s in sentences if s != query)
        if _words(rest) < MIN_QUERY_WORDS:
            continue
        if overlap_drop > 0:
            seen = set(WORD.findall(rest.lower()))
            kept = [
                w
                for w in query.split()
                if not (set(WORD.findall(w.lower())) & seen and drop_rng.random() < overlap_drop)
            ]
            if len(kept) < 2:
                continue
            query = " ".join(kept)
        rows.append(int(i))
        queries.append(query)
        answers.append(rest)
        if len(rows) == n:
            break
    return PseudoQueries(np.asarray(rows, dtype=np.int64), queries, answers)


def pieces(text: str) -> list[str]:
    """A text's sentences; a text of one long sentence (no punctuation) is cut into three
    runs of words instead."""
    sentences = [s.strip() for s in SENTENCE_END.split(text) if s.strip()]
    words = text.split()
    if len(set(sentences)) < 2 and len(words) >= 3 * MIN_QUERY_WORDS:
        n = -(-len(words) // 3)
        sentences = [" ".join(words[j : j + n]) for j in range(0, len(words), n)]
    return sentences


def candidate_weightings(models: int, grid: Sequence[float] = WEIGHT_GRID) -> list[tuple[float, ...]]:
    """Every weighting of ``models`` models from ``grid`` with the largest weight 1 (so no
    two candidates are scalings of each other): each model alone, equal, and the mixtures."""
    if models == 1:
        return [(1.0,)]
    out = [w for w in itertools.product(grid, repeat=models) if max(w) == 1.0]
    return sorted(set(out), key=lambda w: (-sum(x > 0 for x in w), [-x for x in w]))


def ndcg_of_answers(scores: np.ndarray, answers: np.ndarray, k: int = 10) -> np.ndarray:
    """Per query nDCG@k with one relevant document (``answers[i]`` is query i's column):
    1 / log2(1 + rank) within the top k, else 0. Ties count against the answer."""
    own = scores[np.arange(len(answers)), answers]
    rank = 1 + (scores > own[:, None]).sum(axis=1) + ((scores == own[:, None]).sum(axis=1) - 1)
    return np.where(rank <= k, 1.0 / np.log2(1.0 + rank), 0.0)


def choose_weighting(
    results: Sequence[tuple[Sequence[float], float]], tolerance: float = SELF_TOLERANCE
) -> tuple[Sequence[float], float]:
    """Of ``(weights, score)`` pairs, the sparsest weighting (smallest sum of squared weights)
    scoring within ``tolerance`` of the best; ties: the higher score, then the earlier pair."""
    best = max(score for _, score in results)
    return min(
        (r for r in results if r[1] >= best - tolerance), key=lambda r: (round(sum(x * x for x in r[0]), 6), -r[1])
    )


@dataclass
class WeightFit:
    """The outcome of :func:`self_retrieval_weights` or :func:`guarded_weights`: the weights
    and what they were chosen on."""

    weights: list[float]
    queries: int
    candidates: list[dict] = field(default_factory=list)  # {"weights": [...], "ndcg_at_10": x}
    rule: str = "self"
    spread: list[float] | None = None  # guarded: the spread weights before the guard

    def to_dict(self) -> dict:
        out = {"rule": self.rule, "weights": self.weights, "queries": self.queries, "candidates": self.candidates}
        return out if self.spread is None else {**out, "spread": self.spread}


def pseudo_scores(
    encoders: Sequence[Encoder | Encoded],
    texts: Sequence[str],
    doc_parts: Sequence[np.ndarray],
    candidates: Sequence[Sequence[float]],
    seed: int = 0,
    n_queries: int = SELF_QUERIES,
    pool: int = SELF_POOL,
    overlap_drop: float = 0.0,
) -> tuple[int, list[tuple[Sequence[float], float]]]:
    """``(pseudo-queries cut, [(weights, pseudo nDCG@10)] per candidate)``: how well each
    weighted concatenation finds the answers of pseudo-queries cut from ``texts`` among the
    other documents. ``doc_parts[m]`` holds model m's embeddings of ``texts``; where
    ``encoders[m]`` is :class:`Encoded`, its vectors of the pseudo-queries and answers are
    used as they are. With fewer than ``MIN_PSEUDO_QUERIES`` pseudo-queries (e.g. a corpus of
    titles) nothing is scored."""
    pq = pseudo_queries(texts, n_queries, seed, overlap_drop)
    if len(pq.rows) < MIN_PSEUDO_QUERIES:
        return len(pq.rows), []
    rng = np.random.default_rng(seed + 1)
    others = np.setdiff1d(np.arange(len(texts)), pq.rows)
    others = rng.choice(others, min(len(others), max(0, pool - len(pq.rows))), replace=False)
    # A corpus-fitted model is refitted on the corpus without the pseudo-queries' sentences:
    # fitted on them, it would have learnt which words go with which document.
    held_out = list(texts)
    for row, answer in zip(pq.rows, pq.answers):
        held_out[row] = answer
    q_parts, pool_parts = [], []
    for e, d in zip(encoders, doc_parts):
        if isinstance(e, Encoded):
            if not len(e.queries) == len(e.answers) == len(pq.rows):
                got = f"{len(e.queries)} pseudo-query and {len(e.answers)} answer vectors"
                raise ValueError(f"{got} for {len(pq.rows)} pseudo-queries")
            q_parts.append(np.asarray(e.queries, dtype=np.float32))
            pool_parts.append(np.concatenate([e.answers, d[others]]).astype(np.float32, copy=False))
            continue
        if e.fitted:
            e = type(e).fit_corpus(held_out, ModelSpec(e.name, dim=e.dim), seed=seed)
            rest = e.encode([texts[i] for i in others], "document")
        else:
            rest = np.asarray(d[others], dtype=np.float32)
        q_parts.append(e.encode(pq.queries, "query"))
        pool_parts.append(np.concatenate([e.encode(pq.answers, "document"), rest]))
    sims = [q @ p.T for q, p in zip(q_parts, pool_parts)]
    answers = np.arange(len(pq.rows))
    results = []
    for w in candidates:
        num = sum(np.float32(x) ** 2 * s for x, s in zip(w, sims))
        dn = np.sqrt(sum(np.float32(x) ** 2 * nonempty_rows(p) for x, p in zip(w, pool_parts)))
        results.append((w, float(ndcg_of_answers(num / np.maximum(dn, 1e-12)[None, :], answers).mean())))
    return len(pq.rows), results


def _candidates(results: Sequence[tuple[Sequence[float], float]]) -> list[dict]:
    return [{"weights": [float(x) for x in w], "ndcg_at_10": round(s, 6)} for w, s in results]


def self_retrieval_weights(
    encoders: Sequence[Encoder],
    texts: Sequence[str],
    doc_parts: Sequence[np.ndarray],
    seed: int = 0,
    n_queries: int = SELF_QUERIES,
    pool: int = SELF_POOL,
    tolerance: float = SELF_TOLERANCE,
    grid: Sequence[float] = WEIGHT_GRID,
    overlap_drop: float = 0.0,
) -> WeightFit:
    """Per-model weights chosen by self-retrieval on the corpus (see the module docstring).
    ``doc_parts[m]`` holds model m's embeddings of ``texts``. With fewer than
    ``MIN_PSEUDO_QUERIES`` pseudo-queries (e.g. a corpus of titles) the spread rule decides."""
    m = len(encoders)
    if m == 1:
        return WeightFit([1.0], 0)
    queries, results = pseudo_scores(
        encoders, texts, doc_parts, candidate_weightings(m, grid), seed, n_queries, pool, overlap_drop
    )
    if not results:
        return WeightFit(spread_weights(doc_parts, seed=seed), queries)
    chosen = choose_weighting(results, tolerance)
    return WeightFit([float(x) for x in chosen[0]], queries, _candidates(results))


def guarded_weights(
    encoders: Sequence[Encoder | Encoded],
    texts: Sequence[str],
    doc_parts: Sequence[np.ndarray],
    seed: int = 0,
    ratio: float = GUARD_RATIO,
    n_queries: int = SELF_QUERIES,
    spread: Sequence[float] | None = None,
) -> WeightFit:
    """The ``guarded`` rule: spread weights (:func:`spread_weights`; ``spread`` if given, e.g.
    fitted on a larger sample) of the models whose self-retrieval nDCG@10 alone is at least
    ``ratio`` of the best model's; the others get 0 (an :class:`Encoded` entry stands for a
    pretrained model whose pseudo-query vectors were computed elsewhere). With one model, or too few
    pseudo-queries to judge, the spread weights stand."""
    m = len(encoders)
    spread = list(spread) if spread is not None else spread_weights(doc_parts, seed=seed)
    if m == 1:
        return WeightFit(spread, 0, rule="guarded")
    singles = [tuple(float(i == j) for i in range(m)) for j in range(m)]
    queries, results = pseudo_scores(encoders, texts, doc_parts, singles, seed, n_queries)
    if not results:
        return WeightFit(spread, queries, rule="guarded")
    best = max(score for _, score in results)
    kept = [score >= ratio * best for _, score in results]
    top = max(w for w, k in zip(spread, kept) if k)
    weights = [w / top if k else 0.0 for w, k in zip(spread, kept)]
    return WeightFit(weights, queries, _candidates(results), rule="guarded", spread=spread)


def fit_weights(
    how: str, encoders: Sequence[Encoder], texts: Sequence[str], doc_parts: Sequence[np.ndarray], seed: int = 0
) -> tuple[list[float] | None, dict]:
    """Per-model weights by rule ``how`` (``guarded``, ``self``, ``spread`` or ``equal``) from
    corpus documents only: ``(weights or None for equal, a description of the fit)``."""
    if how in ("self", "guarded"):
        rule = self_retrieval_weights if how == "self" else guarded_weights
        fit = rule(encoders, texts, doc_parts, seed=seed)
        return fit.weights, fit.to_dict()
    if how == "spread":
        weights = spread_weights(doc_parts, seed=seed)
        return weights, {"rule": "spread", "weights": weights}
    return None, {"rule": "equal"}
