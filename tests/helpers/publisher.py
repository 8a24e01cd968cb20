"""A real process that publishes catalog versions of a tiny corpus, as many times as it is
told, for the concurrent-publish tests: ``python -m tests.helpers.publisher STORE TAG ROUNDS``.

Each round is a run of its own (``run-<tag>-<round>``) that commits its codes shards and
publishes them under the store's lease, as the flows do (claim, read the published version,
publish). Environment: ``PUBLISHER_GO`` (a file: the process prints ``ready`` and starts
once the file exists, so that racers start together), ``PUBLISHER_NO_LEASE=1`` (publish
without the lease: the conditional create alone keeps versions apart),
``PUBLISHER_HANG_AFTER_CLAIM`` (seconds to stop for once a version's manifest is claimed: the
window in which a test kills the holder mid-publish).
"""

from __future__ import annotations

import os
import sys
import time

import pyarrow as pa

from cecq.catalog import CodesShard, RunRecord
from cecq.storage import Store

DOCS, SHARDS = 12, 3  # documents d00..d11 in three shards of four


def corpus_shard(store: Store, index: int) -> str:
    """The corpus shard ``index`` (written once, shared by every run)."""
    rel = f"corpus/race/race-{index:05d}.parquet"
    if not store.exists(rel):
        ids = [f"d{i:02d}" for i in range(index * (DOCS // SHARDS), (index + 1) * (DOCS // SHARDS))]
        store.write_parquet(rel, pa.table({"id": ids, "text": [f"text of {i}" for i in ids], "content_hash": ids}))
    return rel


def codes_shards(store: Store, run_id: str) -> list[CodesShard]:
    """One codes shard per corpus shard, under ``codes/<run>/`` (one byte a document)."""
    out = []
    for index in range(SHARDS):
        corpus = corpus_shard(store, index)
        ids = store.read_parquet(corpus, ["id"]).column("id").to_pylist()
        table = pa.table(
            {
                "id": ids,
                "shard": [f"race-{index:05d}"] * len(ids),
                "content_hash": ids,
                "code": pa.array([bytes([index])] * len(ids), pa.binary(1)),
                "empty": [False] * len(ids),
            }
        )
        rel = f"codes/{run_id}/race-{index:05d}.parquet"
        nbytes = store.write_parquet(rel, table)
        out.append(CodesShard(f"race-{index:05d}", rel, len(ids), nbytes, f"fp{index}", corpus))
    return out


def run_record(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        started="",
        corpus="race",
        corpus_key="race",
        documents=DOCS,
        shards=SHARDS,
        models=["toy"],
        model_keys=["toy"],
        embedding=[],
        corpus_manifest="corpus/race/manifest.json",
        decoder=f"runs/{run_id}/decoder",
        quantizer=f"runs/{run_id}/quantizer.parquet",
        compressor_id=run_id,
        dims=8,
        bits=1,
        bytes_per_doc=1,
        compression=32.0,
        config={},
    )


def hang_after_claim(store: Store, seconds: float) -> None:
    """Stop for ``seconds`` right after this process claims a version's manifest."""
    create = store.create_bytes

    def create_then_hang(rel: str, data: bytes) -> bool:
        won = create(rel, data)
        if won and rel.endswith("/manifest.json"):
            print(f"claimed {rel}", flush=True)
            time.sleep(seconds)
        return won

    store.create_bytes = create_then_hang  # type: ignore[method-assign]


def main(url: str, tag: str, rounds: int) -> None:
    from cecq.pipeline.publish import publish

    store = Store(url)
    if os.environ.get("PUBLISHER_HANG_AFTER_CLAIM"):
        hang_after_claim(store, float(os.environ["PUBLISHER_HANG_AFTER_CLAIM"]))
    go = os.environ.get("PUBLISHER_GO")
    print("ready", flush=True)
    while go and not os.path.exists(go):
        time.sleep(0.01)
    for r in range(rounds):
        run_id = f"run-{tag}-{r}"
        shards = codes_shards(store, run_id)
        if os.environ.get("PUBLISHER_NO_LEASE") == "1":
            version = publish(store, run_record(run_id), shards)
        else:
            from cecq.pipeline.publish import claim_store  # here: the lease-free path runs on any cecq

            with claim_store(store, f"publisher {tag}") as lease:
                version = publish(store, run_record(run_id), shards, lease.owner)
        print(f"{run_id}: published v{version}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
