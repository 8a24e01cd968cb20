"""Pseudo-query contrastive training of the decoder (inverse cloze): does a label-free
retrieval signal lift the compressed index above PCA, which the MRL similarity loss alone
only matches? Fitted on a seeded half of the corpus like ``cecq eval --fit-fraction 0.5``.

A linear decoder trained only to keep the concatenation's cosines converges towards the
uncentred PCA projection it starts from (Eckart-Young: that projection is the best rank-k
approximation of the Gram matrix), so its lead over PCA stays within noise. This trial adds,
to the MRL loss, an in-batch InfoNCE term on pseudo-queries cut from the fitted documents
(one sentence a document, :func:`cecq.encoders.weights.pseudo_queries`) against their own
document's concatenation, summed over the MRL prefix sizes: the decoder may then weigh the
directions that tell a document's sentences from other documents' more than PCA does.
Nothing reads queries or judgements but the final scoring.

    python docs/scripts/ict_trial.py ../shared/data/scifact --split train --seeds 0,1,2 \
        --cache C --lambdas 0,0.003,0.01,0.03 --budgets 27,53
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from codes_trial import cecq_pq, concatenation, outputs, score_variant, summarise, trial_parser
from torch import nn

from cecq.config import EvalConfig
from cecq.decoder import decode
from cecq.decoder.losses import mrl_similarity_loss
from cecq.decoder.model import Decoder
from cecq.decoder.strategies import pca_initialise
from cecq.encoders import concatenate, nonempty_rows
from cecq.encoders.weights import pseudo_queries
from cecq.eval.beir import load_beir


def task_vectors(task, seed: int, cache: Path, overlap_drop: float):
    """(documents, queries, fit mask, pseudo-query concatenations, their documents' rows)."""
    c = concatenation(task, seed, cache)
    fit = c.fit
    pq = pseudo_queries(c.texts, len(c.texts), seed + 11, overlap_drop)
    key = cache / f"ict-{task.name}-{seed}-{overlap_drop}-{len(pq.rows)}.npy"
    if key.is_file():
        pq_x = np.load(key)
    else:
        pq_x = concatenate([e.encode(pq.queries, "query") for e in c.encoders], c.weights)
        np.save(key, pq_x)
    rows = np.flatnonzero(fit)[pq.rows]
    return c.docs, c.queries, fit, pq_x, rows


def train_ict(
    docs: np.ndarray, pq_x: np.ndarray, pq_docs: np.ndarray, lam: float, seed: int, tau: float, epochs: int
) -> Decoder:
    """The default linear decoder (PCA start, AdamW, batches of 512, the MRL sizes), with
    ``lam`` times the pseudo-queries' InfoNCE loss (temperature ``tau``) added each step."""
    cfg = EvalConfig().decoder
    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(docs, np.float32))
    qx, dx = torch.from_numpy(pq_x.astype(np.float32)), torch.from_numpy(pq_docs.astype(np.float32))
    dec = Decoder(x.shape[1], cfg.out_dim)
    pca_initialise(dec, x)
    sizes = cfg.effective_prefix_sizes()
    opt = torch.optim.AdamW(dec.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(seed)
    steps = -(-len(x) // cfg.batch_size)
    pq_batch = max(32, -(-len(qx) // steps))
    for _ in range(epochs):
        order, pq_order = torch.randperm(len(x), generator=g), torch.randperm(len(qx), generator=g)
        for s in range(steps):
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            if len(idx) < 4:
                continue
            batch = x[idx]
            loss = mrl_similarity_loss(batch, dec(batch), sizes)
            if lam > 0:
                j = pq_order[(s * pq_batch) % len(qx) :][:pq_batch]
                zq, zd = dec(qx[j]), dec(dx[j])
                target = torch.arange(len(j))
                ict = sum(
                    nn.functional.cross_entropy(
                        nn.functional.normalize(zq[:, :d], dim=1) @ nn.functional.normalize(zd[:, :d], dim=1).T / tau,
                        target,
                    )
                    for d in sizes
                )
                loss = loss + lam * ict
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    dec.eval()
    return dec


def main() -> None:
    ap = trial_parser(__doc__)
    ap.add_argument("--lambdas", default="0,0.01")
    ap.add_argument("--tau", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--overlap-drop", type=float, default=0.0)
    ap.add_argument("--pca", action="store_true", help="also score PCA with the same codes")
    ap.add_argument("--out")
    args = ap.parse_args()
    task = load_beir(args.task, args.split)
    cache = Path(args.cache)
    budgets = [int(b) for b in args.budgets.split(",")]
    codec = cecq_pq(prefix_norm=True)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        docs, queries, fit, pq_x, pq_rows = task_vectors(task, seed, cache, args.overlap_drop)
        fitting = fit & nonempty_rows(docs)
        outs = {}
        for lam in (float(v) for v in args.lambdas.split(",")):
            t = time.perf_counter()
            dec = train_ict(docs[fitting], pq_x, docs[pq_rows], lam, seed, args.tau, args.epochs)
            outs[f"ict{lam:g}"] = (decode(dec, docs), decode(dec, queries), time.perf_counter() - t)
        if args.pca:
            d, q, _ = outputs(task, seed, cache, "pca")
            outs["pca"] = (d, q, 0.0)
        for name, (d, q, secs) in outs.items():
            rows.append(score_variant(task, seed, name, d, q, fit, budgets, codec, secs))
    summarise(rows, args.out)


if __name__ == "__main__":
    main()
