"""`cecq index build`, `cecq search` / `cecq sql` with the index, `cecq export --format
faiss` and the README's serving example, on a copy of the legacy store (48 documents,
product codes of 4 bytes, the lexical model), with real FAISS and DuckDB."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from cecq.catalog import connect, current_manifest, index_records, load_quantizer
from cecq.cli import main
from cecq.config import IndexConfig
from cecq.errors import ConfigError
from cecq.pipeline import export
from cecq.pipeline.index import build_index
from cecq.storage import Store
from tests.helpers.paths import FIXTURES, REPO_ROOT


@pytest.fixture
def store_dir(tmp_path):
    shutil.copytree(FIXTURES / "legacy-store" / "store", tmp_path / "store")
    return tmp_path / "store"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def hits(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.slow
def test_search_uses_the_index_once_built_and_says_so(store_dir, capsys):
    s = str(store_dir)
    rc, exact, err = cli(capsys, "search", "galaxy orbit", "--store", s, "-k", "8", "--json")
    assert rc == 0 and "exhaustive scan of catalog v3 (no index built for it)" in err
    rc, out, _ = cli(capsys, "index", "build", "--store", s, "--json")
    record = json.loads(out)
    assert rc == 0 and record["name"] == "flat" and record["version"] == 3 and record["layout"] == "pq"
    rc, out, err = cli(capsys, "index", "build", "--store", s, "--kind", "ivf", "--nlist", "2", "--nprobe", "2")
    assert rc == 0 and "index ivf-nlist2 of catalog v3" in out
    for flags, said in (
        ([], "FAISS index ivf-nlist2 of catalog v3 (pq codes, nprobe 2"),
        (["--index", "flat"], "FAISS index flat of catalog v3"),
        (["--exact"], "exhaustive scan of catalog v3 (--exact)"),
    ):
        rc, out, err = cli(capsys, "search", "galaxy orbit", "--store", s, "-k", "8", "--json", *flags)
        assert rc == 0 and said in err
        # the same documents in the same order; FAISS sums the query's centroid products in
        # another order than NumPy's matmul, so a score may differ in its last printed digit
        # (CI at 042fb19: 0.682338 against 0.682337)
        assert [h["id"] for h in hits(out)] == [h["id"] for h in hits(exact)]
        assert [h["score"] for h in hits(out)] == pytest.approx([h["score"] for h in hits(exact)], abs=2e-6)
    rc, _, err = cli(capsys, "search", "galaxy orbit", "--store", s, "--nprobe", "3")
    assert rc == 2 and "nprobe must be in 1..2" in err
    rc, _, err = cli(capsys, "search", "galaxy orbit", "--store", s, "--exact", "--nprobe", "1")
    assert rc == 2 and "--exact scans every code" in err
    # the catalog views list the indexes
    con = connect(Store(s))
    assert con.execute("SELECT version, indexes FROM versions ORDER BY version").fetchall() == [
        (1, []),
        (2, []),
        (3, ["flat", "ivf-nlist2"]),
    ]
    run_id = current_manifest(Store(s)).run_id
    assert con.execute("SELECT indexes FROM runs WHERE run_id = ?", [run_id]).fetchone()[0] == ["flat", "ivf-nlist2"]
    assert con.execute("SELECT name, kind, rows FROM indexes ORDER BY name").fetchall() == [
        ("flat", "flat", 48),
        ("ivf-nlist2", "ivf", 48),
    ]


def test_search_from_sql_joins_the_hits_with_the_views(store_dir, capsys):
    s = str(store_dir)
    _, exact, _ = cli(capsys, "search", "galaxy orbit", "--store", s, "-k", "10", "--json")
    first_shard = connect(Store(s)).execute("SELECT min(name) FROM shards").fetchone()[0]
    query = (
        "SELECT h.rank, h.id, h.score, c.text FROM (SELECT unnest(cecq_search($1, 10), recursive := true)) h "
        "JOIN documents d USING (id) JOIN corpus c USING (id) WHERE d.shard = $2 ORDER BY h.rank"
    )
    rc, out, _ = cli(capsys, "sql", "--store", s, "--json", "--param", "galaxy orbit", "--param", first_shard, query)
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines()]
    found = connect(Store(s)).execute("SELECT id FROM documents WHERE shard = ?", [first_shard]).fetchall()
    shard_ids = {r[0] for r in found}
    expected = [h for h in hits(exact) if h["id"] in shard_ids]
    assert 0 < len(rows) < 10
    assert [(r["rank"], r["id"], r["text"]) for r in rows] == [(h["rank"], h["id"], h["text"]) for h in expected]


def serving_example() -> str:
    """The README's serving example (the Python block after its marker)."""
    readme = (REPO_ROOT / "README.md").read_text()
    return re.search(r"<!-- serving-example -->\s*```python\n(.*?)```", readme, re.S).group(1)


def test_export_and_the_readme_serving_example(store_dir, tmp_path, capsys, monkeypatch):
    s = str(store_dir)
    rc, out, _ = cli(capsys, "export", "--store", s, "--format", "faiss", str(tmp_path / "served.faiss"))
    assert rc == 0 and "catalog v3" in out
    sidecar = json.loads((tmp_path / "served.faiss.json").read_text())
    assert sidecar["catalog_version"] == 3 and sidecar["models"] == ["lexical"] and sidecar["index"] == "flat"
    code = serving_example()
    assert len([line for line in code.splitlines() if line.strip()]) == 5
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README serving example", "exec"), {})
    served = eval(capsys.readouterr().out)
    # FAISS alone ranks by the inner product of the (pre-transformed) query with the
    # published codes' centroids: the same ranking computed here from the store's codes
    store = Store(s)
    m = current_manifest(store)
    quantizer = load_quantizer(store, m.quantizer)
    q = quantizer.project(export.serving_encoder(str(tmp_path / "served.faiss.json"))(["galaxy orbit"]))
    con = connect(store)
    ids, codes = zip(*con.execute("SELECT id, code FROM documents").fetchall())
    packed = np.frombuffer(b"".join(codes), np.uint8).reshape(len(ids), -1)
    ip = (q @ quantizer.dequantize_packed(packed).T)[0]
    assert served == [ids[i] for i in np.argsort(-ip, kind="stable")[:5]]


@pytest.mark.parametrize("failing", ["pq.write_table", "os.fsync"])  # writing the ids; syncing a file
def test_a_failed_export_keeps_earlier_one_and_none_goes_into_the_store(store_dir, tmp_path, monkeypatch, failing):
    store, out = Store(str(store_dir)), str(tmp_path / "out" / "served.faiss")
    export.export_faiss(store, out)  # builds and exports the flat index
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert sorted(before) == ["served.faiss", "served.faiss.ids.parquet", "served.faiss.json"]
    build_index(store, IndexConfig(kind="ivf", nlist=2, nprobe=2), current_manifest(store))

    def disk_full(*args, **kwargs):
        raise OSError("the disk is full")

    # The re-export (now of the IVF index) fails partway: the earlier export stays whole and
    # consistent, with no temporary file left beside it.
    module, name = failing.split(".")
    monkeypatch.setattr(getattr(export, module), name, disk_full)
    with pytest.raises(OSError, match="the disk is full"):
        export.export_faiss(store, out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    export.export_faiss(store, out)
    assert json.loads((tmp_path / "out" / "served.faiss.json").read_text())["index_kind"] == "ivf"
    # An export onto the store's own index file would destroy it: refused, the file untouched.
    [flat, _] = index_records(store, current_manifest(store).version)
    inside = store.path(flat.file)
    kept = Path(inside).read_bytes()
    for target, said in ((inside, "would write inside the store"), (str(store_dir), "that is a folder")):
        with pytest.raises(ConfigError, match=said):
            export.export_faiss(store, target)
    assert Path(inside).read_bytes() == kept
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_an_empty_store_has_nothing_to_index(tmp_path, capsys):
    rc, _, err = cli(capsys, "index", "build", "--store", str(tmp_path / "nothing"))
    assert rc == 2 and "no published catalog" in err


@pytest.mark.slow
def test_a_100k_code_store_flat_is_the_scan_and_ivf_recalls_it(tmp_path):
    """The bench's synthetic 53-byte product codes at 100,000 documents in 5 shards: the
    flat index returns the exhaustive scan's top-10 (ids and scores), the default IVF index
    (nlist 256, nprobe 32) recalls at least 0.95 of it, and the index holds the published
    bytes."""
    from cecq.bench.perf_compute import build_store
    from cecq.bench.perf_search import BUDGET, decoder_like, synthetic_codes
    from cecq.catalog import plan_search, search_published
    from cecq.config import IndexConfig
    from cecq.index import inner_index
    from cecq.pipeline.index import build_index
    from cecq.quantization import ProductQuantizer
    from cecq.search import search_codes

    quantizer = ProductQuantizer.fit(decoder_like(5000, 0), BUDGET)
    packed = synthetic_codes(100_000, quantizer)
    store = build_store(tmp_path / "store", packed, quantizer, 20_000)
    q = decoder_like(20, 999)
    scores, rows = search_codes(q, packed, quantizer, 10)
    flat = build_index(store, IndexConfig(kind="flat"))
    ivf = build_index(store, IndexConfig(kind="ivf"))
    assert (ivf.name, ivf.nprobe, flat.rows, ivf.rows) == ("ivf-nlist256", 32, 100_000, 100_000)
    by_flat = search_published(store, q, 10, plan=plan_search(store, index="flat"))
    assert [[int(h["id"][1:]) for h in hit] for hit in by_flat] == rows.tolist()
    np.testing.assert_allclose([[h["score"] for h in hit] for hit in by_flat], scores, atol=1e-5)
    by_ivf = search_published(store, q, 10, plan=plan_search(store))
    recall = np.mean([len({int(h["id"][1:]) for h in a} & set(b)) / 10 for a, b in zip(by_ivf, rows.tolist())])
    assert recall >= 0.95
    plan = plan_search(store)  # owns the index: the views below point into it
    index = inner_index(plan.index.index)
    lst = max(range(index.nlist), key=index.invlists.list_size)
    n = index.invlists.list_size(lst)
    ids = faiss.rev_swig_ptr(index.invlists.get_ids(lst), n).copy()
    codes = faiss.rev_swig_ptr(index.invlists.get_codes(lst), n * BUDGET).copy().reshape(n, BUDGET)
    assert np.array_equal(codes, packed[ids])  # the product codes went in byte for byte
