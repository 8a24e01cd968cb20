"""Bit-sized codes (``--dims D --bits B``) and the decoder's MRL sizes. The plan trains a
768-output decoder with the MRL loss at 32, 64, 128, 256, 384, 512 and 768 dims and publishes
its first D; at 48x that is 212 dims of 2 bits or 424 of 1 bit, neither a size the loss sees.
Three decoders a seed, fitted on a seeded half of the corpus like ``cecq eval --fit-fraction
0.5``, every document coded with cecq's percentile bits, asymmetric and symmetric nDCG@10:

- ``today``: 768 outputs, the default sizes;
- ``plus``: 768 outputs, the default sizes and D;
- ``exact``: D outputs, the default sizes below D and D.

    cd docs/scripts && python sizes_trial.py ../../../shared/data/scifact --split train \
        --seeds 0,1,2,3,4 --cache C --pairs 212:2,424:1 --out sizes_trial.json

Choose on SciFact's train judgements; report on test.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from codes_trial import concatenation, summarise, trial_parser

from cecq.config import DecoderConfig, EvalConfig
from cecq.decoder import decode, train_decoder
from cecq.encoders import nonempty_rows
from cecq.eval.baselines import quantized_search
from cecq.eval.beir import load_beir
from cecq.eval.evaluate import mteb_scores
from cecq.eval.metrics import RETRIEVE_K


def configs(base: DecoderConfig, dims: int) -> dict[str, DecoderConfig]:
    below = tuple(p for p in base.prefix_sizes if p < dims)
    return {
        "today": base,
        "plus": replace(base, prefix_sizes=tuple(sorted(set(base.prefix_sizes) | {dims}))),
        "exact": replace(base, out_dim=dims, prefix_sizes=(*below, dims)),
    }


def main() -> None:
    ap = trial_parser(__doc__)
    ap.add_argument("--pairs", default="212:2,424:1", help="DIMS:BITS, comma-separated")
    ap.add_argument("--out")
    args = ap.parse_args()
    task = load_beir(args.task, args.split)
    pairs = [tuple(int(x) for x in p.split(":")) for p in args.pairs.split(",")]
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        c = concatenation(task, seed, Path(args.cache))
        fitting = c.fit & nonempty_rows(c.docs)
        base = replace(EvalConfig().decoder, seed=seed)
        trained: dict[DecoderConfig, tuple] = {}
        for dims, bits in pairs:
            for name, cfg in configs(base, dims).items():
                if cfg not in trained:
                    t = time.perf_counter()
                    trained[cfg] = (train_decoder(c.docs[fitting], cfg)[0], time.perf_counter() - t)
                decoder, secs = trained[cfg]
                d, q = decode(decoder, c.docs, dims), decode(decoder, c.queries, dims)
                row = {"seed": seed, "variant": f"{dims}d-{bits}b-{name}", "train_s": round(secs, 1)}
                for scoring, s, i, _, _ in quantized_search(d, q, bits, RETRIEVE_K, fit=c.fit):
                    row[scoring] = mteb_scores(task, s, i)["ndcg_at_10"]
                print(json.dumps(row), flush=True)
                rows.append(row)
    summarise(rows, args.out)


if __name__ == "__main__":
    main()
