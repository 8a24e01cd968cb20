"""Embedding on an accelerator: cecq's encoder (the code an embedding actor runs once it holds a
GPU) in each precision and at several batch sizes, against a bare fp16
``SentenceTransformer.encode`` loop on the same device, with the share of the device's own
matrix-product peak that the model's useful work reaches.

Useful work counts the FLOPs of a BERT-style encoder over each document's real tokens (cut at
the model's limit, no padding): per layer and token ``8 H^2 + 4 H I`` for the projections and
the feed-forward (width ``H``, feed-forward width ``I``), plus ``4 n H`` for the attention
over a document of ``n`` tokens. The peak is measured in the same run, as the rate of a large
square matrix product in the same precision, so the fraction says how far the embedding is
from being bound by the device's arithmetic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from cecq.bench.timing import Figure, Ratio, interleaved, rate_text, ratio
from cecq.config import ModelSpec, Precision
from cecq.encoders.sentence_transformer import SentenceTransformerEncoder, resolve_model, torch_dtype

MEASUREMENT = "gpu-embed"
BASELINE_PRECISION: Precision = "fp16"  # the bare loop a GPU user writes: model.half(), encode
DEFAULT_PRECISIONS: tuple[Precision, ...] = ("fp16", "bf16")
DEFAULT_BATCH_SIZES: tuple[int, ...] = (64, 256, 1024)


def unavailable(device: str) -> str | None:
    """Why ``device`` cannot be measured here, or None where it can."""
    import torch

    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        return (
            "no CUDA device visible; run 'cecq bench perf --only gpu' on a GPU machine "
            "(docs/scripts/gpu_embed.sh prepares and runs it in one call)"
        )
    if kind not in ("cuda", "cpu"):
        return f"--gpu-device takes cuda, cuda:N or cpu, got {device!r}"
    return None


def encoder_flops(layers: int, width: int, intermediate: int, tokens: np.ndarray) -> float:
    """Useful FLOPs of a BERT-style encoder over documents of ``tokens`` tokens each (the
    projections, feed-forward and attention; embeddings, norms and pooling are negligible)."""
    n = np.asarray(tokens, dtype=np.float64)
    per_layer = n * (8.0 * width * width + 4.0 * width * intermediate) + 4.0 * n * n * width
    return float(layers * per_layer.sum())


def model_dims(model: Any) -> tuple[int, int, int]:
    """``(layers, width, feed-forward width)`` of a loaded sentence-transformers model."""
    config = model[0].auto_model.config
    width = int(config.hidden_size)
    return int(config.num_hidden_layers), width, int(getattr(config, "intermediate_size", None) or 4 * width)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def matmul_tflops(device: str, precision: Precision, size: int | None = None, repeats: int = 10) -> float:
    """TFLOP/s of a ``size`` x ``size`` matrix product in ``precision`` on ``device`` (random
    operands, after three warm-up products): the device's arithmetic peak as it delivers it."""
    import torch

    size = size or (8192 if device.startswith("cuda") else 512)
    dtype = torch_dtype(precision, device)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2.0 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def _recorded(device: str, fn: Callable[[int], Any], keep: dict[str, Any], name: str) -> Callable[[int], Any]:
    """``fn`` that also records the device's peak allocated bytes (CUDA) and its first output."""
    import torch

    def run(r: int) -> None:
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        out = fn(r)
        if device.startswith("cuda"):
            keep.setdefault("memory", {})[name] = max(
                keep.get("memory", {}).get(name, 0), int(torch.cuda.max_memory_allocated(device))
            )
        if r == 0:
            keep.setdefault("outputs", {})[name] = np.asarray(out, dtype=np.float32)

    return run


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float((a * b).sum(axis=1).min())


def measure(
    texts: Sequence[str],
    model: str,
    device: str = "cuda",
    precisions: Sequence[Precision] = DEFAULT_PRECISIONS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    repeats: int = 3,
) -> tuple[list[Figure], list[Ratio], dict[str, Any]]:
    """Time the bare fp16 loop (and one bare fp16 ``encode`` call, which sorts by length) and
    cecq's encoder in every precision, at every batch size, interleaved; return the figures,
    the ratios (cecq against the bare loop at the same batch size: target 1.0) and details."""
    import torch
    from sentence_transformers import SentenceTransformer

    texts = list(texts)
    n = len(texts)
    bare = SentenceTransformer(resolve_model(model), device=device)
    bare.to(dtype=torch_dtype(BASELINE_PRECISION, device))
    bare.eval()
    encoders = {p: SentenceTransformerEncoder(ModelSpec(model, device=device, precision=p)) for p in precisions}
    for enc in encoders.values():
        enc.to_device(device)
    reference = SentenceTransformerEncoder(ModelSpec(model, device=device, precision="fp32"))
    reference.to_device(device)

    keep: dict[str, Any] = {}
    variants: dict[str, Callable[[int], Any]] = {}
    what: dict[str, str] = {}
    shape: dict[str, tuple[str, int]] = {}  # variant -> (precision, batch size)

    def add(side: str, precision: str, bs: int, fn: Callable[[int], Any], description: str) -> None:
        name = f"{side}-bs{bs}"
        variants[name], what[name], shape[name] = fn, description, (precision, bs)

    for bs in batch_sizes:

        def loop(_: int, bs: int = bs) -> np.ndarray:
            return np.concatenate(
                [
                    bare.encode(texts[i : i + bs], batch_size=bs, convert_to_numpy=True, show_progress_bar=False)
                    for i in range(0, n, bs)
                ]
            )

        def call(_: int, bs: int = bs) -> np.ndarray:
            return bare.encode(texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)

        add(
            f"bare-{BASELINE_PRECISION}-loop",
            BASELINE_PRECISION,
            bs,
            loop,
            f"SentenceTransformer.encode on consecutive batches of {bs}, corpus order, model in {BASELINE_PRECISION}",
        )
        add(
            f"bare-{BASELINE_PRECISION}-call",
            BASELINE_PRECISION,
            bs,
            call,
            f"one SentenceTransformer.encode call over all texts, batch {bs} (it sorts by characters)",
        )
        for p, enc in encoders.items():
            sized = replace(enc.spec, batch_size=bs)

            def ours(_: int, enc: SentenceTransformerEncoder = enc, sized: ModelSpec = sized) -> np.ndarray:
                enc.spec = sized  # the batch size is the spec's: one loaded model serves every size
                return enc.encode(texts, "document")

            add(
                f"cecq-{p}",
                p,
                bs,
                ours,
                f"cecq's encoder as an embedding actor runs it on a GPU: {p}, batches of {bs} by token length, "
                "one tokenization, normalised",
            )
    timed = {name: _recorded(device, fn, keep, name) for name, fn in variants.items()}
    times = interleaved(timed, repeats)

    limit = int(bare.max_seq_length or 0)
    tokens = reference.token_lengths(texts)
    useful = np.minimum(tokens, limit) if (tokens is not None and limit) else tokens
    layers, width, intermediate = model_dims(bare)
    flops = encoder_flops(layers, width, intermediate, useful) if useful is not None else float("nan")
    peaks = {p: matmul_tflops(device, p) for p in dict.fromkeys([BASELINE_PRECISION, *precisions])}
    fp32 = reference.encode(texts, "document")
    figs: dict[str, Figure] = {}
    for name, secs in times.items():
        precision, batch_size = shape[name]
        fig = Figure(MEASUREMENT, name, n, "docs", secs, what[name])
        tflops = flops / fig.median_s / 1e12
        fig.extra = {
            "precision": precision,
            "batch_size": batch_size,
            "tflops": tflops,
            "fraction_of_matmul_peak": tflops / peaks[precision],
            "peak_memory_bytes": keep.get("memory", {}).get(name),
            "min_cosine_to_fp32": _min_cosine(keep["outputs"][name], fp32),
        }
        figs[name] = fig
    baseline = f"bare-{BASELINE_PRECISION}-loop"
    ratios: list[Ratio] = []
    for bs in batch_sizes:
        for p in precisions:
            ratios.append(ratio(figs, f"cecq-{p}-bs{bs}", f"{baseline}-bs{bs}", 1.0))
            ratios.append(ratio(figs, f"cecq-{p}-bs{bs}", f"bare-{BASELINE_PRECISION}-call-bs{bs}"))

    def best(prefix: str) -> str:
        return max((f for f in figs if f.startswith(prefix)), key=lambda f: figs[f].rate)

    ratios.insert(
        0, ratio(figs, best("cecq-"), best(baseline), 1.0, "each at its fastest batch size (and cecq its precision)")
    )
    details = {
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "model": model,
        "docs": n,
        "layers": layers,
        "width": width,
        "intermediate": intermediate,
        "max_seq_length": limit,
        "useful_tokens": int(useful.sum()) if useful is not None else None,
        "mean_tokens": float(useful.mean()) if useful is not None else None,
        "useful_tflop_per_pass": flops / 1e12,
        "matmul_peak_tflops": peaks,
        "best_cecq": best("cecq-"),
        "best_bare_loop": best(baseline),
    }
    return list(figs.values()), ratios, details


def format_details(details: dict[str, Any], figures: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown rows: every variant's rate, TFLOP/s, share of the matmul peak, memory, and its
    agreement with fp32."""
    peaks = ", ".join(f"{p} {t:.3g}" for p, t in details["matmul_peak_tflops"].items())
    lines = [
        "",
        f"{details['device']}, {details['model']} ({details['layers']} layers, width {details['width']}): "
        f"{details['docs']:,} documents, {details['mean_tokens']:.0f} tokens each on average; "
        f"matmul peak TFLOP/s: {peaks}",
        "",
        "| variant | docs/s | useful TFLOP/s | of matmul peak | peak GPU memory (MB) | min cosine to fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        if f["measurement"] != MEASUREMENT:
            continue
        e = f["extra"]
        memory = "" if e["peak_memory_bytes"] is None else f"{e['peak_memory_bytes'] / 1e6:,.0f}"
        lines.append(
            f"| {f['variant']} | {rate_text(f['rate'])} | {e['tflops']:.3g} | {e['fraction_of_matmul_peak']:.1%} | "
            f"{memory} | {e['min_cosine_to_fp32']:.4f} |"
        )
    return lines
