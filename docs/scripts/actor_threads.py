"""One process of two threads against two one-thread processes, encoding the same SciFact
texts with MiniLM at once: why CPU actors run one thread each (docs/performance.md, round 5).

    .venv/bin/python docs/scripts/actor_threads.py            # 1,024 texts, about 3 min
    .venv/bin/python docs/scripts/actor_threads.py --docs 256

Each side is a fresh process; the model is loaded and warmed up before timing. The two
one-thread processes start timing together, each over half of the texts. Below a few
hundred texts the halves pad worse than the whole (fewer texts to sort by length).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CORPUS = "../shared/data/scifact/corpus.jsonl"


def child(threads: int, part: int, parts: int, docs: int, corpus: str) -> None:
    import torch

    torch.set_num_threads(threads)
    from sentence_transformers import SentenceTransformer

    from cecq.encoders import resolve_model

    with open(corpus, encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(docs), f)]
    texts = [(r.get("title", "") + " " + r["text"]).strip() for r in rows][part::parts]
    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    model.encode(texts[:64], batch_size=64)
    print("ready", flush=True)
    sys.stdin.readline()  # every process loaded and warmed up: start together
    started = time.perf_counter()
    model.encode(texts, batch_size=64)
    print(json.dumps({"threads": threads, "docs": len(texts), "seconds": time.perf_counter() - started}))


def run(threads: int, parts: int, docs: int, corpus: str) -> float:
    """Wall seconds until every one of ``parts`` processes of ``threads`` threads is done."""
    cmd = [sys.executable, __file__, "--child", str(threads), "--docs", str(docs), "--corpus", corpus]
    procs = [
        subprocess.Popen(
            [*cmd, "--part", str(k), "--parts", str(parts)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for k in range(parts)
    ]
    for proc in procs:
        while proc.stdout.readline().strip() != "ready":
            pass
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return max(json.loads(proc.communicate()[0].strip().splitlines()[-1])["seconds"] for proc in procs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=1024)
    p.add_argument("--corpus", default=CORPUS)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--parts", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child, args.part, args.parts, args.docs, args.corpus)
        return
    one = run(2, 1, args.docs, args.corpus)
    two = run(1, 2, args.docs, args.corpus)
    print(f"{args.docs} texts: one process of 2 threads {one:.1f} s; two of 1 thread {two:.1f} s; {one / two:.2f}x")


if __name__ == "__main__":
    main()
