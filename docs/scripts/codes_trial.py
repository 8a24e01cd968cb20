"""Code layouts at the same bytes, on one task's decoder outputs: which kept dims, how many
centroids a subspace, random rotation or FAISS's OPQ, residual codes. Fitted on a seeded
half of the corpus like ``cecq eval --fit-fraction 0.5``; every document coded; asymmetric
(float query against decoded codes) and symmetric cosine nDCG@10.

    python docs/scripts/codes_trial.py ../shared/data/scifact --split train --seeds 0,1,2 \
        --cache /work/notes/emb-cache --budgets 27,53 --out trial.json

Decoder outputs of each seed are cached beside the embeddings (``--cache``), so a second
run only fits codes. Choose on SciFact's train judgements; report on test.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from cecq.config import EvalConfig, ModelSpec
from cecq.decoder import decode, train_decoder
from cecq.encoders import concatenate, fit_weights, l2_normalize, nonempty_rows
from cecq.eval.baselines import PCAProjection
from cecq.eval.beir import load_beir
from cecq.eval.evaluate import embed_task, embedding_key, fit_mask, mteb_scores
from cecq.eval.metrics import RETRIEVE_K
from cecq.quantization.product import ProductQuantizer, random_rotation
from cecq.search import search_float

Codec = Callable[[np.ndarray, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class Concatenation:
    """One seed's default (guarded) concatenation, weights and views fitted on its seeded half."""

    docs: np.ndarray
    queries: np.ndarray
    fit: np.ndarray  # the fitted half of the documents
    encoders: list
    texts: list[str]  # the fitted documents' texts
    weights: list[float]


def concatenation(task, seed: int, cache: Path, models: list[str] | None = None) -> Concatenation:
    """The concatenation ``cecq eval --fit-fraction 0.5 --seed SEED`` scores (default models
    unless ``models``), base-model embeddings cached in ``cache``."""
    config = EvalConfig(fit_fraction=0.5)
    if models:
        config = replace(config, models=tuple(ModelSpec(m) for m in models))
    fit = fit_mask(len(task.doc_ids), 0.5, seed)
    encoders, doc_parts, query_parts = embed_task(task, config, cache_dir=cache, fit=fit)
    texts = [t for t, k in zip(task.doc_texts, fit) if k]
    weights, _ = fit_weights("guarded", encoders, texts, [p[fit] for p in doc_parts], seed)
    docs, queries = concatenate(doc_parts, weights), concatenate(query_parts, weights)
    return Concatenation(docs, queries, fit, encoders, texts, weights)


def outputs(task, seed: int, cache: Path, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(documents, queries, fit mask) of the decoder (or PCA) for one seed, cached."""
    config = EvalConfig(fit_fraction=0.5)
    config = replace(config, decoder=replace(config.decoder, seed=seed))
    key = cache / f"{embedding_key(task, method, seed)}.out.npz"
    fit = fit_mask(len(task.doc_ids), 0.5, seed)
    if key.is_file():
        z = np.load(key)
        return z["docs"], z["queries"], fit
    c = concatenation(task, seed, cache)
    docs, queries = c.docs, c.queries
    fitting = fit & nonempty_rows(docs)
    if method == "pca":
        pca = PCAProjection.fit(docs[fitting], min(768, docs.shape[1]))
        d, q = pca.project(docs), pca.project(queries)
    else:
        decoder, _ = train_decoder(docs[fitting], config.decoder)
        d, q = decode(decoder, docs), decode(decoder, queries)
    np.savez(key, docs=d, queries=q)
    return d, q, fit


def _rotated(x: np.ndarray, kept: int, seed: int) -> np.ndarray:
    return np.ascontiguousarray(x[:, :kept] @ random_rotation(kept, seed))


def pq(sub_dim: int, nbits: int = 8, opq: bool = False) -> Codec:
    """Product codes: ``budget * 8 / nbits`` subspaces of ``sub_dim`` dims of the prefix."""

    def run(d: np.ndarray, q: np.ndarray, fit: np.ndarray, budget: int):
        m = budget * 8 // nbits
        kept = m * sub_dim
        if opq:
            mat = faiss.OPQMatrix(kept, m)
            mat.niter = 25
            mat.train(np.ascontiguousarray(d[fit, :kept]))
            rd, rq = mat.apply(np.ascontiguousarray(d[:, :kept])), mat.apply(np.ascontiguousarray(q[:, :kept]))
        else:
            rd, rq = _rotated(d, kept, 0), _rotated(q, kept, 0)
        p = faiss.ProductQuantizer(kept, m, nbits)
        p.train(np.ascontiguousarray(rd[fit]))
        dec = p.decode(p.compute_codes(rd))
        return dec, rq, p.decode(p.compute_codes(rq))

    return run


def cecq_pq(prefix_norm: bool = False) -> Codec:
    """cecq's product quantizer; with ``prefix_norm``, fitted on the kept prefix normalised
    (the decoder's ``budget * 4``-prefix, as ``decode`` gives it) instead of the full output's
    first dims, so an index needs only those rows of the decoder."""

    def run(d: np.ndarray, q: np.ndarray, fit: np.ndarray, budget: int):
        if prefix_norm:
            kept = ProductQuantizer.reads(d.shape[1], None, budget)
            d, q = l2_normalize(d[:, :kept]), l2_normalize(q[:, :kept])
        p = ProductQuantizer.fit(d[fit], budget)
        return p.dequantize(p.encode(d)), p.project(q), p.dequantize(p.encode(q))

    return run


def rq(kept: int, beam: int = 1) -> Codec:
    """Residual codes: ``budget`` stages of 256 centroids over the whole kept prefix."""

    def run(d: np.ndarray, q: np.ndarray, fit: np.ndarray, budget: int):
        r = faiss.ResidualQuantizer(kept, budget, 8)
        r.max_beam_size = beam
        r.train_type = faiss.ResidualQuantizer.Train_default
        r.verbose = False
        dd, qq = np.ascontiguousarray(d[:, :kept]), np.ascontiguousarray(q[:, :kept])
        r.train(np.ascontiguousarray(dd[fit]))
        dec = r.decode(r.compute_codes(dd))
        return dec, qq, r.decode(r.compute_codes(qq))

    return run


def ndcg(task, q: np.ndarray, d: np.ndarray) -> float:
    return mteb_scores(task, *search_float(l2_normalize(q), l2_normalize(d), RETRIEVE_K))["ndcg_at_10"]


def score_variant(task, seed: int, name: str, d, q, fit, budgets: list[int], codec: Codec, secs: float) -> dict:
    """One variant's row: nDCG@10 in float (all dims and each budget's kept prefix) and with
    the budget's codes, asymmetric and symmetric; printed as it is made."""
    row = {"seed": seed, "variant": name, "train_s": round(secs, 1), "float768": ndcg(task, q, d)}
    for b in budgets:
        kept = 4 * b
        row[f"float{kept}"] = ndcg(task, q[:, :kept], d[:, :kept])
        dec_d, q_a, q_s = codec(d, q, fit, b)
        row[f"{b}B_asym"], row[f"{b}B_sym"] = ndcg(task, q_a, dec_d), ndcg(task, q_s, dec_d)
    print(json.dumps(row), flush=True)
    return row


def summarise(rows: list[dict], out: str | None) -> None:
    """Write the rows (``out``) and print each variant's mean over seeds (worst seed)."""
    if out:
        Path(out).write_text(json.dumps(rows, indent=1))
    names = list(dict.fromkeys(r["variant"] for r in rows))
    cols = [k for k in rows[0] if k not in ("seed", "variant", "train_s")]
    print("variant      " + "  ".join(f"{c:>15s}" for c in cols))
    for n in names:
        sel = [r for r in rows if r["variant"] == n]
        cells = [f"{np.mean([r[c] for r in sel]):.4f} ({min(r[c] for r in sel):.4f})" for c in cols]
        print(f"{n:12s} " + "  ".join(f"{c:>15s}" for c in cells))


def trial_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments every trial script takes: a BEIR folder, the judgements' split (train:
    the dev split), seeds, byte budgets and the embedding cache."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("task")
    ap.add_argument("--split", default="train")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--budgets", default="27,53")
    ap.add_argument("--cache", required=True)
    return ap


def main() -> None:
    ap = trial_parser(__doc__)
    ap.add_argument("--only", default="", help="comma-separated variant names")
    ap.add_argument("--method", default="cecq", choices=["cecq", "pca"])
    ap.add_argument("--out")
    args = ap.parse_args()
    task = load_beir(args.task, args.split)
    variants: dict[str, Codec] = {
        "cecq4x8": cecq_pq(),
        "cecq4x8-prefix": cecq_pq(prefix_norm=True),
        **{f"pq{s}x8": pq(s) for s in (2, 3, 4, 6, 8)},
        **{f"pq{s}x4": pq(s, 4) for s in (1, 2, 3, 4)},
        **{f"opq{s}x8": pq(s, 8, opq=True) for s in (4, 6, 8)},
        **{f"opq{s}x4": pq(s, 4, opq=True) for s in (2, 3)},
        "rq128": rq(128),
        "rq256": rq(256),
    }
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        d, q, fit = outputs(task, seed, Path(args.cache), args.method)
        rows.append({"seed": seed, "variant": "float-768", "ndcg_asym": ndcg(task, q, d)})
        for budget in (int(b) for b in args.budgets.split(",")):
            for name, codec in variants.items():
                t = time.perf_counter()
                dec, rq_, q_sym = codec(d, q, fit, budget)
                row = {
                    "seed": seed,
                    "budget": budget,
                    "variant": name,
                    "ndcg_asym": ndcg(task, rq_, dec),
                    "ndcg_sym": ndcg(task, q_sym, dec),
                    "seconds": time.perf_counter() - t,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    summary: dict[tuple, list] = {}
    for r in rows:
        if "budget" in r:
            summary.setdefault((r["budget"], r["variant"]), []).append((r["ndcg_asym"], r["ndcg_sym"]))
    for (b, v), xs in sorted(summary.items()):
        a = np.array(xs)
        print(f"{b:3d} B {v:10s} asym {a[:, 0].mean():.4f} (min {a[:, 0].min():.4f})  sym {a[:, 1].mean():.4f}")


if __name__ == "__main__":
    main()
