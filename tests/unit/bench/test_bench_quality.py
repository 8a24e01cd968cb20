"""``cecq bench quality`` on two tiny BEIR folders, and the ``cecq eval`` strategy flags."""

from __future__ import annotations

import json

import pytest

from cecq.bench.quality import budget_pairs, series_of, summarise
from cecq.cli import main
from cecq.eval.evaluate import EvalRecord
from tests.helpers.beir import synthetic_beir_parts, write_beir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_budget_pairs_fill_each_budget_exactly():
    assert budget_pairs([48], [1, 2, 4], 768) == [(96, 4), (192, 2), (384, 1)]
    assert budget_pairs([48, 128], [1, 2], 512) == [(192, 2), (384, 1), (512, 2)]  # 1024 x 1 bit is too wide
    assert budget_pairs([1], [1, 2, 4], 4) == [(2, 4), (4, 2)]


def test_summary_needs_every_task_and_sorts_by_retention():
    def rec(task, name, scoring, ndcg, nbytes, retention, **fields):
        return EvalRecord(task, name, scoring, ndcg, 0.5, nbytes, 100 / nbytes, retention, **fields)

    records = [
        rec("a", "concat", "float", 0.5, 100, 1.0),
        rec("b", "concat", "float", 0.4, 100, 1.0),
        rec("a", "cecq-8d-2b", "asymmetric", 0.45, 2, 0.9, bits=2, method="cecq", quantization="scalar"),
        rec("b", "cecq-8d-2b", "asymmetric", 0.4, 2, 1.0),
        rec("a", "pca-8d-2b", "asymmetric", 0.5, 2, 1.0),
        rec("b", "pca-8d-2b", "asymmetric", 0.2, 2, 0.5),
        rec("a", "only-a-4d-4b", "asymmetric", 0.5, 2, 1.0),
        rec("a", "cecq-16d-2b", "asymmetric", 0.5, 4, 1.0),
        rec("b", "cecq-16d-2b", "asymmetric", 0.5, 4, 1.0),
    ]
    rows = summarise(records, [2])
    assert [(r["name"], r["budget"]) for r in rows] == [("concat", None), ("cecq-8d-2b", 2), ("pca-8d-2b", 2)]
    assert rows[1]["mean_retention"] == pytest.approx(0.95) and rows[1]["min_retention"] == pytest.approx(0.9)
    assert series_of(records[2]) == "cecq 2b asymmetric" and series_of(records[0]) is None
    assert (
        series_of(
            rec(
                "a",
                "cecq[ads]-48B-product",
                "symmetric",
                0.5,
                48,
                1.0,
                method="cecq[ads]",
                quantization="product",
                budget_bytes=48,
            )
        )
        == "cecq[ads] product symmetric"
    )
    assert (
        series_of(
            rec("a", "pca-48B-mixed", "asymmetric", 0.5, 48, 1.0, method="pca", quantization="mixed", budget_bytes=48)
        )
        == "pca mixed asymmetric"
    )


@pytest.fixture(scope="module")
def second_beir(tmp_path_factory):
    corpus, queries, qrels = synthetic_beir_parts(docs_per_topic=8, seed=1)
    return write_beir(tmp_path_factory.mktemp("beir2") / "tinybeir2", corpus, queries, qrels)


def test_bench_quality_writes_json_markdown_and_plots(tiny_beir, second_beir, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    args = [
        "bench",
        "quality",
        str(tiny_beir),
        str(second_beir),
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--model",
        "lexical",
        "--bytes",
        "2,4",
        "--bits",
        "1,2",
        "--out-dim",
        "16",
        "--epochs",
        "2",
        "--strategies",
        "sequential,ads,xbm",
        "--weights",
        "spread",
    ]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "### 4 bytes a document" in stdout and "### References (float)" in stdout
    report = json.loads((out / "quality.json").read_text())
    assert [t["name"] for t in report["tasks"]] == ["tinybeir", "tinybeir2"]
    assert report["pairs"] == [[8, 2], [16, 1], [16, 2]]
    names = {(r["name"], r["task"]) for r in report["records"]}
    for task in ("tinybeir", "tinybeir2"):
        for name in (
            "concat",
            "concat[equal]",
            "cecq-16d-1b",
            "cecq-4B-mixed",
            "cecq[ads]-2B-mixed",
            "pca-4B-mixed",
            "cecq-4B-product",
            "cecq[xbm]-2B-product",
            "pca-4B-product",
            "cecq[sequential]-16d-2b",
            "cecq[ads]-16d-1b",
            "cecq[xbm]-8d-2b",
            "pca-16d-2b",
            "mrl-8d-2b",
            f"pq-{tiny_model_dir}-1b",
            f"st-binary-{tiny_model_dir}+rescore",
        ):
            assert (name, task) in names, name
    # The summary compares methods at equal bytes, over both tasks.
    at4 = [r for r in report["summary"] if r["budget"] == 4]
    assert {r["name"] for r in at4} >= {
        "cecq-16d-2b",
        "cecq-4B-mixed",
        "cecq-4B-product",
        "pca-16d-2b",
        f"pq-{tiny_model_dir}-1b",
        f"st-binary-{tiny_model_dir}+rescore",
    }
    assert all(set(r["retention"]) == {"tinybeir", "tinybeir2"} for r in at4)
    markdown = (out / "quality.md").read_text()
    assert "| cecq[sequential]-16d-2b | asymmetric | 4 |" in markdown
    for task in ("tinybeir", "tinybeir2"):
        assert (out / f"retention-{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "embeddings").glob("*.npy"))  # cached for the next run


def test_bench_quality_fits_on_another_corpus_and_says_so(tiny_beir, second_beir, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "quality", str(tiny_beir), "--out", str(out), "--model", "lexical", "--bytes", "2"]
    argv += ["--bits", "1", "--out-dim", "16", "--epochs", "1", "--strategies", "mrl", "--no-baselines"]
    assert main([*argv, "--fit-corpus", str(second_beir)]) == 0
    report = json.loads((out / "quality.json").read_text())
    assert (report["fit_corpus"], report["fit_fraction"]) == (str(second_beir), 1.0)
    assert report["records"] and {r["fitted_on"] for r in report["records"]} == {"tinybeir2"}
    assert all(r["retention_out"] is None for r in report["records"])  # no unseen half: all of it is unseen
    assert {r["name"] for r in report["summary"]} >= {"model:lexical", "cecq-16d-1b", "cecq-2B-product"}
    assert all(r["fitted_on"] == {"tinybeir": "tinybeir2"} for r in report["summary"])
    markdown = (out / "quality.md").read_text()
    assert markdown.startswith("Fitted on the documents of tinybeir2, not on each task's own")
    assert markdown == capsys.readouterr().out.rstrip("\n") + "\n"
    # without it, the bench's own default: half of each task's documents, and no such line
    assert main([*argv, "--out", str(tmp_path / "own")]) == 0
    own = json.loads((tmp_path / "own" / "quality.json").read_text())
    assert (own["fit_corpus"], own["fit_fraction"]) == (None, 0.5)
    assert {r["fitted_on"] for r in own["records"]} == {"tinybeir"}
    assert not (tmp_path / "own" / "quality.md").read_text().startswith("Fitted on")
    # a share of the task and another corpus at once is refused before anything runs
    capsys.readouterr()
    both = [*argv, "--out", str(tmp_path / "both"), "--fit-corpus", str(second_beir), "--fit-fraction", "0.5"]
    assert main(both) == 2
    assert "mutually exclusive" in capsys.readouterr().err and not (tmp_path / "both").exists()


def test_eval_strategy_flags(tiny_beir, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                str(tiny_beir),
                "--model",
                str(tiny_model_dir),
                "--dims",
                "8",
                "--bits",
                "2",
                "--epochs",
                "1",
                "--strategy",
                "sequential",
                "--ablate",
                "ads,neighbours",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    names = {r["name"] for r in json.loads(out.read_text())}
    assert {"cecq-8d-2b", "cecq[ads]-8d-2b", "cecq[neighbours]-8d-2b", "decoder[ads]-8"} <= names
    assert main(["eval", str(tiny_beir), "--ablate", "magic"]) == 2
    assert "unknown strategy 'magic'" in capsys.readouterr().err
