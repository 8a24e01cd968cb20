"""``cecq sql`` (DuckDB over a store's catalog views), ``cecq search`` (a text query
against the published codes) and ``cecq status`` (the store's state)."""

from __future__ import annotations

import argparse
import json

from cecq.catalog import connect, search_store, view_statements
from cecq.catalog.status import store_status
from cecq.cli.args import add_scoring
from cecq.storage import Store


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sql",
        help="query the catalog with DuckDB (views: runs, shards, documents, corpus, versions)",
        description="Open DuckDB over a store's published catalog and run one SQL statement.",
    )
    p.add_argument("query", nargs="?", help="SQL to run; omit with --show-views")
    p.add_argument("--store", required=True)
    p.add_argument("--json", action="store_true", help="print rows as JSON lines")
    p.add_argument("--show-views", action="store_true", help="print the CREATE VIEW statements (for the duckdb CLI)")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("search", help="search the published compressed codes with a text query")
    p.add_argument("query")
    p.add_argument("--store", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    add_scoring(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "status",
        help="the published version, versions and runs with their sizes, leftovers, health",
        description="Show a store's state: published version and run, versions and runs with sizes on storage "
        "per artifact kind, leftovers of crashes (temporary files, runs that never published), and whether the "
        "published version is complete. Exit status 1 when it is not healthy. Writes nothing.",
    )
    p.add_argument("--store", required=True)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=cmd_status)


def cmd_sql(args: argparse.Namespace) -> int:
    store = Store(args.store)
    if args.show_views:
        print(";\n".join(view_statements(store)) + ";")
        return 0
    if not args.query:
        raise ValueError("give a SQL query, or --show-views")
    rel = connect(store).sql(args.query)
    if rel is None:
        return 0
    if args.json:
        cols = rel.columns
        for row in rel.fetchall():
            print(json.dumps(dict(zip(cols, row)), default=lambda v: v.hex() if isinstance(v, bytes) else str(v)))
    else:
        rel.show(max_rows=1000, max_width=200)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = store_status(Store(args.store))
    print(json.dumps(status.to_dict(), indent=2) if args.json else status.table())
    return 0 if status.healthy else 1


def cmd_search(args: argparse.Namespace) -> int:
    hits = search_store(Store(args.store), args.query, args.k, args.scoring)
    for h in hits:
        print(json.dumps(h) if args.json else f"{h['rank']:>3}  {h['score']:.4f}  {h['id']}  {h['text'][:100]!r}")
    return 0
