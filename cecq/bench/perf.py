"""``cecq bench perf``: pipeline throughput and memory against bare baselines, side by side.

Every comparison times cecq and its baseline in the same run, interleaved, and reports the
ratio of medians (the machine may be shared: absolute figures drift, ratios much less).
Writes one JSON file (raw seconds of every repeat, rates, ratios, targets) and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cecq.bench import (
    perf_compute,
    perf_embed,
    perf_gpu,
    perf_memory,
    perf_models,
    perf_process,
    perf_scaleout,
    perf_search,
)
from cecq.bench.timing import Figure, Ratio, rate_text
from cecq.config import DEFAULT_MODELS, PRECISIONS, PipelineConfig
from cecq.pipeline.ray_pool import ray_running, shutdown_ray

MEASUREMENTS = ("embed", "models", "process", "compress", "search", "memory", "scaleout", "gpu")
# Measurements that run only when --only names them (the whole process on SciFact took 30 min here).
OPT_IN = ("process",)
DEFAULT_CORPUS = "../shared/data/scifact"


def _only(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(set(names) - set(MEASUREMENTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--only takes a comma-separated subset of {', '.join(MEASUREMENTS)}, got {text!r}"
        )
    return names


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated document counts, got {text!r}") from None
    if any(s < 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"document counts must be >= 0, got {text!r}")
    return tuple(s for s in sizes if s)


def _list(kind: type, allowed: tuple[str, ...] | None = None) -> Callable[[str], tuple]:
    """An argparse type: a comma-separated list of ``kind`` (of ``allowed`` where given)."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
        bad = [v for v in values if (allowed is not None and v not in allowed) or (kind is int and v < 1)]
        if bad or not values:
            wanted = f"of {', '.join(allowed)}" if allowed else "of positive integers"
            raise argparse.ArgumentTypeError(f"expected a comma-separated list {wanted}, got {text!r}")
        return values

    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "perf",
        help="pipeline throughput and memory against bare baselines (side by side, as ratios)",
        description="Time cecq's embedding, compression and search against bare baselines of the same "
        "work in one run (interleaved repeats, medians), measure peak memory per stage at N "
        "and 10N documents, and write raw figures and ratios as JSON.",
    )
    p.add_argument(
        "--only",
        type=_only,
        default=tuple(m for m in MEASUREMENTS if m not in OPT_IN),
        metavar="LIST",
        help=f"comma-separated measurements to run (of {','.join(MEASUREMENTS)}; default all but {','.join(OPT_IN)})",
    )
    p.add_argument(
        "--json", dest="json_out", default="cecq-perf.json", metavar="OUT.json", help="where to write the figures"
    )
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every timed variant (default 3)")
    p.add_argument("--workdir", help="scratch folder for stores and corpora (default: a temporary folder, removed)")
    g = p.add_argument_group("embed")
    g.add_argument(
        "--corpus", default=DEFAULT_CORPUS, help=f"BEIR folder whose texts are embedded (default {DEFAULT_CORPUS})"
    )
    g.add_argument("--model", default="all-MiniLM-L6-v2", help="sentence-transformers model (default all-MiniLM-L6-v2)")
    g.add_argument("--docs", type=int, default=200, help="documents to embed (default 200)")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--shard-rows", type=int, default=50_000, help="pipeline shard size for the embed comparison")
    g = p.add_argument_group("models", "several base models: one pool against model after model and bare loops")
    g.add_argument(
        "--models",
        dest="bench_models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated base models (default the pipeline's: {','.join(DEFAULT_MODELS)})",
    )
    g.add_argument("--models-docs", type=int, default=300, help="documents to embed with every model (default 300)")
    g.add_argument("--models-shards", type=int, default=6, help="shards the documents are split into (default 6)")
    g.add_argument(
        "--models-nodes",
        type=int,
        default=0,
        help="Ray nodes to start here for it, of --scaleout-node-cpus CPUs each (default 0: the local Ray)",
    )
    g = p.add_argument_group(
        "process", "the whole embed-corpus process against a bare process encoding the same texts (opt-in)"
    )
    g.add_argument(
        "--process-docs", type=int, default=0, help="documents of --corpus (default 0: all of them, as a user runs it)"
    )
    g.add_argument(
        "--process-models",
        default=f"all-MiniLM-L6-v2;{','.join(DEFAULT_MODELS)}",
        metavar="M[,M...][;M...]",
        help="model sets, ';' between sets (default: MiniLM alone; then the pipeline's default models)",
    )
    g.add_argument(
        "--process-precision",
        choices=PRECISIONS,
        default=PipelineConfig.precision,
        help="embed-corpus --precision (default auto); other than auto, the bare process also encodes in it",
    )
    g = p.add_argument_group("scaleout", "two Ray nodes started on this machine against one (same model and corpus)")
    g.add_argument("--scaleout-docs", type=int, default=400, help="documents to embed (default 400)")
    g.add_argument("--scaleout-shards", type=int, default=8, help="shards the documents are split into (default 8)")
    g.add_argument(
        "--scaleout-node-cpus",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="CPUs of each node (default half this machine's cores)",
    )
    g = p.add_argument_group(
        "gpu", "cecq's encoder in each precision and batch size against a bare fp16 encode loop, on one GPU"
    )
    g.add_argument(
        "--gpu-device", default="cuda", help="device to measure (default cuda; cpu runs the same code, for tests)"
    )
    g.add_argument(
        "--gpu-precisions",
        type=_list(str, tuple(p for p in PRECISIONS if p != "auto")),
        default=perf_gpu.DEFAULT_PRECISIONS,
        metavar="P[,P...]",
        help=f"cecq's precisions (default {','.join(perf_gpu.DEFAULT_PRECISIONS)})",
    )
    g.add_argument(
        "--gpu-batch-sizes",
        type=_list(int),
        default=perf_gpu.DEFAULT_BATCH_SIZES,
        metavar="B[,B...]",
        help=f"batch sizes, each timed on both sides (default {','.join(map(str, perf_gpu.DEFAULT_BATCH_SIZES))})",
    )
    g.add_argument("--gpu-docs", type=int, default=0, help="documents of --corpus (default 0: all of them)")
    g = p.add_argument_group("compress")
    g.add_argument("--compress-rows", type=int, default=200_000)
    g.add_argument("--model-dims", default="384,256", help="per-model embedding widths concatenated (default 384,256)")
    g.add_argument("--out-dim", type=int, default=512, help="decoder output width (default 512)")
    g.add_argument("--dims", type=int, default=256, help="prefix kept and quantized (default 256)")
    g.add_argument("--bits", type=int, default=2, choices=[1, 2, 4, 8])
    g = p.add_argument_group("search")
    g.add_argument("--search-rows", type=int, default=1_000_000)
    g.add_argument("--search-queries", type=int, default=10, help="queries scored together (default 10)")
    g.add_argument("--search-shard-rows", type=int, default=50_000, help="rows per published codes shard")
    g.add_argument("-k", type=int, default=10)
    g.add_argument(
        "--search-index-sizes",
        type=_sizes,
        default=(1_000_000, 10_000_000),
        metavar="N[,N...]",
        help="product-code collections for the FAISS comparison (default 1000000,10000000; 0 skips it)",
    )
    g.add_argument(
        "--search-batches",
        type=_sizes,
        default=(1, 10),
        metavar="B[,B...]",
        help="queries a batch in the FAISS comparison (default 1,10: a service's single query, a batch job's ten)",
    )
    g = p.add_argument_group("memory")
    g.add_argument("--memory-docs", type=int, default=4000, help="N: the small corpus (the large one is N x factor)")
    g.add_argument("--memory-factor", type=int, default=10)
    g.add_argument(
        "--memory-model", default="lexical", help="encoder of the memory run (default lexical: cheap on CPU)"
    )
    g.add_argument("--memory-shard-rows", type=int, default=1000)
    g.add_argument(
        "--memory-sample-rows",
        type=int,
        default=2000,
        help="cap on training and calibration samples (the pipeline's caps, shrunk to below N)",
    )
    p.set_defaults(func=run)


def environment() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def _scale_out_unmeasurable(node_cpus: int) -> str | None:
    cpus = os.cpu_count() or 1
    if node_cpus < 1:
        return f"--scaleout-node-cpus must be >= 1, got {node_cpus}"
    if cpus < 2 * node_cpus:
        return (
            f"this machine has {cpus} CPU cores: two simulated nodes of {node_cpus} would share them, so the "
            "figure would measure contention, not scale-out; run on two real nodes or give smaller nodes"
        )
    return None


def format_table(result: dict[str, Any]) -> str:
    """Markdown: one row per ratio, then one per memory stage."""
    figs = {(f["measurement"], f["variant"]): f for f in result["figures"]}
    lines = [
        "| measurement | cecq | baseline | cecq rate | baseline rate | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["ratios"]:
        num, den = figs[(r["measurement"], r["numerator"])], figs[(r["measurement"], r["denominator"])]
        target = "" if r["target"] is None else f">= {r['target']:g}"
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(
            f"| {r['measurement']} | {r['numerator']} | {r['denominator']} | "
            f"{rate_text(num['rate'])} {num['unit']}/s | {rate_text(den['rate'])} {den['unit']}/s | "
            f"{r['ratio']:.2f} | {target} | {met} |"
        )
    memory = result.get("memory")
    if memory:
        lines += [
            "",
            "| stage | peak RSS small (MB) | large (MB) | growth | above imports small / large (MB) | met (< 1.3) |",
            "|---|---|---|---|---|---|",
        ]
        for s in memory["stages"]:
            lines.append(
                f"| {s['stage']} ({s['docs_small']:,} / {s['docs_large']:,} docs) | {s['peak_small_mb']:.0f} | "
                f"{s['peak_large_mb']:.0f} | {s['growth']:.2f} | {s['above_imports_small_mb']:.0f} / "
                f"{s['above_imports_large_mb']:.0f} | {'yes' if s['met'] else '**no**'} |"
            )
    index = result.get("details", {}).get("search_index")
    if index:
        lines += [
            "",
            "| documents | IVF nlist / nprobe | recall@10 IVF vs flat | flat vs NumPy | IVF memory / (codes + "
            "centroids) | build flat / IVF (s) | build peak RSS flat / IVF (MB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for size in index["sizes"].values():
            for label, t in size["threads"].items():
                lines.append(
                    f"| {size['rows']:,} ({label}) | {size['nlist']} / {size['nprobe']} | "
                    f"{t['recall_at_k_ivf_vs_flat']:.3f} | {t['recall_at_k_flat_vs_numpy']:.3f} | "
                    f"{size['ivf_memory']['ratio_to_codes_plus_centroids']:.3f} | "
                    f"{size['build_flat_s']:.0f} / {size['build_ivf_s']:.0f} | "
                    f"{size['build_flat_peak_rss_bytes'] / 1e6:.0f} / {size['build_ivf_peak_rss_bytes'] / 1e6:.0f} |"
                )
    for key in ("scale_out", "gpu"):
        if key in result and not result[key].get("measured"):
            lines.append(f"\n{key}: not measured: {result[key]['reason']}")
    if result.get("gpu", {}).get("measured"):
        lines += perf_gpu.format_details(result["gpu"], result["figures"])
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ValueError("--repeats must be >= 1")
    with tempfile.TemporaryDirectory(prefix="cecq-perf-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = measure_all(args, workdir)
    Path(args.json_out).write_text(json.dumps(result, indent=2))
    print(format_table(result))
    print(f"wrote {args.json_out}", file=sys.stderr)
    return 0


def measure_all(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    figures: list[Figure] = []
    ratios: list[Ratio] = []
    details: dict[str, Any] = {}
    result: dict[str, Any] = {
        "command": sys.argv,
        "environment": environment(),
        "config": {k: v for k, v in vars(args).items() if k != "func"},
    }
    needs_corpus = {"embed", "models", "process", "memory", "scaleout", "gpu"} & set(args.only)
    if needs_corpus and not (Path(args.corpus) / "corpus.jsonl").is_file():
        raise FileNotFoundError(f"--corpus {args.corpus}: no corpus.jsonl there (give a BEIR folder)")
    if "embed" in args.only:
        ray_was_running = ray_running()
        texts = perf_embed.corpus_texts(args.corpus, args.docs)
        try:
            for label, variant in (("natural", texts), ("long-tail", perf_embed.long_tailed(texts))):
                f, r, d = perf_embed.measure(
                    variant, label, args.model, args.batch_size, args.repeats, args.shard_rows, workdir
                )
                figures += f
                ratios += r
                details[f"embed:{label}"] = d
        finally:
            if not ray_was_running:  # leave the caller's process as we found it
                shutdown_ray()
    if "models" in args.only:
        ray_was_running = ray_running()
        models = [m.strip() for m in args.bench_models.split(",") if m.strip()]
        try:
            f, r, d = perf_models.measure(
                perf_embed.corpus_texts(args.corpus, args.models_docs),
                models,
                args.batch_size,
                args.repeats,
                args.models_shards,
                workdir,
                args.models_nodes,
                args.scaleout_node_cpus,
            )
        finally:
            if not ray_was_running:
                shutdown_ray()
        figures += f
        ratios += r
        details["embed-models"] = d
    if "process" in args.only:
        texts = perf_embed.corpus_texts(args.corpus, args.process_docs or sys.maxsize)
        for models in (m for m in args.process_models.split(";") if m.strip()):
            names = [m.strip() for m in models.split(",") if m.strip()]
            f, r, d = perf_process.measure(texts, names, args.batch_size, args.repeats, workdir, args.process_precision)
            figures += f
            ratios += r
            details[f[0].measurement] = d  # process:MODELS, @PRECISION where not auto
    if "compress" in args.only:
        dims = tuple(int(d) for d in args.model_dims.split(","))
        f, r, d = perf_compute.measure_compress(
            args.compress_rows, dims, args.out_dim, args.dims, args.bits, args.repeats
        )
        figures += f
        ratios += r
        details["compress"] = d
    if "search" in args.only:
        f, r, d = perf_compute.measure_search(
            args.search_rows,
            args.dims,
            args.bits,
            args.search_queries,
            args.k,
            args.repeats,
            args.search_shard_rows,
            workdir,
        )
        figures += f
        ratios += r
        details["search"] = d
        if args.search_index_sizes:
            f, r, d = perf_search.measure(
                args.search_index_sizes, args.search_batches, args.k, args.repeats, args.search_shard_rows, workdir
            )
            figures += f
            ratios += r
            details["search_index"] = d
    if "memory" in args.only:
        source = perf_embed.corpus_texts(args.corpus, 10_000)
        result["memory"] = perf_memory.measure(
            source,
            args.memory_docs,
            args.memory_factor,
            args.memory_model,
            args.memory_shard_rows,
            args.memory_sample_rows,
            workdir,
        )
    if "scaleout" in args.only:
        reason = _scale_out_unmeasurable(args.scaleout_node_cpus)
        if reason:
            result["scale_out"] = {"measured": False, "reason": reason}
        else:
            texts = perf_embed.corpus_texts(args.corpus, args.scaleout_docs)
            f, r, d = perf_scaleout.measure(
                texts, args.model, args.batch_size, args.repeats, args.scaleout_shards, args.scaleout_node_cpus, workdir
            )
            figures += f
            ratios += r
            result["scale_out"] = {"measured": True, **d}
    if "gpu" in args.only:
        reason = perf_gpu.unavailable(args.gpu_device)
        if reason:
            result["gpu"] = {"measured": False, "reason": reason}
        else:
            f, r, d = perf_gpu.measure(
                perf_embed.corpus_texts(args.corpus, args.gpu_docs or sys.maxsize),
                args.model,
                args.gpu_device,
                args.gpu_precisions,
                args.gpu_batch_sizes,
                args.repeats,
            )
            figures += f
            ratios += r
            result["gpu"] = {"measured": True, **d}
    result.update(
        figures=[f.to_dict() for f in figures],
        ratios=[r.to_dict() for r in ratios],
        details=details,
        seconds=time.perf_counter() - started,
    )
    return result
