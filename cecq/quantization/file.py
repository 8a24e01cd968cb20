"""The Parquet envelope every quantizer file shares: the table a quantizer kind writes, with
its parameters as JSON under the ``cecq.quantizer`` schema metadata key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from cecq.errors import check_version

METADATA_KEY = "cecq.quantizer"
LEGACY_KIND = "scalar"  # files of the first release's (scalar) quantizers carry no kind
# The envelope's format version. Absent means 1, and version 1 files are written unstamped, so
# that files of the first release are written back byte for byte.
QUANTIZER_FORMAT = 1


def write_quantizer_table(table: pa.Table, meta: dict[str, Any], path: str | Path | BinaryIO, filesystem=None) -> None:
    """Write ``table`` with ``meta`` to ``path`` (a path, URL or open binary file)."""
    if meta.get("kind") == LEGACY_KIND:  # scalar files keep the first release's format, byte for byte
        meta = {k: v for k, v in meta.items() if k != "kind"}
    if QUANTIZER_FORMAT > 1:  # version 1 is written as the first release wrote it: unstamped
        meta = {**meta, "format_version": QUANTIZER_FORMAT}
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
