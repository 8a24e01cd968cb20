"""Bad input, table-driven: each case runs the real embed-corpus flow (Prefect harness, local
Ray) against a store that already holds a published catalog, and checks the error message
and that nothing committed before was changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cecq.config import DecoderConfig
from cecq.errors import ConfigError, DataError, ModelLoadError, ModelNotFoundError
from tests.helpers.corpora import published, write_corpus

pytestmark = pytest.mark.slow

FLOW_ARGS = dict(shard_rows=20, dims=16, bits=2, out_dim=32, max_epochs=2)


def run_flow(corpus: Path | str, store: Path, models: list[str] | None = None, **kwargs) -> dict:
    from flows.embed_corpus import embed_corpus

    return embed_corpus(corpus=str(corpus), store=str(store), models=models or ["lexical"], **{**FLOW_ARGS, **kwargs})


def committed_files(store: Path) -> dict[str, bytes]:
    """Every committed file but the store's lease (each run claims and releases it: a lock, not work)."""
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in store.rglob("*")
        if p.is_file() and ".tmp-" not in p.name and str(p.relative_to(store)) != "catalog/lease.json"
    }


@pytest.fixture(scope="module")
def published_store(tmp_path_factory, ray_cluster, prefect_api) -> Path:
    root = tmp_path_factory.mktemp("published")
    write_corpus(root / "good.jsonl", n=30)
    run_flow(root / "good.jsonl", root / "store")
    return root / "store"


def jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def good_lines(n: int, start: int = 0) -> list[bytes]:
    return [
        json.dumps({"_id": f"n{i}", "text": f"document number {i} about the garden soil"}).encode()
        for i in range(start, start + n)
    ]


def corrupt_parquet_among_good(folder: Path) -> Path:
    folder.mkdir()
    pq.write_table(pa.table({"_id": ["p1", "p2"], "text": ["seed and soil", "oven and flour"]}), folder / "a.parquet")
    (folder / "b.parquet").write_bytes(b"PAR1 this is not a parquet file")
    pq.write_table(pa.table({"_id": ["p3"], "text": ["league match"]}), folder / "c.parquet")
    return folder


def not_a_model(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text("{ this is not json")
    return folder


# name -> (make the corpus under tmp, extra flow arguments, expected error, message pattern)
CASES: dict[str, tuple[Callable[[Path], Path], dict, type[Exception], str]] = {
    "non-UTF-8 bytes": (
        lambda t: jsonl(t / "c.jsonl", [*good_lines(3), b'{"_id": "x", "text": "caf\xe9"}']),
        {},
        DataError,
        r"c\.jsonl:4: not valid UTF-8",
    ),
    "malformed JSON line": (
        lambda t: jsonl(t / "c.jsonl", [*good_lines(2), b'{"_id": "x", "text": ']),
        {},
        DataError,
        r"c\.jsonl:3: malformed JSON",
    ),
    "duplicate ids across shards": (
        lambda t: jsonl(t / "c.jsonl", [*good_lines(25), *good_lines(1, start=3)]),
        {},
        DataError,
        r"duplicate document id 'n3'",
    ),
    "missing id column": (
        lambda t: jsonl(t / "c.jsonl", [b'{"key": "a", "text": "t"}']),
        {},
        DataError,
        r"no id column \(looked for _id, id, doc_id",
    ),
    "missing text column": (
        lambda t: jsonl(t / "c.jsonl", good_lines(3)),
        {"text_columns": ["body"]},
        DataError,
        r"text column\(s\) \['body'\] missing",
    ),
    "wrong text type": (
        lambda t: jsonl(t / "c.jsonl", [*good_lines(2), b'{"_id": "x", "text": 42}']),
        {},
        DataError,
        r"column 'text' of document 'x' is int, expected a string",
    ),
    "wrong id type": (
        lambda t: jsonl(t / "c.jsonl", [b'{"_id": 1.5, "text": "t"}']),
        {},
        DataError,
        r"id 1\.5 must be a string or an integer, not float",
    ),
    "None id": (
        lambda t: jsonl(t / "c.jsonl", [*good_lines(2), b'{"_id": null, "text": "t"}']),
        {},
        DataError,
        r"a document has no '_id'",
    ),
    "empty corpus": (lambda t: jsonl(t / "c.jsonl", []), {}, DataError, r"corpus .*c\.jsonl is empty"),
    "corrupt Parquet among good ones": (
        lambda t: corrupt_parquet_among_good(t / "corpus"),
        {},
        DataError,
        r"b\.parquet: not a readable Parquet file",
    ),
    "missing model path": (
        lambda t: jsonl(t / "c.jsonl", good_lines(3)),
        {"models": ["/nonexistent/model"]},
        ModelNotFoundError,
        r"model path does not exist: /nonexistent/model",
    ),
    "model that fails to load": (
        lambda t: jsonl(t / "c.jsonl", good_lines(3)),
        {"models": ["<not-a-model>"]},
        ModelLoadError,
        r"could not be loaded by the embedding actors",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_error_and_keeps_committed_work(case, published_store, tmp_path):
    make, kwargs, error, pattern = CASES[case]
    corpus = make(tmp_path)
    if kwargs.get("models") == ["<not-a-model>"]:
        kwargs = {**kwargs, "models": [str(not_a_model(tmp_path / "model"))]}
    before_files, before_docs = committed_files(published_store), published(published_store)
    with pytest.raises(error, match=pattern):
        run_flow(corpus, published_store, **kwargs)
    after = committed_files(published_store)
    assert {k: after.get(k) for k in before_files} == before_files  # nothing committed was changed or lost
    assert published(published_store) == before_docs


def test_accepted_odd_input_is_published_as_documented(published_store, tmp_path, tiny_model_dir):
    """Empty, whitespace-only and null texts become zero vectors flagged ``empty``; a 1 MB text
    is truncated by the model (and counted); non-ASCII text is fine. A store built with other
    base models gets a new run and catalog version; the earlier version stays readable."""
    from cecq.catalog import connect
    from cecq.storage import Store

    big = "the garden soil and compost " * 37_500  # ~1 MB
    docs = [
        {"_id": "empty", "text": ""},
        {"_id": "blank", "text": "   \n\t "},
        {"_id": "null", "text": None},
        {"_id": "big", "text": big},
        {"_id": "unicode", "text": "Große Straße, 東京, naïve café ☕"},
        *({"_id": f"ok{i}", "text": f"recipe {i} with flour butter and sugar"} for i in range(20)),
    ]
    corpus = tmp_path / "odd.jsonl"
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    result = run_flow(corpus, published_store, models=[str(tiny_model_dir), "lexical"])
    assert result["catalog_version"] == 2

    con = connect(Store(str(published_store)))
    rows = dict(con.execute("SELECT id, empty FROM documents").fetchall())
    assert sorted(rows) == sorted(d["_id"] for d in docs)
    assert {i for i, e in rows.items() if e} == {"empty", "blank", "null"}
    assert con.execute("SELECT length(text) FROM corpus WHERE id = 'big'").fetchone()[0] == len(big.strip())
    run = json.loads((published_store / "runs" / result["run_id"] / "run.json").read_text())
    assert run["embedding"][0]["truncated_documents"] == 1
    versions = con.execute("SELECT version, models FROM versions ORDER BY version").fetchall()
    assert [v for v, _ in versions] == [1, 2] and versions[0][1] == ["lexical"]


HOSTILE_IDS = ["a'b", "c;d", "e--f", 'g"h', "'; DROP VIEW documents; --", "x' OR '1'='1"]


def test_ids_and_store_paths_with_sql_metacharacters_reach_duckdb_safely(tmp_path, capsys, ray_cluster, prefect_api):
    """The values that do reach SQL are document ids (hit lookups) and store paths (views):
    ids with quotes, semicolons and comments, in a store whose path holds a quote, through
    `cecq sql`, `cecq search` and `cecq eval-store`."""
    from cecq.catalog import search_store
    from cecq.cli import main
    from cecq.storage import Store
    from tests.helpers.beir import write_beir
    from tests.helpers.models import TOPICS

    words = list(TOPICS.values())
    corpus = [
        {"_id": f"{hid}-{i}", "title": "", "text": " ".join(words[i % 5][j] for j in range(8))}
        for i in range(30)
        for hid in [HOSTILE_IDS[i % len(HOSTILE_IDS)]]
    ]
    queries = [{"_id": "q1", "text": " ".join(words[0][:4])}, {"_id": "q2", "text": " ".join(words[1][:4])}]
    qrels = [("q1", d["_id"], 1) for d in corpus[0::5]] + [("q2", d["_id"], 1) for d in corpus[1::5]]
    beir = write_beir(tmp_path / "beir", corpus, queries, qrels)
    store_dir = tmp_path / "it's a store"
    run_flow(beir / "corpus.jsonl", store_dir)

    assert main(["sql", "--store", str(store_dir), "--json", "SELECT id FROM documents ORDER BY id"]) == 0
    ids = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert ids == sorted(d["_id"] for d in corpus)
    store = Store(str(store_dir))
    hits = search_store(store, queries[0]["text"], k=30)
    texts = {d["_id"]: d["text"] for d in corpus}
    assert {h["id"] for h in hits} >= {d["_id"] for d in corpus[0::5]}  # every hostile id comes back...
    assert all(h["text"] == texts[h["id"]] for h in hits)  # ...with its own text, found by id
    assert main(["search", "--store", str(store_dir), "'; DROP VIEW documents; SELECT '", "-k", "3", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    out = tmp_path / "eval.json"
    assert main(["eval-store", str(beir), "--store", str(store_dir), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ndcg_at_10"] > 0.5  # judged ids matched the ids searched back


def _manifest(models, dims, bits, budget_bytes=None, quantization=None):
    """A published manifest, as a store holds it (version 1 spelling of the code layout)."""
    from cecq.catalog import CatalogManifest

    return CatalogManifest.from_dict(
        {
            "version": 1,
            "published": "",
            "run_id": "r",
            "codes": [],
            "corpus_shards": [],
            "models": models,
            "model_keys": [],
            "corpus_key": "",
            "corpus_manifest": "",
            "decoder": "d",
            "quantizer": "q",
            "dims": dims,
            "bits": bits,
            "compressor_id": "c",
            "config": {},
            "budget_bytes": budget_bytes,
            "quantization": quantization,
        }
    )


def _config(policy, models, dims=16, bits=2, budget_bytes=None, quantization=None):
    from cecq.config import PipelineConfig

    return PipelineConfig(
        corpus="c",
        store="s",
        models=tuple(models),
        dims=dims,
        bits=bits,
        budget_bytes=budget_bytes,
        quantization=quantization,
        decoder_policy=policy,
        decoder=DecoderConfig(out_dim=32),
    )


def test_reusing_a_decoder_built_for_other_models_is_refused():
    from cecq.pipeline.publish import choose_compressor

    previous = _manifest(["lexical"], 16, 2)
    with pytest.raises(ConfigError, match=r"cannot reuse the decoder: the store was built with models \['lexical'\]"):
        choose_compressor(_config("reuse", ["other-model", "lexical"]), previous, 0.0)
    assert choose_compressor(_config("auto", ["other-model", "lexical"]), previous, 0.0) is None  # retrains


def test_reuse_needs_the_same_code_layout_and_budgets_are_validated():
    from cecq.config import PipelineConfig
    from cecq.pipeline.publish import choose_compressor

    fixed = _manifest(["lexical"], 16, 2)
    fitted = _manifest(["lexical"], 16, None, budget_bytes=5, quantization="scalar")  # as version 1 spelt fitted bits
    assert choose_compressor(_config("reuse", ["lexical"], budget_bytes=5), fitted, 0.0) == ("c", "d", "q")
    assert choose_compressor(_config("reuse", ["lexical"]), fixed, 0.0) == ("c", "d", "q")
    with pytest.raises(ConfigError, match="16 dims, bits fitted within 5 bytes"):
        choose_compressor(_config("reuse", ["lexical"]), fitted, 0.0)
    assert choose_compressor(_config("auto", ["lexical"], budget_bytes=4), fixed, 0.0) is None  # retrains
    with pytest.raises(ConfigError, match=r"budget_bytes must be in 1\.\.8 \(4 bits for each of the 16 dims\), got 9"):
        PipelineConfig(corpus="c", store="s", dims=16, budget_bytes=9, decoder=DecoderConfig(out_dim=32))
    # product codes: a different layout from fitted bits at the same budget, and their own limits
    product = _manifest(["lexical"], 16, None, budget_bytes=4, quantization="product")
    assert choose_compressor(_config("reuse", ["lexical"], budget_bytes=4, quantization="product"), product, 0.0) == (
        "c",
        "d",
        "q",
    )
    with pytest.raises(ConfigError, match="16 dims, product codes of 4 bytes"):
        choose_compressor(_config("reuse", ["lexical"], budget_bytes=4), product, 0.0)
    assert choose_compressor(_config("auto", ["lexical"], budget_bytes=4, quantization="product"), fitted, 0.0) is None
    with pytest.raises(ConfigError, match="product quantization spends a byte budget: set budget_bytes"):
        PipelineConfig(corpus="c", store="s", dims=16, quantization="product", decoder=DecoderConfig(out_dim=32))
    with pytest.raises(
        ConfigError,
        match=r"budget_bytes must be in 1\.\.4 for product quantization \(a byte codes 4 of the 16 dims\), got 5",
    ):
        PipelineConfig(
            corpus="c", store="s", dims=16, budget_bytes=5, quantization="product", decoder=DecoderConfig(out_dim=32)
        )
    with pytest.raises(ConfigError, match="unknown quantization 'vector'; choose from scalar, mixed, product"):
        PipelineConfig(
            corpus="c", store="s", dims=16, budget_bytes=4, quantization="vector", decoder=DecoderConfig(out_dim=32)
        )
