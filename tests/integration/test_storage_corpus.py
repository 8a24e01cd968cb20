"""The storage root (local and a real S3 endpoint on 127.0.0.1) and corpus sharding."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cecq.errors import DataError, StorageError
from cecq.pipeline.corpus import iter_corpus, shard_corpus
from cecq.storage import Store, slug
from tests.helpers.corpora import write_corpus


def test_paths_cannot_leave_the_root(tmp_path):
    store = Store(str(tmp_path))
    with pytest.raises(StorageError, match="leave the storage root"):
        store.path("codes/../../etc/passwd")
    for name in ("..", "../x", "a/../../b", "org/model"):
        assert ".." not in slug(name).split("/") and "/" not in slug(name)


def test_a_root_with_wildcards_is_refused_so_no_reader_strays_into_another_store(tmp_path):
    # "s?" would match "sx" too: DuckDB's readers and fsspec's glob read both stores' files
    other = Store(str(tmp_path / "sx"))
    other.write_json("runs/r1/run.json", {"run": 1})
    for name in ("s?", "s*", "s[x]"):
        with pytest.raises(StorageError, match=r"wildcards; choose a folder name without"):
            Store(str(tmp_path / name))
    for url in ("s3://", "memory://", "file://"):  # "s3:" would be a local folder of that name
        with pytest.raises(StorageError, match="names no bucket or folder"):
            Store(url)
    assert other.glob("runs/*/run.json") == ["runs/r1/run.json"]


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    store = Store(str(tmp_path))
    store.write_parquet("a/b.parquet", pa.table({"x": [1, 2, 3]}))
    store.write_json("a/c.json", {"k": 1})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.parquet", "c.json"]
    assert store.read_parquet("a/b.parquet").column("x").to_pylist() == [1, 2, 3]
    assert store.glob("a/*") == ["a/b.parquet", "a/c.json"]


def test_parquet_corpus_with_configured_columns(tmp_path):
    pq.write_table(pa.table({"doc": ["x1", "x2"], "body": ["hello", None], "n": [1, 2]}), tmp_path / "c.parquet")
    [(ids, texts, idc, tcs)] = list(iter_corpus(str(tmp_path / "c.parquet"), id_column="doc", text_columns=["body"]))
    assert (ids, texts, idc, tcs) == (["x1", "x2"], ["hello", ""], "doc", ["body"])
    with pytest.raises(DataError, match="no id column"):
        list(iter_corpus(str(tmp_path / "c.parquet")))
    with pytest.raises(DataError, match=r"text column\(s\) \['text'\] missing"):
        list(iter_corpus(str(tmp_path / "c.parquet"), id_column="doc", text_columns=["text"]))
    with pytest.raises(DataError, match="column 'n' of document 'x1' is int"):
        list(iter_corpus(str(tmp_path / "c.parquet"), id_column="doc", text_columns=["n"]))


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "\xff\xfe"}\n', "line 2|:2: not valid UTF-8"),
        (b'{"_id": "a", "text": "ok"}\n{not json\n', ":2: malformed JSON"),
        (b'{"text": "no id"}\n', "no id column"),
        (b"", "is empty"),
    ],
)
def test_bad_jsonl_corpora(tmp_path, content, message):
    (tmp_path / "c.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=message):
        shard_corpus(str(tmp_path / "c.jsonl"), Store(str(tmp_path / "store")), 10)


def test_corrupt_parquet_among_good_ones(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["fine"]}), folder / "0.parquet")
    (folder / "1.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"1\.parquet: not a readable Parquet file"):
        shard_corpus(str(folder), Store(str(tmp_path / "store")), 10)
    assert not (tmp_path / "store" / "corpus").exists() or not list((tmp_path / "store").rglob("manifest-*.json"))


def test_sharding_is_deterministic_and_skips_committed_shards(tmp_path):
    docs = [{"_id": f"d{i}", "title": "t", "text": f"text {i}"} for i in range(25)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    store = Store(str(tmp_path / "store"))
    m1 = shard_corpus(str(tmp_path / "c.jsonl"), store, 10)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*.parquet")}
    m2 = shard_corpus(str(tmp_path / "c.jsonl"), store, 10)
    assert [s.path for s in m1.shards] == [s.path for s in m2.shards]
    assert [s.rows for s in m1.shards] == [10, 10, 5]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_s3_store_and_sharding(s3_endpoint, tmp_path):
    store = Store("s3://cecq-test/root")
    store.write_json("x/a.json", {"k": 1})
    assert store.read_json("x/a.json") == {"k": 1} and store.exists("x/a.json")
    assert store.uri("x/a.json") == "s3://cecq-test/root/x/a.json"
    docs = [{"_id": f"d{i}", "text": f"text {i}"} for i in range(12)]
    store.write_bytes("input/docs.jsonl", "".join(json.dumps(d) + "\n" for d in docs).encode())
    manifest = shard_corpus("s3://cecq-test/root/input/docs.jsonl", store, 5)
    assert [s.rows for s in manifest.shards] == [5, 5, 2]
    assert store.read_parquet(manifest.shards[2].path).column("id").to_pylist() == ["d10", "d11"]
    assert len(store.glob("corpus/*/*.parquet")) == 3


def test_a_key_planted_to_escape_is_refused_by_local_copy(s3_endpoint, tmp_path):
    """An object key with ``..`` (valid on S3) must not write outside the folder that
    loaders copy a decoder or a fitted model into (issue: path traversal in local_copy)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    prefix = "traversal/models/lexical-x"
    s3.put_object(Bucket="cecq-test", Key=f"{prefix}/lexical.json", Body=b"{}")
    s3.put_object(Bucket="cecq-test", Key=f"{prefix}/../../../../../escaped.txt", Body=b"owned")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="cecq-test", Prefix=prefix)["Contents"]]
    assert any(".." in k for k in listed)  # the server keeps the key as written
    store = Store("s3://cecq-test/traversal")
    dest = tmp_path / "a" / "b" / "copy"
    with pytest.raises(StorageError, match=r"escaped\.txt: its name leaves the destination folder"):
        store.local_copy("models/lexical-x", str(dest))
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))
    assert not (dest / "lexical.json").exists()  # refused before anything was written


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (fsspec's HTTP filesystem reads it)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path / "served"
    root.mkdir()

    seen: set[str] = set()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            # an "expiring" file answers its first request (the existence check), then is
            # refused, as a presigned URL that expires between the check and the read
            name = self.path.lstrip("/").split("?")[0]
            if name.startswith("expiring") and name in seen:
                self.send_error(403, "Request has expired")
            else:
                seen.add(name)
                super().do_GET()

    quiet = Quiet
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_credentials_in_a_corpus_url_reach_no_file_log_message_or_name(http_folder, tmp_path, caplog):
    from cecq.catalog.records import run_identity
    from cecq.config import PipelineConfig
    from cecq.pipeline.corpus import corpus_key

    root, base = http_folder
    write_corpus(root / "c.jsonl", n=12)
    secrets = ("s3cr3t", "SIGNED1", "TOKEN1")

    def url(signature: str, name: str = "c.jsonl") -> str:
        host = base.replace("http://", "http://alice:s3cr3t@")
        return f"{host}/{name}?X-Amz-Expires=60&X-Amz-Signature={signature}&X-Amz-Security-Token=TOKEN1"

    store = Store(str(tmp_path / "store"))
    with caplog.at_level("INFO"):
        manifest = shard_corpus(url("SIGNED1"), store, shard_rows=5)
    assert manifest.rows == 12 and manifest.corpus_url.startswith("http://***@127.0.0.1:")
    stored = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert not any(s.encode() in stored for s in secrets) and not any(s in caplog.text for s in secrets)
    assert "X-Amz-Expires=60" in manifest.corpus_url  # what is not secret stays
    # A new signature of the same object is the same corpus and the same run
    assert corpus_key(url("SIGNED2")) == manifest.corpus_key
    ids = {str(run_identity(PipelineConfig(corpus=url(s), store="s"))) for s in ("SIGNED1", "SIGNED2")}
    assert len(ids) == 1 and not any(s in next(iter(ids)) for s in secrets)
    for bad in (url("SIGNED1", "missing.jsonl"), url("SIGNED1", "c.txt")):
        with pytest.raises(DataError) as e:
            shard_corpus(bad, store)
        assert not any(s in str(e.value) for s in secrets)
    for name in ("expiring.jsonl", "expiring.parquet"):  # the backend's error quotes the URL as given
        (root / name).write_bytes((root / "c.jsonl").read_bytes())
        with pytest.raises((StorageError, DataError)) as e:
            shard_corpus(url("SIGNED1", name), store)
        assert "403" in str(e.value) and not any(s in str(e.value) for s in secrets)
        assert e.value.__cause__ is None and (e.value.__suppress_context__ or e.value.__context__ is None)
    (root / "bad.jsonl").write_bytes(b'{"_id": "a", "text": "x"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad\.jsonl.*:2: malformed JSON") as e:
        shard_corpus(url("SIGNED1", "bad.jsonl"), store)
    assert not any(s in str(e.value) for s in secrets)


def test_urls_without_secrets_keep_their_names_and_a_query_named_file_still_reads(http_folder, tmp_path):
    from cecq.pipeline.corpus import corpus_key
    from cecq.storage import redact_url

    for url in (
        "/data/a@b/c.jsonl",
        "s3://bucket/docs/",
        "abfs://corpora@acct.dfs.core.windows.net/beir/c.parquet",  # a container, not a user
        "sftp://deploy@host/c.jsonl",
        "http://h/c.jsonl?file=a&flag&&x=",
        "http://h/c.jsonl?keyword=a&author=b&monkey=c",
        "gs://b/p.parquet?generation=1#f",
    ):
        assert redact_url(url) == url
    assert corpus_key("abfs://a@acct/x/c.parquet") != corpus_key("abfs://b@acct/x/c.parquet")
    root, base = http_folder
    write_corpus(root / "download", n=7)  # a URL that names its file in the query, as before
    assert shard_corpus(f"{base}/download?file=c.jsonl", Store(str(tmp_path / "store"))).rows == 7
