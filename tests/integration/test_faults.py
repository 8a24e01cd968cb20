"""Faults of the components cecq runs on: a real S3 endpoint (moto's server) behind a TCP
proxy that refuses, resets, delays or answers 503; a full local disk; a Ray actor killed
in the middle of a shard."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from cecq.errors import StorageError
from cecq.pipeline.corpus import shard_corpus
from cecq.storage import Store
from tests.helpers.corpora import write_corpus
from tests.helpers.fault_proxy import FaultProxy
from tests.helpers.local_ray import local_ray
from tests.helpers.paths import REPO_ROOT


@pytest.fixture()
def proxy(s3_endpoint, monkeypatch):
    host, port = s3_endpoint.removeprefix("http://").split(":")
    p = FaultProxy(host, int(port))
    monkeypatch.setenv("CECQ_S3_ENDPOINT_URL", p.endpoint)
    yield p
    p.close()


def s3_objects(s3_endpoint: str, prefix: str) -> dict[str, str]:
    """Key -> ETag of the objects under ``prefix``, read directly from the server (not through the proxy)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="cecq-test", Prefix=prefix)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_transient_s3_faults_are_retried(proxy, mode):
    store = Store("s3://cecq-test/transient")
    store.write_json("a.json", {"v": 1})
    proxy.fail(3, mode)
    store.write_parquet("t.parquet", pa.table({"x": list(range(1000))}))
    proxy.fail(3, mode)
    assert store.read_parquet("t.parquet").column("x").to_pylist() == list(range(1000))
    assert store.read_json("a.json") == {"v": 1}
    assert proxy.counts[mode] == 6  # every injected fault met a request, and was retried


def test_slow_s3_responses_are_waited_for(proxy):
    store = Store("s3://cecq-test/slow")
    proxy.set("delay", delay=1.5)
    store.write_json("a.json", {"v": 1})
    assert store.read_json("a.json") == {"v": 1}
    assert proxy.counts["delay"] >= 1


def test_s3_outage_shorter_than_the_backoff_is_survived(proxy):
    store = Store("s3://cecq-test/outage")
    proxy.set("reset")
    threading.Timer(3.0, proxy.set, args=("pass",)).start()
    started = time.monotonic()
    store.write_json("a.json", {"v": 1})
    assert time.monotonic() - started >= 2.5  # it did wait out the outage
    assert store.read_json("a.json") == {"v": 1}


def test_s3_down_for_good_fails_clearly_and_a_rerun_resumes(proxy, s3_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("CECQ_S3_MAX_ATTEMPTS", "3")
    corpus = tmp_path / "docs.jsonl"
    write_corpus(corpus, n=100)

    def cut_when_two_shards_are_committed() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len([k for k in s3_objects(s3_endpoint, "down/corpus/") if k.endswith(".parquet")]) >= 2:
                proxy.set("reset")
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=cut_when_two_shards_are_committed)
    watcher.start()
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"could not (write|check) s3://cecq-test/down/corpus/.*rerun to resume"):
        shard_corpus(str(corpus), Store("s3://cecq-test/down"), shard_rows=10)
    assert time.monotonic() - started < 120  # a bounded number of attempts, not a hang
    watcher.join()
    before = {k: v for k, v in s3_objects(s3_endpoint, "down/corpus/").items() if k.endswith(".parquet")}
    assert 2 <= len(before) < 10

    proxy.set("pass")
    manifest = shard_corpus(str(corpus), Store("s3://cecq-test/down"), shard_rows=10)
    after = {k: v for k, v in s3_objects(s3_endpoint, "down/corpus/").items() if k.endswith(".parquet")}
    assert len(manifest.shards) == len(after) == 10 and manifest.rows == 100
    assert {k: after[k] for k in before} == before  # what was committed is kept, not rewritten


DISK_FULL_SCRIPT = """
import json, resource, signal, sys
import pyarrow as pa
from cecq.errors import StorageError
from cecq.storage import Store
root, limit = sys.argv[1], sys.argv[2]
store = Store(root)
store.write_json("committed.json", {"ok": True})
if limit != "none":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG back instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
try:
    store.write_parquet("big.parquet", pa.table({"x": [str(i) * 50 for i in range(200_000)]}))
    print(json.dumps({"error": None}))
except StorageError as e:
    print(json.dumps({"error": str(e)}))
"""


def _full_tmpfs_available() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.parametrize("kind", ["file-size-limit", "full-tmpfs"])
def test_disk_full_is_a_clear_error_and_keeps_committed_files(tmp_path, kind):
    root = tmp_path / "root"
    root.mkdir()
    if kind == "file-size-limit":
        cmd = [sys.executable, "-c", DISK_FULL_SCRIPT, str(root), str(256 * 1024)]
    else:
        if not _full_tmpfs_available():
            pytest.skip(
                "user namespaces are not available here for a private tmpfs (the file-size-limit case still runs)"
            )
        script = tmp_path / "full.py"
        script.write_text(DISK_FULL_SCRIPT)
        cmd = [
            "unshare",
            "-rm",
            "sh",
            "-c",
            f'mount -t tmpfs -o size=512k tmpfs "{root}" && exec "{sys.executable}" "{script}" "{root}" none',
        ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    )
    assert out.returncode == 0, out.stderr[-3000:]
    error = json.loads(out.stdout.strip().splitlines()[-1])["error"]
    assert error and "could not write" in error and "big.parquet" in error and "no space left" in error
    if kind == "file-size-limit":  # the tmpfs vanished with its namespace; here the files remain
        assert sorted(p.name for p in root.iterdir()) == ["committed.json"]  # no partial file, no temporary
        assert json.loads((root / "committed.json").read_text()) == {"ok": True}


def test_disk_full_enospc_keeps_committed_files_and_a_rerun_completes(tmp_path):
    """ENOSPC without root or namespaces: the store's URL names a filesystem that fills up
    (tests/helpers/full_disk.py). Sharding stops with a StorageError naming the file, every
    shard committed before it is whole and untouched, and with space freed a rerun completes
    without rewriting them."""
    from tests.helpers import full_disk

    full_disk.register()
    corpus, disk = tmp_path / "docs.jsonl", tmp_path / "disk"
    write_corpus(corpus, n=100)
    reference = shard_corpus(str(corpus), Store(str(tmp_path / "reference")), shard_rows=10)
    sizes = [(tmp_path / "reference" / s.path).stat().st_size for s in reference.shards]
    disk.mkdir()
    url = f"{full_disk.PROTOCOL}://{disk}/store"
    full = Store(url, {"disk": str(disk), "capacity": sum(sizes[:3]) + sizes[3] // 2})  # 3.5 shards fit
    with pytest.raises(
        StorageError, match=r"could not write fulldisk://.*/corpus/.*-00003-.*\.parquet \(no space left"
    ):
        shard_corpus(str(corpus), full, shard_rows=10)
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(disk.rglob("*")) if p.is_file()}
    assert [p.name for p in kept] == [Path(s.path).name for s in reference.shards[:3]]  # no partial, no temporary
    for s in reference.shards[:3]:
        assert kept[disk / "store" / s.path][0] == (tmp_path / "reference" / s.path).read_bytes()

    roomy = Store(url, {"disk": str(disk), "capacity": 10 * sum(sizes)})  # space freed
    manifest = shard_corpus(str(corpus), roomy, shard_rows=10)
    assert manifest.rows == 100 and len(manifest.shards) == 10
    assert {p: kept[p] for p in kept} == {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in kept}  # not rewritten
    assert [s.to_dict() for s in manifest.shards] == [s.to_dict() for s in reference.shards]


# ------------------------------------------------------------------ Ray


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _descends_from_this_process(pid: int) -> bool:
    try:
        while pid > 1:
            pid = _parent(pid)
            if pid == os.getpid():
                return True
    except (OSError, ValueError):
        pass
    return False


def _embedding_actor_pids() -> list[int]:
    """Processes of this test's embedding actors (its local Ray's, never another Ray's on the
    machine) that are running a shard right now (Ray's process titles)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pids = [int(line.split()[0]) for line in out.splitlines() if re.search(r"ray::PoolActor\.run", line)]
    return [pid for pid in pids if _descends_from_this_process(pid)]


@pytest.fixture()
def one_actor_ray():
    """A real local Ray of one CPU: it holds one embedding actor."""
    yield from local_ray(1)


@pytest.mark.slow
def test_actor_killed_mid_shard_is_retried_and_every_document_lands_once(
    tmp_path, tiny_model_dir, one_actor_ray, caplog
):
    """The local cluster (1 CPU) holds one embedding actor: when it dies there is none left,
    so the pool starts exactly one new actor (the rule's other half: with a survivor left, no
    new actor; see test_multinode.py)."""
    from cecq.catalog.layout import embedding_path, model_key
    from cecq.pipeline.fanout import embed_model

    corpus, store = tmp_path / "docs.jsonl", Store(str(tmp_path / "store"))
    docs = write_corpus(corpus, n=600)
    manifest = shard_corpus(str(corpus), store, shard_rows=40)
    killed: list[int] = []

    def kill_one_busy_actor() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for pid in _embedding_actor_pids():
                os.kill(pid, 9)
                killed.append(pid)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_one_busy_actor)
    killer.start()
    with caplog.at_level(logging.WARNING, logger="cecq.pipeline.ray_pool"):
        embed_model(store, manifest, str(tiny_model_dir), batch_size=8)
    killer.join()
    assert killed, "no embedding actor was seen running a shard"
    assert caplog.text.count("no actor left, starting a new one") == 1, caplog.text
    assert re.search(r"shard \S+ failed \(.*attempt 1\), retrying", caplog.text)
    mkey = model_key(str(tiny_model_dir), manifest.corpus_key)
    ids = [
        i for s in manifest.shards for i in store.read_parquet(embedding_path(mkey, s), ["id"]).column("id").to_pylist()
    ]
    assert sorted(ids) == sorted(d["_id"] for d in docs)
    assert store.glob(f"embeddings/{mkey}/*") == sorted(embedding_path(mkey, s) for s in manifest.shards)
