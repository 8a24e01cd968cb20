"""Robustness as base models are added: `cecq eval --json` records of 1, 2 and 3 models at
the same bytes a document, mean nDCG@10 over seeds (worst seed), per task and over tasks,
then retention of the float concatenation (worst task and seed), and mpnet alone in float32
(docs/quality-round2.md, section 10). The mpnet sets need the `cecq[mpnet]` extra.

    for t in cisi cranfield scifact; do for s in 0 1 2; do for set in m1 m2l m2p m3; do
      .venv/bin/cecq eval ../shared/data/$t $MODELS --dims 768 --bits 1 --budget 32,48,64 \
          --fit-fraction 0.5 --seed $s --cache C --json OUT/$set-$t-s$s.json
    done; done; done     # MODELS of each set: see SETS
    .venv/bin/python docs/scripts/models_table.py 'OUT/{set}-{task}-s{seed}.json' --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
from statistics import mean

MINILM, MPNET = "all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2"
SETS = {  # name -> (label, the --model arguments in order)
    "m1": ("MiniLM", (MINILM,)),
    "m2l": ("MiniLM + lexical (the defaults)", (MINILM, "lexical")),
    "m2p": ("MiniLM + mpnet", (MINILM, MPNET)),
    "m3": ("MiniLM + mpnet + lexical", (MINILM, MPNET, "lexical")),
}
BUDGETS = (32, 48, 64)


def reference(records: dict) -> float:
    """The float concatenation (a single model's own vectors when there is one model)."""
    if ("concat", "float") in records:
        return records[("concat", "float")]["ndcg_at_10"]
    return next(r["ndcg_at_10"] for (name, _), r in records.items() if name.startswith("model:"))


def product(records: dict, budget: int, scoring: str) -> dict:
    """The record of the default product codes at ``budget`` bytes a document."""
    return records[(f"cecq-{budget}B-product", scoring)]


def cell(values: list[float]) -> str:
    return f"{mean(values):.4f} ({min(values):.4f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pattern", help="JSON path with {set}, {task} and {seed}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tasks", default="scifact,cisi,cranfield")
    args = p.parse_args()
    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    runs: dict[tuple[str, str, int], dict] = {}
    for key in SETS:
        for t in tasks:
            for s in seeds:
                with open(args.pattern.format(set=key, task=t, seed=s), encoding="utf-8") as f:
                    runs[(key, t, s)] = {(r["name"], r["scoring"]): r for r in json.load(f)}
    heads = [f"{b} B {sc}" for b in BUDGETS for sc in ("asym", "sym")]
    last = "48 B compression: codes; amortized here; at 1M docs"
    print("| task | models | float concat | " + " | ".join(heads) + f" | {last} |")
    print("|" + "---|" * (len(heads) + 4))
    for t in [*tasks, "mean"]:
        for key, (label, _models) in SETS.items():
            chosen = tasks if t == "mean" else [t]

            def per_seed(get, key=key, chosen=chosen) -> list[float]:
                return [mean(get(runs[(key, task, s)]) for task in chosen) for s in seeds]

            cells = [cell(per_seed(reference))]
            for b in BUDGETS:
                for scoring in ("asymmetric", "symmetric"):
                    cells.append(cell(per_seed(lambda r, b=b, sc=scoring: product(r, b, sc)["ndcg_at_10"])))
            # the float32 concatenation's bytes, over the codes' and over the amortized bytes
            at48 = [product(runs[(key, task, seeds[0])], 48, "asymmetric") for task in chosen]
            width = at48[0]["compression"] * at48[0]["bytes_per_doc"]
            here = mean(width / r["bytes_per_doc_amortized"] for r in at48)
            at_1m = mean(width / r["bytes_per_doc_amortized_1m"] for r in at48)
            codes = at48[0]["compression"]
            print(f"| {t} | {label} | " + " | ".join(cells) + f" | {codes:.0f}x; {here:.1f}x; {at_1m:.0f}x |")
    print()
    print("| models | " + " | ".join(f"{b} B retention asym / sym" for b in BUDGETS) + " |")
    print("|" + "---|" * (len(BUDGETS) + 1))
    for key, (label, _models) in SETS.items():
        row = []
        for b in BUDGETS:
            parts = []
            for scoring in ("asymmetric", "symmetric"):
                kept = [product(runs[(key, t, s)], b, scoring)["retention"] for t in tasks for s in seeds]
                parts.append(f"{100 * mean(kept):.1f}% ({100 * min(kept):.1f}%)")
            row.append(" / ".join(parts))
        print(f"| {label} | " + " | ".join(row) + " |")
    mp = [runs[("m2p", t, s)][(f"model:{MPNET}", "float")]["ndcg_at_10"] for t in tasks for s in seeds[:1]]
    print()
    print("mpnet alone, float32: " + ", ".join(f"{t} {v:.4f}" for t, v in zip(tasks, mp)) + f"; mean {mean(mp):.4f}")


if __name__ == "__main__":
    main()
