"""Integration: the embed-corpus and reindex flows with a real local Ray and Prefect's
test harness, on a small corpus and tiny models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.corpora import published, write_corpus
from tests.helpers.models import TOPICS

pytestmark = pytest.mark.slow


def run_flow(corpus: Path, store: Path, model: Path) -> dict:
    from flows.embed_corpus import embed_corpus

    return embed_corpus(
        corpus=str(corpus),
        store=str(store),
        models=[str(model), "lexical"],
        shard_rows=20,
        dims=16,
        bits=2,
        out_dim=32,
        max_epochs=3,
    )


def test_embed_corpus_then_reindex(tmp_path, tiny_model_dir, ray_cluster, prefect_api):
    from cecq.catalog import CorpusManifest, current_manifest, load_compressor, load_store_encoder
    from cecq.decoder import decode
    from cecq.encoders import concatenate, load_encoder
    from cecq.pipeline.steps import vectors_of
    from cecq.storage import Store
    from flows.reindex import reindex

    corpus, store_dir = tmp_path / "docs.jsonl", tmp_path / "store"
    docs = write_corpus(corpus)
    result = run_flow(corpus, store_dir, tiny_model_dir)
    assert result["catalog_version"] == 1

    codes = published(store_dir)
    assert sorted(codes) == sorted(d["_id"] for d in docs)  # every document exactly once

    # The stored codes are what the core library computes for the same input.
    store = Store(str(store_dir))
    m = current_manifest(store)
    texts = [(f"{d['title']} {d['text']}").strip() for d in docs]
    tiny = load_encoder(str(tiny_model_dir)).encode(texts)
    lexical = load_store_encoder(store, "lexical", m.corpus_key).encode(texts)
    stored = {}
    for key in m.model_keys:
        for path in store.glob(f"embeddings/{key}/*.parquet"):
            t = store.read_parquet(path)
            stored.setdefault(key, {}).update(zip(t.column("id").to_pylist(), vectors_of(t)))
    order = [d["_id"] for d in docs]
    np.testing.assert_allclose(np.stack([stored[m.model_keys[0]][i] for i in order]), tiny, atol=1e-5)
    np.testing.assert_allclose(np.stack([stored[m.model_keys[1]][i] for i in order]), lexical, atol=1e-5)
    decoder, meta, quantizer = load_compressor(store, m.decoder, m.quantizer)
    weights = meta["model_weights"]  # fitted on the corpus: the two models' similarity spreads differ
    assert len(weights) == 2 and max(weights) == 1.0 and min(weights) < 1.0
    x = concatenate([np.stack([stored[k][i] for i in order]) for k in m.model_keys], weights)
    expected = quantizer.quantize(decode(decoder, x, quantizer.dim))
    assert [codes[i] for i in order] == [bytes(r) for r in expected]

    # Reindex: one document of the last shard changes, one is appended.
    files_before = {p: os.stat(p).st_mtime_ns for p in store_dir.rglob("*.parquet")}
    write_corpus(corpus, edits={44: "a changed text about the compiler"}, extra=1)
    result2 = reindex(corpus=str(corpus), store=str(store_dir))
    assert result2["catalog_version"] == 2
    assert result2["compressor_id"] == result["compressor_id"]  # 2 of 46 changed: decoder reused
    run = store.read_json(f"runs/{result2['run_id']}/run.json")
    assert [e["embedded_documents"] for e in run["embedding"]] == [2, 2]
    assert [e["skipped_shards"] for e in run["embedding"]] == [2, 2]
    codes2 = published(store_dir)
    assert len(codes2) == 46 and "d045" in codes2
    unchanged = [i for i in order if i < "d040"]
    assert all(codes2[i] == codes[i] for i in unchanged)
    for p, mtime in files_before.items():  # nothing committed before was rewritten
        assert os.stat(p).st_mtime_ns == mtime, p
    manifest = CorpusManifest.from_dict(store.read_json(m.corpus_manifest))
    assert manifest.rows == 45  # the first version's manifest is still readable


def test_bad_corpus_leaves_published_catalog_intact(tmp_path, tiny_model_dir, ray_cluster, prefect_api):
    from cecq.errors import DataError
    from flows.embed_corpus import embed_corpus

    corpus, store_dir = tmp_path / "docs.jsonl", tmp_path / "store"
    write_corpus(corpus, n=30)
    embed_corpus(
        corpus=str(corpus),
        store=str(store_dir),
        models=["lexical"],
        shard_rows=20,
        dims=16,
        bits=2,
        out_dim=32,
        max_epochs=2,
    )
    before = published(store_dir)
    with corpus.open("a") as f:
        f.write(json.dumps({"_id": "d001", "text": "a duplicate id"}) + "\n")
    with pytest.raises(DataError, match="duplicate document id 'd001'"):
        embed_corpus(
            corpus=str(corpus),
            store=str(store_dir),
            models=["lexical"],
            shard_rows=20,
            dims=16,
            bits=2,
            out_dim=32,
            max_epochs=2,
        )
    assert published(store_dir) == before


@pytest.mark.parametrize("quantization,budget", [("mixed", 5), ("product", 4)])
def test_a_byte_budget_is_published_searched_and_kept_by_reindex(
    tmp_path, ray_cluster, prefect_api, quantization, budget
):
    from cecq.catalog import connect, current_manifest, load_compressor, search_store
    from cecq.cli import main
    from cecq.quantization import MixedQuantizer, ProductQuantizer
    from cecq.storage import Store
    from flows.embed_corpus import embed_corpus
    from flows.reindex import reindex

    beir, store_dir = tmp_path / "beir", tmp_path / "store"
    beir.mkdir()
    corpus = beir / "corpus.jsonl"
    docs = write_corpus(corpus, n=40)
    result = embed_corpus(
        corpus=str(beir),
        store=str(store_dir),
        models=["lexical"],
        shard_rows=20,
        dims=16,
        budget_bytes=budget,
        quantization=quantization,
        out_dim=32,
        max_epochs=2,
        index="flat",  # the optional index step
    )
    assert result["index"] == "flat"
    store = Store(str(store_dir))
    run = store.read_json(f"runs/{result['run_id']}/run.json")
    assert run["bits"] is None and run["budget_bytes"] == budget and 1 <= run["bytes_per_doc"] <= budget
    assert run["quantization"] == quantization
    m = current_manifest(store)
    _, _, quantizer = load_compressor(store, m.decoder, m.quantizer)
    assert quantizer.bytes_per_vector == run["bytes_per_doc"]
    if quantization == "mixed":
        assert isinstance(quantizer, MixedQuantizer)
        assert len(set(quantizer.bits_per_dim.tolist())) >= 2  # fitted per dim, not one width for all
    else:
        assert isinstance(quantizer, ProductQuantizer) and quantizer.kept_dims == 16 and run["bytes_per_doc"] == budget
    widths = connect(store).execute("SELECT DISTINCT octet_length(code) FROM documents").fetchall()
    assert widths == [(run["bytes_per_doc"],)]
    hits = search_store(store, docs[5]["title"] + " " + docs[5]["text"], k=3)
    n_topics = len(TOPICS)  # the corpus cycles through the topics: document i is on topic i % n_topics
    assert len(hits) == 3 and all(int(h["id"][1:]) % n_topics == 5 % n_topics for h in hits), hits

    # cecq eval-store scores the published index on the task's queries: one query a topic,
    # every document of that topic relevant
    topics = list(TOPICS.values())
    (beir / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{t}", "text": " ".join(words[:4])}) + "\n" for t, words in enumerate(topics))
    )
    (beir / "qrels").mkdir()
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"q{int(d['_id'][1:]) % n_topics}\t{d['_id']}\t1\n" for d in docs if d["text"])
    )
    assert main(["eval-store", str(beir), "--store", str(store_dir), "--json", str(tmp_path / "eval.json")]) == 0
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert scores["queries"] == n_topics and scores["budget_bytes"] == budget and scores["bits"] is None
    assert scores["quantization"] == quantization
    assert scores["ndcg_at_10"] > 0.8 and scores["recall_at_100"] > 0.9, scores
    assert scores["search"]["path"] == "index" and scores["search"]["index"] == "flat"
    exact_args = ["eval-store", str(beir), "--store", str(store_dir), "--exact", "--json", str(tmp_path / "ex.json")]
    assert main(exact_args) == 0
    exact = json.loads((tmp_path / "ex.json").read_text())
    assert exact["search"]["path"] == "exact" and exact["ndcg_at_10"] == pytest.approx(scores["ndcg_at_10"], abs=1e-6)
    assert (
        main(
            [
                "eval-store",
                str(beir),
                "--store",
                str(store_dir),
                "--scoring",
                "symmetric",
                "--json",
                str(tmp_path / "sym.json"),
            ]
        )
        == 0
    )
    symmetric = json.loads((tmp_path / "sym.json").read_text())
    assert symmetric["scoring"] == "symmetric" and symmetric["ndcg_at_10"] > 0.8, symmetric

    write_corpus(corpus, n=40, extra=1)
    result2 = reindex(corpus=str(beir), store=str(store_dir), index="ivf", nlist=2)
    assert result2["index"] == "ivf-nlist2" and result2["catalog_version"] == 2
    assert store.exists("catalog/v000002/index/ivf-nlist2.json")
    run2 = store.read_json(f"runs/{result2['run_id']}/run.json")
    assert run2["budget_bytes"] == budget and run2["quantization"] == quantization
    assert result2["compressor_id"] == result["compressor_id"]
    assert len(published(store_dir)) == 41
