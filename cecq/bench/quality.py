"""``cecq bench quality``: retrieval quality under compression on several BEIR tasks.

For each task it runs :func:`cecq.evaluate.evaluate_task` once with every (dims, bits) pair
that fills a byte budget exactly, the default decoder, one decoder per training strategy
(the ablation) and every baseline, then writes all records as JSON, a Markdown table per
budget (every method at the same bytes per document, side by side over the tasks), and a
retention-vs-compression plot per task.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from cecq.config import DEFAULT_MODELS, STRATEGIES, VALID_BITS, DecoderConfig, EvalConfig, ModelSpec
from cecq.evaluate import EvalRecord, evaluate_task

logger = logging.getLogger(__name__)

DEFAULT_BUDGETS: tuple[int, ...] = (32, 48, 64, 128)
JSON_FILE = "quality.json"
MARKDOWN_FILE = "quality.md"


def budget_pairs(budgets: Sequence[int], bits: Sequence[int], max_dims: int) -> list[tuple[int, int]]:
    """Every (dims, bits) whose codes take exactly one of ``budgets`` bytes, dims <= ``max_dims``."""
    pairs = {(8 * b // k, k) for b in budgets for k in bits if (8 * b) % k == 0 and 1 <= 8 * b // k <= max_dims}
    return sorted(pairs)


def budget_of(nbytes: int, budgets: Sequence[int]) -> int | None:
    """The smallest budget ``nbytes`` fits in (an allocation may leave a byte unused; a base
    model's codes land in the budget they fit), None above them all."""
    return min((b for b in budgets if nbytes <= b), default=None)


def is_reference(name: str) -> bool:
    return name.startswith("model:") or name.startswith("concat")


def summarise(records: Sequence[EvalRecord], budgets: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (configuration, scoring) measured on every task: per-task nDCG@10 and
    retention, their means and the lowest retention. References (base models, the float
    concatenation) come first; then each budget's rows, best mean retention first."""
    tasks = sorted({r.task for r in records})
    groups: dict[tuple[str, str], dict[str, EvalRecord]] = {}
    for r in records:
        if is_reference(r.name) or budget_of(r.bytes_per_doc, budgets) is not None:
            groups.setdefault((r.name, r.scoring), {})[r.task] = r
    rows = []
    for (name, scoring), by_task in groups.items():
        if set(by_task) != set(tasks):
            continue  # not measured on every task (e.g. a model missing somewhere): no fair mean
        first = next(iter(by_task.values()))
        rows.append({
            "budget": None if is_reference(name) else budget_of(first.bytes_per_doc, budgets),
            "name": name, "scoring": scoring, "bytes_per_doc": first.bytes_per_doc,
            "compression": first.compression, "dims": first.dims, "bits": first.bits,
            "ndcg_at_10": {t: by_task[t].ndcg_at_10 for t in tasks},
            "retention": {t: by_task[t].retention for t in tasks},
            "mean_ndcg_at_10": float(np.mean([by_task[t].ndcg_at_10 for t in tasks])),
            "mean_retention": float(np.mean([by_task[t].retention for t in tasks])),
            "min_retention": float(np.min([by_task[t].retention for t in tasks])),
        })
    rows.sort(key=lambda r: (r["budget"] is not None, r["budget"] or 0, -r["mean_retention"]))
    return rows


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: the references, then one table per budget."""
    if not rows:
        return "(no configuration was measured on every task)\n"
    tasks = list(rows[0]["ndcg_at_10"])
    header = ("| configuration | scoring | bytes/doc | compression | " + " | ".join(f"{t} nDCG@10 (retention)" for t in tasks)
              + " | mean nDCG@10 | mean retention | min retention |")
    rule = "|" + "---|" * (7 + len(tasks))
    out: list[str] = []
    for budget in sorted({r["budget"] for r in rows}, key=lambda b: (b is not None, b or 0)):
        out += ["", "### References (float)" if budget is None else f"### {budget} bytes a document", "", header, rule]
        for r in (r for r in rows if r["budget"] == budget):
            cells = " | ".join(f"{r['ndcg_at_10'][t]:.4f} ({r['retention'][t]:.1%})" for t in tasks)
            out.append(f"| {r['name']} | {r['scoring']} | {r['bytes_per_doc']} | {r['compression']:.1f}x | {cells} | "
                       f"{r['mean_ndcg_at_10']:.4f} | {r['mean_retention']:.1%} | {r['min_retention']:.1%} |")
    return "\n".join(out).lstrip("\n") + "\n"


_SIZE = re.compile(r"-(?:(\d+)d-)?(\d+)b$")
_BUDGET = re.compile(r"-\d+B-(alloc|product)$")


def series_of(record: EvalRecord) -> str | None:
    """The plot series a record belongs to: its method and bit width (all sizes on one line),
    or None for records that are not compressed codes."""
    if (fitted := _BUDGET.search(record.name)) is not None:
        return f"{record.name[:fitted.start()]} {fitted.group(1)} {record.scoring}"
    m = _SIZE.search(record.name)
    if m is None or is_reference(record.name):
        return "st-binary+rescore" if record.name.startswith("st-binary") and record.name.endswith("+rescore") else None
    family = record.name[:m.start()]
    return f"{family} {m.group(2)}b {record.scoring}"


def plot_task(records: Sequence[EvalRecord], task: str, path: str | Path, plot_bits: int = 2) -> None:
    """Retention against compression for one task, asymmetric scoring: cecq at every bit width
    and with budget quantizers (alloc, product; symmetric too), every other method (strategies,
    PCA, plain MRL) at ``plot_bits`` and the budget quantizers, per-model quantization and
    binary + rescoring."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[EvalRecord]] = {}
    for r in records:
        if r.task != task or (s := series_of(r)) is None:
            continue
        family, _, rest = s.partition(" ")
        if family == "cecq":
            keep = rest.endswith("asymmetric") or rest.startswith(("alloc ", "product "))
        else:
            keep = rest.endswith("asymmetric") and (family.startswith(("pq-", "st-binary")) or rest.split()[0] in (f"{plot_bits}b", "alloc", "product"))
        if keep:
            series.setdefault(s, []).append(r)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for label, rs in sorted(series.items()):
        rs.sort(key=lambda r: r.compression)
        style = "-" if label.startswith("cecq ") else ("--" if label.startswith("cecq[") else ":")
        ax.plot([r.compression for r in rs], [100 * r.retention for r in rs], style, marker="o", markersize=3,
                linewidth=2.2 if label.startswith("cecq ") else 1.2, label=label)
    ax.axvline(48, color="grey", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("compression (float32 concatenation bytes / stored bytes)")
    ax.set_ylabel("nDCG@10 retention vs float concatenation (%)")
    ax.set_title(f"{task}: retention vs compression")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=64)
    plt.close(fig)


def run_quality(beir_dirs: Sequence[str | Path], config: EvalConfig, budgets: Sequence[int], out_dir: str | Path,
                cache_dir: str | Path | None = None, show_progress: bool = False) -> dict[str, Any]:
    """Evaluate every task, write ``quality.json``, ``quality.md`` and ``retention-<task>.png``
    to ``out_dir``, and return the JSON's content."""
    from cecq.data import load_beir

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[EvalRecord] = []
    tasks = []
    for folder in beir_dirs:
        task = load_beir(folder, split=config.split)
        started = time.perf_counter()
        task_records = evaluate_task(task, config, show_progress, cache_dir)
        seconds = time.perf_counter() - started
        records += task_records
        tasks.append({"name": task.name, "path": str(folder), "documents": len(task.doc_ids),
                      "queries": len(task.query_ids), "seconds": round(seconds, 1)})
        plot_task(task_records, task.name, out / f"retention-{task.name}.png")
        logger.info("%s: %d records in %.0fs", task.name, len(task_records), seconds)
    summary = summarise(records, budgets)
    report = {
        "budgets": list(budgets),
        "pairs": [list(p) for p in config.configurations()],
        "models": [m.name for m in config.models],
        "decoder": config.decoder.to_dict(),
        "strategies": list(config.strategies),
        "tasks": tasks,
        "summary": summary,
        "records": [asdict(r) for r in records],
    }
    (out / JSON_FILE).write_text(json.dumps(report, indent=2))
    (out / MARKDOWN_FILE).write_text(format_markdown(summary))
    return report


def add_parser(sub: argparse._SubParsersAction) -> None:
    from cecq.cli import _int_list, _name_list

    p = sub.add_parser("quality", help="compare cecq, its training strategies and the baselines at equal bytes per document",
                       description="Run cecq eval's comparison on several BEIR folders at byte budgets; write quality.json, "
                                   "quality.md (one table per budget) and retention-<task>.png to --out.")
    p.add_argument("beir_dirs", nargs="+", metavar="BEIR_DIR", help="BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    p.add_argument("--out", required=True, help="folder for the JSON, the Markdown table and the plots")
    p.add_argument("--model", action="append", dest="models", metavar="M", help=f"base model (repeatable; default: {', '.join(DEFAULT_MODELS)})")
    p.add_argument("--bytes", type=_int_list, default=DEFAULT_BUDGETS, help="bytes per document to compare at (default 32,48,64,128)")
    p.add_argument("--bits", type=_int_list, default=(1, 2, 4), help="bit widths that may fill a budget (default 1,2,4)")
    p.add_argument("--strategies", type=_name_list, default=tuple(STRATEGIES), metavar="S[,S...]",
                   help=f"training strategies to ablate, one decoder each (default: all of {', '.join(STRATEGIES)})")
    p.add_argument("--strategy", choices=list(STRATEGIES), help="the default decoder's strategy (default: the DecoderConfig defaults)")
    p.add_argument("--decoder", choices=["linear", "mlp"], default="linear")
    p.add_argument("--init", choices=["pca", "random"], default="pca")
    p.add_argument("--weights", choices=["equal", "spread"], default=EvalConfig.model_weights,
                   help=f"per-model concatenation weights (default {EvalConfig.model_weights})")
    p.add_argument("--out-dim", type=int, default=DecoderConfig.out_dim, help="decoder output size: the largest dims compared")
    p.add_argument("--epochs", type=int, default=DecoderConfig.max_epochs)
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    p.add_argument("--rescore", type=int, default=0, metavar="N")
    p.add_argument("--scoring", choices=["symmetric", "asymmetric", "both"], default="both")
    p.add_argument("--split", default="test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", help="folder caching base-model embeddings between runs (default: OUT/embeddings)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cecq.cli import decoder_config

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
    )
    started = time.perf_counter()
    report = run_quality(args.beir_dirs, config, args.bytes, args.out, args.cache or Path(args.out) / "embeddings",
                         show_progress=sys.stderr.isatty() or bool(os.environ.get("CECQ_PROGRESS")))
    print(format_markdown(report["summary"]))
    print(f"wrote {JSON_FILE}, {MARKDOWN_FILE} and {len(report['tasks'])} plot(s) to {args.out} "
          f"in {math.ceil(time.perf_counter() - started)}s", file=sys.stderr)
    return 0
