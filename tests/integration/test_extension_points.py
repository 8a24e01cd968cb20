"""Adding a quantizer or an encoder kind is one module plus one registry line: toy kinds,
registered from outside cecq, run end to end through ``cecq eval`` and ``cecq embed-corpus``
(Prefect, Ray workers, the catalog, search), with no other change to cecq."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cecq.config import PipelineConfig
from cecq.errors import ConfigError
from cecq.quantization import fit_quantizer, load_quantizer, quantizer_kinds, unregister_quantizer
from tests.helpers.corpora import write_corpus
from tests.helpers.paths import REPO_ROOT

PLUGINS = "tests.helpers.toy_quantizer,tests.helpers.toy_encoder"


def cli(*args: str, plugins: str | None = PLUGINS, cwd=REPO_ROOT) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("CECQ_PLUGINS", None)
    if plugins:
        env["CECQ_PLUGINS"] = plugins
    return subprocess.run(
        [sys.executable, "-m", "cecq.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_a_kind_registered_in_process_is_everywhere_the_registry_is(tmp_path):
    from tests.helpers.toy_quantizer import ToyQuantizer  # registers "toy" on import

    try:
        assert "toy" in quantizer_kinds("budget")
        config = PipelineConfig(corpus="c", store="s", dims=16, budget_bytes=2, quantization="toy")
        assert config.quantizer is ToyQuantizer and config.code_bits is None
        with pytest.raises(ConfigError, match=r"toy codes need 1\.\.2 bytes"):
            PipelineConfig(corpus="c", store="s", dims=16, budget_bytes=3, quantization="toy")
        x = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
        q = fit_quantizer("toy", x, budget_bytes=2)
        q.save(tmp_path / "q.parquet")
        back = load_quantizer(tmp_path / "q.parquet")
        assert isinstance(back, ToyQuantizer) and np.array_equal(back.quantize(x), q.quantize(x))
    finally:
        unregister_quantizer("toy")
    assert "toy" not in quantizer_kinds()
    with pytest.raises(ConfigError, match="unknown quantization 'toy'"):
        PipelineConfig(corpus="c", store="s", dims=16, budget_bytes=2, quantization="toy")


@pytest.mark.slow
def test_toy_kinds_run_through_cecq_eval(tiny_beir, tmp_path):
    out = tmp_path / "eval.json"
    done = cli(
        "eval",
        str(tiny_beir),
        "--model",
        "toy-hash",
        "--model",
        "lexical",
        "--dims",
        "16",
        "--bits",
        "2",
        "--budget",
        "1",
        "--epochs",
        "2",
        "--json",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = {(r["name"], r["scoring"]): r for r in json.loads(out.read_text())}
    assert ("model:toy-hash", "float") in records
    for scoring in ("symmetric", "asymmetric"):
        toy = records[("cecq-1B-toy", scoring)]
        assert toy["bytes_per_doc"] == 1 and toy["quantization"] == "toy" and 0 < toy["ndcg_at_10"] <= 1


@pytest.mark.slow
def test_toy_kinds_run_through_embed_corpus_and_search(tmp_path):
    write_corpus(tmp_path / "docs.jsonl", n=40)
    store = tmp_path / "store"
    done = cli(
        "embed-corpus",
        str(tmp_path / "docs.jsonl"),
        "--store",
        str(store),
        "--model",
        "toy-hash",
        "--model",
        "lexical",
        "--shard-rows",
        "20",
        "--out-dim",
        "32",
        "--dims",
        "16",
        "--budget-bytes",
        "2",
        "--quantization",
        "toy",
        "--max-epochs",
        "2",
        "--json",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["catalog_version"] == 1
    done = cli(
        "sql",
        "--store",
        str(store),
        "--json",
        "SELECT r.quantization, r.budget_bytes, count(*) AS n, min(octet_length(d.code)) AS width "
        "FROM documents d, runs r GROUP BY ALL",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"quantization": "toy", "budget_bytes": 2, "n": 40, "width": 2}
    done = cli("search", "--store", str(store), "star planet galaxy", "-k", "3", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(done.stdout.splitlines()) == 3
    # Without the plugin, reading the store fails with a message naming the missing kind and the cure.
    done = cli("search", "--store", str(store), "star", plugins="tests.helpers.toy_encoder")
    assert done.returncode == 2 and "unknown quantization 'toy'" in done.stderr and "CECQ_PLUGINS" in done.stderr
