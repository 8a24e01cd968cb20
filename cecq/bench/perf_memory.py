"""Peak resident memory of every pipeline stage at N and 10N documents.

Each stage runs in its own child process (``python -m cecq.bench.perf_memory STAGE ...``)
over a store the earlier stages filled, and reports its own peak RSS. The pipeline's
stages run here in one process each, without Ray, so the figure is the stage's memory (one
Ray actor or task runs the same code on one shard at a time). Training samples are capped
(``sample_rows``) as the pipeline caps them; both sizes must exceed the cap for the growth
figure to say anything about corpus size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

import numpy as np

from cecq.bench.perf_compute import bench_run
from cecq.bench.timing import child_json
from cecq.catalog import load_compressor, load_store_encoder, search_published
from cecq.catalog.layout import codes_path, decoder_path, embedding_path, model_key, quantizer_path
from cecq.catalog.records import CorpusManifest
from cecq.config import DecoderConfig, PipelineConfig
from cecq.encoders import is_fitted
from cecq.pipeline.corpus import shard_corpus
from cecq.pipeline.publish import publish
from cecq.pipeline.steps import compress_shard, embed_shard, fit_encoder, train_compressor
from cecq.storage import Store

STAGES = ("imports", "shard", "fit-lexical", "embed", "train", "compress", "search")


def write_corpus(path: Path, source: list[str], docs: int) -> str:
    """``docs`` documents cycling through ``source`` texts, each with its own id (texts repeat:
    a per-document token would grow the lexical vocabulary with the corpus, an artefact)."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(docs):
            f.write(json.dumps({"_id": f"d{i}", "text": source[i % len(source)]}) + "\n")
    return str(path)


def _stage(stage: str, root: Path, model: str, shard_rows: int, sample_rows: int) -> None:
    """Run one stage over the store at ``root/store`` (corpus at ``root/corpus.jsonl``)."""
    store = Store(str(root / "store"))
    url = str(root / "corpus.jsonl")
    if stage in ("imports", "shard"):
        if stage == "shard":
            shard_corpus(url, store, shard_rows)
        return
    manifest = CorpusManifest.from_dict(store.read_json(store.glob("corpus/*/manifest-*.json")[0]))
    mkey = model_key(model, manifest.corpus_key)
    config = PipelineConfig(
        corpus=url,
        store=store.url,
        models=(model,),
        dims=128,
        bits=2,
        calibration_rows=sample_rows,
        decoder=DecoderConfig(out_dim=256, max_epochs=2, max_train_rows=sample_rows),
    )
    if stage == "fit-lexical":
        fit_encoder(store, manifest, model, max_rows=sample_rows)
    elif stage == "embed":
        encoder = load_store_encoder(store, model, manifest.corpus_key)
        for shard in manifest.shards:  # as one actor works: shard after shard
            embed_shard(store, encoder, shard, embedding_path(mkey, shard))
    elif stage == "train":
        train_compressor(store, "mem", manifest, [mkey], config)
    elif stage == "compress":
        decoder_rel, quantizer_rel = decoder_path("mem"), quantizer_path("mem")
        compressor = load_compressor(store, decoder_rel, quantizer_rel)
        shards = []
        for shard in manifest.shards:
            r = compress_shard(
                store,
                shard,
                [embedding_path(mkey, shard)],
                decoder_rel,
                quantizer_rel,
                codes_path("mem", shard),
                compressor,
            )
            shards.append(r)
        publish(
            store, bench_run("mem", model, mkey, decoder_rel, quantizer_rel, compressor[2], manifest.corpus_key), shards
        )
    elif stage == "search":
        q = np.random.default_rng(0).standard_normal((1, config.dims)).astype(np.float32)
        search_published(store, q, 10)
    else:
        raise ValueError(f"unknown stage {stage!r}")


def run_stage(stage: str, root: Path, model: str, shard_rows: int, sample_rows: int) -> int:
    """Peak RSS (bytes) of ``stage`` run in a fresh child process."""
    cmd = [
        sys.executable,
        "-m",
        "cecq.bench.perf_memory",
        stage,
        str(root),
        "--model",
        model,
        "--shard-rows",
        str(shard_rows),
        "--sample-rows",
        str(sample_rows),
    ]
    out = child_json(cmd, f"memory stage {stage}", env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return int(out["maxrss_bytes"])


def measure(
    source: list[str], docs: int, factor: int, model: str, shard_rows: int, sample_rows: int, workdir: Path
) -> dict:
    """Peak RSS of every stage at ``docs`` and ``factor * docs`` documents, and the growth."""
    stages = [s for s in STAGES if s != "fit-lexical" or is_fitted(model)]  # the fit stage of a fitted encoder
    peaks: dict[str, dict[int, int]] = {s: {} for s in stages}
    for n in (docs, docs * factor):
        root = workdir / f"memory-{n}"
        root.mkdir(parents=True, exist_ok=True)
        write_corpus(root / "corpus.jsonl", source, n)
        for stage in stages:
            peaks[stage][n] = run_stage(stage, root, model, shard_rows, sample_rows)
    small, large = docs, docs * factor
    base_small, base_large = peaks["imports"][small], peaks["imports"][large]
    rows = []
    for stage in stages:
        a, b = peaks[stage][small], peaks[stage][large]
        rows.append(
            {
                "stage": stage,
                "docs_small": small,
                "docs_large": large,
                "peak_small_mb": a / 2**20,
                "peak_large_mb": b / 2**20,
                "growth": b / a,
                "above_imports_small_mb": (a - base_small) / 2**20,
                "above_imports_large_mb": (b - base_large) / 2**20,
                "target_growth": 1.3,
                "met": b / a < 1.3,
            }
        )
    return {"model": model, "shard_rows": shard_rows, "sample_rows": sample_rows, "stages": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one memory stage of cecq bench perf (child process)")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("root")
    p.add_argument("--model", default="lexical")
    p.add_argument("--shard-rows", type=int, required=True)
    p.add_argument("--sample-rows", type=int, required=True)
    a = p.parse_args(argv)
    _stage(a.stage, Path(a.root), a.model, a.shard_rows, a.sample_rows)
    print(json.dumps({"stage": a.stage, "maxrss_bytes": peak_rss()}))
    return 0


def peak_rss() -> int:
    """This process's peak resident memory in bytes. ``VmHWM`` where there is /proc: Linux
    carries ``ru_maxrss`` over an exec, so a child started by a big parent would report the
    parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


if __name__ == "__main__":
    sys.exit(main())
