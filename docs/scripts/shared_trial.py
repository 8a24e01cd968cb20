"""Product codes with one codebook shared by every subspace. cecq's product codes rotate the
kept prefix at random, which balances the subspaces' variance, and then fit 256 centroids
for each subspace on its own: on a seeded half of SciFact, 2,600 rows for 256 centroids, so
the documents the codebooks saw code with 30% less error than the others. One codebook
for all subspaces trains on every subspace's rows (53 x more), stores 53 x fewer bytes,
and can afford more centroids at the same bits a document (1,024 of 5 dims: 10 bits a
subspace). Layouts at each budget, ``sSxB``: subspaces of S dims, one shared codebook of
2^B centroids, floor(8 x budget / B) subspaces; ``cecq``: cecq's own product quantizer.

    cd docs/scripts && python shared_trial.py ../../../shared/data/scifact --split train \
        --seeds 0,1,2,3,4 --cache C --budgets 27,53 --out shared_trial.json

Decoder outputs are those of ``codes_trial.outputs`` (the 768-output decoder, cached).
Choose on SciFact's train judgements; report on test.
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
from cecq.quantization.product import ProductQuantizer, random_rotation

LAYOUTS = {"s4x8": (4, 8), "s5x10": (5, 10), "s6x12": (6, 12), "s3x6": (3, 6), "s4x10": (4, 10)}


def shared_codes(d: np.ndarray, q: np.ndarray, fit: np.ndarray, budget: int, sub: int, nbits: int, seed: int):
    """(rotated float documents, decoded documents, rotated float queries, decoded queries)
    with one shared codebook."""
    m = 8 * budget // nbits
    kept = m * sub
    rot = random_rotation(kept, 0)
    rd, rq = l2_normalize(d[:, :kept]) @ rot, l2_normalize(q[:, :kept]) @ rot
    km = faiss.Kmeans(sub, 2**nbits, niter=25, seed=seed, max_points_per_centroid=100_000)
    km.train(np.ascontiguousarray(rd[fit].reshape(-1, sub), dtype=np.float32))

    def code(x: np.ndarray) -> np.ndarray:
        _, i = km.index.search(np.ascontiguousarray(x.reshape(-1, sub), dtype=np.float32), 1)
        return km.centroids[i[:, 0]].reshape(x.shape)

    return rd, code(rd), rq, code(rq)


def main() -> None:
    ap = trial_parser(__doc__)
    ap.add_argument("--only", default=",".join(LAYOUTS), help="comma-separated layouts")
    ap.add_argument("--errors", action="store_true", help="also the squared error of a normalised code")
    ap.add_argument("--out")
    args = ap.parse_args()
    task = load_beir(args.task, args.split)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        d, q, fit = outputs(task, seed, Path(args.cache), "cecq")
        for name in ["cecq", *args.only.split(",")]:
            row: dict = {"seed": seed, "variant": name}
            t = time.perf_counter()
            for b in (int(x) for x in args.budgets.split(",")):
                if name == "cecq":
                    kept = ProductQuantizer.reads(d.shape[1], None, b)
                    dd, qq = l2_normalize(d[:, :kept]), l2_normalize(q[:, :kept])
                    p = ProductQuantizer.fit(dd[fit], b)
                    rd, dec = p.project(dd), p.dequantize(p.encode(dd))
                    q_a, q_s = p.project(qq), p.dequantize(p.encode(qq))
                else:
                    rd, dec, q_a, q_s = shared_codes(d, q, fit, b, *LAYOUTS[name], seed)
                row[f"{b}B_asym"], row[f"{b}B_sym"] = ndcg(task, q_a, dec), ndcg(task, q_s, dec)
                if args.errors:  # on the fitted documents, the others, and the queries
                    for part, x, y in (("fit", rd[fit], dec[fit]), ("unseen", rd[~fit], dec[~fit]), ("q", q_a, q_s)):
                        row[f"{b}B_err_{part}"] = float(np.mean(np.sum((l2_normalize(x) - l2_normalize(y)) ** 2, 1)))
            row["train_s"] = round(time.perf_counter() - t, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    summarise(rows, args.out)


if __name__ == "__main__":
    main()
