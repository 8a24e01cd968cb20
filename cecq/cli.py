"""The ``cecq`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from cecq.config import DEFAULT_MODELS, ConfigError, DecoderConfig, EvalConfig, ModelSpec


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


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
    p.add_argument("--epochs", type=int, default=DecoderConfig.max_epochs, help="maximum training epochs")
    p.add_argument("--rescore", type=int, default=0, metavar="N", help="rescore the top N candidates with float decoder outputs")
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
        decoder=DecoderConfig(kind=args.decoder, max_epochs=args.epochs, seed=args.seed),
        split=args.split,
        rescore=args.rescore,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cecq", description="Compact, searchable embeddings from several small embedding models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_eval(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"cecq: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
