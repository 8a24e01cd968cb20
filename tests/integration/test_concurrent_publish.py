"""Concurrent runs on one store: real processes publish at once, on a local folder and on a
real S3 endpoint (moto over HTTP), with and without the store's lease, and a lease holder is
SIGKILLed mid-publish. Afterwards the catalog must be sound: the ``versions`` view is a
gapless sequence, every version's manifest and shard list are whole and its own, no run's
version is lost, and the current version lists every document once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cecq.catalog import connect, current_version, read_manifest
from cecq.catalog.layout import LEASE, version_dir
from cecq.errors import CorruptArtifactError, StoreBusyError
from cecq.pipeline.publish import claim_store, publish
from cecq.storage import LeaseRecord, Store, StoreLease, json_bytes, read_lease
from tests.helpers.e2e import REPO_ROOT
from tests.helpers.publisher import DOCS, codes_shards, run_record

ROUNDS = 4


def url_for(where: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if where == "local":
        return str(tmp_path / "store")
    request.getfixturevalue("s3_endpoint")
    return f"s3://cecq-test/race-{time.time_ns()}"


def publisher(url: str, tag: str, rounds: int, go: Path | None = None, **env: str) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CECQ_LEASE_WAIT_S": "60", **env}
    if go is not None:
        full_env["PUBLISHER_GO"] = str(go)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.publisher", url, tag, str(rounds)],
        env=full_env,
        cwd=str(REPO_ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def race(url: str, tmp_path: Path, **env: str) -> None:
    """Two publishers, started together once both have imported cecq; both must succeed."""
    go = tmp_path / f"go-{time.time_ns()}"
    procs = [publisher(url, tag, ROUNDS, go, **env) for tag in ("a", "b")]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.communicate()[0]
    go.touch()
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outs)


def assert_catalog_sound(url: str, runs: set[str]) -> None:
    store = Store(url)
    con = connect(store)
    versions = [r[0] for r in con.execute("SELECT version FROM versions ORDER BY version").fetchall()]
    assert versions == list(range(1, len(versions) + 1)), versions
    listed = {}
    for v in versions:
        m = read_manifest(store, v)
        assert m.version == v and m.codes == [f"codes/{m.run_id}/race-{i:05d}.parquet" for i in range(3)]
        listed.setdefault(m.run_id, []).append(v)
        if store.exists(f"{version_dir(v)}/shards.parquet"):  # absent only where the publisher died first
            shards = store.read_parquet(f"{version_dir(v)}/shards.parquet")
            assert set(shards.column("run_id").to_pylist()) == {m.run_id}
            assert set(shards.column("version").to_pylist()) == {v}
            assert sum(shards.column("rows").to_pylist()) == DOCS
    assert runs <= set(listed), f"versions lost: runs {sorted(runs - set(listed))} are in no manifest"
    current = current_version(store)
    assert current == versions[-1]
    winner = read_manifest(store, current).run_id
    assert store.read_json(f"runs/{winner}/run.json")["catalog_version"] == current
    ids = [r[0] for r in con.execute("SELECT id FROM documents ORDER BY id").fetchall()]
    assert ids == [f"d{i:02d}" for i in range(DOCS)]
    shards_view = con.execute("SELECT DISTINCT run_id, version FROM shards").fetchall()
    assert shards_view == [(winner, current)]


@pytest.mark.slow
@pytest.mark.parametrize("where, lease", [("local", "lease"), ("s3", "lease"), ("local", "no-lease")])
def test_two_processes_publishing_at_once_lose_no_version(request, tmp_path, where, lease):
    """With the lease (as the flows run) the publishes take turns; without it the exclusive
    create of each version's manifest alone keeps them apart (on today's main, without either,
    both processes write the same version numbers and versions are lost)."""
    store_url = url_for(where, request, tmp_path)
    race(store_url, tmp_path, **({"PUBLISHER_NO_LEASE": "1"} if lease == "no-lease" else {}))
    assert_catalog_sound(store_url, {f"run-{t}-{r}" for t in "ab" for r in range(ROUNDS)})
    if lease == "lease":  # turns: every version became current in its turn, none was left behind
        store = Store(store_url)
        assert [read_manifest(store, v).previous_version for v in range(1, 2 * ROUNDS + 1)] == [
            None,
            *range(1, 2 * ROUNDS),
        ]


@pytest.mark.slow
def test_a_holder_killed_mid_publish_is_taken_over_and_loses_nothing(tmp_path):
    store_url = str(tmp_path / "store")
    holder = publisher(store_url, "killed", 1, PUBLISHER_HANG_AFTER_CLAIM="120")
    assert holder.stdout.readline().strip() == "ready"
    line = holder.stdout.readline()
    assert "claimed catalog/v000001/manifest.json" in line, line + holder.communicate()[0]
    lease = LeaseRecord(**Store(store_url).read_json(LEASE))
    assert lease.pid == holder.pid and not lease.released  # it holds the lease, mid-publish
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()

    second = publisher(store_url, "second", 1)
    out = second.communicate(timeout=120)[0]
    assert second.returncode == 0, out
    assert "took over the lease of publisher killed" in out
    assert "published v2" in out
    # The killed run's rerun publishes on top; the version it had claimed stays listed, whole.
    store = Store(store_url)
    with claim_store(store, "rerun") as lease:
        assert publish(store, run_record("run-killed-0"), codes_shards(store, "run-killed-0"), lease.owner) == 3
    assert_catalog_sound(store_url, {"run-killed-0", "run-second-0"})
    assert read_manifest(Store(store_url), 1).run_id == "run-killed-0"


def test_a_busy_store_fails_after_the_wait_naming_the_holder_and_an_expired_lease_is_taken(tmp_path):
    store = Store(str(tmp_path / "store"))
    with StoreLease(store, LEASE, "embed-corpus", ttl=0.6, wait=0):
        time.sleep(1.5)  # beyond the ttl: the heartbeat keeps it
        started = time.monotonic()
        with pytest.raises(
            StoreBusyError, match=rf"claimed by embed-corpus on {socket.gethostname()} \(pid {os.getpid()}\)"
        ):
            StoreLease(store, LEASE, "reindex", ttl=5, wait=1).acquire()
        assert 0.9 < time.monotonic() - started < 5
    # released: the next claimant takes it at once
    with StoreLease(store, LEASE, "reindex", ttl=5, wait=0) as lease:
        lease.check()
    # a holder on another host that stopped beating: taken over once it expires, not before
    now = time.time()
    other = LeaseRecord("embed-corpus elsewhere:1 x", "embed-corpus", "elsewhere", 1, now, now, now + 2)
    store.write_bytes(LEASE, json_bytes(other.__dict__))
    started = time.monotonic()
    with claim_store(store, "gc") as lease:
        assert 1.0 < time.monotonic() - started < 10
        # the old holder, back after its lease was taken over, cannot publish
        run = run_record("run-late")
        with pytest.raises(StoreBusyError, match="no longer holds the lease"):
            publish(store, run, codes_shards(store, "run-late"), other.owner)
        assert current_version(store) == 0
        assert publish(store, run, codes_shards(store, "run-late"), lease.owner) == 1


@pytest.mark.parametrize(
    "content",
    [
        b'{"owner": "embed-corpus h:1 x", "purp',
        b"[1, 2]",
        b'{"owner": "x"}',
        b'{"owner": "o", "purpose": "gc", "host": "h", "pid": 1, "acquired": 1, "heartbeat": 1, "expires": "2030"}',
    ],
    ids=["truncated", "not-an-object", "fields-missing", "a-field-of-another-type"],
)
def test_a_damaged_lease_is_named_with_its_cure_and_a_newer_ones_extra_keys_are_ignored(tmp_path, content):
    store = Store(str(tmp_path / "store"))
    store.write_bytes(LEASE, content)
    for attempt in (lambda: read_lease(store, LEASE), lambda: StoreLease(store, LEASE, "gc", ttl=5, wait=0).acquire()):
        with pytest.raises(
            CorruptArtifactError, match=r"catalog/lease\.json is truncated or corrupt.*delete it once no"
        ):
            attempt()
    now = time.time()
    newer = {**LeaseRecord("gc h:1 x", "gc", "elsewhere", 1, now, now, now - 1).__dict__, "region": "eu"}
    store.write_bytes(LEASE, json_bytes(newer))
    assert read_lease(store, LEASE).owner == "gc h:1 x"
    with StoreLease(store, LEASE, "reindex", ttl=5, wait=0) as lease:  # expired: taken over
        lease.check()
