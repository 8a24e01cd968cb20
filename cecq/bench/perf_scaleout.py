"""Scale-out: the embed stage on a Ray cluster of one node against the same job on two.

Both nodes are started here with ``ray start`` (a head and a worker of ``node_cpus`` CPUs
each), on this machine: the comparison is fair only where the machine has the worker's
cores to spare, which :func:`measure` checks. The worker node joins before each two-node
run and leaves after it; starting and stopping it is not timed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cecq.bench.perf_embed import write_jsonl
from cecq.bench.timing import Figure, Ratio, ratio
from cecq.pipeline.corpus import shard_corpus
from cecq.pipeline.fanout import embed_model
from cecq.pipeline.ray_pool import alive_cpu_nodes, init_ray, ray_running, shutdown_ray
from cecq.storage import Store

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One ``ray start --block`` process group, so that stopping it stops exactly its processes."""

    def __init__(self, args: list[str], cpus: int, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [RAY, "start", "--block", f"--num-cpus={cpus}", "--node-ip-address=127.0.0.1", *args],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=15)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


def _wait_for(nodes: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while alive_cpu_nodes() != nodes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scale-out cluster did not reach {nodes} node(s) in {timeout:.0f} s")
        time.sleep(0.5)


class LocalCluster:
    """A Ray cluster of ``ray start`` nodes of ``node_cpus`` CPUs each on this machine, the
    driver connected to its head: a head at once, workers with :meth:`resize`. A context
    manager; leaving it disconnects and stops every node."""

    def __init__(self, node_cpus: int) -> None:
        if ray_running():
            raise RuntimeError("the bench starts its own Ray cluster: shut down the running Ray first")
        self.node_cpus = node_cpus
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
        self.env.pop("RAY_ADDRESS", None)
        self.address = f"127.0.0.1:{_free_port()}"
        # Ray's Unix sockets live in the temp dir, and deep paths overflow their length limit.
        self.tmp = tempfile.mkdtemp(prefix="cecq-ray-", dir="/tmp")
        self.head: Node | None = None
        self.workers: list[Node] = []

    def __enter__(self) -> LocalCluster:
        port = self.address.rsplit(":", 1)[1]
        args = ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={self.tmp}"]
        self.head = Node(args, self.node_cpus, self.env)
        try:
            deadline = time.monotonic() + 120
            while True:  # the head takes a few seconds to accept drivers
                try:
                    init_ray(self.address)
                    break
                except ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
            _wait_for(1)
        except BaseException:
            self.__exit__()
            raise
        return self

    def resize(self, nodes: int) -> None:
        """Add or stop worker nodes until the cluster has ``nodes`` (the head included)."""
        while len(self.workers) < nodes - 1:
            self.workers.append(Node([f"--address={self.address}"], self.node_cpus, self.env))
        while len(self.workers) > nodes - 1:
            self.workers.pop().stop()
        _wait_for(nodes)

    def __exit__(self, *exc: object) -> None:
        shutdown_ray()
        for node in [*self.workers, self.head]:
            if node is not None:
                node.stop()
        self.workers, self.head = [], None
        shutil.rmtree(self.tmp, ignore_errors=True)


def measure(
    texts: list[str], model: str, batch_size: int, repeats: int, shards: int, node_cpus: int, workdir: Path
) -> tuple[list[Figure], list[Ratio], dict]:
    """Time :func:`cecq.pipeline.fanout.embed_model` over ``texts`` in ``shards`` shards on one node and on two."""
    url = write_jsonl(workdir / "scaleout.jsonl", texts)
    shard_rows = -(-len(texts) // shards)
    stores = {
        (v, r): Store(str(workdir / f"store-scaleout-{v}-{r}"))
        for v in ("one-node", "two-nodes")
        for r in range(repeats)
    }
    manifests = {key: shard_corpus(url, store, shard_rows) for key, store in stores.items()}
    times: dict[str, list[float]] = {"one-node": [], "two-nodes": []}
    used: dict[str, list[int]] = {"one-node": [], "two-nodes": []}
    with LocalCluster(node_cpus) as cluster:
        for r in range(repeats):
            for variant in ("one-node", "two-nodes") if r % 2 == 0 else ("two-nodes", "one-node"):
                cluster.resize(2 if variant == "two-nodes" else 1)
                started = time.perf_counter()
                summary = embed_model(stores[variant, r], manifests[variant, r], model, batch_size)
                times[variant].append(time.perf_counter() - started)
                used[variant].append(len(summary.nodes))
    what = {
        "one-node": f"embed stage on a Ray cluster of one node ({node_cpus} CPU)",
        "two-nodes": f"the same job on two nodes of {node_cpus} CPU each",
    }
    figs = {v: Figure("scaleout", v, len(texts), "docs", secs, what[v]) for v, secs in times.items()}
    details = {"docs": len(texts), "shards": shards, "node_cpus": node_cpus, "nodes_used": used}
    return list(figs.values()), [ratio(figs, "two-nodes", "one-node", 1.7)], details
