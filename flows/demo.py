"""`make demo`: run embed-corpus on a corpus every machine has, then query the catalog with
DuckDB and search the compressed codes.

The corpus is ../shared/data/scifact when present, else the docstrings of the Python
standard library (written once as JSONL under the demo store)."""

from __future__ import annotations

import json
import os
import pkgutil
import sys
import warnings
from importlib import import_module
from pathlib import Path

from cecq.catalog import connect, search_store
from cecq.pipeline.summary import RunSummary
from cecq.progress import console_sink, reporting_to
from cecq.storage import Store
from flows.embed_corpus import embed_corpus

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "scifact"
STORE = Path(os.environ.get("CECQ_DEMO_STORE", REPO / "demo-store"))


def stdlib_docstrings(path: Path, limit: int = 5000) -> Path:
    """A JSONL corpus of standard-library docstrings: a module's and its public members'."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for info in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
            if (
                info.name.startswith("_")
                or info.name not in sys.stdlib_module_names
                or info.name in ("antigravity", "this")
            ):
                continue
            try:
                mod = import_module(info.name)
            except Exception:  # some stdlib modules need optional system libraries
                continue
            for name, obj in [
                (info.name, mod),
                *((f"{info.name}.{n}", getattr(mod, n, None)) for n in dir(mod) if not n.startswith("_")),
            ]:
                doc = getattr(obj, "__doc__", None)
                if isinstance(doc, str) and len(doc.strip()) > 40:
                    rows.append({"_id": name, "title": name, "text": doc.strip()[:2000]})
            if len(rows) >= limit:
                break
    unique = {r["_id"]: r for r in rows}
    path.write_text("".join(json.dumps(r) + "\n" for r in list(unique.values())[:limit]))
    return path


def main() -> None:
    if SCIFACT.is_dir():
        corpus, query = SCIFACT / "corpus.jsonl", "vitamin D deficiency and bone fractures"
    else:
        corpus, query = stdlib_docstrings(STORE / "input" / "stdlib.jsonl"), "parse command line arguments"
    print(f"embed-corpus: {corpus} -> {STORE} (default --compression, progress below)", flush=True)
    with reporting_to(console_sink()):
        result = embed_corpus(corpus=str(corpus), store=str(STORE), shard_rows=1000)
    print("\n" + RunSummary.from_dict(result["summary"]).table() + "\n", flush=True)

    store = Store(str(STORE))
    sql = (
        "SELECT count(*) AS documents, count(DISTINCT id) AS ids, any_value(octet_length(code)) AS bytes_per_doc "
        "FROM documents"
    )
    print(f'\n$ cecq sql --store {STORE} "{sql}"')
    connect(store).sql(sql).show()
    sql = (
        "SELECT run_id, documents, dims, quantization, bytes_per_doc, round(compression, 1) AS compression, status "
        "FROM runs ORDER BY started"
    )
    print(f'$ cecq sql --store {STORE} "{sql}"')
    connect(store).sql(sql).show()
    print(f'$ cecq search --store {STORE} "{query}" -k 5')
    for hit in search_store(store, query, k=5):
        print(f"{hit['rank']:>3}  {hit['score']:.4f}  {hit['id']:<12} {hit['text'][:90]!r}")


if __name__ == "__main__":
    main()
