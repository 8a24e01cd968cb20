"""The whole run as the user waits for it: a fresh ``cecq embed-corpus`` process (CLI imports,
Prefect's API, Ray, actors, embedding, training, compression, publishing, shutdown) against
a bare process that loads the same models and encodes the same texts.

The target compares the whole ``embed-corpus`` process with the bare process's encode time
alone (``SentenceTransformer.encode(texts, batch_size=B)``; a corpus-fitted model's fit and
encode), summed over the models: everything cecq adds around the encoding counts against it.
The bare process's own wall time (imports and model loads included) is reported beside it.

With a precision other than ``auto`` (``--process-precision bf16``), ``embed-corpus`` runs in
it, the target still compares it with the user's plain fp32 encode, and the bare process also
encodes in that precision, reported beside (``bare-encode-bf16``): what the format buys, apart
from what cecq does around it.

The bare side runs as ``python -m cecq.bench.perf_process bare CORPUS.jsonl BATCH PRECISION
MODEL...`` and prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cecq.bench.timing import Figure, Ratio, child_json, interleaved, ratio, run_child
from cecq.encoders import is_fitted, load_encoder, resolve_model
from cecq.encoders.sentence_transformer import torch_dtype
from cecq.eval.beir import read_beir_corpus

CECQ = str(Path(sys.executable).with_name("cecq"))
# The targets: MiniLM alone at least 0.95x its bare encode; several models at least
# 1.0x the sum of their bare encodes.
TARGET_ONE_MODEL, TARGET_MODELS = 0.95, 1.0


def bare(corpus: str, batch_size: int, models: Sequence[str], precision: str = "auto") -> dict[str, dict[str, float]]:
    """Load every model and encode the corpus's texts with it, the plain way (fp32), and again
    in ``precision`` where it is not ``auto`` (``encode_<precision>_s``); seconds of each part."""
    out: dict[str, dict[str, float]] = {}  # imports are the process's wall time less these
    _, texts, _ = read_beir_corpus(Path(corpus))
    for name in models:
        t0 = time.perf_counter()
        if is_fitted(name):  # cecq's own kind: fitting it on the corpus is part of its bare work
            encoder = load_encoder(name, fit_texts=texts)
            encoder.encode(texts, "document")
            out[name] = {"load_s": 0.0, "encode_s": time.perf_counter() - t0}
            continue
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(resolve_model(name), device="cpu")
        t1 = time.perf_counter()
        model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        out[name] = {"load_s": t1 - t0, "encode_s": time.perf_counter() - t1}
        if precision != "auto":
            model.to(dtype=torch_dtype(precision, "cpu"))
            t2 = time.perf_counter()
            model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
            out[name][f"encode_{precision}_s"] = time.perf_counter() - t2
    return out


def measure(
    texts: list[str], models: Sequence[str], batch_size: int, repeats: int, workdir: Path, precision: str = "auto"
) -> tuple[list[Figure], list[Ratio], dict]:
    """Time ``embed-corpus`` over ``texts`` with ``models`` (in ``precision``) against the bare
    process, ``repeats`` times."""
    from cecq.bench.perf_embed import write_jsonl  # heavy: Ray and the pipeline, kept out of the bare child

    models = list(models)
    label = "+".join(models) + ("" if precision == "auto" else f"@{precision}")
    url = write_jsonl(workdir / f"process-{len(texts)}.jsonl", texts)
    bare_runs: list[dict[str, dict[str, float]]] = []
    steps: list[dict[str, float]] = []  # the flow's own seconds per step, from its summary

    def cecq_run(r: int) -> None:
        store = workdir / f"process-{label.replace('/', '_')}-{r}"
        cmd = [CECQ, "embed-corpus", url, "--store", str(store), "--batch-size", str(batch_size), "--json"]
        cmd += ["--precision", precision]
        for m in models:
            cmd += ["--model", m]
        # The caller's environment, as a user's shell has it (a configured Prefect API or Ray is used).
        steps.append(json.loads(run_child(cmd, " ".join(cmd)))["summary"]["seconds"])

    def bare_run(_: int) -> None:
        cmd = [sys.executable, "-m", "cecq.bench.perf_process", "bare", url, str(batch_size), precision, *models]
        bare_runs.append(child_json(cmd, " ".join(cmd)))

    times = interleaved({"cecq-embed-corpus": cecq_run, "bare-process": bare_run}, repeats)
    times["bare-encode"] = [sum(run[m]["encode_s"] for m in models) for run in bare_runs]
    if precision != "auto":  # a fitted model has no precision: its fp32 encode counts on both sides
        key = f"encode_{precision}_s"
        times[f"bare-encode-{precision}"] = [
            sum(run[m].get(key, run[m]["encode_s"]) for m in models) for run in bare_runs
        ]
        # the bare process as a user runs it encodes once, in fp32: its second encode is not part of it
        times["bare-process"] = [
            wall - sum(run[m].get(key, 0.0) for m in models) for wall, run in zip(times["bare-process"], bare_runs)
        ]
    measurement = f"process:{label}"
    n = len(texts)
    what = {
        "cecq-embed-corpus": f"a fresh `cecq embed-corpus` process over {n} documents with {', '.join(models)}, "
        f"batch {batch_size}, precision {precision}, otherwise on its defaults: CLI imports, Prefect's API, Ray, "
        "actors, embedding, training, compression, publishing and shutdown",
        "bare-encode": f"the bare process's encode time alone, summed over the models: "
        f"SentenceTransformer.encode(texts, batch_size={batch_size}); a corpus-fitted model's fit and encode",
        "bare-process": "the bare process's whole wall time: imports, model loads, reading the texts, encoding "
        "(in fp32, once: a second encode in another precision is taken out)",
        f"bare-encode-{precision}": f"the bare process's encode time with the models cast to {precision} "
        "(model.to(dtype)), summed as bare-encode is",
    }
    figs = {name: Figure(measurement, name, n, "docs", secs, what[name]) for name, secs in times.items()}
    target = TARGET_ONE_MODEL if len(models) == 1 else TARGET_MODELS
    ratios = [ratio(figs, "cecq-embed-corpus", "bare-encode", target), ratio(figs, "cecq-embed-corpus", "bare-process")]
    if precision != "auto":
        ratios.append(ratio(figs, "cecq-embed-corpus", f"bare-encode-{precision}"))
    # Where the process's time went: the flow's steps, and the rest (CLI imports, Prefect's API
    # and Ray starting, shutdown), by repeat.
    outside = [wall - sum(s.values()) for wall, s in zip(times["cecq-embed-corpus"], steps)]
    details = {
        "docs": n,
        "models": models,
        "bare_runs": bare_runs,
        "cecq_steps_s": steps,
        "cecq_outside_steps_s": outside,
    }
    return list(figs.values()), ratios, details


def main(argv: Sequence[str]) -> int:
    if len(argv) < 5 or argv[0] != "bare":
        print("usage: python -m cecq.bench.perf_process bare CORPUS.jsonl BATCH PRECISION MODEL...", file=sys.stderr)
        return 2
    print(json.dumps(bare(argv[1], int(argv[2]), argv[4:], argv[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
