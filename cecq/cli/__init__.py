"""The ``cecq`` command line: one module per command group, shared helpers in ``args``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import duckdb

from cecq.cli import bench, evaluate, index, models, pipeline, store
from cecq.errors import ConfigError, StorageError

COMMAND_GROUPS = (evaluate, pipeline, store, index, models, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cecq", description="Compact, searchable embeddings from several small embedding models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, StorageError, duckdb.Error) as e:
        print(f"cecq: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
