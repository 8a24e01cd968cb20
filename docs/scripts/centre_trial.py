"""A decoder trained on the corpus-centred concatenation: does keeping the centred cosines
(what centred PCA keeps) instead of the raw ones lift the index above PCA? Fitted on a
seeded half of the corpus like ``cecq eval --fit-fraction 0.5``; every document coded with
the default product codes on the prefix they read; asymmetric and symmetric nDCG@10.

The default decoder keeps the raw cosines of the concatenation and starts from its
uncentred PCA. Every base model's vectors share a large mean direction (anisotropy), which
raw cosines keep and centred PCA removes. ``centre`` trains the same decoder on the rows
minus the fitted rows' mean (so its PCA start is centred PCA and its loss keeps centred
cosines), then folds the mean into the first layer's bias: the saved decoder reads raw
rows like any other. Nothing reads queries or judgements but the final scoring.

    python docs/scripts/centre_trial.py ../shared/data/scifact --split train --seeds 0,1,2,3,4 \
        --cache C --variants default,centre,pca
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from codes_trial import cecq_pq, concatenation, score_variant, summarise, trial_parser

from cecq.config import EvalConfig
from cecq.decoder import decode, train_decoder
from cecq.encoders import nonempty_rows
from cecq.eval.baselines import PCAProjection
from cecq.eval.beir import load_beir


def variant(name: str, docs: np.ndarray, queries: np.ndarray, fitting: np.ndarray, seed: int):
    """(documents, queries) through the variant's map, 768 dims (PCA: its components)."""
    if name == "pca":
        pca = PCAProjection.fit(docs[fitting], min(768, docs.shape[1]))
        return pca.project(docs), pca.project(queries)
    cfg = replace(EvalConfig().decoder, seed=seed)
    if name.endswith("mlp"):
        cfg = replace(cfg, kind="mlp")
    if name.startswith("out"):  # e.g. out212: a decoder of only the outputs the 53 B codes read
        size = int(name[3:].removesuffix("only"))
        cfg = replace(cfg, out_dim=size)
        if name.endswith("only"):  # out212only: the MRL loss at that size alone, no smaller prefixes
            cfg = replace(cfg, prefix_sizes=(size,))
    rows = docs[fitting]
    if name.startswith("centre"):
        mean = rows.mean(axis=0)
        decoder, _ = train_decoder(rows - mean, cfg)
        first = decoder.net if decoder.kind == "linear" else decoder.net[0]
        with torch.no_grad():  # W (x - mean) + b = W x + (b - W mean): the decoder reads raw rows
            first.bias -= first.weight @ torch.from_numpy(mean)
    else:
        decoder, _ = train_decoder(rows, cfg)
    return decode(decoder, docs), decode(decoder, queries)


def main() -> None:
    ap = trial_parser(__doc__)
    ap.add_argument("--variants", default="default,centre,pca")
    ap.add_argument("--model", action="append", help="base models (default: cecq eval's)")
    ap.add_argument("--out")
    args = ap.parse_args()
    task = load_beir(args.task, args.split)
    budgets = [int(b) for b in args.budgets.split(",")]
    codec = cecq_pq(prefix_norm=True)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        c = concatenation(task, seed, Path(args.cache), args.model)
        docs, queries, fit = c.docs, c.queries, c.fit
        fitting = fit & nonempty_rows(docs)
        for name in args.variants.split(","):
            t = time.perf_counter()
            d, q = variant(name, docs, queries, fitting, seed)
            rows.append(score_variant(task, seed, name, d, q, fit, budgets, codec, time.perf_counter() - t))
    summarise(rows, args.out)


if __name__ == "__main__":
    main()
