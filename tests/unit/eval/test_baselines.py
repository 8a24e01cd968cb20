"""Baselines of ``cecq eval --baselines``: Hamming search, binary rescoring, PCA, byte counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cecq.cli import build_parser
from cecq.config import DecoderConfig, EvalConfig, ModelSpec
from cecq.encoders import l2_normalize
from cecq.eval.baselines import PCAProjection, binary_search, pca_baseline, pq_baseline, run_baselines, stored_bytes
from cecq.eval.beir import load_beir
from cecq.eval.evaluate import evaluate_task
from cecq.quantization import ProductQuantizer
from cecq.search import rescore_signs, search_hamming, unpack_signs


def brute_force_hamming(query_bits: np.ndarray, doc_bits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Popcount of XOR, nearest first, ties by lower document index."""
    dist = np.unpackbits(query_bits[:, None, :] ^ doc_bits[None, :, :], axis=2).sum(axis=2, dtype=np.int64)
    idx = np.stack([np.lexsort((np.arange(doc_bits.shape[0]), row))[:k] for row in dist])
    return -np.take_along_axis(dist, idx, axis=1), idx


@pytest.mark.parametrize("dim", [37, 64])
def test_search_hamming_equals_brute_force(dim):
    rng = np.random.default_rng(dim)
    docs = rng.standard_normal((53, dim)) > 0
    docs[10] = docs[3]  # exact duplicates: ties must go to the lower index
    docs[40] = docs[3]
    doc_bits, query_bits = np.packbits(docs, axis=1), np.packbits(rng.standard_normal((9, dim)) > 0, axis=1)
    want_scores, want_idx = brute_force_hamming(query_bits, doc_bits, 12)
    for chunk_rows in (7, 65536):  # merging across chunks keeps the same order
        scores, idx = search_hamming(query_bits, doc_bits, dim, k=12, chunk_rows=chunk_rows)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(scores, want_scores)
    scores, idx = search_hamming(query_bits, doc_bits, dim, k=100)
    assert idx.shape == (9, 53)


def test_search_hamming_empty_documents_and_bad_shapes():
    dim = 16
    bits = np.packbits(np.ones((4, dim), dtype=bool), axis=1)
    empty = np.array([False, True, False, False])
    scores, idx = search_hamming(bits[:1], bits, dim, k=4, empty=empty)
    assert idx[0, -1] == 1 and scores[0, -1] == -dim / 2 and list(scores[0, :3]) == [0, 0, 0]
    with pytest.raises(ValueError, match="one-bit"):
        search_hamming(bits[:, :1], bits, dim)
    with pytest.raises(ValueError, match="k must"):
        search_hamming(bits, bits, dim, k=0)
    np.testing.assert_array_equal(unpack_signs(np.array([[0b10100000]], np.uint8), 3), [[1, -1, 1]])


def test_binary_rescoring_returns_the_float_ranking_among_candidates():
    rng = np.random.default_rng(0)
    dim = 24
    docs, queries = l2_normalize(rng.standard_normal((80, dim))), l2_normalize(rng.standard_normal((6, dim)))
    doc_bits = np.packbits(docs > 0, axis=1)
    _, candidates = search_hamming(np.packbits(queries > 0, axis=1), doc_bits, dim, k=20)
    scores, idx = rescore_signs(queries, doc_bits, dim, candidates, k=5)
    signs = np.where(docs > 0, 1.0, -1.0)
    for q in range(len(queries)):
        assert set(idx[q]) <= set(candidates[q])
        float_scores = signs[candidates[q]] @ queries[q]
        want = candidates[q][np.argsort(-float_scores, kind="stable")[:5]]
        np.testing.assert_array_equal(idx[q], want)
        np.testing.assert_allclose(scores[q], signs[idx[q]] @ queries[q], rtol=1e-5)
        # sentence-transformers reads the bits as 1/0: the same order
        st_scores = (docs[candidates[q]] > 0).astype(float) @ queries[q]
        np.testing.assert_array_equal(want, candidates[q][np.argsort(-st_scores, kind="stable")[:5]])

    # binary_search: quantize_embeddings' ubinary bits, Hamming candidates, then rescoring
    _, i = binary_search(docs, queries, k=5, rescore_multiplier=4)
    np.testing.assert_array_equal(i, idx)
    # with every document a candidate, rescoring is the float ranking over the whole corpus
    _, i_all = binary_search(docs, queries, k=5, rescore_multiplier=16)
    np.testing.assert_array_equal(i_all, np.argsort(-(queries @ signs.T), axis=1, kind="stable")[:, :5])
    # without rescoring it is the plain Hamming search
    _, i0 = binary_search(docs, queries, k=5, rescore_multiplier=0)
    np.testing.assert_array_equal(i0, candidates[:, :5])


def test_pca_is_the_centred_pca_of_the_documents():
    rng = np.random.default_rng(1)
    docs = l2_normalize(rng.standard_normal((120, 10)) * np.linspace(3, 0.5, 10) + 0.7)
    docs[5] = 0.0  # an empty document: ignored by the fit, stays zero
    pca = PCAProjection.fit(docs, 4)
    kept = np.delete(docs, 5, axis=0)
    np.testing.assert_allclose(pca.mean, kept.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(4), atol=1e-5)
    _, sv, vt = np.linalg.svd(kept - kept.mean(axis=0), full_matrices=False)
    np.testing.assert_allclose(np.abs(pca.components), np.abs(vt[:4]), atol=1e-4)
    np.testing.assert_allclose(pca.explained_variance, sv[:4] ** 2 / (len(kept) - 1), rtol=1e-4)
    proj = pca.project(docs, 3)
    assert proj.shape == (120, 3) and not proj[5].any()
    np.testing.assert_allclose(np.linalg.norm(np.delete(proj, 5, axis=0), axis=1), 1.0, rtol=1e-5)
    direct = (kept - kept.mean(axis=0)) @ vt[:3].T
    np.testing.assert_allclose(np.abs(np.delete(proj, 5, axis=0)), np.abs(l2_normalize(direct)), atol=1e-4)
    with pytest.raises(ValueError, match="components"):
        PCAProjection.fit(docs, 11)
    with pytest.raises(ValueError, match="asked for 5"):
        pca.project(docs, 5)


def test_pca_is_fitted_on_the_corpus_only(monkeypatch):
    rng = np.random.default_rng(2)
    docs, queries = l2_normalize(rng.standard_normal((60, 12))), l2_normalize(rng.standard_normal((8, 12)) + 5.0)
    fitted_on = []
    real_fit = PCAProjection.fit.__func__

    def spy(cls, x, dims):
        fitted_on.append(x)
        return real_fit(cls, x, dims)

    monkeypatch.setattr(PCAProjection, "fit", classmethod(spy))

    class FakeEncoder:  # a fitted view, like lexical: no binary baseline
        name = "fake"
        fitted = True

    config = EvalConfig(models=(ModelSpec("lexical"),), dims=(4, 8, 12), bits=(1,), scorings=("asymmetric",))
    results = list(
        run_baselines(
            [FakeEncoder()],
            [docs],
            [queries],
            docs,
            queries,
            config,
            DecoderConfig(out_dim=12, max_epochs=1, batch_size=16),
            k=5,
        )
    )
    assert len(fitted_on) == 1 and np.array_equal(fitted_on[0], docs)
    assert [r.name for r in results] == [
        "pq-fake-1b",
        "pca-4d-1b",
        "pca-8d-1b",
        "pca-12d-1b",
        "mrl-4d-1b",
        "mrl-8d-1b",
        "mrl-12d-1b",
    ]
    # Other queries: the same projection and the same document codes, so the same scores for the same query.
    pca = PCAProjection.fit(docs, 8)
    a = list(pca_baseline(pca, docs, queries, 8, 2, 5))
    b = list(pca_baseline(pca, docs, np.concatenate([queries, -queries]), 8, 2, 5))
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.indices, rb.indices[:8])
        np.testing.assert_allclose(ra.scores, rb.scores[:8], rtol=1e-5)


def test_pq_bytes_per_doc():
    rng = np.random.default_rng(3)
    docs, queries = l2_normalize(rng.standard_normal((40, 20))), l2_normalize(rng.standard_normal((5, 20)))
    for bits, nbytes in ((1, 3), (2, 5), (4, 10), (8, 20)):
        results = list(pq_baseline("m", docs, queries, bits, 10))
        assert [(r.name, r.scoring) for r in results] == [
            (f"pq-m-{bits}b", "symmetric"),
            (f"pq-m-{bits}b", "asymmetric"),
        ]
        assert all(r.bytes_per_doc == nbytes and r.dims == 20 and r.bits == bits for r in results)
        assert all(r.indices.shape == (5, 10) for r in results)


def test_eval_option():
    assert build_parser().parse_args(["eval", "d", "--baselines"]).baselines is True
    assert build_parser().parse_args(["eval", "d"]).baselines is False
    assert EvalConfig().baselines is False


@pytest.fixture(scope="module")
def records(tiny_beir, tiny_model_dir):
    task = load_beir(tiny_beir)
    config = EvalConfig(
        models=(ModelSpec(str(tiny_model_dir), device="cpu"), ModelSpec("lexical")),
        dims=(8, 16),
        bits=(1, 2),
        decoder=DecoderConfig(max_epochs=2, seed=0),
        baselines=True,
    )
    return evaluate_task(task, config)


def test_evaluate_task_with_baselines(records, tiny_model_dir):
    tiny = str(tiny_model_dir)
    both = ("symmetric", "asymmetric")
    expected = {
        (f"model:{tiny}", "float"),
        ("model:lexical", "float"),
        ("concat", "float"),
        ("concat[equal]", "float"),
        ("concat[spread]", "float"),
        ("decoder-8", "float"),
        ("decoder-16", "float"),
    }
    for d in (8, 16):
        for b in (1, 2):
            expected |= {(f"{kind}-{d}d-{b}b", s) for kind in ("cecq", "pca", "mrl") for s in both}
    expected |= {(f"pq-{m}-{b}b", s) for m in (tiny, "lexical") for b in (1, 2) for s in both}
    expected |= {(f"st-binary-{tiny}", "symmetric"), (f"st-binary-{tiny}+rescore", "asymmetric")}
    assert {(r.name, r.scoring) for r in records} == expected and len(records) == len(expected)

    by = {(r.name, r.scoring): r for r in records}
    concat = by[("concat", "float")]
    lexical_dim = by[("model:lexical", "float")].dims
    float_bytes = concat.bytes_per_doc
    assert float_bytes == 4 * (32 + lexical_dim) and concat.retention == 1.0
    for r in records:
        assert r.compression == pytest.approx(float_bytes / r.bytes_per_doc)
        assert r.retention == pytest.approx(r.ndcg_at_10 / concat.ndcg_at_10)
        assert 0.0 <= r.ndcg_at_10 <= 1.0 and math.isfinite(r.recall_at_100)
    for d in (8, 16):
        for b in (1, 2):
            for kind in ("cecq", "pca", "mrl"):
                r = by[(f"{kind}-{d}d-{b}b", "asymmetric")]
                assert (r.bytes_per_doc, r.dims, r.bits) == (d * b // 8, d, b)
    for b in (1, 2):
        assert by[(f"pq-{tiny}-{b}b", "symmetric")].bytes_per_doc == 32 * b // 8
        assert by[(f"pq-lexical-{b}b", "asymmetric")].bytes_per_doc == math.ceil(lexical_dim * b / 8)
    for name in (f"st-binary-{tiny}", f"st-binary-{tiny}+rescore"):
        r = next(r for r in records if r.name == name)
        assert (r.bytes_per_doc, r.dims, r.bits) == (4, 32, 1)
    # the synthetic topics are lexically distinct: quantized lexical vectors still find them
    assert by[("pq-lexical-2b", "asymmetric")].ndcg_at_10 > 0.6


def test_baselines_are_fitted_on_the_fit_rows_only(monkeypatch):
    rng = np.random.default_rng(3)
    docs, queries = l2_normalize(rng.standard_normal((60, 12))), l2_normalize(rng.standard_normal((8, 12)))
    fit = np.zeros(60, dtype=bool)
    fit[::2] = True
    fitted_on = []
    real_fit = PCAProjection.fit.__func__
    monkeypatch.setattr(PCAProjection, "fit", classmethod(lambda cls, x, d: fitted_on.append(x) or real_fit(cls, x, d)))

    class FakeEncoder:  # a fitted view, like lexical
        name = "fake"
        fitted = True

    config = EvalConfig(models=(ModelSpec("lexical"),), dims=(4,), bits=(1,), scorings=("asymmetric",))
    results = list(
        run_baselines(
            [FakeEncoder()],
            [docs],
            [queries],
            docs,
            queries,
            config,
            DecoderConfig(out_dim=4, max_epochs=1),
            5,
            fit=fit,
        )
    )
    assert len(fitted_on) == 1 and np.array_equal(fitted_on[0], docs[fit])
    pca = next(r for r in results if r.name == "pca-4d-1b")
    assert pca.fixed_bytes > 4 * (12 + 4 * 12)  # the projection and the quantizer file


def test_fixed_bytes_count_the_product_file_as_stored_with_its_rotation_as_a_seed():
    x = np.random.default_rng(0).standard_normal((600, 64)).astype(np.float32)
    pq = ProductQuantizer.fit(x, budget_bytes=12, iterations=2)
    with_matrix = stored_bytes(ProductQuantizer(pq.input_dim, pq.rotation, pq.codebooks))  # no seed known
    assert stored_bytes(pq) <= with_matrix - pq.rotation.nbytes  # the 48 x 48 float32 matrix is not stored


def test_each_budget_kind_is_fitted_on_the_prefix_it_reads_and_only_those_decoder_rows_count():
    from cecq.decoder import Decoder, decode
    from cecq.eval.baselines import budget_quantizers, decoder_bytes

    decoder = Decoder(20, 64)
    x = np.random.default_rng(0).standard_normal((300, 20)).astype(np.float32)
    asked: list[tuple[int, str]] = []

    def prefix(width: int, kind) -> tuple[np.ndarray, np.ndarray]:
        asked.append((width, kind.kind))
        return decode(decoder, x, width), decode(decoder, x[:5], width)

    fitted = {q.kind: (q, d, qq) for q, d, qq in budget_quantizers(prefix, 64, None, 8)}
    assert asked == [(64, "mixed"), (32, "product")] and sorted(fitted) == ["mixed", "product"]  # registry order
    product, docs, queries = fitted["product"]
    assert product.dim == product.kept_dims == 32 and docs.shape == (300, 32) and queries.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)  # the prefix normalised on its own
    assert fitted["mixed"][0].dim == 64
    assert decoder_bytes(decoder) == 4 * (20 + 1) * 64
    assert decoder_bytes(decoder, product.dim) == 4 * (20 + 1) * 32
