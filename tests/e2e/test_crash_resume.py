"""Crash and resume: ``cecq embed-corpus`` is SIGKILLed (with its whole process group: the
Prefect API it started, Ray's raylet and workers) at every kill point of a run
(:mod:`cecq.killpoints`: the run marks the point and waits there, so each kill provably
happens there), rerun, and must end with exactly-once, byte-identical output to an
uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cecq.killpoints import ENV, KILL_POINTS
from tests.helpers.corpora import write_corpus

pytestmark = pytest.mark.slow

CECQ = str(Path(sys.executable).with_name("cecq"))
DOCS, SHARD_ROWS = 120, 15
SHARDS = DOCS // SHARD_ROWS


def cecq_command(corpus: Path, store: Path, model: Path) -> list[str]:
    return [
        CECQ,
        "embed-corpus",
        str(corpus),
        "--store",
        str(store),
        "--model",
        str(model),
        "--model",
        "lexical",
        "--shard-rows",
        str(SHARD_ROWS),
        "--dims",
        "16",
        "--bits",
        "2",
        "--max-epochs",
        "3",
    ]


def env_for(tmp: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "PREFECT_HOME": str(tmp / "prefect-home"),
    }
    for key in ("RAY_ADDRESS", "PREFECT_API_URL"):
        env.pop(key, None)
    return env


def committed(store: Path, pattern: str) -> list[Path]:
    return sorted(p for p in store.glob(pattern) if ".tmp-" not in p.name)


def run_until(
    cmd: list[str], env: dict[str, str], killed_when: Callable[[], bool] | None, timeout: float = 420
) -> bool:
    """Run ``cmd``; SIGKILL its process group as soon as ``killed_when()`` holds.
    Returns True when it was killed, False when it finished (successfully) first."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if killed_when is not None and killed_when():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd} did not finish in {timeout} s")
            time.sleep(0.02)
        out = proc.stdout.read().decode(errors="replace")
        assert proc.returncode == 0, out[-4000:]
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        try:  # stragglers of the group (Ray workers) must not outlive the test
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def published_ids(store: Path) -> list[str] | None:
    from cecq.catalog import NoCatalogError, connect
    from cecq.storage import Store

    try:
        con = connect(Store(str(store)))
    except NoCatalogError:
        return None
    return [r[0] for r in con.execute("SELECT id FROM documents ORDER BY id").fetchall()]


def assert_nothing_partial(store: Path) -> None:
    """Every committed Parquet file is whole, and a published catalog lists every document once."""
    for path in committed(store, "**/*.parquet"):
        pq.read_table(path)  # raises on a truncated file
    ids = published_ids(store)
    if ids is not None:
        assert len(ids) == len(set(ids)) == DOCS


def outputs(store: Path) -> dict[str, bytes]:
    """The artifacts that must be byte-identical between runs. Run records and catalog
    versions carry timestamps, so they are compared through the published ids instead;
    the decoder's metadata is compared without its training time."""
    out = {}
    for p in committed(store, "**/*"):
        rel = str(p.relative_to(store))
        if not p.is_file() or rel.startswith("catalog/") or rel.endswith("run.json"):
            continue
        out[rel] = p.read_bytes()
        if rel.endswith("decoder/decoder.json"):
            meta = json.loads(out[rel])
            del meta["training"]["seconds"]
            out[rel] = json.dumps(meta, sort_keys=True).encode()
    return out


def test_sigkill_at_every_stage_then_resume_is_exactly_once_and_byte_identical(tmp_path, tiny_model_dir):
    corpus = tmp_path / "docs.jsonl"
    docs = write_corpus(corpus, n=DOCS)
    env = env_for(tmp_path)

    reference = tmp_path / "reference"
    assert not run_until(cecq_command(corpus, reference, tiny_model_dir), env, None)
    expected = outputs(reference)
    assert len([k for k in expected if k.startswith("codes/")]) == SHARDS

    store = tmp_path / "crashed"
    # What the store holds when each kill point is reached: the kill lands mid-stage.
    at_kill: dict[str, Callable[[], None]] = {
        "embedding": lambda: 1 <= len(committed(store, "embeddings/*/*.parquet")) < 2 * SHARDS,
        "training": lambda: (
            len(committed(store, "embeddings/*/*.parquet")) == 2 * SHARDS and not committed(store, "runs/*/decoder/*")
        ),
        "compressing": lambda: 1 <= len(committed(store, "codes/*/*.parquet")) < SHARDS,
        "publishing": lambda: (
            bool(committed(store, "catalog/v*/shards.parquet")) and not (store / "catalog" / "current.json").exists()
        ),
    }
    assert sorted(at_kill) == sorted(KILL_POINTS)  # every kill point of a run is tested
    for point in KILL_POINTS:
        marker = tmp_path / f"reached-{point}"
        killed = run_until(
            cecq_command(corpus, store, tiny_model_dir), {**env, ENV: f"{point}={marker}"}, marker.exists
        )
        assert killed and marker.read_text().strip(), f"the run finished without reaching kill point {point!r}"
        assert at_kill[point](), f"killed at {point!r}, but the store does not show it"
        assert_nothing_partial(store)
    assert published_ids(store) is None  # the last kill came before the catalog pointer was written
    assert not run_until(cecq_command(corpus, store, tiny_model_dir), env, None)

    assert published_ids(store) == sorted(d["_id"] for d in docs)
    got = outputs(store)
    assert sorted(got) == sorted(expected)
    assert [k for k in expected if got[k] != expected[k]] == []
    # A rerun of a finished run publishes nothing new.
    assert not run_until(cecq_command(corpus, store, tiny_model_dir), env, None)
    assert len(committed(store, "catalog/v*/manifest.json")) == 1
