"""``cecq sql`` (DuckDB over a store's catalog views), ``cecq search`` (a text query
against the published codes) and ``cecq status`` (the store's state)."""

from __future__ import annotations

import argparse
import json
import sys

import duckdb

from cecq.catalog import connect_with_search, plan_search, search_store, view_statements
from cecq.catalog.reader import diagnosed, view_files
from cecq.catalog.status import store_status
from cecq.cli.args import add_index_choice, add_scoring
from cecq.pipeline.parallel_search import search_store_parallel
from cecq.storage import Store


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sql",
        help="query the catalog with DuckDB (views: runs, shards, documents, corpus, versions, indexes)",
        description="Open DuckDB over a store's published catalog and run one SQL statement. "
        "cecq_search(query, k) returns the top-k hits of a text query as (rank, id, score) structs: "
        "unnest it and join the views.",
    )
    p.add_argument("query", nargs="?", help="SQL to run; omit with --show-views")
    p.add_argument("--store", required=True)
    p.add_argument("--json", action="store_true", help="print rows as JSON lines")
    p.add_argument("--show-views", action="store_true", help="print the CREATE VIEW statements (for the duckdb CLI)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="VALUE",
        help="a value for $1, $2, ... in the query (repeatable), e.g. the text of cecq_search($1, 10)",
    )
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("search", help="search the published compressed codes with a text query")
    p.add_argument("query")
    p.add_argument("--store", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    add_scoring(p)
    add_index_choice(p)
    p.add_argument(
        "--ray-address",
        help="scan the codes shards in parallel on this Ray cluster ('local': a local Ray) and merge the top-k",
    )
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
    con = connect_with_search(store)
    params = args.param or None
    diagnosed(store, view_files(store), lambda: _run_sql(con, args.query, params, args.json))  # names a damaged file
    return 0


def _run_sql(con: duckdb.DuckDBPyConnection, query: str, params: list[str] | None, as_json: bool) -> None:
    rel = con.sql(query, params=params)
    if rel is None:
        return
    if as_json:
        cols = rel.columns
        for row in rel.fetchall():
            print(json.dumps(dict(zip(cols, row)), default=lambda v: v.hex() if isinstance(v, bytes) else str(v)))
    else:
        rel.show(max_rows=1000, max_width=200)


def cmd_status(args: argparse.Namespace) -> int:
    status = store_status(Store(args.store))
    print(json.dumps(status.to_dict(), indent=2) if args.json else status.table())
    return 0 if status.healthy else 1


def cmd_search(args: argparse.Namespace) -> int:
    store = Store(args.store)
    if args.ray_address:
        if args.index_name or args.nprobe is not None:
            raise ValueError("--ray-address scans every codes shard: it takes no --index or --nprobe")
        address = None if args.ray_address == "local" else args.ray_address
        [hits], nodes = search_store_parallel(store, [args.query], args.k, address, args.scoring)
        print(f"searching shard-parallel on Ray ({len(nodes)} node(s)): exhaustive scan", file=sys.stderr)
    else:
        plan = plan_search(store, exact=args.exact, index=args.index_name, nprobe=args.nprobe)
        print(f"searching with {plan.describe()}", file=sys.stderr)
        hits = search_store(store, args.query, args.k, args.scoring, plan=plan)
    for h in hits:
        print(json.dumps(h) if args.json else f"{h['rank']:>3}  {h['score']:.4f}  {h['id']}  {h['text'][:100]!r}")
    return 0
