"""The Parquet envelope every quantizer file shares: the table a quantizer kind writes, with
its parameters as JSON under the ``cecq.quantizer`` schema metadata key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = "cecq.quantizer"
LEGACY_KIND = "scalar"  # files of the first release's (scalar) quantizers carry no kind


def write_quantizer_table(table: pa.Table, meta: dict[str, Any], path: str | Path | BinaryIO, filesystem=None) -> None:
    """Write ``table`` with ``meta`` to ``path`` (a path, URL or open binary file)."""
    if meta.get("kind") == LEGACY_KIND:  # scalar files keep the first release's format, byte for byte
        meta = {k: v for k, v in meta.items() if k != "kind"}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta)})
    pq.write_table(table, path if hasattr(path, "write") else str(path), filesystem=filesystem)


def read_quantizer_table(path: str | Path | BinaryIO, filesystem=None) -> tuple[pa.Table, dict[str, Any]]:
    """The table and parameters of a quantizer file; ValueError if it is not one."""
    table = pq.read_table(path if hasattr(path, "read") else str(path), filesystem=filesystem)
    meta = json.loads((table.schema.metadata or {}).get(METADATA_KEY.encode(), b"{}"))
    if not meta:
        raise ValueError(f"{path}: not a cecq quantizer file (no {METADATA_KEY} metadata)")
    meta.setdefault("kind", LEGACY_KIND)
    return table, meta
