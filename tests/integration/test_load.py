"""Load: 200,000 short documents through ``cecq embed-corpus`` with a tiny model. Every
document is published exactly once, and the peak memory of every process of the job
(the flow, Prefect's API, Ray's workers) stays within 30% of a run 10x smaller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.models import TOPICS

pytestmark = pytest.mark.slow

CECQ = str(Path(sys.executable).with_name("cecq"))


def write_short_docs(path: Path, n: int) -> None:
    words = [w for ws in TOPICS.values() for w in ws]
    with path.open("w") as f:
        for i in range(n):
            f.write(
                json.dumps({"_id": f"d{i}", "text": " ".join(words[(i * 7 + j * 13) % len(words)] for j in range(6))})
                + "\n"
            )


def session_rss_mb(sid: int) -> dict[int, float]:
    """Resident memory (MB) of every process in session ``sid``, from /proc."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == sid:  # field 6 of stat: the session id
                out[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20  # field 24: rss pages
        except (OSError, ValueError, IndexError):
            continue
    return out


def run_job(tmp: Path, model: Path, n: int) -> dict:
    corpus, store = tmp / f"docs{n}.jsonl", tmp / f"store{n}"
    write_short_docs(corpus, n)
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "PREFECT_HOME": str(tmp / "prefect-home"),
    }
    for key in ("RAY_ADDRESS", "PREFECT_API_URL"):
        env.pop(key, None)
    cmd = [
        CECQ,
        "embed-corpus",
        str(corpus),
        "--store",
        str(store),
        "--model",
        str(model),
        "--shard-rows",
        "10000",
        "--dims",
        "16",
        "--bits",
        "2",
        "--out-dim",
        "32",
        "--max-epochs",
        "1",
        "--max-train-rows",
        "20000",
        "--batch-size",
        "256",
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    peak_process, peak_total, stop = 0.0, 0.0, threading.Event()

    def sample() -> None:
        nonlocal peak_process, peak_total
        while not stop.is_set():
            rss = session_rss_mb(proc.pid)
            if rss:
                peak_process, peak_total = max(peak_process, max(rss.values())), max(peak_total, sum(rss.values()))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        _stdout, stderr = proc.communicate(timeout=1500)
    finally:
        stop.set()
        sampler.join()
    assert proc.returncode == 0, stderr[-3000:]
    from cecq.catalog import connect
    from cecq.storage import Store

    count, distinct = (
        connect(Store(str(store))).execute("SELECT count(*), count(DISTINCT id) FROM documents").fetchone()
    )
    return {
        "documents": n,
        "published": count,
        "distinct": distinct,
        "seconds": round(time.monotonic() - started, 1),
        "peak_process_mb": round(peak_process),
        "peak_total_mb": round(peak_total),
    }


def test_200k_documents_exactly_once_with_bounded_memory(tmp_path, tiny_model_dir):
    small = run_job(tmp_path, tiny_model_dir, 20_000)
    large = run_job(tmp_path, tiny_model_dir, 200_000)
    print("load test:", json.dumps(small), json.dumps(large))
    assert (large["published"], large["distinct"]) == (200_000, 200_000)
    assert (small["published"], small["distinct"]) == (20_000, 20_000)
    assert large["peak_process_mb"] < 1.3 * small["peak_process_mb"], (small, large)
