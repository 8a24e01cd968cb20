"""The spread rule's lexical weight on SciFact's documents as given, with half of them cut
to their title, and with titles only (docs/quality-round2.md, section 5). Corpus only.

    .venv/bin/python docs/scripts/titles_spread.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from cecq.config import ModelSpec
from cecq.encoders import load_encoder, spread_weights


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    args = p.parse_args()
    with open(f"{args.data}/scifact/corpus.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    half = np.random.default_rng(0).random(len(rows)) < 0.5
    full = [f"{r['title']} {r['text']}".strip() for r in rows]
    titles = [r["title"] for r in rows]
    mixed = [t if h else f for t, f, h in zip(titles, full, half)]
    minilm = load_encoder(ModelSpec("all-MiniLM-L6-v2"))
    full_vecs, title_vecs = minilm.encode(full, "document"), minilm.encode(titles, "document")
    variants = {
        "as given": (full, full_vecs),
        "half titles": (mixed, np.where(half[:, None], title_vecs, full_vecs)),
        "titles": (titles, title_vecs),
    }
    for name, (texts, vecs) in variants.items():
        lexical = load_encoder(ModelSpec("lexical"), fit_texts=texts).encode(texts, "document")
        print(json.dumps({"corpus": name, "spread_weights": spread_weights([vecs, lexical])}), flush=True)


if __name__ == "__main__":
    main()
