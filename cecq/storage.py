"""The storage root: every artifact of a deployment under one fsspec URL.

Local folders and ``s3://bucket/prefix`` (s3fs) are supported. Writes are atomic: a file
is written under a temporary name and renamed into place locally, and sent in one PUT on
object stores, so a reader never sees half a shard.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from cecq.errors import CorruptArtifactError, StorageError, check_version

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


class Store:
    """A storage root. Paths given to its methods are relative to the root."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        if not url:
            raise StorageError("storage root URL is empty")
        self.url = url.rstrip("/")
        self.storage_options = storage_options if storage_options is not None else storage_options_from_env(url)
        self.fs, root = url_to_fs(self.url, **self.storage_options)
        self.root = root.rstrip("/")
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol)
        self.protocol = protocols[0]
        self.is_local = "file" in protocols
        if self.is_local:
            self.root = os.path.abspath(self.root)

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

    @_io("list")
    def glob(self, pattern: str) -> list[str]:
        """Relative paths of committed files matching ``pattern`` (temporary files excluded)."""
        found = self.fs.glob(self.path(pattern))
        return sorted(p[len(self.root) + 1 :] for p in found if ".tmp-" not in p)

    @_io("write")
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` atomically: readers see the old file, or none, or all of the new one."""
        final = self.path(rel)
        parent = final.rsplit("/", 1)[0]
        if self.is_local:
            os.makedirs(parent, exist_ok=True)
            tmp = f"{final}.tmp-{uuid.uuid4().hex}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        else:
            self.fs.pipe_file(final, data)  # a single PUT: the object appears whole or not at all

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
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8"))

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
