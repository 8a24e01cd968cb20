"""``--fit-corpus``: everything fitted on another BEIR folder's documents, the task's corpus only coded and scored."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cecq.cli import build_parser, main
from cecq.cli.args import fitting
from cecq.config import EvalConfig, ModelSpec
from cecq.errors import ConfigError, DataError
from cecq.eval.beir import load_beir, load_beir_corpus
from cecq.eval.evaluate import evaluate_task
from tests.helpers.beir import lexical_eval_config, small_eval_config, synthetic_beir_parts, write_beir


@pytest.fixture(scope="module")
def fit_dirs(tmp_path_factory):
    """Another corpus on the same topics (other documents, corpus.jsonl only: no queries or
    judgements to read), and the same corpus with its texts perturbed."""
    root = tmp_path_factory.mktemp("fit-corpus")
    corpus, _, _ = synthetic_beir_parts(docs_per_topic=10, seed=1)
    other = write_beir(root / "other", corpus, None, None)
    perturbed = [{**d, "text": " ".join(reversed(d["text"].split())) + " zebra"} for d in corpus]
    return other, write_beir(root / "other-perturbed", perturbed, None, None)


def perturb_documents(task):
    """The task with every document's words reversed and one word added (same ids, judgements)."""
    return replace(task, doc_texts=[" ".join(reversed(t.split())) + " zebra" if t else t for t in task.doc_texts])


@pytest.mark.slow
def test_only_the_fit_corpus_is_fitted_on_and_records_name_it(tiny_beir, tiny_model_dir, fit_dirs):
    """Perturbing the task's documents changes its codes but not one fitted byte (weights,
    decoder, every quantizer file, every baseline's fit); perturbing the fit corpus changes them."""
    other, other_perturbed = fit_dirs
    task = load_beir(tiny_beir)
    # Spread weights: on these tiny corpora the guard drops the tiny model, and the lexical view
    # alone (fitted on the other corpus) does not see word order or the unseen word added.
    config = small_eval_config(tiny_model_dir, baselines=True, fit_corpus=str(other), model_weights="spread")
    runs = {}
    for name, t, cfg in [
        ("base", task, config),
        ("task perturbed", perturb_documents(task), config),
        ("fit corpus perturbed", task, replace(config, fit_corpus=str(other_perturbed))),
    ]:
        fitted, coded = [], []
        runs[name] = (evaluate_task(t, cfg, fitted=fitted, coded=coded), fitted, coded)
    records, fitted, coded = runs["base"]
    assert len(fitted) > 10 and len(coded) >= 3
    assert runs["task perturbed"][1] == fitted  # no fitted byte depends on the task's documents
    assert runs["task perturbed"][2] != coded  # but they are what is coded
    changed = runs["fit corpus perturbed"][1]
    assert changed != fitted
    quantizer_files = [b for b in fitted if b[:4] == b"PAR1"]
    assert quantizer_files and not set(quantizer_files) & {b for b in changed if b[:4] == b"PAR1"}
    assert {r.fitted_on for r in records} == {"other"}
    assert {r.fitted_on for r in runs["fit corpus perturbed"][0]} == {"other-perturbed"}
    # the task's documents, and only they, are ranked: 61 of them, each retrieved
    assert all(r.recall_at_100 == pytest.approx(1.0) for r in records)
    names = {r.name for r in records}
    assert {"cecq-2B-product", "cecq-8d-1b", "concat"} <= names
    assert any(n.startswith("pca-") for n in names) and any(n.startswith("mrl-") for n in names)


def test_fit_corpus_and_fit_fraction_are_mutually_exclusive(tiny_beir, fit_dirs, capsys):
    with pytest.raises(ConfigError, match="mutually exclusive"):
        EvalConfig(models=(ModelSpec("lexical"),), fit_corpus=str(fit_dirs[0]), fit_fraction=0.5)
    with pytest.raises(ConfigError, match="empty string"):
        EvalConfig(models=(ModelSpec("lexical"),), fit_corpus=" ")
    argv = ["eval", str(tiny_beir), "--model", "lexical", "--dims", "8", "--bits", "1"]
    args = build_parser().parse_args([*argv, "--fit-corpus", "elsewhere", "--cache", "c"])
    assert (args.cache, fitting(args)) == ("c", {"fit_fraction": 1.0, "fit_corpus": "elsewhere"})
    assert main([*argv, "--fit-corpus", str(fit_dirs[0]), "--fit-fraction", "0.5"]) == 2
    assert "mutually exclusive" in capsys.readouterr().err


def test_the_fit_corpus_is_read_from_its_corpus_file_only(tmp_path, fit_dirs):
    corpus = load_beir_corpus(fit_dirs[0])
    assert corpus.name == "other" and len(corpus.doc_ids) == 51 and not corpus.query_ids and not corpus.qrels
    with pytest.raises(DataError, match="not found"):
        load_beir_corpus(tmp_path / "missing")
    (tmp_path / "no-corpus").mkdir()
    with pytest.raises(DataError, match=r"missing corpus\.jsonl"):
        load_beir_corpus(tmp_path / "no-corpus")


def test_a_lexical_only_eval_fits_on_the_fit_corpus(tiny_beir, fit_dirs, tmp_path, caplog):
    """One fitted view and the cache: the lexical model is fitted on the other corpus, whose
    vocabulary is the same topics' here; its cache key differs from the in-corpus fit's. Only
    the run fitted elsewhere warns that the view's vocabulary is the other corpus's."""
    task = load_beir(tiny_beir)
    config = lexical_eval_config()
    with caplog.at_level("WARNING", logger="cecq.eval.evaluate"):
        own = evaluate_task(task, config, cache_dir=tmp_path)
        assert not [r for r in caplog.records if "never saw" in r.getMessage()]
        other = evaluate_task(task, replace(config, fit_corpus=str(fit_dirs[0])), cache_dir=tmp_path)
    (warning,) = [r.getMessage() for r in caplog.records if "never saw" in r.getMessage()]
    assert warning.startswith("lexical is fitted on the documents of other: words of tinybeir")
    assert [r.name for r in own] == [r.name for r in other]
    assert {r.fitted_on for r in own} == {"tinybeir"} and {r.fitted_on for r in other} == {"other"}
    # task embeddings, and the fit corpus's documents, cached apart from the in-corpus fit's
    assert len(list(tmp_path.glob("tinybeir-*.docs.npy"))) == 2 and len(list(tmp_path.glob("other-*.docs.npy"))) == 1
    assert other[0].ndcg_at_10 > 0.5  # same topics: the other corpus's vocabulary covers this one's
