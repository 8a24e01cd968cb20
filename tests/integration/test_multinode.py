"""Two Ray nodes on one machine (a head and a worker started with `ray start`) run one
embed job together."""

from __future__ import annotations

import contextlib
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

from cecq.killpoints import ENV
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


def wait_for_nodes(address: str, n: int, env: dict, timeout: float = 240) -> None:
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
        "--json",
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


def test_losing_a_worker_node_mid_job_finishes_on_the_survivor(tmp_path, tiny_model_dir, two_nodes):
    """A third node joins whose actors stop at the "embedding" kill point (a shard committed,
    its job not yet returned: CECQ_KILL_AT in that node's environment only, so the other
    actors go on); when its actor is there the node is SIGKILLed, so the job is provably
    still running and that node provably held a shard."""
    from cecq.catalog import connect
    from cecq.storage import Store

    address, env, _ = two_nodes
    marker = tmp_path / "reached"
    doomed = start_node([f"--address={address}", "--node-ip-address=127.0.0.1"], {**env, ENV: f"embedding={marker}"})
    try:
        wait_for_nodes(address, 3, env)
        corpus, store = tmp_path / "docs.jsonl", tmp_path / "store"
        docs = write_corpus(corpus, n=400)
        proc = subprocess.Popen(
            embed_command(corpus, store, tiny_model_dir, address),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 420
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert marker.exists(), "the third node's actor never reached the kill point"
        # Only that node's processes have CECQ_KILL_AT: the marker's writer is its actor, which
        # Ray puts in a process group of its own, so it is killed with the node's group.
        os.killpg(doomed.pid, signal.SIGKILL)  # the node and its busy actor vanish mid-job
        with contextlib.suppress(ProcessLookupError):  # gone already if it noticed its raylet die
            os.kill(int(marker.read_text().split()[0]), signal.SIGKILL)
        doomed.wait(timeout=30)
        assert proc.poll() is None, "the job was no longer running when the node died"
        wait_for_nodes(address, 2, env)  # Ray sees the node dead
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        stop(doomed)
    assert proc.returncode == 0, stderr[-3000:]
    # The shard the lost actor held went back to the queue and to a survivor; no new actor
    # was started while one was left (one waiting for the lost node's CPU would hang).
    assert re.search(r"shard \S+ failed \(.*attempt 1\), retrying", stderr), stderr[-3000:]
    assert "no actor left, starting a new one" not in stderr
    ids = [r[0] for r in connect(Store(str(store))).execute("SELECT id FROM documents").fetchall()]
    assert sorted(ids) == sorted(d["_id"] for d in docs)
    assert run_record(store, stdout)["documents"] == 400
