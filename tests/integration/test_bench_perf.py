"""``cecq bench perf`` on tiny sizes, and the mechanisms it measures: length-bucketed
encoding, vectorised quantization and packing, streamed search over a published catalog.
No timing is asserted: only structure and that every figure is a positive finite number."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cecq.bench.perf_compute import build_store, numpy_scan, random_codes
from cecq.catalog import search_published
from cecq.cli import main
from cecq.quantization import Quantizer, pack_codes, unpack_codes
from cecq.search import search_codes


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_perf_writes_figures_and_ratios(tmp_path: Path, tiny_model_dir: Path, tiny_beir: Path, capsys):
    out = tmp_path / "perf.json"
    rc = main(
        [
            "bench",
            "perf",
            "--corpus",
            str(tiny_beir),
            "--model",
            str(tiny_model_dir),
            "--docs",
            "24",
            "--repeats",
            "1",
            "--compress-rows",
            "500",
            "--search-rows",
            "3000",
            "--search-shard-rows",
            "1000",
            "--search-queries",
            "2",
            "--search-index-sizes",
            "2500",
            "--search-batches",
            "1,3",
            "--only",
            "embed,compress,search,scaleout",
            "--scaleout-node-cpus",
            "4096",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ]
    )
    assert rc == 0
    import ray

    assert not ray.is_initialized(), "bench perf left the Ray it started running"
    result = json.loads(out.read_text())
    assert {"environment", "config", "figures", "ratios", "details", "scale_out"} <= set(result)
    assert "gpu" not in result  # measured only where --only names it
    variants = {(f["measurement"], f["variant"]) for f in result["figures"]}
    assert ("embed:natural", "cecq-pipeline") in variants and ("embed:long-tail", "bare-encode-loop") in variants
    assert ("compress", "bare-matmul") in variants and ("search", "cecq-duckdb") in variants
    for f in result["figures"]:
        assert len(f["seconds"]) == 1 and all(_finite(s) for s in f["seconds"]) and _finite(f["rate"]), f
    for r in result["ratios"]:
        assert _finite(r["ratio"]) and r["met"] in (True, False, None), r
    targets = {(r["measurement"], r["numerator"], r["denominator"]): r["target"] for r in result["ratios"]}
    assert targets[("embed:natural", "cecq-pipeline", "bare-encode-loop")] == 1.0
    # the long tail leads with one encode call, which sorts by length itself
    assert targets[("embed:long-tail", "cecq-pipeline", "bare-encode-call")] == 1.0
    assert targets[("embed:long-tail", "cecq-pipeline", "bare-encode-loop")] is None
    # compression against the matmul of the same prefix; the full width only beside it
    assert targets[("compress", "cecq-compress", "bare-prefix-matmul")] == 0.5
    assert targets[("compress", "cecq-compress", "bare-matmul")] is None
    assert targets[("search", "cecq-duckdb", "numpy-scan")] == 0.5
    # every search variant found the same documents as the NumPy scan
    assert result["details"]["search"]["topk_overlap_with_numpy"] == {"cecq-search-codes": 1.0, "cecq-duckdb": 1.0}
    # the FAISS comparison: product codes, flat and IVF indexes beside the NumPy and DuckDB scans
    assert ("search 2,500 (1 thread, 1 a batch)", "faiss-ivf-pq") in variants
    assert ("search 2,500 (1 thread, 3 a batch)", "faiss-flat-pq") in variants
    size = result["details"]["search_index"]["sizes"]["2500"]
    # each index was built in its own process, whose peak memory is reported
    assert size["build_flat_peak_rss_bytes"] > 50e6 and size["build_ivf_peak_rss_bytes"] > 50e6
    assert len(size["threads"]) == 2 * len({1, os.cpu_count() or 1})
    for t in size["threads"].values():
        assert t["recall_at_k_flat_vs_numpy"] == 1.0 and t["recall_at_k_duckdb_vs_numpy"] == 1.0
        assert 0.5 <= t["recall_at_k_ivf_vs_flat"] <= 1.0
    # nodes larger than half the machine: refused with the reason, never measured as contention
    assert result["scale_out"]["measured"] is False and "would share them" in result["scale_out"]["reason"]
    table = capsys.readouterr().out
    assert table.startswith("| measurement |") and "cecq-pipeline" in table


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS from /proc")
def test_bench_perf_memory_reports_every_stage(tmp_path: Path, tiny_beir: Path):
    out = tmp_path / "perf.json"
    rc = main(
        [
            "bench",
            "perf",
            "--only",
            "memory",
            "--corpus",
            str(tiny_beir),
            "--memory-docs",
            "60",
            "--memory-factor",
            "2",
            "--memory-shard-rows",
            "30",
            "--memory-sample-rows",
            "40",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    stages = json.loads(out.read_text())["memory"]["stages"]
    assert [s["stage"] for s in stages] == ["imports", "shard", "fit-lexical", "embed", "train", "compress", "search"]
    for s in stages:
        assert _finite(s["peak_small_mb"]) and _finite(s["peak_large_mb"]) and _finite(s["growth"]), s


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [0, 2])
def test_bench_perf_times_several_models_on_one_pool_and_one_after_another(
    tmp_path: Path, tiny_model_dir: Path, tiny_beir: Path, nodes: int
):
    """On the local Ray, and on a cluster of two nodes started for it (one pool over both)."""
    out = tmp_path / "perf.json"
    argv = ["bench", "perf", "--only", "models", "--corpus", str(tiny_beir), "--models", f"{tiny_model_dir},lexical"]
    argv += ["--models-docs", "30", "--models-shards", "3", "--repeats", "1", "--json", str(out)]
    argv += ["--models-nodes", str(nodes), "--scaleout-node-cpus", "1"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    variants = {f["variant"] for f in result["figures"] if f["measurement"] == "embed-models"}
    assert variants == {"one-pool", "model-after-model", "bare-loops"}
    assert all(_finite(f["median_s"]) and f["items"] == 60 for f in result["figures"])
    pairs = {(r["numerator"], r["denominator"]) for r in result["ratios"]}
    assert ("one-pool", "model-after-model") in pairs and ("one-pool", "bare-loops") in pairs
    details = result["details"]["embed-models"]
    assert details["identical_outputs"] is True and details["shards"] == 3
    if nodes:
        assert (details["nodes"], details["one_pool_nodes_used"]) == (2, [2])


def test_bare_process_encodes_with_every_model_and_times_each(tmp_path: Path, tiny_model_dir: Path):
    from cecq.bench.perf_embed import write_jsonl

    url = write_jsonl(tmp_path / "c.jsonl", [f"document {i} about topic {i % 3}" for i in range(12)])
    cmd = [sys.executable, "-m", "cecq.bench.perf_process", "bare", url, "4", "auto", str(tiny_model_dir), "lexical"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(runs) == {str(tiny_model_dir), "lexical"}
    assert _finite(runs[str(tiny_model_dir)]["load_s"]) and all(_finite(r["encode_s"]) for r in runs.values())
    assert all(set(r) == {"load_s", "encode_s"} for r in runs.values())
    # in another precision the neural model also encodes in it; the fitted model has none
    cmd[6] = "bf16"
    runs = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    assert _finite(runs[str(tiny_model_dir)]["encode_bf16_s"]) and "encode_bf16_s" not in runs["lexical"]
    usage = subprocess.run([sys.executable, "-m", "cecq.bench.perf_process", "bare"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr


@pytest.mark.slow
def test_bench_perf_times_the_whole_embed_corpus_process_against_a_bare_one(
    tmp_path: Path, tiny_model_dir: Path, tiny_beir: Path
):
    out = tmp_path / "perf.json"
    argv = ["bench", "perf", "--only", "process", "--corpus", str(tiny_beir), "--process-models", str(tiny_model_dir)]
    argv += ["--process-docs", "20", "--repeats", "1", "--workdir", str(tmp_path / "w"), "--json", str(out)]
    argv += ["--process-precision", "bf16"]  # through the CLI, the flow and the actors
    assert main(argv) == 0
    result = json.loads(out.read_text())
    figs = {f["variant"]: f for f in result["figures"]}
    assert set(figs) == {"cecq-embed-corpus", "bare-encode", "bare-process", "bare-encode-bf16"}
    (store,) = (tmp_path / "w").glob("process-*@bf16-0")
    assert [p.name.endswith("-bf16") for p in (store / "embeddings").iterdir()] == [True]
    assert all(_finite(f["median_s"]) and f["items"] == 20 for f in figs.values())
    # the bare process's encode is part of its wall time; the whole run is more than its own steps
    assert figs["bare-encode"]["median_s"] < figs["bare-process"]["median_s"]
    (target,) = [r for r in result["ratios"] if r["denominator"] == "bare-encode"]
    assert target["numerator"] == "cecq-embed-corpus" and target["target"] == 0.95
    details = result["details"][f"process:{tiny_model_dir}@bf16"]
    (steps,) = details["cecq_steps_s"]
    assert {"embed", "compress"} <= set(steps), steps
    assert details["cecq_outside_steps_s"][0] > 0


def test_bench_perf_rejects_unknown_measurement(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "perf", "--only", "embed,gpu-magic"])
    assert "--only" in capsys.readouterr().err


def test_length_bucketed_encode_keeps_order_and_values(tiny_model_dir: Path):
    from cecq.config import ModelSpec
    from cecq.encoders import SentenceTransformerEncoder

    enc = SentenceTransformerEncoder(ModelSpec(str(tiny_model_dir), batch_size=4))
    words = ["star", "planet", "galaxy", "orbit", "telescope", "comet", "nebula", "moon", "solar", "gravity"]
    texts = [" ".join(words[: 1 + (i * 7) % 10] * (1 + i % 3)) for i in range(23)] + [""]
    got = enc.encode(texts)
    # reference: every text alone (no padding at all), normalised
    ref = np.stack([enc.model.encode([t], convert_to_numpy=True)[0] for t in texts[:-1]])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(got[:-1], ref, atol=1e-5)
    assert not got[-1].any()
    lengths = enc.token_lengths(texts)
    assert lengths.shape == (24,) and lengths[-1] == 2  # [CLS] [SEP]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("dim", [1, 7, 13, 64])
def test_vectorised_quantizer_matches_the_per_dimension_definition(bits: int, dim: int):
    rng = np.random.default_rng(bits * 100 + dim)
    x = rng.standard_normal((3000, dim)).astype(np.float32)
    q = Quantizer.fit(np.round(x * 4) / 4, bits)  # rounded: tied thresholds must still count right
    codes = q.encode(x)
    ref = np.stack([np.searchsorted(q.thresholds[j], x[:, j], side="right") for j in range(dim)], axis=1)
    np.testing.assert_array_equal(codes, ref)
    packed = pack_codes(codes, bits)
    planes = (codes[:, :, None] >> np.arange(bits - 1, -1, -1)) & 1  # the layout: codes in order, MSB first
    np.testing.assert_array_equal(packed, np.packbits(planes.reshape(len(codes), -1).astype(np.uint8), axis=1))
    np.testing.assert_array_equal(unpack_codes(packed, dim, bits), codes)
    np.testing.assert_array_equal(q.dequantize_packed(packed), q.dequantize(codes))


def test_search_published_streams_the_catalog_and_agrees_with_search_codes(tmp_path: Path):
    packed, quantizer = random_codes(2500, 32, 2)
    store = build_store(tmp_path / "store", packed, quantizer, shard_rows=700)
    q = np.random.default_rng(3).standard_normal((3, 32)).astype(np.float32)
    s_ref, i_ref = search_codes(q, packed, quantizer, k=7)
    hits = search_published(store, q, k=7, batch_rows=256)  # several record batches a shard
    assert [[h["id"] for h in row] for row in hits] == [[f"d{i}" for i in row] for row in i_ref]
    np.testing.assert_allclose([[h["score"] for h in row] for row in hits], s_ref, atol=1e-5)
    assert hits[0][0]["text"] == f"text of {hits[0][0]['id']}" and hits[0][0]["rank"] == 1
    _, i_np = numpy_scan(q, packed, quantizer.centroids, 2, 7)
    assert all(set(a) == set(b) for a, b in zip(i_np, i_ref))


@pytest.mark.slow
def test_bench_perf_scale_out_runs_one_node_then_two(tmp_path: Path, tiny_model_dir: Path, tiny_beir: Path):
    out = tmp_path / "perf.json"
    rc = main(
        [
            "bench",
            "perf",
            "--corpus",
            str(tiny_beir),
            "--model",
            str(tiny_model_dir),
            "--only",
            "scaleout",
            "--scaleout-docs",
            "40",
            "--scaleout-shards",
            "4",
            "--scaleout-node-cpus",
            "1",
            "--repeats",
            "1",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ]
    )
    assert rc == 0
    import ray

    assert not ray.is_initialized()
    result = json.loads(out.read_text())
    assert result["scale_out"]["measured"] is True
    # the two-node run really spread over both nodes, the one-node run did not
    assert result["scale_out"]["nodes_used"] == {"one-node": [1], "two-nodes": [2]}
    (r,) = result["ratios"]
    assert (r["measurement"], r["numerator"], r["denominator"], r["target"]) == (
        "scaleout",
        "two-nodes",
        "one-node",
        1.7,
    )
    assert _finite(r["ratio"])
