"""Each default model alone on the corpus's own pseudo-queries (the guarded rule's signal),
per seed of the pseudo-query sample (docs/quality-round2.md, section 5). Corpus only.

    .venv/bin/python docs/scripts/weights_pseudo.py --cache C --seeds 0,1,2,3,4 adi cisi cranfield scifact
"""

from __future__ import annotations

import argparse
import json
import time

from cecq.config import EvalConfig
from cecq.encoders.weights import self_retrieval_weights
from cecq.eval.beir import load_beir
from cecq.eval.evaluate import embed_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tasks", nargs="+", help="BEIR folder names under --data")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--cache", help="embedding cache, as cecq eval --cache")
    p.add_argument("--seeds", default="0,1,2,3,4")
    args = p.parse_args()
    for name in args.tasks:
        task = load_beir(f"{args.data}/{name}")
        encoders, docs, _ = embed_task(task, EvalConfig(), False, args.cache)
        for seed in (int(s) for s in args.seeds.split(",")):
            started = time.perf_counter()
            fit = self_retrieval_weights(encoders, task.doc_texts, docs, seed=seed, grid=(0.0, 1.0))
            if not fit.candidates:
                print(json.dumps({"task": name, "seed": seed, "queries": fit.queries, "note": "too few"}), flush=True)
                continue
            score = {tuple(c["weights"]): c["ndcg_at_10"] for c in fit.candidates}
            minilm, lexical = score[(1.0, 0.0)], score[(0.0, 1.0)]
            row = {"task": name, "seed": seed, "queries": fit.queries, "minilm": minilm, "lexical": lexical}
            row |= {"ratio": round(lexical / minilm, 4), "seconds": round(time.perf_counter() - started, 1)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
