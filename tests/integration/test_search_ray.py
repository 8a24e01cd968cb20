"""Shard-parallel search on a local two-node Ray cluster (a head and a worker started with
`ray start`, as in test_multinode): `cecq search --ray-address` scans the codes shards on
the cluster's actors and its hits equal the single-process exhaustive scan."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers.corpora import write_corpus
from tests.integration.test_multinode import CECQ, two_nodes  # noqa: F401 - the two-node cluster fixture

pytestmark = pytest.mark.slow


def search(env, store, *flags) -> tuple[list[dict], str]:
    out = subprocess.run(
        [CECQ, "search", "orbit galaxy comet", "--store", str(store), "-k", "15", "--json", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()], out.stderr


def test_shard_parallel_search_equals_the_single_process_scan(tmp_path, two_nodes):  # noqa: F811
    address, env, _ = two_nodes
    corpus, store = tmp_path / "docs.jsonl", tmp_path / "store"
    write_corpus(corpus, n=120)
    common = ["--model", "lexical", "--shard-rows", "20", "--dims", "16", "--out-dim", "32", "--max-epochs", "2"]
    out = subprocess.run(
        [CECQ, "embed-corpus", str(corpus), "--store", str(store), *common, "--budget-bytes", "4",
         "--quantization", "product", "--ray-address", address],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    single, said = search(env, store, "--exact")
    assert "exhaustive scan" in said
    parallel, said = search(env, store, "--ray-address", address)
    assert "shard-parallel on Ray (2 node(s))" in said
    assert parallel == single and len(single) == 15
