"""Mean and worst seed of `cecq eval --json` records, per task and configuration, with the
mean over tasks (docs/quality-round2.md, section 6).

    .venv/bin/python docs/scripts/seeds_table.py 'OUT/half-{task}-s{seed}.json' --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import json
from statistics import mean

TASKS = ("scifact", "cisi", "cranfield")
ROWS = (
    ("model:all-MiniLM-L6-v2", "float"),
    ("concat", "float"),
    ("cecq-53B-product", "asymmetric"),
    ("cecq-53B-product", "symmetric"),
    ("cecq-53B-mixed", "asymmetric"),
    ("pca-53B-product", "asymmetric"),
    ("pca-53B-product", "symmetric"),
    ("cecq-27B-product", "asymmetric"),
    ("cecq-27B-mixed", "asymmetric"),
    ("pca-27B-product", "asymmetric"),
    ("st-binary-all-MiniLM-L6-v2+rescore", "asymmetric"),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pattern", help="JSON path with {task} and {seed}")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--tasks", default=",".join(TASKS))
    args = p.parse_args()
    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    recs = {}
    for t in tasks:
        for s in seeds:
            with open(args.pattern.format(task=t, seed=s), encoding="utf-8") as f:
                for r in json.load(f):
                    recs[(t, s, r["name"], r["scoring"])] = r
    head = " | ".join(f"{t} nDCG@10 (retention; unseen half)" for t in tasks)
    tail = "mean retention (worst seed) | lowest task | bytes a doc: codes / amortized, first task / at 1M"
    print(f"| configuration | scoring | {head} | {tail} |")
    print("|" + "---|" * (len(tasks) + 5))
    for name, scoring in ROWS:
        cells, per_seed, per_task = [], [], []
        for t in tasks:
            rs = [recs[(t, s, name, scoring)] for s in seeds if (t, s, name, scoring) in recs]
            if not rs:
                cells.append("")
                continue
            ret = [r["retention"] for r in rs]
            out = [r["retention_out"] for r in rs if r.get("retention_out") is not None]
            unseen = f"{100 * mean(out):.1f}%" if len(out) == len(rs) else "n/a"
            cells.append(
                f"{mean(r['ndcg_at_10'] for r in rs):.4f} ({100 * mean(ret):.1f}%, worst {100 * min(ret):.1f}%; "
                f"{unseen})"
            )
            per_task.append(mean(ret))
        for s in seeds:
            rs = [recs.get((t, s, name, scoring)) for t in tasks]
            if all(rs):
                per_seed.append(mean(r["retention"] for r in rs))
        last = recs.get((tasks[0], seeds[0], name, scoring), {})
        size = (
            f"{last.get('bytes_per_doc', 0):g} / {last.get('bytes_per_doc_amortized', 0):.0f} / "
            f"{last.get('bytes_per_doc_amortized_1m', 0):.1f}"
        )
        summary = f"{100 * mean(per_seed):.1f}% ({100 * min(per_seed):.1f}%)" if per_seed else ""
        lowest = f"{100 * min(per_task):.1f}%" if per_task else ""
        print(f"| `{name}` | {scoring} | {' | '.join(cells)} | {summary} | {lowest} | {size} |")


if __name__ == "__main__":
    main()
