"""``cecq embed-corpus`` and ``cecq reindex``: the Prefect flows, run in this process.
Every default comes from :class:`~cecq.config.PipelineConfig`, the index's size (ratio,
dims, bits, budget, codes) from :class:`~cecq.targets.CompressionTarget`."""

from __future__ import annotations

import argparse
import json

from cecq.catalog import current_manifest
from cecq.cli.args import add_models, add_quantization, prefect_defaults
from cecq.config import MODEL_WEIGHTS, PIPELINE_DECODER, PRECISIONS, VALID_BITS, PipelineConfig
from cecq.encoders import is_fitted
from cecq.index import index_kinds
from cecq.pipeline.dry_run import plan_reindex
from cecq.pipeline.publish import reindex_config
from cecq.pipeline.summary import RunSummary
from cecq.progress import console_sink, reporting_to
from cecq.quantization import quantizer_class
from cecq.storage import Store
from cecq.targets import DEFAULT_COMPRESSION, PREFERRED_KINDS, CompressionTarget

P = PipelineConfig  # the defaults of every option below
PRODUCT_ROWS = quantizer_class(PREFERRED_KINDS[0]).min_calibration_rows


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed-corpus",
        help="run the embed-corpus flow: embed, train, compress and publish a corpus",
        description="Run the embed-corpus Prefect flow (Prefect's local API unless PREFECT_API_URL is set; "
        "a local Ray unless --ray-address or RAY_ADDRESS is set).",
    )
    p.add_argument("corpus", help="corpus URL: BEIR folder, .jsonl, .parquet or a folder of them (local or s3://)")
    p.add_argument("--store", required=True, help="storage root URL (local folder or s3://bucket/prefix)")
    add_models(p)
    p.add_argument("--shard-rows", type=int, default=P.shard_rows, help=f"documents per shard (default {P.shard_rows})")
    p.add_argument(
        "--compression",
        type=float,
        default=DEFAULT_COMPRESSION,
        metavar="R",
        help=f"target ratio to the float32 concatenation (default {DEFAULT_COMPRESSION:g}): picks --out-dim, "
        "--dims, --budget-bytes and --quantization for these models and this corpus (product codes from "
        f"{PRODUCT_ROWS:,} documents, fitted bits below); the options below override the parts they name",
    )
    p.add_argument("--dims", type=int, help="override: decoder prefix size to publish")
    p.add_argument("--bits", type=int, choices=VALID_BITS, help="override: bits per dimension (scalar codes)")
    p.add_argument(
        "--budget-bytes",
        type=int,
        metavar="B",
        help="override: B bytes a document, spent by the --quantization kind",
    )
    add_quantization(p)
    p.add_argument("--id-column", help="id column (default: _id, id or doc_id)")
    p.add_argument(
        "--text-column", action="append", dest="text_columns", help="text column (repeatable; default: title and text)"
    )
    p.add_argument("--batch-size", type=int, default=P.batch_size)
    p.add_argument("--max-epochs", type=int, default=PIPELINE_DECODER.max_epochs)
    p.add_argument("--out-dim", type=int, help="override: decoder output size; --dims is a prefix of it")
    p.add_argument(
        "--max-train-rows",
        type=int,
        default=PIPELINE_DECODER.max_train_rows,
        help=f"documents sampled to train the decoder (default {PIPELINE_DECODER.max_train_rows})",
    )
    p.add_argument(
        "--weights",
        choices=MODEL_WEIGHTS,
        default=P.model_weights,
        help="per-model concatenation weights, fitted on the corpus: guarded (similarity spreads, dropping "
        "a model that finds pseudo-queries cut from the documents far worse than the best), spread, "
        f"or equal (default {P.model_weights})",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=P.precision,
        help="number format of the neural base models when embedding (default auto: fp16 on a GPU, fp32 on "
        "the CPU; bf16 is faster on a CPU with native bf16 instructions, see docs/performance.md, round 11)",
    )
    p.add_argument("--ray-address", help="Ray cluster to use (default: RAY_ADDRESS, else a local Ray)")
    add_json(p)
    add_index_step(p)
    p.set_defaults(func=cmd_embed_corpus)

    p = sub.add_parser(
        "reindex",
        help="run the reindex flow: embed only new or changed documents",
        description="Re-index a corpus into a store built by embed-corpus, reusing unchanged shards.",
    )
    p.add_argument("corpus")
    p.add_argument("--store", required=True)
    p.add_argument(
        "--decoder-policy",
        choices=["auto", "reuse", "retrain"],
        default=P.decoder_policy,
        help="reuse the published decoder, retrain it, or retrain when many documents changed "
        f"(default {P.decoder_policy})",
    )
    p.add_argument("--retrain-fraction", type=float, default=P.retrain_fraction)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be embedded, reused and deleted, and whether the decoder would be retrained; "
        "write nothing (no Prefect, no Ray)",
    )
    p.add_argument("--ray-address")
    add_json(p)
    add_index_step(p)
    p.set_defaults(func=cmd_reindex)


def add_index_step(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--index", choices=index_kinds(), help="also build a FAISS search index of the published version (flat, ivf)"
    )
    p.add_argument(
        "--nlist", type=int, help="IVF lists of that index (default: about the square root of the documents)"
    )


def cmd_embed_corpus(args: argparse.Namespace) -> int:
    # a bad target fails here, before Prefect starts (the flow checks it again)
    CompressionTarget(args.compression, args.dims, args.bits, args.budget_bytes, args.quantization, args.out_dim)
    prefect_defaults()
    from flows.embed_corpus import embed_corpus  # heavy: Prefect
    from flows.startup import start_services  # heavy: Prefect

    models = args.models or list(P.models)
    # The Prefect server, Ray and the embedding actors start together, not in turn.
    start_services(args.ray_address, [m for m in models if not is_fitted(m)])
    with reporting_to(console_sink()):
        result = embed_corpus(
            corpus=args.corpus,
            store=args.store,
            models=models,
            compression=args.compression,
            shard_rows=args.shard_rows,
            dims=args.dims,
            bits=args.bits,
            budget_bytes=args.budget_bytes,
            quantization=args.quantization,
            ray_address=args.ray_address,
            id_column=args.id_column,
            text_columns=args.text_columns,
            batch_size=args.batch_size,
            max_epochs=args.max_epochs,
            out_dim=args.out_dim,
            max_train_rows=args.max_train_rows,
            model_weights=args.weights,
            precision=args.precision,
            index=args.index,
            nlist=args.nlist,
        )
    return report(result, args.json)


def cmd_reindex(args: argparse.Namespace) -> int:
    if args.dry_run:
        store = Store(args.store)
        published = current_manifest(store)
        config = reindex_config(published, args.corpus, args.store, args.decoder_policy, args.retrain_fraction)
        plan = plan_reindex(store, config, published)
        print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.table())
        return 0
    prefect_defaults()
    from flows.reindex import reindex  # heavy: Prefect
    from flows.startup import start_services  # heavy: Prefect

    start_services(args.ray_address)
    with reporting_to(console_sink()):
        result = reindex(
            corpus=args.corpus,
            store=args.store,
            decoder_policy=args.decoder_policy,
            retrain_fraction=args.retrain_fraction,
            ray_address=args.ray_address,
            index=args.index,
            nlist=args.nlist,
        )
    return report(result, args.json)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result (ids and summary) as JSON, not a table")


def report(result: dict, as_json: bool) -> int:
    """The run's summary table (or its JSON) on stdout."""
    print(json.dumps(result, indent=2) if as_json else RunSummary.from_dict(result["summary"]).table())
    return 0
