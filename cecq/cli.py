"""The ``cecq`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import duckdb

from cecq.config import DEFAULT_MODELS, STRATEGIES, ConfigError, DecoderConfig, EvalConfig, ModelSpec
from cecq.storage import StorageError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _name_list(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return values


def decoder_config(args: argparse.Namespace) -> DecoderConfig:
    """The decoder settings of ``cecq eval`` and ``cecq bench quality``."""
    config = DecoderConfig(kind=args.decoder, init=args.init, max_epochs=args.epochs, seed=args.seed)
    return config.with_strategy(args.strategy) if args.strategy else config


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate base models, their concatenation and compressed variants on a BEIR folder",
                       description="Embed a BEIR task with each base model, train the decoder on its corpus, quantize, "
                                   "and report nDCG@10, retention, bytes per document and compression for every configuration.")
    p.add_argument("beir_dir", help="folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    p.add_argument("--model", action="append", dest="models", metavar="M",
                   help=f"base model: Hugging Face id, local path, or built-in name (repeatable; default: {', '.join(DEFAULT_MODELS)})")
    p.add_argument("--dims", type=_int_list, default=(128, 256, 512), help="decoder prefix sizes to evaluate (default 128,256,512)")
    p.add_argument("--bits", type=_int_list, default=(1, 2, 4), help="bits per dimension to evaluate (default 1,2,4)")
    p.add_argument("--scoring", choices=["symmetric", "asymmetric", "both"], default="both")
    p.add_argument("--decoder", choices=["linear", "mlp"], default="linear", help="decoder architecture")
    p.add_argument("--init", choices=["pca", "random"], default="pca", help="linear decoder initialisation (default pca)")
    p.add_argument("--epochs", type=int, default=DecoderConfig.max_epochs, help="maximum training epochs")
    p.add_argument("--strategy", choices=list(STRATEGIES), help="decoder training strategy (default: the DecoderConfig defaults)")
    p.add_argument("--ablate", type=_name_list, default=(), metavar="S[,S...]",
                   help=f"also train one decoder per listed strategy, scored as cecq[<strategy>]-* ({', '.join(STRATEGIES)})")
    p.add_argument("--budget", type=_int_list, default=(), metavar="B[,B...]",
                   help="also score B bytes a document: cecq-<B>B-alloc (bits per dimension fitted on the corpus) "
                        "and cecq-<B>B-product (product codes, one byte per 4 dims)")
    p.add_argument("--weights", choices=["equal", "spread"], default=EvalConfig.model_weights,
                   help="per-model concatenation weights: equal, or fitted to each model's similarity spread "
                        f"(default {EvalConfig.model_weights})")
    p.add_argument("--rescore", type=int, default=0, metavar="N", help="rescore the top N candidates with float decoder outputs")
    p.add_argument("--baselines", action="store_true",
                   help="also score baselines at the same bytes per document: per-model percentile quantization (pq-*), "
                        "PCA of the concatenation (pca-*), a randomly initialised MRL decoder (mrl-*), and "
                        "sentence-transformers binary quantization with float rescoring (st-binary-*)")
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", metavar="OUT.json", help="write one record per configuration here")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from cecq.data import load_beir
    from cecq.evaluate import evaluate_task, format_table, write_json

    config = EvalConfig(
        models=tuple(ModelSpec(m) for m in (args.models or DEFAULT_MODELS)),
        dims=args.dims,
        bits=args.bits,
        scorings=("symmetric", "asymmetric") if args.scoring == "both" else (args.scoring,),
        decoder=decoder_config(args),
        split=args.split,
        rescore=args.rescore,
        baselines=args.baselines,
        strategies=args.ablate,
        budgets=args.budget,
        model_weights=args.weights,
    )
    task = load_beir(args.beir_dir, split=config.split)
    print(f"{task.name}: {len(task.doc_ids)} documents, {len(task.query_ids)} queries with judgements "
          f"({task.notes['empty_documents']} empty documents)", file=sys.stderr)
    records = evaluate_task(task, config, show_progress=sys.stderr.isatty() or bool(os.environ.get("CECQ_PROGRESS")))
    print(format_table(records))
    if args.json_out:
        write_json(records, args.json_out)
        print(f"wrote {len(records)} records to {args.json_out}", file=sys.stderr)
    return 0


def _prefect_defaults() -> None:
    # Offline-friendly Prefect: no telemetry, and time for the local API to start on slow machines.
    for key, value in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "RAY_USAGE_STATS_ENABLED": "0",
                       "RAY_AUTH_MODE": "disabled"}.items():
        os.environ.setdefault(key, value)


def _add_scoring(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scoring", choices=["asymmetric", "symmetric"], default="asymmetric",
                   help="score the float query against the codes (default), or the query's own codes (symmetric)")


def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed-corpus", help="run the embed-corpus flow: embed, train, compress and publish a corpus",
                       description="Run the embed-corpus Prefect flow (Prefect's local API unless PREFECT_API_URL is set; "
                                   "a local Ray unless --ray-address or RAY_ADDRESS is set).")
    p.add_argument("corpus", help="corpus URL: BEIR folder, .jsonl, .parquet or a folder of them (local or s3://)")
    p.add_argument("--store", required=True, help="storage root URL (local folder or s3://bucket/prefix)")
    p.add_argument("--model", action="append", dest="models", metavar="M", help=f"base model (repeatable; default: {', '.join(DEFAULT_MODELS)})")
    p.add_argument("--shard-rows", type=int, default=50_000, help="documents per shard (default 50000)")
    p.add_argument("--dims", type=int, default=256, help="decoder prefix size to publish (default 256)")
    p.add_argument("--bits", type=int, default=2, choices=[1, 2, 4, 8], help="bits per dimension (default 2)")
    p.add_argument("--budget-bytes", type=int, metavar="B",
                   help="instead of --bits: B bytes a document, bits of each of the --dims dims fitted on the corpus "
                        "(0, 1, 2 or 4; at most --dims / 2)")
    p.add_argument("--quantization", choices=["scalar", "product"], default="scalar",
                   help="with --budget-bytes: scalar codes with fitted bits per dim (default), or product codes, "
                        "one byte per 4-dim subspace of a rotated prefix (keeps symmetric scoring better; "
                        "needs --dims >= 4 x B)")
    p.add_argument("--id-column", help="id column (default: _id, id or doc_id)")
    p.add_argument("--text-column", action="append", dest="text_columns", help="text column (repeatable; default: title and text)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--out-dim", type=int, default=512, help="decoder output size; --dims is a prefix of it (default 512)")
    p.add_argument("--max-train-rows", type=int, default=200_000, help="documents sampled to train the decoder (default 200000)")
    p.add_argument("--weights", choices=["spread", "equal"], default="spread",
                   help="per-model concatenation weights: fitted on the corpus from similarity spreads (default), or equal")
    p.add_argument("--ray-address", help="Ray cluster to use (default: RAY_ADDRESS, else a local Ray)")
    p.set_defaults(func=_cmd_embed_corpus)

    p = sub.add_parser("reindex", help="run the reindex flow: embed only new or changed documents",
                       description="Re-index a corpus into a store built by embed-corpus, reusing unchanged shards.")
    p.add_argument("corpus")
    p.add_argument("--store", required=True)
    p.add_argument("--decoder-policy", choices=["auto", "reuse", "retrain"], default="auto",
                   help="reuse the published decoder, retrain it, or retrain when many documents changed (default auto)")
    p.add_argument("--retrain-fraction", type=float, default=0.25)
    p.add_argument("--ray-address")
    p.set_defaults(func=_cmd_reindex)

    p = sub.add_parser("sql", help="query the catalog with DuckDB (views: runs, shards, documents, corpus, versions)",
                       description="Open DuckDB over a store's published catalog and run one SQL statement.")
    p.add_argument("query", nargs="?", help="SQL to run; omit with --show-views")
    p.add_argument("--store", required=True)
    p.add_argument("--json", action="store_true", help="print rows as JSON lines")
    p.add_argument("--show-views", action="store_true", help="print the CREATE VIEW statements (for the duckdb CLI)")
    p.set_defaults(func=_cmd_sql)

    p = sub.add_parser("search", help="search the published compressed codes with a text query")
    p.add_argument("query")
    p.add_argument("--store", required=True)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    _add_scoring(p)
    p.set_defaults(func=_cmd_search)


def _cmd_embed_corpus(args: argparse.Namespace) -> int:
    _prefect_defaults()
    from flows.embed_corpus import embed_corpus

    result = embed_corpus(corpus=args.corpus, store=args.store, models=args.models or list(DEFAULT_MODELS),
                          shard_rows=args.shard_rows, dims=args.dims, bits=args.bits,
                          budget_bytes=args.budget_bytes, quantization=args.quantization, ray_address=args.ray_address,
                          id_column=args.id_column, text_columns=args.text_columns, batch_size=args.batch_size,
                          max_epochs=args.max_epochs, out_dim=args.out_dim, max_train_rows=args.max_train_rows, model_weights=args.weights)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_reindex(args: argparse.Namespace) -> int:
    _prefect_defaults()
    from flows.reindex import reindex

    result = reindex(corpus=args.corpus, store=args.store, decoder_policy=args.decoder_policy,
                     retrain_fraction=args.retrain_fraction, ray_address=args.ray_address)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    from cecq.catalog import connect, view_statements
    from cecq.storage import Store

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


def _add_eval_store(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-store", help="score a store's published index on a BEIR task's queries and judgements",
                       description="Encode the task's queries with the store's models and decoder, search the published "
                                   "codes (the `cecq search` path) and report nDCG@10 and recall@100. The store must "
                                   "have been built from the same BEIR folder.")
    p.add_argument("beir_dir", help="folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    p.add_argument("--store", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--json", dest="json_out", metavar="OUT.json", help="also write the result here")
    _add_scoring(p)
    p.set_defaults(func=_cmd_eval_store)


def _cmd_eval_store(args: argparse.Namespace) -> int:
    from cecq.catalog import current_manifest, search_store_batch
    from cecq.data import load_beir
    from cecq.evaluate import RETRIEVE_K, ranking_scores
    from cecq.storage import Store

    store, task = Store(args.store), load_beir(args.beir_dir, split=args.split)
    m = current_manifest(store)
    run = store.read_json(f"runs/{m['run_id']}/run.json")
    # the version read above is the one searched, even if another is published meanwhile
    hits = search_store_batch(store, task.query_texts, RETRIEVE_K, show_progress=args.verbose, manifest=m, scoring=args.scoring)
    scores = ranking_scores(task, {qid: {h["id"]: h["score"] for h in hs} for qid, hs in zip(task.query_ids, hits)})
    result = {"task": task.name, "store": store.url, "catalog_version": m["version"], "run_id": m["run_id"],
              "models": m["models"], "dims": run["dims"], "bits": run["bits"], "budget_bytes": run.get("budget_bytes"),
              "quantization": run.get("quantization", "scalar"), "bytes_per_doc": run["bytes_per_doc"], "compression": run["compression"], "queries": len(task.query_ids),
              "scoring": args.scoring, **scores}
    print(json.dumps(result, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from cecq.catalog import search_store
    from cecq.storage import Store

    hits = search_store(Store(args.store), args.query, args.k, args.scoring)
    for h in hits:
        print(json.dumps(h) if args.json else f"{h['rank']:>3}  {h['score']:.4f}  {h['id']}  {h['text'][:100]!r}")
    return 0


def _add_distill(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill-static", help="distil a static base model from a sentence-transformers model",
                       description="Embed every vocabulary token of MODEL, reduce by PCA and weight by Zipf rank "
                                   "(the model2vec recipe); write a sentence-transformers folder that --model accepts.")
    p.add_argument("model", help="Hugging Face id, local path or built-in name (e.g. all-MiniLM-L6-v2)")
    p.add_argument("--out", required=True, help="folder to write the static model to")
    p.add_argument("--pca-dims", type=int, default=256, help="vector size of the static model (default 256)")
    p.add_argument("--device", default="cpu", help="torch device for the teacher's forward passes (default cpu)")
    p.set_defaults(func=_cmd_distill)


def _cmd_distill(args: argparse.Namespace) -> int:
    from cecq.static import distill_static

    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        raise FileExistsError(f"--out {args.out} exists and is not empty")
    print(distill_static(args.model, args.out, pca_dims=args.pca_dims, device=args.device))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from cecq.bench import perf, quality

    p = sub.add_parser("bench", help="benchmarks: retrieval quality under compression, pipeline performance")
    kinds = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    quality.add_parser(kinds)
    perf.add_parser(kinds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cecq", description="Compact, searchable embeddings from several small embedding models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_eval(sub)
    _add_pipeline(sub)
    _add_eval_store(sub)
    _add_distill(sub)
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, StorageError, duckdb.Error) as e:
        print(f"cecq: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
