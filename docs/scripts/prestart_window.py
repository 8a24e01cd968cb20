"""The embed stage with actors started ahead of their jobs, against cold ones
(docs/performance.md, round 5): Ray starts, the pool's actors start and import
sentence-transformers (or not), a wait stands in for Prefect's API starting, then
``embed_model`` embeds SciFact's first documents with MiniLM.

    .venv/bin/python docs/scripts/prestart_window.py cold
    .venv/bin/python docs/scripts/prestart_window.py prestart      # 15 s window
    .venv/bin/python docs/scripts/prestart_window.py prestart --window 5 --docs 200
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

from cecq.encoders import preload_models
from cecq.pipeline import ray_pool
from cecq.pipeline.corpus import shard_corpus
from cecq.pipeline.fanout import embed_model
from cecq.storage import Store

MODEL = "all-MiniLM-L6-v2"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("how", choices=["cold", "prestart"])
    p.add_argument("--window", type=float, default=15.0, help="seconds between Ray's start and the embed stage")
    p.add_argument("--docs", type=int, default=200)
    p.add_argument("--corpus", default="../shared/data/scifact/corpus.jsonl")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "docs.jsonl"
        with open(args.corpus, encoding="utf-8") as f:
            corpus.write_text("".join(line for _, line in zip(range(args.docs), f)), encoding="utf-8")
        ray_pool.init_ray(None)
        if args.how == "prestart":
            ray_pool.prestart(functools.partial(preload_models, [MODEL]))
        time.sleep(args.window)
        store = Store(str(Path(tmp) / "store"))
        manifest = shard_corpus(str(corpus), store, 50_000)
        started = time.perf_counter()
        embed_model(store, manifest, MODEL, 64)
        print(f"{args.how}: the embed stage over {args.docs} documents took {time.perf_counter() - started:.1f} s")
        ray_pool.shutdown_ray()


if __name__ == "__main__":
    main()
