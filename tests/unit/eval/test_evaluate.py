"""End-to-end evaluation of a small task: base models, concatenation, decoder, codes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cecq.config import DecoderConfig, EvalConfig, ModelSpec
from cecq.eval.beir import load_beir
from cecq.eval.evaluate import evaluate_task, format_table, mteb_scores, write_json
from tests.helpers.beir import lexical_eval_config, small_eval_config


@pytest.fixture(scope="module")
def records(tiny_beir, tiny_model_dir):
    task = load_beir(tiny_beir)
    config = EvalConfig(
        models=(ModelSpec(str(tiny_model_dir), device="cpu"), ModelSpec("lexical")),
        dims=(8, 16),
        bits=(1, 2),
        decoder=DecoderConfig(max_epochs=3, seed=0),
    )
    return evaluate_task(task, config)


def by_name(records, name, scoring):
    [r] = [r for r in records if r.name == name and r.scoring == scoring]
    return r


def test_records_cover_every_configuration(records, tiny_model_dir):
    keys = {(r.name, r.scoring) for r in records}
    expected = {
        (f"model:{tiny_model_dir}", "float"),
        ("model:lexical", "float"),
        ("concat", "float"),
        ("concat[equal]", "float"),
        ("concat[spread]", "float"),
        ("decoder-8", "float"),
        ("decoder-16", "float"),
    }
    expected |= {(f"cecq-{d}d-{b}b", s) for d in (8, 16) for b in (1, 2) for s in ("symmetric", "asymmetric")}
    assert keys == expected
    assert len(records) == len(expected)
    assert all(r.task == "tinybeir" for r in records)


def test_bytes_and_compression(records, tiny_model_dir):
    lexical = by_name(records, "model:lexical", "float")
    tiny = by_name(records, f"model:{tiny_model_dir}", "float")
    concat = by_name(records, "concat", "float")
    assert tiny.dims == 32 and tiny.bytes_per_doc == 128
    assert 1 <= lexical.dims <= 60 and lexical.bytes_per_doc == 4 * lexical.dims
    assert concat.dims == 32 + lexical.dims
    float_bytes = 4 * concat.dims
    assert concat.bytes_per_doc == float_bytes and concat.compression == 1.0
    for r in records:
        assert r.compression == pytest.approx(float_bytes / r.bytes_per_doc)
    for d in (8, 16):
        assert by_name(records, f"decoder-{d}", "float").bytes_per_doc == 4 * d
        for b in (1, 2):
            for s in ("symmetric", "asymmetric"):
                r = by_name(records, f"cecq-{d}d-{b}b", s)
                assert r.dims == d and r.bits == b
                assert r.bytes_per_doc == math.ceil(d * b / 8)
    assert by_name(records, "cecq-8d-1b", "symmetric").compression == float_bytes  # 1 byte per document


def test_scores_are_valid_and_retention_is_relative_to_concat(records):
    concat = by_name(records, "concat", "float")
    assert concat.retention == 1.0
    for r in records:
        assert math.isfinite(r.ndcg_at_10) and 0.0 <= r.ndcg_at_10 <= 1.0, r
        assert math.isfinite(r.recall_at_100) and 0.0 <= r.recall_at_100 <= 1.0, r
        assert r.retention == pytest.approx(r.ndcg_at_10 / concat.ndcg_at_10)
    # The synthetic topics are lexically distinct: the lexical model must find them.
    assert by_name(records, "model:lexical", "float").ndcg_at_10 > 0.8
    # 100 retrieved of 61 documents: every relevant document is retrieved by every configuration.
    assert all(r.recall_at_100 == pytest.approx(1.0) for r in records)


def test_table_and_json(records, tmp_path):
    table = format_table(records)
    assert table.count("\n") == len(records) + 1 and "cecq-16d-2b" in table
    write_json(records, tmp_path / "out.json")
    data = json.loads((tmp_path / "out.json").read_text())
    assert len(data) == len(records)
    assert {
        "task",
        "name",
        "scoring",
        "ndcg_at_10",
        "recall_at_100",
        "bytes_per_doc",
        "compression",
        "retention",
        "dims",
        "bits",
    } <= set(data[0])


def test_mteb_scores_of_perfect_and_reversed_rankings(tiny_beir):
    task = load_beir(tiny_beir)
    n = len(task.doc_ids)
    idx, scores = [], []
    for q in task.query_ids:
        rel = task.qrels[q]
        order = sorted(range(n), key=lambda j: (-rel.get(task.doc_ids[j], 0), j))
        idx.append(order)
        scores.append(np.linspace(1, 0, n))
    idx, scores = np.array(idx), np.array(scores)
    perfect = mteb_scores(task, scores, idx)
    assert perfect["ndcg_at_10"] == pytest.approx(1.0) and perfect["recall_at_100"] == pytest.approx(1.0)
    worst = mteb_scores(task, scores, idx[:, ::-1].copy())
    assert worst["ndcg_at_10"] < 0.1


def test_single_model_with_rescoring(tiny_beir):
    task = load_beir(tiny_beir)
    config = lexical_eval_config(rescore=20)
    records = evaluate_task(task, config)
    assert [(r.name, r.scoring) for r in records] == [
        ("model:lexical", "float"),
        ("decoder-8", "float"),
        ("cecq-8d-2b", "asymmetric"),
    ]
    assert records[0].retention == 1.0 and records[0].dims == 24
    assert records[2].bytes_per_doc == 2 and records[2].compression == 24 * 4 / 2
    assert all(0.0 <= r.ndcg_at_10 <= 1.0 for r in records)


def test_budget_codes_read_the_decoder_the_pipeline_trains_for_them(tiny_beir, tiny_model_dir, monkeypatch):
    """2-byte product codes read 8 dims: they come from the decoder the pipeline's plan trains
    for them (cecq/targets.py): 8 outputs, the MRL loss at 8 alone, not the first 8 of the
    16-output decoder, whose outputs the bits configurations and the fitted bits (which read
    every output in MRL order) keep using."""
    from dataclasses import replace

    import cecq.eval.evaluate as evaluate
    from cecq.eval.baselines import decoder_bytes
    from cecq.targets import CompressionTarget

    trained, decoded, counted = [], [], []
    train, decode, count = evaluate.train_decoder, evaluate.decode, evaluate.decoder_bytes

    def train_spy(rows, cfg, **kwargs):
        decoder, stats = train(rows, cfg, **kwargs)
        trained.append((cfg, decoder))
        return decoder, stats

    def decode_spy(decoder, vectors, dims=None):
        decoded.append((decoder.out_dim, dims))
        return decode(decoder, vectors, dims)

    def count_spy(decoder, rows=None):
        counted.append((decoder, rows))
        return count(decoder, rows)

    monkeypatch.setattr(evaluate, "train_decoder", train_spy)
    monkeypatch.setattr(evaluate, "decode", decode_spy)
    monkeypatch.setattr(evaluate, "decoder_bytes", count_spy)
    config = small_eval_config(tiny_model_dir)
    config = replace(config, decoder=replace(config.decoder, prefix_sizes=(4, 8, 16)))
    records = evaluate_task(load_beir(tiny_beir), config)
    concat_dim = by_name(records, "concat", "float").dims
    plan = CompressionTarget(budget_bytes=2, quantization="product").plan(concat_dim, 10**4)
    planned = config.decoder.for_codes(plan.out_dim, plan.whole_output_coded)  # what plan.apply gives a run
    assert [(c.out_dim, c.effective_prefix_sizes()) for c, _ in trained] == [(16, (4, 8, 16)), (8, (8,))]
    assert trained[1][0] == planned  # the sizes the pipeline's plan gives these codes (eval's epochs, seed)
    assert (8, 8) in decoded and (16, 16) in decoded  # product codes from the 8, fitted bits from the 16
    # each record counts the bytes of the decoder its codes read: the 8-output one for product codes
    n = len(config.scorings)
    assert [(d.out_dim, rows) for d, rows in counted if d is trained[1][1]] == [(8, 8)] * n
    assert [(d.out_dim, rows) for d, rows in counted if d is trained[0][1]] == [(16, 8)] * n + [(16, 16)] * n
    product = by_name(records, "cecq-2B-product", "asymmetric")
    assert product.dims == 8 and product.fixed_bytes > decoder_bytes(trained[1][1])


def count_encodes(monkeypatch) -> list[tuple[int, str]]:
    """``(texts, kind)`` of every call of the pretrained encoder from now on."""
    from cecq.encoders.sentence_transformer import SentenceTransformerEncoder

    calls: list[tuple[int, str]] = []
    encode = SentenceTransformerEncoder.encode

    def counting(self, texts, kind="document", show_progress=False):
        calls.append((len(texts), kind))
        return encode(self, texts, kind, show_progress)

    monkeypatch.setattr(SentenceTransformerEncoder, "encode", counting)
    return calls


def test_two_writers_of_one_cache_key_never_share_a_temporary_file(tmp_path, monkeypatch):
    from cecq.eval import evaluate

    written: list[str] = []
    save = np.save
    monkeypatch.setattr(evaluate.np, "save", lambda path, a: (written.append(str(path)), save(path, a)))
    key = tmp_path / "cache" / "key"

    def outer() -> np.ndarray:  # another run writes the same key while this one computes
        evaluate._cached(key, lambda: np.ones(3))
        return np.zeros(3)

    assert np.array_equal(evaluate._cached(key, outer), np.zeros(3))
    assert len(written) == 2 and written[0] != written[1]
    assert sorted(p.name for p in key.parent.iterdir()) == ["key.npy"]  # no temporary file left


def test_embedding_cache_serves_a_pretrained_model_for_every_seed(tiny_beir, tiny_model_dir, tmp_path):
    from cecq.eval.evaluate import embed_task

    task = load_beir(tiny_beir)
    models = (ModelSpec(str(tiny_model_dir), device="cpu"), ModelSpec("lexical"))
    for seed in (0, 1):
        _, docs, _ = embed_task(task, EvalConfig(models=models, decoder=DecoderConfig(seed=seed)), cache_dir=tmp_path)
    names = sorted(p.name.split(".")[0] for p in tmp_path.glob("*.docs.npy"))
    assert len(names) == 3  # one file for the pretrained model, one per seed for the fitted lexical encoder
    # a cached file is what the encoder gives: the second seed read the model's vectors back unchanged
    _, again, _ = embed_task(task, EvalConfig(models=models, decoder=DecoderConfig(seed=1)), cache_dir=tmp_path)
    np.testing.assert_array_equal(again[0], docs[0])


def test_embedding_cache_keys_documents_apart_from_queries(tiny_beir, tiny_model_dir, tmp_path, monkeypatch):
    """Another split (other queries, same corpus) reuses the cached documents and embeds
    only its queries; a cache file is written whole (no partial file is left)."""
    from dataclasses import replace as dc_replace

    from cecq.eval.evaluate import embed_task

    task = load_beir(tiny_beir)
    config = EvalConfig(models=(ModelSpec(str(tiny_model_dir), device="cpu"),))
    _, docs, queries = embed_task(task, config, cache_dir=tmp_path)
    calls = count_encodes(monkeypatch)
    other = dc_replace(task, query_ids=task.query_ids[:3], query_texts=[t + " again" for t in task.query_texts[:3]])
    _, docs2, queries2 = embed_task(other, config, cache_dir=tmp_path)
    assert calls == [(3, "query")]  # the corpus came from the cache
    np.testing.assert_array_equal(docs2[0], docs[0])
    assert queries2[0].shape == (3, queries[0].shape[1])
    assert sorted(p.name.rsplit(".", 2)[1] for p in tmp_path.glob("*.npy")) == ["docs", "queries", "queries"]


def test_a_rerun_with_the_cache_embeds_nothing_not_even_the_guards_pseudo_queries(
    tiny_beir, tiny_model_dir, tmp_path, monkeypatch
):

    task = load_beir(tiny_beir)
    config = small_eval_config(tiny_model_dir, model_weights="guarded", baselines=True)
    calls = count_encodes(monkeypatch)
    fitted: list[bytes] = []
    first = evaluate_task(task, config, cache_dir=tmp_path, fitted=fitted)
    # the corpus, the queries, then the guard's pseudo-queries and their answers
    assert calls[:2] == [(len(task.doc_ids), "document"), (len(task.query_ids), "query")] and len(calls) == 4
    calls.clear()
    again: list[bytes] = []
    second = evaluate_task(task, config, cache_dir=tmp_path, fitted=again)
    assert calls == []
    assert again[0] == fitted[0] and json.loads(fitted[0])["rule"] == "guarded"  # the same weight fit
    assert [(r.name, r.scoring, r.ndcg_at_10) for r in second] == [(r.name, r.scoring, r.ndcg_at_10) for r in first]
    # the cached encoder is still a pretrained model to the baselines: binary + rescore of its vectors
    assert f"st-binary-{tiny_model_dir}+rescore" in {r.name for r in second}


@pytest.mark.slow
def test_nothing_is_fitted_on_queries_or_judgements(tiny_beir, tiny_model_dir):
    """Perturbing the queries and the judgements leaves the weights, every decoder, every
    quantizer and every code byte-identical (fit on half the corpus, budget kinds included)."""
    from dataclasses import replace

    task = load_beir(tiny_beir)
    config = small_eval_config(
        tiny_model_dir,
        fit_fraction=0.5,
        model_weights="self",  # the rule with the most fitting in it: pseudo-queries and a refitted lexical view
    )
    fitted, perturbed_fitted, coded, perturbed_coded = [], [], [], []
    records = evaluate_task(task, config, fitted=fitted, coded=coded)
    perturbed = replace(
        task,
        query_texts=[" ".join(reversed(q.split())) + " zebra" for q in task.query_texts],
        qrels={q: {d: 3 - r for d, r in rel.items()} for q, rel in reversed(list(task.qrels.items()))},
    )
    evaluate_task(perturbed, config, fitted=perturbed_fitted, coded=perturbed_coded)
    assert len(fitted) > 5 and fitted == perturbed_fitted
    assert len(coded) > 2 and coded == perturbed_coded
    weights = json.loads(fitted[0])
    assert weights["rule"] == "self" and len(weights["weights"]) == 2
    # the fit-on-half protocol: both halves scored, every stored byte counted
    cecq = next(r for r in records if r.name == "cecq-2B-product")
    assert cecq.ndcg_at_10_in is not None and cecq.ndcg_at_10_out is not None and cecq.retention_out is not None
    assert cecq.fixed_bytes > 4 * 16 * 2  # decoder + codebooks
    assert math.isclose(cecq.bytes_per_doc_amortized, cecq.bytes_per_doc + cecq.fixed_bytes / len(task.doc_ids))
    assert cecq.bytes_per_doc_amortized_1m < cecq.bytes_per_doc_amortized
