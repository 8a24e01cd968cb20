"""Top-k search over packed codes and float vectors, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from cecq.quantization import Quantizer
from cecq.search import prepare_queries, search_codes, search_float


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 0, x / np.where(n > 0, n, 1), 0.0)


def brute_force(q: np.ndarray, docs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full cosine matrix, stable sort by descending score (ties: lower index first)."""
    scores = unit(q) @ unit(docs).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def assert_same_ranking(scores, idx, ref_scores, ref_idx, atol=1e-5):
    assert scores.shape == ref_scores.shape and idx.shape == ref_idx.shape
    np.testing.assert_allclose(scores, ref_scores, atol=atol)
    assert np.all(np.diff(scores, axis=1) <= 1e-7), "scores are not sorted best first"
    # Indices must agree wherever the reference score is clearly separated from its neighbours.
    padded = np.pad(ref_scores, ((0, 0), (1, 1)), constant_values=np.inf)
    gap = np.minimum(np.abs(padded[:, 1:-1] - padded[:, :-2]), np.abs(padded[:, 1:-1] - padded[:, 2:]))
    distinct = gap > 1e-4
    assert distinct.mean() > 0.5  # the check below must actually check something
    np.testing.assert_array_equal(idx[distinct], ref_idx[distinct])
    for row in idx:
        assert len(set(row.tolist())) == len(row), "a document is returned twice"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    docs = unit(rng.normal(size=(203, 24))).astype(np.float32)
    queries = unit(rng.normal(size=(9, 24))).astype(np.float32)
    return docs, queries


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("scoring", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("chunk_rows", [7, 50, 1000])
def test_search_codes_equals_brute_force(data, bits, scoring, chunk_rows):
    docs, queries = data
    q = Quantizer.fit(docs, bits)
    packed = q.quantize(docs)
    deq_docs = q.dequantize(q.encode(docs))
    query_side = q.dequantize(q.encode(queries)) if scoring == "symmetric" else queries
    ref_scores, ref_idx = brute_force(query_side, deq_docs, 15)
    scores, idx = search_codes(queries, packed, q, k=15, scoring=scoring, chunk_rows=chunk_rows)
    if bits == 1 and scoring == "symmetric":
        # 24 one-bit dims: many exact ties; compare the scores, and the set of documents above the cut.
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
        full = unit(query_side) @ unit(deq_docs).T
        for r in range(len(queries)):
            cut = ref_scores[r, -1]
            assert set(np.flatnonzero(full[r] > cut + 1e-5)) <= set(idx[r].tolist())
            np.testing.assert_allclose(full[r, idx[r]], scores[r], atol=1e-5)
    else:
        assert_same_ranking(scores, idx, ref_scores, ref_idx)


def test_symmetric_and_asymmetric_differ(data):
    docs, queries = data
    q = Quantizer.fit(docs, 2)
    packed = q.quantize(docs)
    s_sym, _ = search_codes(queries, packed, q, k=5, scoring="symmetric")
    s_asym, _ = search_codes(queries, packed, q, k=5, scoring="asymmetric")
    assert not np.allclose(s_sym, s_asym)
    with pytest.raises(ValueError):
        search_codes(queries, packed, q, k=5, scoring="float")
    with pytest.raises(ValueError):
        search_codes(queries, packed, q, k=0)
    with pytest.raises(ValueError):
        prepare_queries(queries[:, :10], q, "asymmetric")


def test_k_larger_than_corpus_returns_every_document(data):
    docs, queries = data
    q = Quantizer.fit(docs, 4)
    small = q.quantize(docs[:12])
    scores, idx = search_codes(queries, small, q, k=50, chunk_rows=5)
    assert idx.shape == (len(queries), 12)
    assert all(sorted(row) == list(range(12)) for row in idx.tolist())
    ref_scores, _ = brute_force(queries, q.dequantize(q.encode(docs[:12])), 12)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


@pytest.mark.parametrize("chunk_rows", [11, 1000])
def test_rescoring_returns_float_top_k_among_candidates(data, chunk_rows):
    docs, queries = data
    q = Quantizer.fit(docs, 1)
    packed = q.quantize(docs)
    k, rescore_k = 5, 30
    _, cand = search_codes(queries, packed, q, k=rescore_k, scoring="asymmetric", chunk_rows=chunk_rows)
    scores, idx = search_codes(
        queries, packed, q, k=k, scoring="asymmetric", chunk_rows=chunk_rows, rescore_vectors=docs, rescore_k=rescore_k
    )
    assert idx.shape == (len(queries), k)
    full = unit(queries) @ unit(docs).T
    for r in range(len(queries)):
        assert set(idx[r].tolist()) <= set(cand[r].tolist())
        best = cand[r][np.argsort(-full[r, cand[r]], kind="stable")[:k]]
        np.testing.assert_array_equal(idx[r], best)
        np.testing.assert_allclose(scores[r], full[r, best], atol=1e-5)
    # Rescoring can only help against the float ground truth.
    _plain_scores, plain_idx = search_codes(queries, packed, q, k=k, scoring="asymmetric", chunk_rows=chunk_rows)
    float_of_plain = np.take_along_axis(full, plain_idx, axis=1)
    assert np.all(scores.sum(axis=1) >= float_of_plain.sum(axis=1) - 1e-6)


def test_rescoring_in_another_space(data):
    docs, queries = data
    rng = np.random.default_rng(3)
    big_docs = unit(rng.normal(size=(len(docs), 40))).astype(np.float32)
    big_queries = unit(rng.normal(size=(len(queries), 40))).astype(np.float32)
    q = Quantizer.fit(docs, 2)
    packed = q.quantize(docs)
    _, cand = search_codes(queries, packed, q, k=20)
    _scores, idx = search_codes(
        queries, packed, q, k=4, rescore_vectors=big_docs, rescore_k=20, rescore_queries=big_queries
    )
    full = big_queries @ big_docs.T
    for r in range(len(queries)):
        best = cand[r][np.argsort(-full[r, cand[r]], kind="stable")[:4]]
        np.testing.assert_array_equal(idx[r], best)
    with pytest.raises(ValueError):
        search_codes(queries, packed, q, k=4, rescore_vectors=big_docs, rescore_k=20)  # 24-dim queries, 40-dim docs
    with pytest.raises(ValueError):
        search_codes(queries, packed, q, k=4, rescore_vectors=docs[:10], rescore_k=20)


@pytest.mark.parametrize("chunk_rows", [1, 13, 100000])
def test_search_float_equals_argsort(data, chunk_rows):
    docs, queries = data
    scaled = docs * np.random.default_rng(2).uniform(0.5, 3.0, size=(len(docs), 1)).astype(np.float32)
    scores, idx = search_float(queries * 2.0, scaled, k=10, chunk_rows=chunk_rows)
    full = unit(queries) @ unit(docs).T
    ref_idx = np.argsort(-full, axis=1)[:, :10]
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, np.take_along_axis(full, ref_idx, axis=1), atol=1e-5)


def test_search_float_ties_prefer_lower_index():
    docs = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0.5, 0.5]], dtype=np.float32)
    scores, idx = search_float(np.array([[1, 0]], np.float32), docs, k=3, chunk_rows=2)
    assert idx.tolist() == [[0, 2, 3]]
    np.testing.assert_allclose(scores, [[1, 1, 1]])


def test_zero_document_scores_zero():
    docs = np.array([[1, 0], [0, 0], [0.6, 0.8]], dtype=np.float32)
    scores, idx = search_float(np.array([[-1, 0]], np.float32), docs, k=3)
    assert np.all(np.isfinite(scores))
    assert idx.tolist() == [[1, 2, 0]]
    np.testing.assert_allclose(scores, [[0.0, -0.6, -1.0]], atol=1e-6)


def test_empty_documents_score_zero_with_codes():
    """A zero vector quantizes to middle bins that dequantize to a non-zero row; the
    ``empty`` flag makes such documents score 0, as their float vectors do."""
    from cecq.encoders import l2_normalize
    from cecq.quantization import Quantizer
    from cecq.search import search_codes

    rng = np.random.default_rng(3)
    docs = l2_normalize(rng.normal(size=(40, 16)))
    docs[5] = 0.0
    q = Quantizer.fit(docs[np.linalg.norm(docs, axis=1) > 0], 2)
    packed = q.quantize(docs)
    queries = l2_normalize(rng.normal(size=(30, 16)))
    empty = np.linalg.norm(docs, axis=1) == 0
    scores, idx = search_codes(queries, packed, q, k=40, empty=empty)
    assert np.allclose(scores[idx == 5], 0.0)
    unflagged, idx2 = search_codes(queries, packed, q, k=40)
    assert not np.allclose(unflagged[idx2 == 5], 0.0)  # without the flag the empty document scores
