"""The ``cecq eval`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cecq.cli import build_parser, main
from tests.helpers.paths import REPO_ROOT


def test_eval_runs_end_to_end_and_writes_json(tiny_beir, tiny_model_dir, tmp_path):
    out = tmp_path / "out.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CECQ_PROGRESS="")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cecq.cli",
            "eval",
            str(tiny_beir),
            "--model",
            str(tiny_model_dir),
            "--model",
            "lexical",
            "--dims",
            "8",
            "--bits",
            "1",
            "--epochs",
            "2",
            "--json",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "61 documents, 10 queries" in proc.stderr and "1 empty documents" in proc.stderr
    assert "| concat |" in proc.stdout and "cecq-8d-1b" in proc.stdout
    records = json.loads(out.read_text())
    assert {(r["name"], r["scoring"]) for r in records} == {
        (f"model:{tiny_model_dir}", "float"),
        ("model:lexical", "float"),
        ("concat", "float"),
        ("concat[equal]", "float"),
        ("concat[spread]", "float"),
        ("decoder-8", "float"),
        ("cecq-8d-1b", "symmetric"),
        ("cecq-8d-1b", "asymmetric"),
    }
    for r in records:
        assert {"name", "ndcg_at_10", "retention", "bytes_per_doc", "compression", "scoring"} <= set(r)
        assert 0.0 <= r["ndcg_at_10"] <= 1.0
    concat = next(r for r in records if r["name"] == "concat")
    assert concat["retention"] == 1.0
    code = next(r for r in records if r["name"] == "cecq-8d-1b")
    assert code["bytes_per_doc"] == 1 and code["compression"] == concat["bytes_per_doc"]


def test_eval_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("beir_dir", "--model", "--dims", "--bits", "--scoring", "--epochs", "--json", "--rescore"):
        assert option in text


def test_eval_parses_options():
    args = build_parser().parse_args(
        [
            "eval",
            "some/dir",
            "--model",
            "a",
            "--model",
            "b",
            "--dims",
            "64,128",
            "--bits",
            "2",
            "--scoring",
            "asymmetric",
            "--decoder",
            "mlp",
        ]
    )
    assert args.models == ["a", "b"] and args.dims == (64, 128) and args.bits == (2,)
    assert args.scoring == "asymmetric" and args.decoder == "mlp"


def test_eval_nonexistent_beir_dir_exits_2(tmp_path, capsys):
    missing = tmp_path / "no-such-beir"
    assert main(["eval", str(missing), "--model", "lexical"]) == 2
    err = capsys.readouterr().err
    assert "cecq: error" in err and str(missing) in err


def test_eval_rejects_bad_options(tiny_beir, capsys):
    assert main(["eval", str(tiny_beir), "--model", "lexical", "--bits", "3"]) == 2
    assert "bits" in capsys.readouterr().err
    assert main(["eval", str(tiny_beir), "--model", "lexical", "--model", "lexical"]) == 2
    assert "twice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(tiny_beir), "--dims", "a,b"])
    assert exit_info.value.code == 2


def test_eval_missing_model_path_exits_2(tiny_beir, capsys):
    assert main(["eval", str(tiny_beir), "--model", "/nonexistent/model", "--dims", "8", "--bits", "1"]) == 2
    assert "/nonexistent/model" in capsys.readouterr().err


def test_embed_corpus_defaults_to_the_compression_target_and_refuses_a_bad_one_at_once(capsys):
    from cecq.cli import build_parser

    args = build_parser().parse_args(["embed-corpus", "c.jsonl", "--store", "s"])
    assert args.compression == 48.0
    assert (args.dims, args.bits, args.budget_bytes, args.quantization, args.out_dim) == (None,) * 5
    assert main(["embed-corpus", "c.jsonl", "--store", "s", "--compression", "1"]) == 2
    assert "compression must be a ratio above 1" in capsys.readouterr().err
    assert main(["embed-corpus", "c.jsonl", "--store", "s", "--dims", "800", "--out-dim", "768"]) == 2
    assert "dims must be in 1..768" in capsys.readouterr().err
