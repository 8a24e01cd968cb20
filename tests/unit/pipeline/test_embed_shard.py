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
import pytest

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


def test_a_shard_cut_into_parts_commits_the_same_bytes_as_whole(tmp_path: Path):
    """Parts hold every row once, alike in length (every k-th text, longest first, even when
    the shard comes sorted), and committed together they write the whole shard's bytes; parts
    that are not one whole shard are refused."""
    texts = [" ".join(["ab"] * n) + f" doc{n}" for n in range(1, 31)]  # sorted: shortest first
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    store = Store(str(tmp_path / "store"))
    (shard,) = shard_corpus(str(corpus), store, shard_rows=100).shards

    rows = [steps.part_rows(texts, k, 3) for k in range(3)]
    assert sorted(np.concatenate(rows).tolist()) == list(range(30))
    lengths = [sum(len(texts[i]) for i in r) for r in rows]
    assert max(lengths) - min(lengths) <= max(len(t) for t in texts)  # thirds in order would differ 5x

    whole = steps.embed_shard(store, Recording(), shard, "emb/whole.parquet")
    parts = [steps.embed_part(store, Recording(), shard, k, 3) for k in (2, 0, 1)]
    committed = steps.commit_parts(store, shard, "emb/parts.parquet", sorted(parts, key=lambda p: p.part))
    assert store.read_bytes("emb/parts.parquet") == store.read_bytes("emb/whole.parquet")
    assert (committed.rows, committed.embedded) == (whole.rows, whole.embedded) == (30, 30)
    with pytest.raises(ValueError, match="not one whole shard"):
        steps.commit_parts(store, shard, "emb/bad.parquet", parts[:2])
    assert not store.exists("emb/bad.parquet")


def test_jobs_are_cut_into_parts_only_where_too_few_keep_the_actors_busy():
    from cecq.pipeline.fanout import EmbedJob, split_jobs

    def job(rows: int, group: str = "m", cost: float = 1.0) -> EmbedJob:
        return EmbedJob({"name": f"s{rows}", "rows": rows}, f"out/{group}/{rows}", group=group, relative_cost=cost)

    one = split_jobs([job(5000)], actors=2, min_rows=512)
    assert [(j.part, j.parts) for j in one] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert sum(j.size for j in one) == 5000
    assert {j.name for j in one} == {f"shard s5000 part {k}/4" for k in (1, 2, 3, 4)}
    # a cheap model's shard beside a costly one stays whole
    mixed = split_jobs([job(5000, "minilm"), job(5000, "lexical", 0.01)], actors=2, min_rows=512)
    assert [j.parts for j in mixed if j.group == "lexical"] == [1]
    assert [j.parts for j in mixed if j.group == "minilm"] == [4] * 4
    # many shards, or one actor, or parts below min_rows: left as they are
    many = [job(5000 + i) for i in range(8)]
    assert split_jobs(many, actors=2, min_rows=512) == many
    assert split_jobs([job(5000)], actors=1, min_rows=512) == [job(5000)]
    assert [j.parts for j in split_jobs([job(1500)], actors=2, min_rows=512)] == [2, 2]
    # 3 parts of 512 would fit; 2 keep both actors busy to the end
    assert [j.parts for j in split_jobs([job(1600)], actors=2, min_rows=512)] == [2, 2]
    assert [j.parts for j in split_jobs([job(1600)], actors=4, min_rows=512)] == [3, 3, 3]
