"""``cecq index build|list`` (FAISS search indexes over a store's published codes) and
``cecq export --format faiss`` (a self-contained index file for serving)."""

from __future__ import annotations

import argparse
import json
import sys

from cecq.catalog import current_manifest, index_records
from cecq.config import IndexConfig
from cecq.index import index_kinds
from cecq.pipeline.export import export_faiss
from cecq.pipeline.index import build_index
from cecq.storage import Store


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="FAISS search indexes over the published codes")
    actions = p.add_subparsers(dest="index_action", required=True, metavar="ACTION")
    b = actions.add_parser(
        "build",
        help="build a search index for the published catalog version",
        description="Write a FAISS index of the published version's codes into the store (an immutable, "
        "named artifact next to the version; a rerun finds it). Product codes go into FAISS byte for byte "
        "with the store's own codebooks; scalar and fitted-bit codes as their dequantized vectors. "
        "`cecq search` and `cecq eval-store` use it from then on (`--exact` scans instead).",
    )
    b.add_argument("--store", required=True)
    b.add_argument("--kind", choices=index_kinds(), default=IndexConfig.kind, help="flat (default) or ivf")
    b.add_argument("--nlist", type=int, help="IVF lists (default: about the square root of the documents)")
    b.add_argument(
        "--nprobe",
        type=int,
        default=IndexConfig.nprobe,
        help=f"IVF lists a query searches by default ({IndexConfig.nprobe})",
    )
    b.add_argument("--json", action="store_true", help="print the index record as JSON")
    b.set_defaults(func=cmd_build)
    ls = actions.add_parser("list", help="the search indexes of the published catalog version")
    ls.add_argument("--store", required=True)
    ls.set_defaults(func=cmd_list)

    e = sub.add_parser(
        "export",
        help="export the published version for serving (a FAISS index file plus a JSON sidecar)",
        description="Write OUT (a FAISS index that takes the decoder's output rows: the quantizer's "
        "prefix cut and rotation are its pre-transform) and OUT.json (models, weights, decoder, dims, "
        "catalog version, ids in index order).",
    )
    e.add_argument("out", metavar="OUT")
    e.add_argument("--store", required=True)
    e.add_argument("--format", choices=["faiss"], default="faiss")
    e.add_argument("--index", help="which of the version's indexes (default: the most recent; built flat if none)")
    e.set_defaults(func=cmd_export)


def cmd_build(args: argparse.Namespace) -> int:
    store = Store(args.store)
    record = build_index(store, IndexConfig(kind=args.kind, nlist=args.nlist, nprobe=args.nprobe))
    if args.json:
        print(json.dumps({k: v for k, v in record.to_dict().items() if k != "empty_rows"}, indent=2))
    else:
        print(
            f"index {record.name} of catalog v{record.version}: {record.rows} documents, {record.layout} codes, "
            f"{record.file_bytes:,} bytes at {store.uri(record.file)} (built in {record.seconds:.1f} s)"
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = Store(args.store)
    m = current_manifest(store)
    records = index_records(store, m.version)
    if not records:
        print(f"catalog v{m.version} has no search index (build one with 'cecq index build')", file=sys.stderr)
    for r in records:
        print(f"{r.name}\t{r.kind}\t{r.layout}\t{r.rows}\t{r.file_bytes}\t{r.built}\t{r.file}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    written = export_faiss(Store(args.store), args.out, args.index)
    print(f"wrote {written['index']} and {written['sidecar']} (catalog v{written['catalog_version']})")
    return 0
