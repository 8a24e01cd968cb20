"""``cecq bench perf --only gpu``: the useful-FLOP count, the refusal without a GPU, and the
whole measurement run on the CPU (the same code as on a GPU) with a tiny model. No timing is
asserted: only structure, and that cecq's vectors in each precision agree with fp32."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cecq.bench import perf_gpu
from cecq.cli import main


def test_encoder_flops_by_hand():
    # 2 layers, width 4, feed-forward 16; documents of 1 and 2 tokens:
    # a layer is n (8*16 + 4*4*16) + 4 n^2 * 4 = 384 n + 16 n^2, so 400 and 832
    assert perf_gpu.encoder_flops(2, 4, 16, np.array([1, 2])) == 2 * (400 + 832)


def test_minilm_flops_per_token_match_its_parameter_count():
    # Short documents: about 2 FLOPs per weight of the encoder layers per token (MiniLM-L6:
    # 6 x (4 x 384^2 + 2 x 384 x 1536) = 10.6M weights in its matrices).
    per_token = perf_gpu.encoder_flops(6, 384, 1536, np.array([1])) - 6 * 4 * 384
    assert per_token == 2 * 6 * (4 * 384**2 + 2 * 384 * 1536)


def test_a_missing_gpu_is_reported_not_measured(monkeypatch, tmp_path: Path, tiny_beir: Path, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "perf.json"
    assert main(["bench", "perf", "--only", "gpu", "--corpus", str(tiny_beir), "--json", str(out)]) == 0
    gpu = json.loads(out.read_text())["gpu"]
    assert gpu["measured"] is False and "no CUDA device" in gpu["reason"]
    assert "gpu: not measured" in capsys.readouterr().out
    assert "--gpu-device" in perf_gpu.unavailable("tpu")


@pytest.mark.parametrize(("flag", "value"), [("--gpu-precisions", "fp16,fp8"), ("--gpu-batch-sizes", "64,0")])
def test_bad_lists_are_refused(flag: str, value: str, tiny_beir: Path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "perf", "--only", "gpu", "--corpus", str(tiny_beir), flag, value])
    assert e.value.code == 2 and value in capsys.readouterr().err


# The device machine's Python lacks these (it has torch, sentence-transformers, pyarrow and
# fsspec; the device script carries DuckDB): the measurement must run without them.
NOT_ON_THE_DEVICE = ("ray", "prefect", "faiss", "mteb", "s3fs", "boto3", "moto")
BLOCKER = f"""
import sys
for name in {NOT_ON_THE_DEVICE!r}:
    sys.modules[name] = None  # as if not installed: importing it raises, find_spec says None
from cecq.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_measurement_runs_on_the_cpu_without_the_pipelines_services(
    tmp_path: Path, tiny_model_dir: Path, tiny_beir: Path
):
    out = tmp_path / "perf.json"
    args = ["bench", "perf", "--only", "gpu", "--gpu-device", "cpu", "--corpus", str(tiny_beir)]
    args += ["--model", str(tiny_model_dir), "--gpu-docs", "20", "--gpu-batch-sizes", "4,16"]
    args += ["--gpu-precisions", "fp32,bf16", "--repeats", "1", "--json", str(out)]
    run = subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["gpu"]["measured"] is True and result["gpu"]["device"] == "cpu"
    figures = {f["variant"]: f for f in result["figures"] if f["measurement"] == perf_gpu.MEASUREMENT}
    sides = ("bare-fp16-loop", "bare-fp16-call", "cecq-fp32", "cecq-bf16")
    assert set(figures) == {f"{side}-bs{bs}" for side in sides for bs in (4, 16)}
    for name, f in figures.items():
        e = f["extra"]
        assert f["items"] == 20 and len(f["seconds"]) == 1 and math.isfinite(f["rate"]) and f["rate"] > 0
        assert e["batch_size"] == int(name.rsplit("bs", 1)[1]) and e["tflops"] > 0 and e["fraction_of_matmul_peak"] > 0
        assert e["peak_memory_bytes"] is None  # measured on CUDA only
        assert e["min_cosine_to_fp32"] > 0.99, (name, e)
    assert figures["cecq-fp32-bs4"]["extra"]["min_cosine_to_fp32"] > 0.99999
    ratios = [(r["numerator"], r["denominator"], r["target"]) for r in result["ratios"]]
    gpu = result["gpu"]
    # first: each side at its fastest; then every precision and batch against the bare loop and call
    assert ratios[0] == (gpu["best_cecq"], gpu["best_bare_loop"], 1.0)
    assert ("cecq-bf16-bs16", "bare-fp16-loop-bs16", 1.0) in ratios
    assert ("cecq-bf16-bs16", "bare-fp16-call-bs16", None) in ratios
    assert gpu["useful_tokens"] > 20 and gpu["useful_tflop_per_pass"] > 0
    assert set(gpu["matmul_peak_tflops"]) == {"fp16", "fp32", "bf16"}
    assert "| cecq-bf16-bs16 |" in run.stdout and "min cosine to fp32" in run.stdout
