"""The round-7 figures behind the product quantizer's changes and the embedding pool's job
weights (docs/quality-round2.md section 7; docs/performance.md).

    python docs/scripts/quantizer_figures.py files      # quantizer file bytes, seed vs matrix
    python docs/scripts/quantizer_figures.py balance    # subspace variance: Givens vs QR rotation
    python docs/scripts/quantizer_figures.py threads    # codebooks at 1 and 2 FAISS threads
    git show 41fd134:cecq/quantization/product.py > /tmp/old_product.py
    python docs/scripts/quantizer_figures.py kmeans --old /tmp/old_product.py   # fit time, error
    python docs/scripts/quantizer_figures.py cost       # mpnet's time against MiniLM's (7 min)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time

import numpy as np

from cecq.eval.baselines import stored_bytes
from cecq.quantization.product import ProductQuantizer, random_rotation


def files() -> None:
    x = np.random.default_rng(0).standard_normal((3000, 768)).astype(np.float32)
    for budget in (27, 53):
        pq = ProductQuantizer.fit(x, budget, iterations=2)
        matrix = ProductQuantizer(pq.input_dim, pq.rotation, pq.codebooks)  # no seed: the matrix is stored
        print(f"{budget} B: seeded file {stored_bytes(pq):,} B, with the matrix {stored_bytes(matrix):,} B")


def threads() -> None:
    import faiss

    x = (np.random.default_rng(0).standard_normal((3000, 256)) * np.linspace(2, 0.2, 256)).astype(np.float32)
    books = []
    for n in (1, 2):
        faiss.omp_set_num_threads(n)
        books.append(ProductQuantizer.fit(x, 53).codebooks)
    print("codebooks at 1 and 2 FAISS threads bit-identical:", np.array_equal(*books))


def qr_rotation(dim: int, seed: int = 0) -> np.ndarray:
    """cecq's generator before round 7: QR of a Gaussian, signs fixed."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return (q * np.where(np.diag(r) < 0, -1.0, 1.0)).astype(np.float32)


def balance() -> None:
    for dim in (108, 212):
        variance = np.linspace(3, 0.05, dim) ** 2  # decreasing, like an MRL decoder's dims
        for name, make in (("qr", qr_rotation), ("givens", random_rotation)):
            rot = make(dim, 0).astype(np.float64)
            sub = ((rot**2) * variance[:, None]).sum(0).reshape(-1, 4).sum(1)
            print(f"{dim} dims, {name}: subspace variance coefficient of variation {sub.std() / sub.mean():.3f}")


def kmeans(old_path: str) -> None:
    spec = importlib.util.spec_from_file_location("old_product", old_path)
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_product"] = old  # dataclasses look their module up there
    spec.loader.exec_module(old)
    rng = np.random.default_rng(0)
    for n in (2592, 20000):
        x = (rng.standard_normal((n, 768)) * np.linspace(2, 0.05, 768)).astype(np.float32)
        for name, cls in (("old", old.ProductQuantizer), ("faiss", ProductQuantizer)) * 2:
            start = time.perf_counter()
            pq = cls.fit(x, 53)
            seconds = time.perf_counter() - start
            error = float(((pq.project(x) - pq.dequantize(pq.encode(x))) ** 2).sum(1).mean())
            print(f"{n} rows, {name} k-means: {seconds:.2f} s, squared error {error:.4f}")


def cost() -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from cecq.encoders.sentence_transformer import resolve_model

    torch.set_num_threads(1)
    texts = []
    with open("../shared/data/scifact/corpus.jsonl") as f:
        for i, line in enumerate(f):
            if i % 40 == 0:
                doc = json.loads(line)
                texts.append(f"{doc.get('title', '')} {doc.get('text', '')}".strip())
    texts = texts[:96]
    names = ("all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2")
    models = {n: SentenceTransformer(resolve_model(n), device="cpu") for n in names}
    seconds = dict.fromkeys(names, 0.0)
    for _ in range(2):  # alternating, so both see the same machine
        for n, model in models.items():
            start = time.perf_counter()
            model.encode(texts, batch_size=32)
            seconds[n] += time.perf_counter() - start
    print(seconds, f"mpnet / MiniLM: {seconds[names[1]] / seconds[names[0]]:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("figure", choices=["files", "balance", "threads", "kmeans", "cost"])
    ap.add_argument("--old", help="kmeans: cecq's product.py before round 7 (git show 41fd134:...)")
    args = ap.parse_args()
    if args.figure == "kmeans":
        if not args.old:
            ap.error("kmeans needs --old")
        kmeans(args.old)
    else:
        {"files": files, "balance": balance, "threads": threads, "cost": cost}[args.figure]()


if __name__ == "__main__":
    main()
