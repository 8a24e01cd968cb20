"""``cecq bench quality`` and ``cecq bench perf``."""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

from cecq.bench import DEFAULT_BUDGETS, DEFAULT_FIT_FRACTION, perf
from cecq.cli.args import (
    add_decoder_options,
    add_fitting,
    add_models,
    decoder_config,
    fitting,
    int_list,
    name_list,
    show_progress,
)
from cecq.config import DEFAULT_MODELS, STRATEGIES, VALID_BITS, DecoderConfig, EvalConfig, ModelSpec


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: retrieval quality under compression, pipeline performance")
    kinds = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    add_quality(kinds)
    perf.add_parser(kinds)


def add_quality(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quality",
        help="compare cecq, its training strategies and the baselines at equal bytes per document",
        description="Run cecq eval's comparison on several BEIR folders at byte budgets; write quality.json, "
        "quality.md (one table per budget) and retention-<task>.png to --out.",
    )
    p.add_argument(
        "beir_dirs", nargs="+", metavar="BEIR_DIR", help="BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)"
    )
    p.add_argument("--out", required=True, help="folder for the JSON, the Markdown table and the plots")
    add_models(p)
    p.add_argument(
        "--bytes",
        type=int_list,
        default=DEFAULT_BUDGETS,
        help="bytes per document to compare at (default 32,48,64,128)",
    )
    p.add_argument(
        "--bits", type=int_list, default=EvalConfig.bits, help="bit widths that may fill a budget (default 1,2,4)"
    )
    p.add_argument(
        "--strategies",
        type=name_list,
        default=tuple(STRATEGIES),
        metavar="S[,S...]",
        help=f"training strategies to ablate, one decoder each (default: all of {', '.join(STRATEGIES)})",
    )
    add_decoder_options(p)
    add_fitting(p, DEFAULT_FIT_FRACTION)
    p.add_argument(
        "--out-dim", type=int, default=DecoderConfig.out_dim, help="decoder output size: the largest dims compared"
    )
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    p.add_argument("--rescore", type=int, default=EvalConfig.rescore, metavar="N")
    p.add_argument("--scoring", choices=["symmetric", "asymmetric", "both"], default="both")
    p.add_argument("--split", default=EvalConfig.split)
    p.add_argument("--cache", help="folder caching base-model embeddings between runs (default: OUT/embeddings)")
    p.set_defaults(func=cmd_quality)


def cmd_quality(args: argparse.Namespace) -> int:
    from cecq.bench.quality import JSON_FILE, MARKDOWN_FILE, budget_pairs, format_markdown, run_quality  # heavy: mteb

    for b in args.bits:
        if b not in VALID_BITS:
            raise ValueError(f"bits must be among {VALID_BITS}, got {b}")
    pairs = budget_pairs(args.bytes, args.bits, args.out_dim)
    if not pairs:
        raise ValueError(f"no (dims, bits) with dims <= {args.out_dim} fills any of {args.bytes} bytes")
    config = EvalConfig(
        models=tuple(ModelSpec(m) for m in (args.models or DEFAULT_MODELS)),
        pairs=tuple(pairs),
        scorings=("symmetric", "asymmetric") if args.scoring == "both" else (args.scoring,),
        decoder=replace(decoder_config(args), out_dim=args.out_dim),
        split=args.split,
        rescore=args.rescore,
        baselines=not args.no_baselines,
        strategies=args.strategies,
        budgets=tuple(args.bytes),
        model_weights=args.weights,
        **fitting(args),
    )
    if config.fit_corpus is not None:
        print(f"fitting everything on the documents of {config.fit_corpus}", file=sys.stderr)
    started = time.perf_counter()
    report = run_quality(
        args.beir_dirs,
        config,
        args.bytes,
        args.out,
        args.cache or Path(args.out) / "embeddings",
        show_progress=show_progress(),
    )
    print(format_markdown(report["summary"]))
    print(
        f"wrote {JSON_FILE}, {MARKDOWN_FILE} and {len(report['tasks'])} plot(s) to {args.out} "
        f"in {math.ceil(time.perf_counter() - started)}s",
        file=sys.stderr,
    )
    return 0
