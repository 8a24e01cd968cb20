"""Variance-aware product codes: more bits a dim for the decoder's leading dims, fewer for
the tail, at the same bytes. The default layout rotates the whole kept prefix at random
(so every subspace holds the same variance) and gives each byte 4 dims. An MRL decoder's
dims are ordered by importance, so a layout may instead keep more dims and cut the prefix
into groups: small subspaces (more bits a dim) first, large ones last, each group rotated
on its own. Fitted on a seeded half of the corpus like ``cecq eval --fit-fraction 0.5``;
every document coded; asymmetric and symmetric cosine nDCG@10.

A layout is ``BYTESxDIMS+...``, e.g. ``9x2+9x4+9x8``: 9 bytes of 2-dim subspaces, then 9 of
4 and 9 of 8 (126 dims for 27 B). Each subspace has 256 centroids (FAISS's k-means).

    python docs/scripts/alloc_trial.py ../shared/data/scifact --split train --seeds 0,1,2,3,4 \
        --cache C --layouts 27x4,9x2+9x4+9x8,13x4+14x8,53x4,18x2+18x4+17x8
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import faiss
import numpy as np
from codes_trial import ndcg, outputs, summarise, trial_parser

from cecq.encoders import l2_normalize
from cecq.eval.beir import load_beir
from cecq.quantization.product import random_rotation


def parse_layout(text: str) -> list[tuple[int, int]]:
    """``"9x2+9x4"`` -> ``[(9, 2), (9, 4)]``: (bytes, dims a subspace) per group."""
    return [(int(b), int(s)) for b, s in (g.split("x") for g in text.split("+"))]


def grouped_codes(d: np.ndarray, q: np.ndarray, fit: np.ndarray, layout: list[tuple[int, int]]):
    """(coded documents, float queries, coded queries) over the kept prefix, normalised as a
    whole, then cut into the layout's groups, each turned by its own seeded rotation."""
    kept = sum(b * s for b, s in layout)
    d, q = l2_normalize(d[:, :kept]), l2_normalize(q[:, :kept])
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    start = 0
    for i, (nbytes, sub) in enumerate(layout):
        width = nbytes * sub
        rot = random_rotation(width, i)
        gd = np.ascontiguousarray(d[:, start : start + width] @ rot)
        gq = np.ascontiguousarray(q[:, start : start + width] @ rot)
        pq = faiss.ProductQuantizer(width, nbytes, 8)
        pq.train(np.ascontiguousarray(gd[fit]))
        parts.append((pq.decode(pq.compute_codes(gd)), gq, pq.decode(pq.compute_codes(gq))))
        start += width
    return tuple(np.hstack([p[k] for p in parts]) for k in range(3))


def main() -> None:
    ap = trial_parser(__doc__)
    ap.add_argument("--layouts", default="27x4,9x2+9x4+9x8,53x4,18x2+18x4+17x8")
    ap.add_argument("--out")
    args = ap.parse_args()
    task = load_beir(args.task, args.split)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        d, q, fit = outputs(task, seed, Path(args.cache), "cecq")
        for text in args.layouts.split(","):
            layout = parse_layout(text)
            t = time.perf_counter()
            dec_d, q_a, q_s = grouped_codes(d, q, fit, layout)
            row = {
                "seed": seed,
                "variant": f"{sum(b for b, _ in layout)}B {text}",
                "train_s": round(time.perf_counter() - t, 1),
                "dims": sum(b * s for b, s in layout),
                "asym": ndcg(task, q_a, dec_d),
                "sym": ndcg(task, q_s, dec_d),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summarise(rows, args.out)


if __name__ == "__main__":
    main()
