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
    # the store holds only the 16 decoder rows the codes read, of the 32 trained
    assert (decoder.out_dim, quantizer.dim, meta["trained_out_dim"]) == (16, 16, 32)
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
    from cecq.catalog.layout import LEASE

    assert json.loads((store_dir / LEASE).read_text())["released"]  # a failed run hands the store back


def test_a_run_on_a_store_another_run_holds_fails_naming_the_holder(tmp_path, prefect_api, monkeypatch):
    from cecq.errors import StoreBusyError
    from cecq.pipeline.publish import claim_store
    from cecq.storage import Store
    from flows.embed_corpus import embed_corpus
    from flows.reindex import reindex

    corpus, store_dir = tmp_path / "docs.jsonl", tmp_path / "store"
    write_corpus(corpus, n=10)
    monkeypatch.setenv("CECQ_LEASE_WAIT_S", "0.5")
    with claim_store(Store(str(store_dir)), "reindex (the nightly one)"):
        with pytest.raises(StoreBusyError, match=r"claimed by reindex \(the nightly one\) on .* \(pid \d+\)"):
            embed_corpus(corpus=str(corpus), store=str(store_dir), models=["lexical"])
        with pytest.raises(StoreBusyError, match="claimed by reindex"):
            reindex(corpus=str(corpus), store=str(store_dir))
    assert sorted(str(p.relative_to(store_dir)) for p in store_dir.rglob("*") if p.is_file()) == ["catalog/lease.json"]


def test_reindex_refuses_a_local_model_an_s3_store_names(
    tmp_path, tiny_model_dir, prefect_api, s3_endpoint, monkeypatch
):
    """``reindex`` loads the base models the store's manifest names: a local folder named by
    a store on S3 is refused (see test_model_trust.py) before any step runs."""
    from cecq.errors import UntrustedModelError
    from flows.reindex import reindex
    from tests.helpers.paths import FIXTURES
    from tests.integration.test_model_trust import LEGACY, tamper

    monkeypatch.delenv("CECQ_TRUST_STORE_MODELS", raising=False)
    from cecq.storage import Store

    store = Store("s3://cecq-test/reindex-trust")
    for p in LEGACY.rglob("*"):
        if p.is_file():
            store.write_bytes(str(p.relative_to(LEGACY)), p.read_bytes())
    tamper(store, ["lexical", str(tiny_model_dir)])
    before = store.walk_files("")
    with pytest.raises(UntrustedModelError, match="a local folder, and the store is not local"):
        reindex(corpus=str(FIXTURES / "legacy-store" / "corpus.jsonl"), store=store.url)
    assert [p for p in store.walk_files("") if p != "catalog/lease.json"] == before


def test_retrained_model_weights_re_embed_everything_or_fail_under_reuse(tmp_path, ray_cluster, prefect_api):
    """A local model folder retrained in place between two runs: the weights' fingerprint
    changes, so ``reindex --decoder-policy reuse`` refuses, and 'auto' embeds every document
    again under a new key and retrains (on main the old vectors were reused, silently mixing
    two models in one index)."""
    from cecq.catalog import CorpusManifest, current_manifest, read_run
    from cecq.catalog.layout import embedding_path
    from cecq.encoders import load_encoder
    from cecq.errors import ConfigError
    from cecq.pipeline.steps import vectors_of
    from cecq.storage import Store
    from flows.embed_corpus import embed_corpus
    from flows.reindex import reindex
    from tests.helpers.models import build_tiny_model

    model = build_tiny_model(tmp_path / "m", 32, seed=0)
    corpus, store_dir = tmp_path / "docs.jsonl", tmp_path / "store"
    write_corpus(corpus, n=30)
    embed_corpus(corpus=str(corpus), store=str(store_dir), models=[str(model)], shard_rows=10, dims=16, out_dim=32)
    store = Store(str(store_dir))
    m1 = current_manifest(store)
    [fp1] = read_run(store, m1.run_id).model_fingerprints
    assert fp1.startswith("sha256:") and m1.model_fingerprints == [fp1]
    codes1 = published(store_dir)

    build_tiny_model(tmp_path / "m", 32, seed=1)  # retrained in place: same path, other weights
    with pytest.raises(ConfigError, match=r"weights of base model\(s\) .* changed since catalog v1"):
        reindex(corpus=str(corpus), store=str(store_dir), decoder_policy="reuse")
    assert current_manifest(store).version == 1 and published(store_dir) == codes1

    reindex(corpus=str(corpus), store=str(store_dir))  # auto
    m2 = current_manifest(store)
    run2 = read_run(store, m2.run_id)
    [fp2] = run2.model_fingerprints
    assert fp2.startswith("sha256:") and fp2 != fp1
    assert m2.model_keys != m1.model_keys and m2.compressor_id != m1.compressor_id  # new embeddings, retrained
    # every document embedded again, by the new weights (the refused reuse run already committed them)
    assert run2.embedding[0].embedded_documents + 10 * run2.embedding[0].skipped_shards == 30
    shard = CorpusManifest.from_dict(store.read_json(m2.corpus_manifest)).shards[0]
    texts = store.read_parquet(shard.path).column("text").to_pylist()
    new = vectors_of(store.read_parquet(embedding_path(m2.model_keys[0], shard)))
    old = vectors_of(store.read_parquet(embedding_path(m1.model_keys[0], shard)))
    assert np.allclose(new, load_encoder(str(model)).encode(texts), atol=1e-5) and not np.allclose(new, old, atol=1e-3)
    assert published(store_dir).keys() == codes1.keys() and published(store_dir) != codes1


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
