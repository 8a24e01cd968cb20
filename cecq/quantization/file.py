"""The Parquet envelope every quantizer file shares: the table a quantizer kind writes, with
its parameters as JSON under the ``cecq.quantizer`` schema metadata key.

A file is stamped with the lowest format version that reads it, so that an older cecq still
reads every file it can: a kind's ``to_table`` asks for a newer one in its metadata
(``format_version``) only when its table needs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from cecq.errors import DataError, RecordVersionError, check_version

METADATA_KEY = "cecq.quantizer"
LEGACY_KIND = "scalar"  # files of the first release's (scalar) quantizers carry no kind
# The newest envelope version this cecq reads and writes. Absent means 1, and version 1 files
# are written unstamped, so that files of the first release are written back byte for byte.
# 2: a product quantizer's rotation stored as its seed (and the matrix's sha256).
QUANTIZER_FORMAT = 2


def write_quantizer_table(table: pa.Table, meta: dict[str, Any], path: str | Path | BinaryIO, filesystem=None) -> None:
    """Write ``table`` with ``meta`` to ``path`` (a path, URL or open binary file)."""
    if meta.get("kind") == LEGACY_KIND:  # scalar files keep the first release's format, byte for byte
        meta = {k: v for k, v in meta.items() if k != "kind"}
    version = meta.get("format_version", 1)
    if not (isinstance(version, int) and 1 <= version <= QUANTIZER_FORMAT):
        raise ValueError(
            f"a quantizer table asks for format version {version!r}; this cecq writes 1..{QUANTIZER_FORMAT}"
        )
    if version == 1:  # version 1 is written as the first release wrote it: unstamped
        meta = {k: v for k, v in meta.items() if k != "format_version"}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta)})
    pq.write_table(table, path if hasattr(path, "write") else str(path), filesystem=filesystem)


def read_quantizer_table(path: str | Path | BinaryIO, filesystem=None) -> tuple[pa.Table, dict[str, Any]]:
    """The table and parameters of a quantizer file; ValueError if it is not one."""
    table = pq.read_table(path if hasattr(path, "read") else str(path), filesystem=filesystem)
    meta = json.loads((table.schema.metadata or {}).get(METADATA_KEY.encode(), b"{}"))
    if not meta:
        raise ValueError(f"{path}: not a cecq quantizer file (no {METADATA_KEY} metadata)")
    check_version(f"quantizer file {path}", int(meta.pop("format_version", 1)), QUANTIZER_FORMAT)
    meta.setdefault("kind", LEGACY_KIND)
    return table, meta


def source_name(path: str | Path | BinaryIO) -> str:
    """How a message names a quantizer file: its path, or an open file's path or name."""
    if isinstance(path, (str, Path)):
        return str(path)
    return str(getattr(path, "path", None) or getattr(path, "name", None) or "quantizer file")


@contextmanager
def named_errors(path: str | Path | BinaryIO) -> Iterator[None]:
    """Prefix the file's name to a :class:`DataError` (a corrupt file) or a
    :class:`RecordVersionError` raised while a quantizer is built from its table
    (``from_table`` sees the table, not the file)."""
    try:
        yield
    except (DataError, RecordVersionError) as error:
        raise type(error)(f"{source_name(path)}: {error}") from error
