"""A decoder loss aware of asymmetric distances: fine-tune the trained decoder so that a
float prefix against a product-coded one keeps the input's cosines (straight-through codes,
refitted each round), beside the MRL loss; compare with the decoder as trained. Fitted on a
seeded half of the corpus, every document coded, product codes of cecq.

    python docs/scripts/qat_trial.py ../shared/data/scifact --split train --seeds 0,1,2 \
        --cache /work/notes/emb-cache --budgets 27,53
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import torch
from codes_trial import ndcg, trial_parser  # docs/scripts: run as a script from there
from torch import nn

from cecq.config import EvalConfig
from cecq.decoder import decode, mrl_similarity_loss, train_decoder
from cecq.decoder.losses import cosine_matrix
from cecq.encoders import concatenate, fit_weights, nonempty_rows
from cecq.eval.beir import load_beir
from cecq.eval.evaluate import embed_task, fit_mask
from cecq.quantization.product import ProductQuantizer


def scores(task, docs: np.ndarray, queries: np.ndarray, fit: np.ndarray, budget: int) -> tuple[float, float]:
    pq = ProductQuantizer.fit(docs[fit], budget)
    dec = pq.dequantize(pq.encode(docs))
    return ndcg(task, pq.project(queries), dec), ndcg(task, pq.dequantize(pq.encode(queries)), dec)


def fine_tune(decoder, x: torch.Tensor, budget: int, sizes, rounds: int, epochs: int, lr: float, weight: float):
    kept = 4 * budget
    for _ in range(rounds):
        with torch.no_grad():
            y = nn.functional.normalize(decoder(x), dim=-1).numpy()
        pq = ProductQuantizer.fit(y, budget)
        rot, books = torch.from_numpy(pq.rotation), torch.from_numpy(pq.codebooks)
        opt = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(0)
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(512):
                batch = x[idx]
                out = decoder(batch)
                p = nn.functional.normalize(out, dim=-1)[:, :kept] @ rot
                with torch.no_grad():
                    sub = p.reshape(len(p), budget, 4).transpose(0, 1)  # (m, n, 4)
                    codes = torch.cdist(sub, books).argmin(-1)  # (m, n)
                    hat = torch.stack([books[j, codes[j]] for j in range(budget)], 1).reshape(len(p), kept)
                coded = p + (hat - p).detach()
                target = cosine_matrix(batch)
                off = ~torch.eye(len(batch), dtype=torch.bool)
                asym = (cosine_matrix(p, coded) - target)[off].pow(2).mean()
                loss = weight * asym + mrl_similarity_loss(batch, out, sizes)
                opt.zero_grad()
                loss.backward()
                opt.step()
    return decoder


def main() -> None:
    ap = trial_parser(__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--weight", type=float, default=1.0)
    args = ap.parse_args()
    task = load_beir(args.task, args.split)
    for seed in (int(s) for s in args.seeds.split(",")):
        config = EvalConfig(fit_fraction=0.5)
        config = replace(config, decoder=replace(config.decoder, seed=seed))
        fit = fit_mask(len(task.doc_ids), 0.5, seed)
        encoders, doc_parts, query_parts = embed_task(task, config, cache_dir=args.cache, fit=fit)
        texts = [t for t, k in zip(task.doc_texts, fit) if k]
        weights, _ = fit_weights("guarded", encoders, texts, [p[fit] for p in doc_parts], seed)
        docs, queries = concatenate(doc_parts, weights), concatenate(query_parts, weights)
        fitting = fit & nonempty_rows(docs)
        decoder, _ = train_decoder(docs[fitting], config.decoder)
        state = {k: v.clone() for k, v in decoder.state_dict().items()}
        sizes = config.decoder.effective_prefix_sizes(config.decoder.out_dim)
        for budget in (int(b) for b in args.budgets.split(",")):
            decoder.load_state_dict(state)
            d, q = decode(decoder, docs), decode(decoder, queries)
            base = scores(task, d, q, fit, budget)
            torch.manual_seed(seed)
            tuned = fine_tune(
                decoder, torch.from_numpy(docs[fitting]), budget, sizes, args.rounds, args.epochs, args.lr, args.weight
            )
            d2, q2 = decode(tuned, docs), decode(tuned, queries)
            after = scores(task, d2, q2, fit, budget)
            row = {"seed": seed, "budget": budget, "asym": [base[0], after[0]], "sym": [base[1], after[1]]}
            row["float"] = [ndcg(task, q, d), ndcg(task, q2, d2)]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
