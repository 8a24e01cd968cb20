"""``cecq bench quality``: retrieval quality under compression on several BEIR tasks.

For each task it runs :func:`cecq.evaluate.evaluate_task` once with every (dims, bits) pair
that fills a byte budget exactly, the default decoder, one decoder per training strategy
(the ablation) and every baseline, then writes all records as JSON, a Markdown table per
budget (every method at the same bytes per document, side by side over the tasks), and a
retention-vs-compression plot per task.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cecq.config import EvalConfig
from cecq.eval.beir import load_beir
from cecq.eval.evaluate import EvalRecord, evaluate_task

logger = logging.getLogger(__name__)

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
        float_bytes = {t: by_task[t].compression * by_task[t].bytes_per_doc for t in tasks}
        outs = [by_task[t].retention_out for t in tasks]
        ins = [by_task[t].retention_in for t in tasks]
        rows.append(
            {
                "budget": None if is_reference(name) else budget_of(first.bytes_per_doc, budgets),
                "name": name,
                "scoring": scoring,
                "bytes_per_doc": first.bytes_per_doc,
                "compression": first.compression,
                "dims": first.dims,
                "bits": first.bits,
                "ndcg_at_10": {t: by_task[t].ndcg_at_10 for t in tasks},
                "retention": {t: by_task[t].retention for t in tasks},
                "mean_ndcg_at_10": float(np.mean([by_task[t].ndcg_at_10 for t in tasks])),
                "mean_retention": float(np.mean([by_task[t].retention for t in tasks])),
                "min_retention": float(np.min([by_task[t].retention for t in tasks])),
                "fixed_bytes": {t: by_task[t].fixed_bytes for t in tasks},
                "fitted_on": {t: by_task[t].fitted_on for t in tasks},
                # float32 concatenation bytes over every stored byte, fixed ones spread over the documents
                "amortized_compression": {t: float_bytes[t] / by_task[t].bytes_per_doc_amortized for t in tasks},
                "amortized_compression_1m": {t: float_bytes[t] / by_task[t].bytes_per_doc_amortized_1m for t in tasks},
                "mean_retention_in": float(np.mean(ins)) if None not in ins else None,
                "mean_retention_out": float(np.mean(outs)) if None not in outs else None,
                "min_retention_out": float(np.min(outs)) if None not in outs else None,
            }
        )
    rows.sort(key=lambda r: (r["budget"] is not None, r["budget"] or 0, -r["mean_retention"]))
    return rows


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: the references, then one table per budget."""
    if not rows:
        return "(no configuration was measured on every task)\n"
    tasks = list(rows[0]["ndcg_at_10"])
    header = (
        "| configuration | scoring | bytes/doc | compression (codes) | amortized, lowest task (here / 1M docs) | "
        + " | ".join(f"{t} nDCG@10 (retention)" for t in tasks)
        + " | mean nDCG@10 | mean retention | min retention | retention in / out of sample |"
    )
    rule = "|" + "---|" * (9 + len(tasks))
    out: list[str] = []
    elsewhere = sorted({f for r in rows for t, f in r.get("fitted_on", {}).items() if f not in (None, t)})
    if elsewhere:
        out.append(
            f"Fitted on the documents of {', '.join(elsewhere)}, not on each task's own: every retention is "
            "of codes fitted on another corpus."
        )
    for budget in sorted({r["budget"] for r in rows}, key=lambda b: (b is not None, b or 0)):
        out += ["", "### References (float)" if budget is None else f"### {budget} bytes a document", "", header, rule]
        for r in (r for r in rows if r["budget"] == budget):
            cells = " | ".join(f"{r['ndcg_at_10'][t]:.4f} ({r['retention'][t]:.1%})" for t in tasks)
            here = min(r["amortized_compression"].values())
            at_1m = min(r["amortized_compression_1m"].values())
            halves = (
                f"{r['mean_retention_in']:.1%} / {r['mean_retention_out']:.1%}"
                if r["mean_retention_out"] is not None
                else "n/a"
            )
            out.append(
                f"| {r['name']} | {r['scoring']} | {r['bytes_per_doc']} | {r['compression']:.1f}x | "
                f"{here:.1f}x / {at_1m:.1f}x | {cells} | {r['mean_ndcg_at_10']:.4f} | {r['mean_retention']:.1%} "
                f"| {r['min_retention']:.1%} | {halves} |"
            )
    return "\n".join(out).lstrip("\n") + "\n"


def series_of(record: EvalRecord) -> str | None:
    """The plot series a record belongs to: its method and code size (bit width, or budget
    kind; all sizes on one line) and scoring; None for records that are not compressed codes."""
    if record.method is None or is_reference(record.name):
        return None
    if record.method.startswith("st-binary"):
        return "st-binary+rescore" if record.method.endswith("+rescore") else None
    size = record.quantization if record.budget_bytes is not None else f"{record.bits}b"
    return f"{record.method} {size} {record.scoring}"


def plot_task(records: Sequence[EvalRecord], task: str, path: str | Path, plot_bits: int = 2) -> None:
    """Retention against compression for one task, asymmetric scoring: cecq at every bit width
    and with every budget kind (symmetric too), every other method (strategies,
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
        budget_kind = r.budget_bytes is not None
        if family == "cecq":
            keep = rest.endswith("asymmetric") or budget_kind
        else:
            keep = rest.endswith("asymmetric") and (
                family.startswith(("pq-", "st-binary")) or budget_kind or rest.split()[0] == f"{plot_bits}b"
            )
        if keep:
            series.setdefault(s, []).append(r)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for label, rs in sorted(series.items()):
        rs.sort(key=lambda r: r.compression)
        style = "-" if label.startswith("cecq ") else ("--" if label.startswith("cecq[") else ":")
        ax.plot(
            [r.compression for r in rs],
            [100 * r.retention for r in rs],
            style,
            marker="o",
            markersize=3,
            linewidth=2.2 if label.startswith("cecq ") else 1.2,
            label=label,
        )
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


def run_quality(
    beir_dirs: Sequence[str | Path],
    config: EvalConfig,
    budgets: Sequence[int],
    out_dir: str | Path,
    cache_dir: str | Path | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Evaluate every task, write ``quality.json``, ``quality.md`` and ``retention-<task>.png``
    to ``out_dir``, and return the JSON's content."""
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
        tasks.append(
            {
                "name": task.name,
                "path": str(folder),
                "documents": len(task.doc_ids),
                "queries": len(task.query_ids),
                "seconds": round(seconds, 1),
            }
        )
        plot_task(task_records, task.name, out / f"retention-{task.name}.png")
        logger.info("%s: %d records in %.0fs", task.name, len(task_records), seconds)
    summary = summarise(records, budgets)
    report = {
        "budgets": list(budgets),
        "pairs": [list(p) for p in config.configurations()],
        "models": [m.name for m in config.models],
        "decoder": config.decoder.to_dict(),
        "strategies": list(config.strategies),
        "fit_fraction": config.fit_fraction,
        "fit_corpus": config.fit_corpus,
        "model_weights": config.model_weights,
        "tasks": tasks,
        "summary": summary,
        "records": [asdict(r) for r in records],
    }
    (out / JSON_FILE).write_text(json.dumps(report, indent=2))
    (out / MARKDOWN_FILE).write_text(format_markdown(summary))
    return report
