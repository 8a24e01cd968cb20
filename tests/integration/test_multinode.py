"""Two Ray nodes on one machine (a head and a worker started with `ray start`) run one
embed job together."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers.corpora import write_corpus

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))
CECQ = str(Path(sys.executable).with_name("cecq"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args: list[str], env: dict) -> subprocess.Popen:
    # --block keeps the node in the foreground, so the test stops exactly its own processes.
    return subprocess.Popen(
        [RAY, "start", "--block", "--num-cpus=1", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for_nodes(address: str, n: int, env: dict, timeout: float = 90) -> None:
    code = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False); "
        "print(len([x for x in ray.nodes() if x['Alive']]))"
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            continue
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise TimeoutError(f"Ray cluster at {address} did not reach {n} nodes")


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a worker node started with `ray start`; yields (address, env, worker process)."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    address = f"127.0.0.1:{port}"
    # A short temp dir: Ray's Unix sockets live there, and pytest's tmp_path is too long for them.
    ray_tmp = tempfile.mkdtemp(prefix="cecq-ray-", dir="/tmp")
    head = start_node(
        [
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            f"--temp-dir={ray_tmp}",
        ],
        env,
    )
    worker = None
    try:
        wait_for_nodes(address, 1, env)
        worker = start_node([f"--address={address}", "--node-ip-address=127.0.0.1"], env)
        wait_for_nodes(address, 2, env)
        yield address, env, worker
    finally:
        if worker is not None:
            stop(worker)
        stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def embed_command(corpus: Path, store: Path, model: Path, address: str) -> list[str]:
    return [
        CECQ,
        "embed-corpus",
        str(corpus),
        "--store",
        str(store),
        "--model",
        str(model),
        "--shard-rows",
        "10",
        "--dims",
        "16",
        "--bits",
        "2",
        "--max-epochs",
        "2",
        "--ray-address",
        address,
    ]


def run_record(store: Path, stdout: str) -> dict:
    run_id = json.loads(stdout[stdout.index("{") :])["run_id"]
    return json.loads((store / "runs" / run_id / "run.json").read_text())


def test_two_nodes_share_one_embed_job(tmp_path, tiny_model_dir, two_nodes):
    address, env, _ = two_nodes
    corpus, store = tmp_path / "docs.jsonl", tmp_path / "store"
    write_corpus(corpus, n=80)
    out = subprocess.run(
        embed_command(corpus, store, tiny_model_dir, address), env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = run_record(store, out.stdout)
    nodes = run["embedding"][0]["nodes"]
    assert len(nodes) == 2, f"the embed job ran on {nodes}"
    assert run["documents"] == 80


def alive_nodes(address: str, env: dict) -> int:
    code = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False); "
        "print(len([x for x in ray.nodes() if x['Alive']]))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1])


def busy_actor_in_group(pgid: int) -> int | None:
    """The pid of an embedding actor of process group ``pgid`` (a node started with
    ``ray start --block``) that is running a shard right now (Ray's process title), or None."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,args="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, group, *args = line.split()
        if int(group) == pgid and re.search(r"ray::PoolActor\.run", " ".join(args)):
            return int(pid)
    return None


def test_losing_a_worker_node_mid_job_finishes_on_the_survivor(tmp_path, tiny_model_dir, two_nodes):
    """Runs last in this module: it kills the worker node, while its actor runs a shard."""
    from cecq.catalog import connect
    from cecq.storage import Store

    address, env, worker = two_nodes
    corpus, store = tmp_path / "docs.jsonl", tmp_path / "store"
    docs = write_corpus(corpus, n=400)
    proc = subprocess.Popen(
        embed_command(corpus, store, tiny_model_dir, address),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while busy_actor_in_group(worker.pid) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the job finished before the worker node's actor ran a shard"
    embedded_before = len(list(store.glob("embeddings/*/*.parquet")))
    os.killpg(worker.pid, signal.SIGKILL)  # the worker node and its busy actor vanish mid-job
    worker.wait(timeout=30)
    assert proc.poll() is None and embedded_before < 40, "the job was no longer running when the node died"
    assert alive_nodes(address, env) == 1  # Ray sees the worker node dead
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    # The shard the lost actor held went back to the queue and to the survivor; no new actor
    # was started while one was left (one waiting for the lost node's CPU would hang).
    assert re.search(r"shard \S+ failed \(.*attempt 1\), retrying", stderr), stderr[-3000:]
    assert "no actor left, starting a new one" not in stderr
    ids = [r[0] for r in connect(Store(str(store))).execute("SELECT id FROM documents").fetchall()]
    assert sorted(ids) == sorted(d["_id"] for d in docs)
    assert run_record(store, stdout)["documents"] == 400
