"""``cecq eval`` (base models, their concatenation and compressed variants on a BEIR task)
and ``cecq eval-store`` (the published index of a store on a BEIR task)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cecq.catalog import current_manifest, plan_search, read_run, search_store_batch
from cecq.cli.args import (
    add_decoder_options,
    add_fitting,
    add_index_choice,
    add_models,
    add_scoring,
    decoder_config,
    fitting,
    int_list,
    name_list,
    show_progress,
)
from cecq.config import DEFAULT_MODELS, PRECISIONS, STRATEGIES, EvalConfig, ModelSpec
from cecq.eval.beir import load_beir
from cecq.quantization import quantizer_kinds
from cecq.storage import Store


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate base models, their concatenation and compressed variants on a BEIR folder",
        description="Embed a BEIR task with each base model, train the decoder on its corpus, quantize, "
        "and report nDCG@10, retention, bytes per document and compression for every configuration.",
    )
    p.add_argument("beir_dir", help="folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    add_models(p)
    p.add_argument(
        "--dims",
        type=int_list,
        default=EvalConfig.dims,
        help=f"decoder prefix sizes to evaluate (default {','.join(map(str, EvalConfig.dims))})",
    )
    p.add_argument(
        "--bits",
        type=int_list,
        default=EvalConfig.bits,
        help=f"bits per dimension to evaluate (default {','.join(map(str, EvalConfig.bits))})",
    )
    p.add_argument("--scoring", choices=["symmetric", "asymmetric", "both"], default="both")
    add_decoder_options(p)
    p.add_argument(
        "--ablate",
        type=name_list,
        default=(),
        metavar="S[,S...]",
        help=f"also train one decoder per listed strategy, scored as cecq[<strategy>]-* ({', '.join(STRATEGIES)})",
    )
    p.add_argument(
        "--budget",
        type=int_list,
        default=(),
        metavar="B[,B...]",
        help="also score B bytes a document with every quantizer kind that spends a byte budget, "
        f"cecq-<B>B-<kind> ({', '.join(quantizer_kinds('budget'))})",
    )
    add_fitting(p)
    p.add_argument(
        "--rescore",
        type=int,
        default=EvalConfig.rescore,
        metavar="N",
        help="rescore the top N candidates with float decoder outputs",
    )
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also score baselines at the same bytes per document: per-model percentile quantization (pq-*), "
        "PCA of the concatenation (pca-*), a randomly initialised MRL decoder (mrl-*), and "
        "sentence-transformers binary quantization with float rescoring (st-binary-*)",
    )
    p.add_argument("--split", default=EvalConfig.split, help=f"qrels split (default {EvalConfig.split})")
    p.add_argument("--json", dest="json_out", metavar="OUT.json", help="write one record per configuration here")
    p.add_argument("--cache", metavar="DIR", help="folder caching base-model embeddings between runs (default: none)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=ModelSpec.precision,
        help="number format of the neural base models (default auto: fp16 on a GPU, fp32 on the CPU)",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "eval-store",
        help="score a store's published index on a BEIR task's queries and judgements",
        description="Encode the task's queries with the store's models and decoder, search the published "
        "codes (the `cecq search` path) and report nDCG@10 and recall@100. The store must "
        "have been built from the same BEIR folder.",
    )
    p.add_argument("beir_dir", help="folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    p.add_argument("--store", required=True)
    p.add_argument("--split", default=EvalConfig.split)
    p.add_argument("--json", dest="json_out", metavar="OUT.json", help="also write the result here")
    add_scoring(p)
    add_index_choice(p)
    p.set_defaults(func=cmd_eval_store)


def cmd_eval(args: argparse.Namespace) -> int:
    from cecq.eval.evaluate import evaluate_task, format_table, write_json  # heavy: mteb

    config = EvalConfig(
        models=tuple(ModelSpec(m, precision=args.precision) for m in (args.models or DEFAULT_MODELS)),
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
        **fitting(args),
    )
    task = load_beir(args.beir_dir, split=config.split)
    print(
        f"{task.name}: {len(task.doc_ids)} documents, {len(task.query_ids)} queries with judgements "
        f"({task.notes['empty_documents']} empty documents)"
        + (f"; fitted on the documents of {config.fit_corpus}" if config.fit_corpus else ""),
        file=sys.stderr,
    )
    records = evaluate_task(task, config, show_progress=show_progress(), cache_dir=args.cache)
    print(format_table(records))
    if args.json_out:
        write_json(records, args.json_out)
        print(f"wrote {len(records)} records to {args.json_out}", file=sys.stderr)
    return 0


def cmd_eval_store(args: argparse.Namespace) -> int:
    from cecq.eval.metrics import RETRIEVE_K, ranking_scores  # heavy: mteb

    store, task = Store(args.store), load_beir(args.beir_dir, split=args.split)
    m = current_manifest(store)
    run = read_run(store, m.run_id)
    # the version read above is the one searched, even if another is published meanwhile
    plan = plan_search(store, m, exact=args.exact, index=args.index_name, nprobe=args.nprobe)
    print(f"searching with {plan.describe()}", file=sys.stderr)
    hits = search_store_batch(
        store, task.query_texts, RETRIEVE_K, show_progress=args.verbose, scoring=args.scoring, plan=plan
    )
    scores = ranking_scores(task, {qid: {h["id"]: h["score"] for h in hs} for qid, hs in zip(task.query_ids, hits)})
    result = {
        "task": task.name,
        "store": store.url,
        "catalog_version": m.version,
        "run_id": m.run_id,
        "models": m.models,
        "dims": run.dims,
        "bits": run.bits,
        "budget_bytes": run.budget_bytes,
        "quantization": run.quantization,
        "bytes_per_doc": run.bytes_per_doc,
        "compression": run.compression,
        "queries": len(task.query_ids),
        "scoring": args.scoring,
        "search": plan.to_dict(),
        **scores,
    }
    print(json.dumps(result, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0
