"""``cecq sql`` (DuckDB over a store's catalog views) and ``cecq search`` (a text query
against the published codes)."""

from __future__ import annotations

import argparse
import json

import duckdb

from cecq.catalog import connect, search_store, view_statements
from cecq.catalog.reader import diagnosed, view_files
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


def cmd_sql(args: argparse.Namespace) -> int:
    store = Store(args.store)
    if args.show_views:
        print(";\n".join(view_statements(store)) + ";")
        return 0
    if not args.query:
        raise ValueError("give a SQL query, or --show-views")
    con = connect(store)
    diagnosed(store, view_files(store), lambda: _run_sql(con, args.query, args.json))  # names a damaged file
    return 0


def _run_sql(con: duckdb.DuckDBPyConnection, query: str, as_json: bool) -> None:
    rel = con.sql(query)
    if rel is None:
        return
    if as_json:
        cols = rel.columns
        for row in rel.fetchall():
            print(json.dumps(dict(zip(cols, row)), default=lambda v: v.hex() if isinstance(v, bytes) else str(v)))
    else:
        rel.show(max_rows=1000, max_width=200)


def cmd_search(args: argparse.Namespace) -> int:
    hits = search_store(Store(args.store), args.query, args.k, args.scoring)
    for h in hits:
        print(json.dumps(h) if args.json else f"{h['rank']:>3}  {h['score']:.4f}  {h['id']}  {h['text'][:100]!r}")
    return 0
