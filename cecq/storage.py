"""The storage root: every artifact of a deployment under one fsspec URL.

Local folders and ``s3://bucket/prefix`` (s3fs) are supported. Writes are atomic: a file
is written under a temporary name and renamed into place locally, and sent in one PUT on
object stores, so a reader never sees half a shard.

Conditional writes (:meth:`Store.create_bytes`, :meth:`Store.swap_bytes`) are exclusive
creates and compare-and-swaps: a hard link and ``flock`` locally, ``If-None-Match``/``If-Match``
on S3. :class:`StoreLease` builds a lease on them (an owner, a heartbeat, an expiry).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import functools
import hashlib
import io
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from cecq.errors import CorruptArtifactError, StorageError, StoreBusyError, check_version

logger = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors of an unreachable or failing storage backend (after the client's own retries)."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    try:
        from botocore.exceptions import BotoCoreError

        errors.append(BotoCoreError)
    except ImportError:
        pass
    try:
        from aiohttp import ClientError

        errors.append(ClientError)
    except ImportError:
        pass
    return tuple(errors)


GLOB_CHARACTERS = "*?[]"  # wildcards to fsspec's glob and DuckDB's file readers
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_F = TypeVar("_F", bound=Callable[..., Any])


def _io(action: str) -> Callable[[_F], _F]:
    """Turn a backend failure of ``Store.<method>(rel, ...)`` into a StorageError naming the
    action and the object. Missing files stay FileNotFoundError: callers test for them."""

    def wrap(method: _F) -> _F:
        @functools.wraps(method)
        def guarded(self: Store, rel: str, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, rel, *args, **kwargs)
            except (FileNotFoundError, StorageError):
                raise
            except _transient_errors() as e:
                hint = (
                    " (no space left: free some or use another root)" if getattr(e, "errno", None) in _NO_SPACE else ""
                )
                raise StorageError(
                    f"could not {action} {self.uri(rel)}{hint}: {type(e).__name__}: {e}. "
                    "Work committed before this error is kept; rerun to resume."
                ) from e

        return guarded  # type: ignore[return-value]

    return wrap


def _precondition_failed(e: OSError) -> bool:
    """Whether s3fs's OSError is a 412 (an ``If-Match`` that did not hold)."""
    response = getattr(e.__cause__, "response", None) or {}
    return e.errno == errno.EINVAL and response.get("Error", {}).get("Code") in ("PreconditionFailed", "412")


# The format version of each kind of Parquet shard this cecq writes, stamped in the file's
# schema metadata under FORMAT_KEY; a file without the stamp is version 1 (the first release).
FORMAT_KEY = b"cecq.format"
PARQUET_FORMATS: dict[str, int] = {"corpus": 1, "embeddings": 1, "codes": 1, "catalog-shards": 1}


def check_parquet_format(metadata: dict[bytes, bytes] | None, where: str) -> None:
    """Refuse a Parquet file stamped by a newer cecq (a version above :data:`PARQUET_FORMATS`)."""
    stamp = json.loads((metadata or {}).get(FORMAT_KEY, b"{}"))
    if stamp:
        artifact = stamp.get("artifact")
        check_version(f"{where} ({artifact} shard)", int(stamp.get("version", 1)), PARQUET_FORMATS.get(artifact, 0))


# How to recover a damaged file, by the pattern of its store-relative path; the layout that
# names the paths (cecq.catalog.layout) registers its artifacts here.
_RECOVERY: list[tuple[str, str]] = []
_DEFAULT_RECOVERY = "restore it from a backup, or delete it and rerun the step that wrote it"


def add_recovery_hint(pattern: str, hint: str) -> None:
    """Say how a damaged file whose relative path matches ``pattern`` (fnmatch) is recovered."""
    _RECOVERY.append((pattern, hint))


def recovery_hint(rel: str) -> str:
    return next((hint for pattern, hint in _RECOVERY if fnmatch.fnmatchcase(rel, pattern)), _DEFAULT_RECOVERY)


def slug(text: str, max_len: int = 64) -> str:
    """A file-name-safe name for ``text`` (model names, corpus names); never ``..``."""
    s = _SAFE.sub("_", text.replace("/", "__")).strip("._") or "x"
    if len(s) > max_len:
        s = s[: max_len - 9] + "-" + digest(text)[:8]
    return s


def digest(*parts: str | bytes) -> str:
    """A stable sha256 hex digest of ``parts``."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8") if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()


def file_digest(path: str) -> str:
    """``digest`` of a local file's bytes, read in blocks (never whole in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    h.update(b"\x00")
    return h.hexdigest()


def json_bytes(obj: Any) -> bytes:
    """How the store writes JSON: indented, keys sorted, UTF-8."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8")


# Query parameters that carry a secret (presigned S3, GCS and Azure SAS URLs, tokens, keys):
# their values never leave the process, in records, logs, summaries or error messages. Names
# that contain one of the long words, or end in one of the short ones after a separator.
_SECRET_PARAM = re.compile(
    r"signature|credential|secret|passw|token|(^|[-_.])(sig|key|apikey|auth|pwd)$", re.IGNORECASE
)
# Userinfo is a secret where it holds a password, or where it stands before an HTTP host (a
# token as the user); abfs://container@account and sftp://user@host name things, not secrets.
_USER_IS_SECRET = ("http", "https", "ftp", "ftps")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\],]+")


def redact_url(url: str) -> str:
    """``url`` as it may be stored, logged or shown: a password (or an HTTP URL's user) before
    the host and the values of secret-bearing query parameters become ``***``; every URL of an
    fsspec chain (``a::b``) is redacted. Other URLs and local paths are returned unchanged, so
    names derived from them (corpus keys, run ids) do not move."""
    if "::" in url:
        return "::".join(redact_url(part) for part in url.split("::"))
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        if ":" in user or parts.scheme.lower() in _USER_IS_SECRET:
            netloc = "***@" + host
    query = "&".join(
        f"{k}=***" if sep and _SECRET_PARAM.search(unquote(k)) else f"{k}{sep}{v}"
        for k, sep, v in (p.partition("=") for p in parts.query.split("&"))
    )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` (an error message) with every URL in it redacted (:func:`redact_url`)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def storage_options_from_env(url: str) -> dict[str, Any]:
    """S3 options from the environment: ``CECQ_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``)
    for MinIO and other S3-compatible servers, and ``CECQ_S3_MAX_ATTEMPTS`` (default 10):
    attempts per request, with jittered exponential backoff, on 5xx answers, throttling,
    timeouts and refused connections. Credentials come from the usual AWS chain and are
    never part of the options."""
    if not url.startswith(("s3://", "s3a://")):
        return {}
    attempts = int(os.environ.get("CECQ_S3_MAX_ATTEMPTS", "10"))
    options: dict[str, Any] = {
        "config_kwargs": {
            "retries": {"max_attempts": max(1, attempts), "mode": "standard"},
            "connect_timeout": 10,
            "read_timeout": 60,
        }
    }
    endpoint = os.environ.get("CECQ_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    # region_name is deliberately not passed here (bucket creation fails on some servers);
    # set AWS_DEFAULT_REGION instead.
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    return options


def stage_local(final: str, data: bytes) -> str:
    """A temporary file beside the local path ``final`` holding ``data`` whole and synced; the
    caller places it (a rename or a link) or removes it. Removed here if writing fails."""
    os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
    tmp = f"{final}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return tmp


def _commit_local(final: str, data: bytes, place: Callable[[str, str], None]) -> None:
    """Write ``data`` whole to a temporary file beside ``final``, then ``place`` it there
    (``os.replace``: overwrite; ``os.link``: only if ``final`` is absent). The temporary file
    never outlives the call."""
    tmp = stage_local(final, data)
    try:
        place(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Store:
    """A storage root. Paths given to its methods are relative to the root."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        if not url:
            raise StorageError("storage root URL is empty")
        wild = sorted(set(GLOB_CHARACTERS) & set(url))
        if wild:
            # DuckDB's read_parquet and fsspec's glob take these as patterns, so such a root
            # would also read the files of every folder it matches (another store's).
            raise StorageError(
                f"storage root {url!r} contains {' '.join(repr(c) for c in wild)}, which file patterns "
                "read as wildcards; choose a folder name without * ? [ ]"
            )
        if url.endswith("://") or url.rstrip("/").endswith(":"):
            # "s3://".rstrip("/") is "s3:", which fsspec reads as a local folder of that name
            raise StorageError(f"storage root {url!r} names no bucket or folder (e.g. s3://bucket/prefix)")
        self.url = url.rstrip("/")
        self.storage_options = storage_options if storage_options is not None else storage_options_from_env(url)
        self.fs, root = url_to_fs(self.url, **self.storage_options)
        self.root = root.rstrip("/")
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol)
        self.protocol = protocols[0]
        self.is_local = "file" in protocols
        if self.is_local:
            self.root = os.path.abspath(self.root)
        # Backends with an exclusive create and a compare-and-swap (see create_bytes).
        self.conditional_writes = self.is_local or self.protocol in ("s3", "s3a")

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def path(self, rel: str) -> str:
        """Absolute path (in the filesystem's terms) of ``rel``; refuses to leave the root."""
        parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            raise StorageError(f"path {rel!r} would leave the storage root")
        return "/".join([self.root, *parts])

    def uri(self, rel: str) -> str:
        """A URL for ``rel`` that other tools (DuckDB, pyarrow) understand."""
        p = self.path(rel)
        return p if self.is_local else f"{self.protocol}://{p}"

    def damaged(self, rel: str, cause: BaseException | str) -> CorruptArtifactError:
        """The error for a committed file that does not read whole: it names the file, what is
        wrong and how to recover."""
        why = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        return CorruptArtifactError(
            f"{self.uri(rel)} is truncated or corrupt ({why}); to recover, {recovery_hint(rel)}"
        )

    @_io("check")
    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    @_io("list")
    def list(self, rel: str, suffix: str = "") -> list[str]:
        """Relative paths of files directly under ``rel`` ending in ``suffix``, sorted."""
        base = self.path(rel)
        if not self.fs.exists(base):
            return []
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
        return sorted(f"{rel.rstrip('/')}/{n}" for n in names if n.endswith(suffix) and ".tmp-" not in n)

    def modified(self, rel: str) -> float | None:
        """When ``rel`` was last written (unix seconds); None where the backend does not say
        or the file is gone."""
        try:
            return float(self.fs.modified(self.path(rel)).timestamp())
        except (NotImplementedError, FileNotFoundError, AttributeError, OSError):
            return None

    @_io("list")
    def glob(self, pattern: str) -> list[str]:
        """Relative paths of committed files matching ``pattern`` (temporary files excluded)."""
        found = self.fs.glob(self.path(pattern))
        inside = self.root + "/"
        return sorted(p[len(inside) :] for p in found if p.startswith(inside) and ".tmp-" not in p)

    @_io("write")
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` atomically: readers see the old file, or none, or all of the new one."""
        final = self.path(rel)
        if self.is_local:
            _commit_local(final, data, os.replace)
        else:
            self.fs.pipe_file(final, data)  # a single PUT: the object appears whole or not at all

    @_io("write")
    def write_file(self, rel: str, local_path: str) -> None:
        """Copy a local file to ``rel`` atomically, streamed (never whole in memory): a
        temporary file and a rename on a local root, one upload (s3fs completes a multipart
        upload only at the end) on object storage."""
        final = self.path(rel)
        if self.is_local:
            os.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{final}.tmp-{uuid.uuid4().hex}"
            try:
                shutil.copyfile(local_path, tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            self.fs.put_file(local_path, final)

    @_io("create")
    def create_bytes(self, rel: str, data: bytes) -> bool:
        """Write ``data`` to ``rel`` only if nothing is there, atomically; False if something is.

        Locally a hard link of a whole temporary file (it fails on an existing name); on S3 a
        PUT with ``If-None-Match: *``. On other backends (``conditional_writes`` False) a check
        then a write, which is exclusive only under a :class:`StoreLease`."""
        final = self.path(rel)
        if self.is_local:
            try:
                _commit_local(final, data, os.link)
                return True
            except FileExistsError:
                return False
        if not self.conditional_writes:
            if self.fs.exists(final):
                return False
            self.fs.pipe_file(final, data)
            return True
        try:
            self.fs.pipe_file(final, data, mode="create")
            return True
        except FileExistsError:
            return False

    @_io("read")
    def read_versioned(self, rel: str) -> tuple[bytes, str] | None:
        """``(content, token)`` of ``rel`` for :meth:`swap_bytes`, or None when it is absent."""
        final = self.path(rel)
        if self.is_local or not self.conditional_writes:
            try:
                data = self.fs.cat_file(final)
            except FileNotFoundError:
                return None
            return data, digest(data)
        self.fs.invalidate_cache(final)
        try:
            etag = self.fs.info(final)["ETag"]
            data = self.fs.cat_file(final)
        except FileNotFoundError:
            return None
        return data, etag  # content read after the tag: a change in between fails the swap, never passes

    @_io("swap")
    def swap_bytes(self, rel: str, data: bytes, token: str | None) -> bool:
        """Replace ``rel`` with ``data`` only if it is still what :meth:`read_versioned` saw
        (``token``; None: only if it is absent). False when another writer came first.

        Locally the check and the rename run under ``flock`` on the folder (released by the
        kernel if the process dies); on S3 a PUT with ``If-Match``."""
        if token is None:
            return self.create_bytes(rel, data)
        final = self.path(rel)
        if self.is_local:
            with self._folder_lock(final.rsplit("/", 1)[0]):
                try:
                    with open(final, "rb") as f:
                        if digest(f.read()) != token:
                            return False
                except FileNotFoundError:
                    return False
                self.write_bytes(rel, data)
                return True
        if not self.conditional_writes:
            seen = self.read_versioned(rel)
            if seen is None or seen[1] != token:
                return False
            self.fs.pipe_file(final, data)
            return True
        try:
            self.fs.pipe_file(final, data, IfMatch=token)
        except (FileNotFoundError, FileExistsError):
            return False
        except OSError as e:
            if _precondition_failed(e):
                return False
            raise
        self.fs.invalidate_cache(final)
        return True

    @staticmethod
    @contextlib.contextmanager
    def _folder_lock(folder: str) -> Iterator[None]:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @_io("delete")
    def delete(self, rel: str, recursive: bool = False) -> None:
        """Remove a file (or a folder with ``recursive``), and local folders left empty; absent
        ones are ignored."""
        p = self.path(rel)
        if self.fs.exists(p):
            self.fs.rm(p, recursive=recursive)
        if self.is_local:  # and the folders that emptied (object stores have none)
            parent = os.path.dirname(p)
            while parent != self.root and parent.startswith(self.root + "/") and not os.listdir(parent):
                os.rmdir(parent)
                parent = os.path.dirname(parent)

    @_io("list")
    def walk_files(self, rel: str) -> list[str]:
        """Every file under ``rel`` ("" for the whole root), temporary ones included, sorted."""
        base = self.path(rel) if rel else self.root
        if not self.fs.exists(base):
            return []
        return sorted(p[len(self.root) + 1 :] for p in self.fs.find(base))

    def upload(self, local_folder: str, rel: str, names: list[str]) -> None:
        """Copy files ``names`` of a local folder under ``rel``, in the given order (put the
        file whose presence marks the folder complete last)."""
        for name in names:
            with open(os.path.join(local_folder, name), "rb") as f:
                self.write_bytes(f"{rel}/{name}", f.read())

    @_io("read")
    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json_bytes(obj))

    def create_json(self, rel: str, obj: Any) -> bool:
        """:meth:`create_bytes` of a JSON document: False when ``rel`` already exists."""
        return self.create_bytes(rel, json_bytes(obj))

    def forget(self, rel: str = "") -> None:
        """Drop the client's cached listings under ``rel`` (other processes may have written there)."""
        self.fs.invalidate_cache(self.path(rel) if rel else self.root)

    def read_json(self, rel: str) -> Any:
        data = self.read_bytes(rel)
        try:
            return json.loads(data)
        except ValueError as e:  # malformed JSON, or not UTF-8
            raise self.damaged(rel, e) from e

    def write_parquet(self, rel: str, table: pa.Table, artifact: str | None = None) -> int:
        """Write a Parquet file atomically, stamped with the format version of ``artifact`` (a
        key of :data:`PARQUET_FORMATS`) if given; return its size in bytes."""
        if artifact is not None:
            stamp = json.dumps({"artifact": artifact, "version": PARQUET_FORMATS[artifact]})
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), FORMAT_KEY: stamp})
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        self.write_bytes(rel, data)
        return len(data)

    @_io("read")
    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        with self.fs.open(self.path(rel), "rb") as f:
            try:
                table = pq.read_table(f, columns=columns)
            except pa.ArrowInvalid as e:
                raise self.damaged(rel, e) from e
        check_parquet_format(table.schema.metadata, self.uri(rel))
        return table

    @_io("stat")
    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    @_io("copy")
    def local_copy(self, rel: str, dest: str) -> str:
        """Copy a folder under the root to a local folder (for loaders that need a local path).

        Object names come from the store and may be anything an object store allows
        (``a/../../x`` is a valid S3 key): a name that would land outside ``dest`` is refused
        with a StorageError, before anything is written."""
        os.makedirs(dest, exist_ok=True)
        root = os.path.realpath(dest)
        copies = []
        for path in self.fs.find(self.path(rel)):
            name = path[len(self.path(rel)) :].lstrip("/")
            target = os.path.realpath(os.path.join(root, name))
            if ".." in name.replace("\\", "/").split("/") or os.path.commonpath([root, target]) != root:
                raise StorageError(f"refusing to copy {self.uri(rel)}/{name}: its name leaves the destination folder")
            copies.append((path, target))
        for path, target in copies:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(self.fs.cat_file(path))
        return dest


# ---------------------------------------------------------------- the store lease


@dataclass
class LeaseRecord:
    """The lease object's content: who holds it, since when, and until when."""

    owner: str  # "<purpose> <host>:<pid> <nonce>": unique per claim
    purpose: str
    host: str
    pid: int
    acquired: float  # unix seconds
    heartbeat: float
    expires: float
    released: bool = False

    def describe(self, now: float) -> str:
        state = (
            f"expired {now - self.expires:.0f} s ago"
            if now >= self.expires
            else f"expires in {self.expires - now:.0f} s"
        )
        return (
            f"{self.purpose} on {self.host} (pid {self.pid}), holding it since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.acquired))}, last heartbeat "
            f"{now - self.heartbeat:.0f} s ago, {state}"
        )

    @classmethod
    def parse(cls, store: Store, rel: str, data: bytes) -> LeaseRecord:
        """The record in ``data`` read from ``rel``; keys of a newer release are ignored, and
        a file that does not parse is a :class:`CorruptArtifactError` that names it."""
        try:
            d = json.loads(data)
            types = {f.name: f.type for f in fields(cls)}
            rec = cls(**{k: v for k, v in d.items() if k in types})
            for name, kind in types.items():
                value = getattr(rec, name)
                expected = {"str": str, "int": int, "float": (int, float), "bool": bool}[str(kind)]
                if not isinstance(value, expected) or (isinstance(value, bool) and kind != "bool"):
                    raise TypeError(f"{name} is {value!r}, not a {kind}")
            return rec
        except (ValueError, TypeError, AttributeError) as e:
            raise store.damaged(rel, e) from e

    def stale(self, now: float) -> bool:
        """Free to take: released, expired, or held by a dead process of this host."""
        if self.released or now >= self.expires:
            return True
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False


def read_lease(store: Store, rel: str) -> LeaseRecord | None:
    """The lease at ``rel`` (None when there has never been one)."""
    seen = store.read_versioned(rel)
    return None if seen is None else LeaseRecord.parse(store, rel, seen[0])


def check_lease(store: Store, rel: str, owner: str) -> None:
    """Raise :class:`StoreBusyError` unless ``owner`` holds the lease at ``rel`` (unexpired)."""
    store.forget(rel.rsplit("/", 1)[0])
    rec = read_lease(store, rel)
    now = time.time()
    if rec is None or rec.owner != owner or rec.released or now >= rec.expires:
        held = "nobody" if rec is None or rec.released else rec.describe(now)
        raise StoreBusyError(f"this run ({owner}) no longer holds the lease on {store.url}: it is held by {held}")


class StoreLease:
    """An exclusive, expiring claim on a store, renewed by a heartbeat thread.

    :meth:`acquire` takes the lease when it is free, released, expired (its holder missed
    heartbeats for ``ttl`` seconds) or held by a dead process of this host; otherwise it
    retries for up to ``wait`` seconds, then raises :class:`StoreBusyError` naming the
    holder. Every change is a compare-and-swap (:meth:`Store.swap_bytes`), so two claimants
    never both win, and a holder whose lease was taken over learns it at its next heartbeat
    or :meth:`check`. Expiry compares wall clocks: hosts' clocks must agree to within ``ttl``.
    """

    def __init__(self, store: Store, rel: str, purpose: str, ttl: float = 60.0, wait: float = 120.0):
        if ttl <= 0 or wait < 0:
            raise ValueError(f"lease ttl must be > 0 and wait >= 0, got ttl={ttl}, wait={wait}")
        self.store, self.rel, self.purpose, self.ttl, self.wait = store, rel, purpose, ttl, wait
        host, pid = socket.gethostname(), os.getpid()
        self.owner = f"{purpose} {host}:{pid} {uuid.uuid4().hex[:8]}"
        self._record = LeaseRecord(self.owner, purpose, host, pid, 0.0, 0.0, 0.0)
        self._token: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None  # why the lease was lost, once it is

    def _write(self, token: str | None, released: bool = False) -> str | None:
        now = time.time()
        rec = self._record
        rec.heartbeat, rec.expires, rec.released = now, now + self.ttl, released
        if not rec.acquired:
            rec.acquired = now
        if not self.store.swap_bytes(self.rel, json.dumps(asdict(rec)).encode(), token):
            return None
        seen = self.store.read_versioned(self.rel)
        mine = seen is not None and json.loads(seen[0]).get("owner") == self.owner
        return seen[1] if mine else None

    def acquire(self) -> StoreLease:
        deadline = time.monotonic() + self.wait
        while True:
            seen = self.store.read_versioned(self.rel)
            holder = None if seen is None else LeaseRecord.parse(self.store, self.rel, seen[0])
            if holder is None or holder.stale(time.time()):
                token = self._write(None if seen is None else seen[1])
                if token is not None:
                    if holder is not None and not holder.released:
                        logger.warning("took over the lease of %s", holder.describe(time.time()))
                    self._token = token
                    self._thread = threading.Thread(target=self._beat, name="cecq-lease", daemon=True)
                    self._thread.start()
                    return self
                continue  # another claimant came first: look again
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"store {self.store.url} is claimed by {holder.describe(time.time())} "
                    f"(lease {self.store.uri(self.rel)}); waited {self.wait:.0f} s. Rerun when it is done; "
                    "a crashed holder's lease is taken over once it expires"
                )
            time.sleep(min(0.25, max(0.05, deadline - time.monotonic())))

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                token = self._write(self._token)
            except StorageError as e:  # unreachable store: try again at the next beat, until expiry
                logger.warning("lease heartbeat failed: %s", e)
                continue
            if token is None:
                self.lost = f"the lease on {self.store.url} was taken over by another run"
                logger.error(self.lost)
                return
            self._token = token

    def check(self) -> None:
        """Raise :class:`StoreBusyError` if the lease was lost (taken over after a missed expiry)."""
        if self.lost or self._token is None:
            raise StoreBusyError(self.lost or f"the lease on {self.store.url} is not held")
        check_lease(self.store, self.rel, self.owner)

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released (when it is still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._token is not None and not self.lost:
            with contextlib.suppress(StorageError):
                self._write(self._token, released=True)
        self._token = None

    def __enter__(self) -> StoreLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
