"""``cecq gc``: remove what no kept catalog version of a store needs."""

from __future__ import annotations

import argparse
import json

from cecq.pipeline.publish import collect_garbage
from cecq.storage import Store


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gc",
        help="remove temporary files left by crashes and artifacts no kept catalog version uses",
        description="Remove temporary files left by crashed runs and the artifacts (corpus and embedding "
        "shards, fitted models, decoders, quantizers, codes) that no kept catalog version refers to. "
        "Every version's manifest and every run record stay. Refuses while a run holds the store.",
    )
    p.add_argument("--store", required=True)
    p.add_argument(
        "--keep", type=int, default=1, help="catalog versions to keep: the published one and those below it (default 1)"
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.add_argument("--json", action="store_true", help="print the removed paths as JSON")
    p.set_defaults(func=cmd_gc)


def cmd_gc(args: argparse.Namespace) -> int:
    if args.keep < 1:
        raise ValueError(f"--keep must be >= 1 (the published version is always kept), got {args.keep}")
    found = collect_garbage(Store(args.store), args.keep, args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    if args.json:
        print(json.dumps({"kept_versions": found.kept_versions, verb.replace(" ", "_"): found.paths}))
    else:
        for rel in found.paths:
            print(f"{verb} {rel}")
        print(
            f"{verb} {len(found.temporary)} temporary and {len(found.unreferenced)} unreferenced files; "
            f"kept versions {found.kept_versions}"
        )
    return 0
