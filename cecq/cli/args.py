"""Argument helpers every command group shares."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cecq.config import DEFAULT_MODELS, EVAL_WEIGHTS, STRATEGIES, DecoderConfig, EvalConfig
from cecq.quantization import quantizer_kinds

MODELS_HELP = (
    f"base model: Hugging Face id, local path, or built-in name (repeatable; default: {', '.join(DEFAULT_MODELS)})"
)


def int_list(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def name_list(text: str) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")``."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return values


def add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", dest="models", metavar="M", help=MODELS_HELP)


def add_decoder_options(p: argparse.ArgumentParser) -> None:
    """The decoder settings of ``cecq eval`` and ``cecq bench quality``."""
    p.add_argument(
        "--decoder",
        choices=["linear", "mlp"],
        default=DecoderConfig.kind,
        help="decoder architecture (mlp: about 5 points of nDCG@10 below linear on SciFact's dev split; "
        "docs/quality-round2.md, section 11)",
    )
    p.add_argument(
        "--init",
        choices=["pca", "random"],
        default=DecoderConfig.init,
        help=f"linear decoder initialisation (default {DecoderConfig.init})",
    )
    p.add_argument("--epochs", type=int, default=DecoderConfig.max_epochs, help="maximum training epochs")
    p.add_argument(
        "--strategy", choices=list(STRATEGIES), help="decoder training strategy (default: the DecoderConfig defaults)"
    )
    p.add_argument("--seed", type=int, default=DecoderConfig.seed)


def decoder_config(args: argparse.Namespace) -> DecoderConfig:
    """The :class:`DecoderConfig` of :func:`add_decoder_options`' flags."""
    config = DecoderConfig(kind=args.decoder, init=args.init, max_epochs=args.epochs, seed=args.seed)
    return config.with_strategy(args.strategy) if args.strategy else config


def fraction(text: str) -> float:
    """A float in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def add_fitting(p: argparse.ArgumentParser, fit_fraction: float = EvalConfig.fit_fraction) -> None:
    """``--weights``, ``--fit-fraction`` and ``--fit-corpus``: how ``cecq eval`` and ``bench
    quality`` fit on the corpus (read them back with :func:`fitting`)."""
    p.add_argument(
        "--weights",
        choices=EVAL_WEIGHTS,
        default=EvalConfig.model_weights,
        help="per-model concatenation weights, fitted on the corpus only: guarded (similarity spreads, "
        "dropping a model that finds pseudo-queries cut from the documents far worse than the best), "
        "spread (similarity spreads), self (the weighting that finds those pseudo-queries best, "
        f"sparsest within a tolerance), equal (default {EvalConfig.model_weights})",
    )
    p.add_argument(
        "--fit-fraction",
        type=fraction,
        default=None,
        metavar="F",
        help="a seeded random F of the documents fits the weights, the lexical model, the decoder and every "
        "quantizer; all documents are coded and searched, and nDCG@10 is also reported on the fitted "
        f"documents and on the others, each ranked among its own (default {fit_fraction}; 1 with --fit-corpus)",
    )
    p.add_argument(
        "--fit-corpus",
        metavar="DIR",
        help="fit the lexical model, the weights, the decoder(s), every quantizer and baseline on this BEIR "
        "folder's documents (its corpus.jsonl only; never its queries or judgements), then code and score "
        "each task's corpus with them (not with --fit-fraction below 1)",
    )
    p.set_defaults(fit_fraction_default=fit_fraction)


def fitting(args: argparse.Namespace) -> dict[str, Any]:
    """``fit_fraction`` and ``fit_corpus`` for an :class:`EvalConfig` from :func:`add_fitting`'s
    options: the parser's default fraction, or all of the other corpus with ``--fit-corpus``."""
    fraction_ = args.fit_fraction
    if fraction_ is None:
        fraction_ = 1.0 if args.fit_corpus is not None else args.fit_fraction_default
    return {"fit_fraction": fraction_, "fit_corpus": args.fit_corpus}


def add_scoring(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scoring",
        choices=["asymmetric", "symmetric"],
        default="asymmetric",
        help="score the float query against the codes (default), or the query's own codes (symmetric)",
    )


def add_index_choice(p: argparse.ArgumentParser) -> None:
    """How a search reads the codes: the version's FAISS index where it has one, or ``--exact``."""
    p.add_argument(
        "--exact", action="store_true", help="scan every code exhaustively even where the version has an index"
    )
    p.add_argument("--index", dest="index_name", metavar="NAME", help="which index (default: the newest built)")
    p.add_argument("--nprobe", type=int, help="IVF lists searched a query (default: the index's own)")


def add_quantization(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quantization",
        choices=quantizer_kinds(),
        default=None,
        help="quantizer kind: scalar (fixed --bits a dim; the default without --budget-bytes), mixed (bits "
        "of each of the --dims dims fitted within --budget-bytes; the default with it), product (one "
        "byte per 4-dim subspace of a rotated prefix; keeps symmetric scoring better; needs "
        "--dims >= 4 x B)",
    )


def show_progress() -> bool:
    """Progress bars where a person watches (a terminal, or CECQ_PROGRESS set)."""
    return sys.stderr.isatty() or bool(os.environ.get("CECQ_PROGRESS"))


def prefect_defaults() -> None:
    """Offline-friendly Prefect: no telemetry, and time for the local API to start on slow machines."""
    for key, value in {
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }.items():
        os.environ.setdefault(key, value)
