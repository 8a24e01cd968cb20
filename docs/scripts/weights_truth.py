"""How the float concatenation of MiniLM + lexical scores as the lexical weight varies, and
where the spread rule puts it (docs/quality-round2.md, section 5). Reads the test (or another
split's) judgements: a report, never a fit.

    .venv/bin/python docs/scripts/weights_truth.py --cache C adi cisi cranfield scifact scifact:train
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from cecq.config import EvalConfig
from cecq.encoders import spread_weights
from cecq.encoders.base import l2_normalize
from cecq.eval.beir import load_beir
from cecq.eval.evaluate import embed_task, mteb_scores

GRID = (0.0, 0.25, 0.35, 0.5, 0.6, 0.71, 0.85, 1.0, 1.2, 1.41, 2.0)


def ndcg(task, scores: np.ndarray) -> float:
    top = np.argsort(-scores, axis=1)[:, :100]
    return mteb_scores(task, np.take_along_axis(scores, top, 1), top)["ndcg_at_10"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tasks", nargs="+", help="BEIR folder names under --data, optionally NAME:SPLIT")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--cache", help="embedding cache, as cecq eval --cache")
    args = p.parse_args()
    for spec in args.tasks:
        name, _, split = spec.partition(":")
        task = load_beir(f"{args.data}/{name}", split or "test")
        _, docs, queries = embed_task(task, EvalConfig(), False, args.cache)  # the default models
        sims = [l2_normalize(q) @ l2_normalize(d).T for q, d in zip(queries, docs)]
        spread = spread_weights(docs)
        truth = {f"lexical {w}": ndcg(task, (sims[0] + w * w * sims[1]) / (1 + w * w)) for w in GRID}
        truth["lexical alone"] = ndcg(task, sims[1])
        truth["spread"] = ndcg(task, spread[0] ** 2 * sims[0] + spread[1] ** 2 * sims[1])
        print(json.dumps({"task": spec, "spread_weights": spread, "ndcg_at_10": truth}), flush=True)


if __name__ == "__main__":
    main()
