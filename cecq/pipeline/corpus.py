"""Reading a corpus from any fsspec URL and cutting it into deterministic shards.

Accepted inputs: a BEIR folder (``corpus.jsonl``), a JSONL file, a Parquet file, or a
folder of Parquet/JSONL files. Each document has an id column and one or more text
columns; several text columns are joined as BEIR joins title and text.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from cecq.catalog.layout import corpus_shard_path, manifest_path
from cecq.catalog.reader import is_whole
from cecq.catalog.records import CorpusManifest, ShardInfo
from cecq.errors import DataError, StorageError
from cecq.storage import Store, digest, redact_text, redact_url, slug, storage_options_from_env

logger = logging.getLogger(__name__)

ID_CANDIDATES = ("_id", "id", "doc_id")
TEXT_CANDIDATES = ("title", "text")
CORPUS_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("content_hash", pa.string())])


def content_hash(text: str) -> str:
    return digest(text)[:16]


SUFFIXES = (".parquet", ".jsonl", ".json")


def _suffix(path: str) -> str:
    """The corpus format ``path`` names: its own suffix, or, for a URL with a query (a
    presigned URL's signature), its path's; "" when neither is one of :data:`SUFFIXES`."""
    for name in (path, urlsplit(path).path if "://" in path else path):
        if name.endswith(SUFFIXES):
            return next(x for x in SUFFIXES if name.endswith(x))
    return ""


@contextlib.contextmanager
def _redacted_errors(url: str) -> Iterator[None]:
    """Reading a corpus whose URL holds credentials: a backend's error (which quotes the URL
    as given) becomes a :class:`StorageError` with every URL in it redacted, its cause
    dropped so no traceback shows it. Bad input (DataError) passes as it is."""
    if redact_url(url) == url:
        yield
        return
    try:
        yield
    except DataError:
        raise
    except Exception as e:
        raise StorageError(f"reading the corpus failed: {type(e).__name__}: {redact_text(str(e))}") from None


def _input_files(url: str) -> tuple[object, list[str]]:
    fs, path = url_to_fs(url, **storage_options_from_env(url))
    shown = redact_url(url)  # a URL's credentials are never in a message
    if not fs.exists(path):
        raise DataError(f"corpus not found: {shown}")
    if fs.isdir(path):
        beir = f"{path.rstrip('/')}/corpus.jsonl"
        if fs.exists(beir):
            return fs, [beir]
        files = sorted(p for p in fs.find(path) if p.endswith(SUFFIXES))
        if not files:
            raise DataError(f"corpus folder {shown} holds no .parquet, .jsonl or corpus.jsonl files")
        return fs, files
    if not _suffix(path):
        raise DataError(f"corpus file {shown} must end in .parquet, .jsonl or .json")
    return fs, [path]


def _jsonl_batches(fs, path: str, batch_rows: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    where = redact_url(path)
    with fs.open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise DataError(f"{where}:{lineno}: not valid UTF-8") from None
            except json.JSONDecodeError as e:
                raise DataError(f"{where}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}:{lineno}: expected a JSON object")
            batch.append(obj)
            if len(batch) >= batch_rows:
                yield batch
                batch = []
    if batch:
        yield batch


def _resolve_columns(
    names: Sequence[str], id_column: str | None, text_columns: Sequence[str] | None, where: str
) -> tuple[str, list[str]]:
    if id_column is None:
        id_column = next((c for c in ID_CANDIDATES if c in names), None)
        if id_column is None:
            raise DataError(f"{where}: no id column (looked for {', '.join(ID_CANDIDATES)}; set id_column)")
    elif id_column not in names:
        raise DataError(f"{where}: id column {id_column!r} is missing (columns: {', '.join(names)})")
    if text_columns is None:
        text_columns = [c for c in TEXT_CANDIDATES if c in names]
        if not text_columns:
            raise DataError(f"{where}: no text column (looked for {', '.join(TEXT_CANDIDATES)}; set text_columns)")
    else:
        missing = [c for c in text_columns if c not in names]
        if missing:
            raise DataError(f"{where}: text column(s) {missing} missing (columns: {', '.join(names)})")
    return id_column, list(text_columns)


def _rows(records: list[dict], id_column: str, text_columns: list[str], where: str) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    for r in records:
        raw_id = r.get(id_column)
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
            raise DataError(f"{where}: a document has no {id_column!r}")
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
            raise DataError(f"{where}: id {raw_id!r} must be a string or an integer, not {type(raw_id).__name__}")
        parts = []
        for c in text_columns:
            v = r.get(c)
            if v is not None and not isinstance(v, str):
                raise DataError(
                    f"{where}: column {c!r} of document {raw_id!r} is {type(v).__name__}, expected a string"
                )
            parts.append(v or "")
        ids.append(str(raw_id))
        texts.append(" ".join(parts).strip())
    return ids, texts


def iter_corpus(
    url: str, id_column: str | None = None, text_columns: Sequence[str] | None = None, batch_rows: int = 10_000
) -> Iterator[tuple[list[str], list[str], str, list[str]]]:
    """Yield ``(ids, texts, id_column, text_columns)`` batches of the corpus at ``url``."""
    with _redacted_errors(url):
        fs, files = _input_files(url)
        for path in files:
            where = redact_url(path)
            if _suffix(path) == ".parquet":
                try:
                    pf = pq.ParquetFile(fs.open(path, "rb"))
                except Exception as e:  # pyarrow raises several types for corrupt files
                    raise DataError(f"{where}: not a readable Parquet file ({redact_text(str(e))})") from None
                idc, tcs = _resolve_columns(pf.schema_arrow.names, id_column, text_columns, where)
                for batch in pf.iter_batches(batch_size=batch_rows, columns=[idc, *tcs]):
                    yield (*_rows(batch.to_pylist(), idc, tcs, where), idc, tcs)
            else:
                for records in _jsonl_batches(fs, path, batch_rows):
                    names = sorted({k for r in records for k in r})
                    idc, tcs = _resolve_columns(names, id_column, text_columns, where)
                    yield (*_rows(records, idc, tcs, where), idc, tcs)


def corpus_key(url: str) -> str:
    """A short, deterministic, path-safe name for a corpus URL (of its redacted form, so a
    presigned URL's changing signature does not change it, and no secret reaches a path)."""
    url = redact_url(url)
    base = url.rstrip("/").rsplit("/", 1)[-1].split(".")[0] or "corpus"
    return f"{slug(base, 32)}-{digest(url.rstrip('/'))[:8]}"


def shard_corpus(
    url: str,
    store: Store,
    shard_rows: int = 50_000,
    id_column: str | None = None,
    text_columns: Sequence[str] | None = None,
    on_shard: Callable[[ShardInfo, list[str], list[str]], None] | None = None,
    write: bool = True,
) -> CorpusManifest:
    """Cut the corpus into shards of ``shard_rows`` documents under ``corpus/<key>/``.

    Shard names are ``<key>-<index>``; a shard file's name also carries its content
    fingerprint, so an unchanged shard is never rewritten. Ids must be unique across the
    whole corpus. Returns the manifest, which is written last (it commits the plan).
    ``on_shard(shard, ids, content_hashes)`` sees every shard; with ``write=False`` nothing
    is written (what a run would shard, for a dry run).
    """
    if shard_rows < 1:
        raise DataError(f"shard_rows must be >= 1, got {shard_rows}")
    shown = redact_url(url)  # what is stored, logged and raised
    key = corpus_key(shown)
    manifest: CorpusManifest | None = None
    seen: set[str] = set()
    pending_ids: list[str] = []
    pending_texts: list[str] = []

    def flush() -> None:
        ids, texts = pending_ids[:shard_rows], pending_texts[:shard_rows]
        del pending_ids[:shard_rows], pending_texts[:shard_rows]
        hashes = [content_hash(t) for t in texts]
        fp = digest(*ids, *hashes)
        info = ShardInfo(name=f"{key}-{len(manifest.shards):05d}", path="", rows=len(ids), fingerprint=fp)
        info.path = corpus_shard_path(key, info)
        if write and not is_whole(store, info.path, len(ids)):  # a damaged shard is rewritten
            store.write_parquet(info.path, pa.table([ids, texts, hashes], schema=CORPUS_SCHEMA), "corpus")
        if on_shard:
            on_shard(info, ids, hashes)
        manifest.shards.append(info)

    for ids, texts, idc, tcs in iter_corpus(url, id_column, text_columns, batch_rows=min(shard_rows, 10_000)):
        if manifest is None:
            manifest = CorpusManifest(shown, key, idc, tcs)
        for i in ids:
            if i in seen:
                raise DataError(f"duplicate document id {i!r} in corpus {shown}")
            seen.add(i)
        manifest.rows += len(ids)
        manifest.empty_texts += sum(1 for t in texts if not t)
        pending_ids.extend(ids)
        pending_texts.extend(texts)
        while len(pending_ids) >= shard_rows:
            flush()
    if manifest is None or manifest.rows == 0:
        raise DataError(f"corpus {shown} is empty")
    if pending_ids:
        flush()
    if write and not is_whole(store, manifest_path(manifest)):  # named by its shards' content: rewritten if damaged
        store.write_json(manifest_path(manifest), manifest.to_dict())
    logger.info(
        "corpus %s: %d documents in %d shards (%d empty texts)",
        manifest.corpus_url,
        manifest.rows,
        len(manifest.shards),
        manifest.empty_texts,
    )
    return manifest
