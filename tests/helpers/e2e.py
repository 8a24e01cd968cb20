"""Helpers for the end-to-end tests: free ports, background processes with log files, the
Prefect REST API, a small topical corpus.

No fixtures here (they live in the test modules); only plain functions and one class, so
the test reads as the sequence of commands a user would type.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # prefect, cecq: the console scripts of this interpreter


def exe(name: str) -> str:
    """The console script ``name`` of the running interpreter's environment (else from PATH)."""
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, chars: int = 6000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return text[-chars:]


class Background:
    """A long-running subprocess (server, worker) in its own session, output to a log file.

    ``stop()`` sends SIGTERM to the process group, waits, then SIGKILL: the group also holds
    what the process started (flow-run subprocesses of a worker, their local Ray).
    """

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path = REPO_ROOT):
        self.name = name
        self.args = list(args)
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.args,
            env=dict(env),
            cwd=str(cwd),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left of the group (children that outlived their parent), by group id
        self._signal(signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log_file.close()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group id is the pid: start_new_session=True
        except (ProcessLookupError, PermissionError):
            pass

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited with {self.proc.returncode}"
        return f"--- {self.name} ({state}): {' '.join(self.args)}\n{tail(self.log)}"


def wait_until(
    check: Callable[[], Any],
    timeout: float,
    interval: float = 0.5,
    what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Call ``check`` until it returns something truthy; return that. Fail after ``timeout`` s.
    Other exceptions from ``check`` are retried; an AssertionError ends the wait at once."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            raise  # a definite failure (a process died): no point in waiting
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    details = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_exc!r})\n{details}")


def run_cli(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 120, check: bool = True, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess:
    """Run a command to completion; on failure raise with its full output."""
    proc = subprocess.run(
        list(args),
        env=dict(env),
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(args)}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def quiet_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) with telemetry off and offline settings."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Never talk to a server or profile of the developer running the tests.
    for key in (
        "PREFECT_API_URL",
        "PREFECT_API_KEY",
        "PREFECT_PROFILE",
        "RAY_ADDRESS",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "CECQ_S3_ENDPOINT_URL",
        "CECQ_PROJECT_DIR",
        "CECQ_CORPUS",
        "CECQ_STORE",
    ):
        env.pop(key, None)
    env.update(extra)
    return env


# --- Prefect REST API (plain HTTP: the test process never imports Prefect's settings) ----------


class PrefectAPI:
    def __init__(self, api_url: str):
        import httpx

        self.api_url = api_url.rstrip("/")
        self.http = httpx.Client(base_url=self.api_url, timeout=15)

    def close(self) -> None:
        self.http.close()

    def healthy(self) -> bool:
        r = self.http.get("/health")
        return r.status_code == 200 and r.json() is True

    def get(self, path: str) -> Any:
        r = self.http.get(path)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict | None = None) -> Any:
        r = self.http.post(path, json=body or {})
        r.raise_for_status()
        return r.json()

    def deployment(self, flow_name: str, deployment_name: str) -> dict:
        return self.get(f"/deployments/name/{flow_name}/{deployment_name}")

    def flow_run(self, flow_run_id: str) -> dict:
        return self.get(f"/flow_runs/{flow_run_id}")

    def flow_runs_of(self, deployment_id: str, states: Sequence[str] | None = None) -> list[dict]:
        body: dict[str, Any] = {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
        if states:
            body["flow_runs"] = {"state": {"type": {"any_": list(states)}}}
        return self.post("/flow_runs/filter", body)

    def state_history(self, flow_run_id: str) -> list[dict]:
        r = self.http.get("/flow_run_states/", params={"flow_run_id": flow_run_id})
        r.raise_for_status()
        return sorted(r.json(), key=lambda st: st["timestamp"])

    def logs_of(self, flow_run_id: str, limit: int = 200) -> str:
        rows = self.post(
            "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": limit}
        )
        return "\n".join(f"{r['timestamp']} {r['level']:>3} {r['name']}: {r['message']}" for r in rows)

    def work_pool(self, name: str) -> dict:
        return self.get(f"/work_pools/{name}")


TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# --- a small corpus ------------------------------------------------------------------------------

CORPUS_TOPICS = {
    "astronomy": "star planet galaxy orbit telescope comet nebula moon solar gravity asteroid eclipse".split(),
    "cooking": "recipe oven flour butter sugar bake dough sauce pepper garlic onion roast".split(),
    "football": "goal striker referee penalty stadium league match keeper pitch tackle coach season".split(),
    "gardening": "soil seed compost flower garden prune tomato root water weed leaf greenhouse".split(),
}
FILLER = "the a of and to in is for on with at by from this that it as".split()


def topical_corpus(docs_per_topic: int = 10, seed: int = 0) -> list[dict]:
    """``docs_per_topic`` documents per topic (``_id``, ``title``, ``text``), deterministic."""
    rng = random.Random(seed)
    docs = []
    for topic, words in CORPUS_TOPICS.items():
        for i in range(docs_per_topic):
            body = rng.choices(words, k=12) + rng.choices(FILLER, k=5)
            rng.shuffle(body)
            docs.append(
                {"_id": f"{topic}-{i:02d}", "title": f"{words[i % len(words)]} {topic}", "text": " ".join(body)}
            )
    return docs


def jsonl(docs: Sequence[dict]) -> bytes:
    return "".join(json.dumps(d) + "\n" for d in docs).encode("utf-8")
