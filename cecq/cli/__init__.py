"""The ``cecq`` command line: one module per command group, shared helpers in ``args``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import duckdb

from cecq.cli import bench, evaluate, index, maintenance, models, pipeline, store
from cecq.errors import ConfigError, StorageError, StoreBusyError

TRUST_ENV = "CECQ_TRUST_STORE_MODELS"  # what --trust-store-models sets (cecq.config.ModelTrust)
COMMAND_GROUPS = (evaluate, pipeline, store, index, models, bench, maintenance)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cecq", description="Compact, searchable embeddings from several small embedding models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--trust-store-models",
        action="store_true",
        help="load whatever base models a store's manifest names, local folders included (default: only "
        "for local stores; see CECQ_TRUST_STORE_MODELS, CECQ_ALLOWED_MODELS)",
    )
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
    saved = os.environ.get(TRUST_ENV)
    if args.trust_store_models:  # read by every reader of store models, in this process and its flows
        os.environ[TRUST_ENV] = "1"
    try:
        return int(args.func(args) or 0)
    except (
        ConfigError,
        ValueError,
        FileNotFoundError,
        FileExistsError,
        StorageError,
        StoreBusyError,
        duckdb.Error,
    ) as e:
        print(f"cecq: error: {e}", file=sys.stderr)
        return 2
    finally:
        if args.trust_store_models and saved is None:
            del os.environ[TRUST_ENV]
        elif args.trust_store_models:
            os.environ[TRUST_ENV] = saved


if __name__ == "__main__":
    sys.exit(main())
