"""Label-free model weights: pseudo-queries cut from the corpus and self-retrieval."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cecq.encoders import Encoder, LexicalEncoder, guarded_weights, self_retrieval_weights, spread_weights
from cecq.encoders.weights import GUARD_RATIO, candidate_weightings, ndcg_of_answers, pseudo_queries
from tests.helpers.beir import synthetic_beir_parts
from tests.helpers.toy_encoder import HashEncoder


class NoiseEncoder(Encoder):
    """A view that knows nothing: a random vector per text (seeded by the text)."""

    name, dim = "noise", 16

    def _encode(self, texts, kind, show_progress):
        return np.stack(
            [
                np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).standard_normal(16)
                for t in texts
            ]
        ).astype(np.float32)

    def info(self):
        return {"name": self.name, "type": "noise", "dim": self.dim}


def corpus_texts() -> list[str]:
    corpus, _, _ = synthetic_beir_parts(docs_per_topic=20)
    out = []
    for d in corpus:
        w = d["text"].split()
        out.append(f"{d['title']}. {' '.join(w[:7])}. {' '.join(w[7:])}." if w else "")
    return out


def test_pseudo_queries_are_cut_out_of_their_documents():
    texts = [
        "A title of five words. The body says one thing. A second sentence here.",
        "Title only here",
        "Repeated title sentence here. Repeated title sentence here. And the body follows on.",
        " ".join(f"w{i}" for i in range(30)),  # one long run of words: cut into three
    ]
    pq = pseudo_queries(texts, n=10, seed=0)
    assert 1 not in pq.rows.tolist()  # a title alone gives nothing to find
    assert sorted(pq.rows.tolist()) == [0, 2, 3]
    for row, query, answer in zip(pq.rows, pq.queries, pq.answers):
        assert query in texts[row] and query not in answer  # every copy is removed
        assert answer and len(query.split()) >= 4
    again = pseudo_queries(texts, n=10, seed=0)
    assert again.queries == pq.queries and again.answers == pq.answers  # seeded


def test_candidates_include_each_view_alone_and_no_rescalings():
    c = candidate_weightings(2)
    assert (1.0, 0.0) in c and (0.0, 1.0) in c and (1.0, 1.0) in c and (0.0, 0.0) not in c
    assert all(max(w) == 1.0 for w in c) and len(set(c)) == len(c)
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8]])
    assert ndcg_of_answers(scores, np.array([0, 0])).tolist() == [1.0, 1.0 / np.log2(4)]


def test_self_retrieval_drops_a_view_that_finds_nothing_and_is_deterministic():
    texts = corpus_texts()
    encoders = [HashEncoder("toy-hash"), NoiseEncoder()]
    parts = [e.encode(texts) for e in encoders]
    fit = self_retrieval_weights(encoders, texts, parts, seed=0, n_queries=60)
    assert fit.queries == 60
    assert fit.weights == [1.0, 0.0]  # the noise view is dropped
    by_weights = {tuple(c["weights"]): c["ndcg_at_10"] for c in fit.candidates}
    assert by_weights[(1.0, 0.0)] > by_weights[(0.0, 1.0)] + 0.05
    again = self_retrieval_weights(encoders, texts, parts, seed=0, n_queries=60)
    assert again.to_dict() == fit.to_dict()
    # the order of the views does not matter
    swapped = self_retrieval_weights(encoders[::-1], texts, parts[::-1], seed=0, n_queries=60)
    assert swapped.weights == [0.0, 1.0]


def test_a_fitted_view_is_refitted_without_the_pseudo_queries():
    texts = corpus_texts()
    lexical = LexicalEncoder.fit(texts, dim=16, seed=0)
    encoders = [lexical, NoiseEncoder()]
    parts = [e.encode(texts) for e in encoders]
    calls = []
    real = LexicalEncoder.fit_corpus.__func__

    def spy(cls, fit_texts, spec, seed=0):
        calls.append(list(fit_texts))
        return real(cls, fit_texts, spec, seed)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LexicalEncoder, "fit_corpus", classmethod(spy))
        fit = self_retrieval_weights(encoders, texts, parts, seed=0, n_queries=40)
    assert len(calls) == 1 and len(calls[0]) == len(texts)
    pq = pseudo_queries(texts, 40, 0)
    assert all(q not in calls[0][r] for r, q in zip(pq.rows, pq.queries))  # the queries were held out
    assert fit.queries == 40 and len(fit.candidates) == len(candidate_weightings(2))


def test_too_few_pseudo_queries_fall_back_to_the_spread_rule():
    texts = [f"title {i} only" for i in range(30)]
    encoders = [HashEncoder("toy-hash"), NoiseEncoder()]
    parts = [e.encode(texts) for e in encoders]

    assert self_retrieval_weights(encoders, texts, parts).weights == spread_weights(parts)
    assert guarded_weights(encoders, texts, parts).weights == spread_weights(parts)


class WideNoiseEncoder(NoiseEncoder):
    """Noise in clusters: similarities spread wider than a real view's, so the spread rule
    alone would weigh it highest (as a lexical view of titles mixed with abstracts)."""

    name = "wide-noise"

    def _encode(self, texts, kind, show_progress):
        centres = np.random.default_rng(1).standard_normal((3, 16)) * 3
        noise = super()._encode(texts, kind, show_progress)
        return (noise + centres[[int(hashlib.sha256(t.encode()).hexdigest()[:2], 16) % 3 for t in texts]]).astype(
            np.float32
        )


def test_guarded_drops_a_wide_spread_view_that_finds_nothing_and_keeps_spread_otherwise():
    texts = corpus_texts()
    encoders = [HashEncoder("toy-hash"), WideNoiseEncoder()]
    parts = [e.encode(texts) for e in encoders]
    spread = spread_weights(parts)
    assert spread[1] == 1.0 and spread[0] < 1.0  # the spread rule alone trusts the noise most
    fit = guarded_weights(encoders, texts, parts, seed=0, n_queries=60)
    assert fit.weights == [1.0, 0.0] and fit.spread == spread and fit.queries == 60
    alone = [c["ndcg_at_10"] for c in fit.candidates]
    assert alone[1] < GUARD_RATIO * alone[0]
    assert fit.to_dict()["rule"] == "guarded" and guarded_weights(encoders, texts, parts, n_queries=60) == fit
    # two views that both retrieve keep their spread weights, whatever the order
    real = [LexicalEncoder.fit(texts, dim=16, seed=0), LexicalEncoder.fit(texts, dim=32, seed=0)]
    real_parts = [e.encode(texts) for e in real]
    kept = guarded_weights(real, texts, real_parts, seed=0, n_queries=60)
    assert min(c["ndcg_at_10"] for c in kept.candidates) >= GUARD_RATIO * max(c["ndcg_at_10"] for c in kept.candidates)
    assert kept.weights == spread_weights(real_parts)
    assert guarded_weights(real[::-1], texts, real_parts[::-1], seed=0, n_queries=60).weights == kept.weights[::-1]
