"""``embed_shard``: what an embedding actor does with one shard. Texts reach the encoder in
chunks, longest first across the shard (an encoder sorts only within what it is given), and
the vectors land in the shard's row order."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from cecq.encoders import Encoder, TextKind
from cecq.pipeline import steps
from cecq.pipeline.corpus import shard_corpus
from cecq.storage import Store


class Recording(Encoder):
    """A toy encoder whose vector of a text is a function of the text alone; records its calls."""

    name, dim = "recording", 4

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _encode(self, texts: list[str], kind: TextKind, show_progress: bool) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([[len(t), t.count("a") + 1, t.count("b") + 1, 1.0] for t in texts], dtype=np.float32)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim}


def test_chunks_go_longest_first_across_the_shard_and_vectors_keep_row_order(tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(0)
    texts = [" ".join(["ab"] * int(n)) + f" doc{i}" for i, n in enumerate(rng.integers(1, 40, size=23))]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    store = Store(str(tmp_path / "store"))
    (shard,) = shard_corpus(str(corpus), store, shard_rows=100).shards
    monkeypatch.setattr(steps, "PROGRESS_CHUNK", 5)
    encoder, seen = Recording(), []

    result = steps.embed_shard(store, encoder, shard, "emb/s0.parquet", progress=seen.append)

    lengths = [[len(t) for t in call] for call in encoder.calls]
    assert [len(c) for c in lengths] == [5, 5, 5, 5, 3]
    for longer, shorter in itertools.pairwise(lengths):  # corpus-order chunks mix long and short
        assert min(longer) >= max(shorter), lengths
    assert seen == [0, 5, 10, 15, 20, 23] and result.embedded == 23
    table = pq.read_table(tmp_path / "store" / "emb" / "s0.parquet")
    stored = dict(zip(table.column("id").to_pylist(), np.asarray(table.column("embedding").to_pylist())))
    expected = Recording().encode(texts)
    for i in range(len(texts)):
        np.testing.assert_array_equal(stored[f"d{i}"], expected[i])
