"""Per-model concatenation weights, fitted on corpus embeddings without judgements."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cecq.encoders.base import l2_normalize, nonempty_rows


def spread_weights(parts: Sequence[np.ndarray], sample_rows: int = 2000, seed: int = 0) -> list[float]:
    """Per-model concatenation weights fitted on corpus embeddings, without judgements: each
    model's squared weight is proportional to the spread (standard deviation) of its cosine
    similarities between documents, the strongest-spread model at weight 1. A model whose
    similarities barely vary (e.g. sparse lexical vectors, mostly near 0) says less about
    which documents are close, so its share of the concatenated similarity is reduced."""
    idx = np.flatnonzero(np.all([nonempty_rows(p) for p in parts], axis=0))
    if len(idx) < 3:
        return [1.0] * len(parts)
    idx = np.random.default_rng(seed).choice(idx, min(sample_rows, len(idx)), replace=False)
    off = ~np.eye(len(idx), dtype=bool)
    spreads = []
    for p in parts:
        x = l2_normalize(p[idx])
        spreads.append(float((x @ x.T)[off].std()))
    top = max(spreads)
    return [float(np.sqrt(s / top)) if top > 0 else 1.0 for s in spreads]
