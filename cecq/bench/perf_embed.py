"""Embedding throughput: a bare ``SentenceTransformer.encode`` loop against cecq's
embedding, in process and through the pipeline's embed stage (Ray actor + Parquet)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from cecq.bench.timing import Figure, Ratio, interleaved, ratio
from cecq.config import ModelSpec
from cecq.encoders import SentenceTransformerEncoder
from cecq.eval.beir import read_beir_corpus
from cecq.pipeline.corpus import shard_corpus
from cecq.pipeline.fanout import EmbedJob, embed_model, split_jobs
from cecq.pipeline.ray_pool import actor_shape, init_ray
from cecq.storage import Store


def corpus_texts(corpus: str, docs: int) -> list[str]:
    """The first ``docs`` non-empty texts of a BEIR folder (title and text joined)."""
    _, texts, _ = read_beir_corpus(Path(corpus) / "corpus.jsonl")
    return [t for t in texts if t.strip()][:docs]


def long_tailed(texts: list[str], seed: int = 0) -> list[str]:
    """The same documents cut to a heavy-tailed number of words (Pareto: most a short
    snippet, a few whole abstracts), in corpus order: a stand-in for mixed web corpora."""
    rng = np.random.default_rng(seed)
    out = []
    for t in texts:
        words = t.split()
        n = int(4 * (1 + rng.pareto(1.0)))
        out.append(" ".join(words[: max(1, n)]))
    return out


def write_jsonl(path: Path, texts: list[str]) -> str:
    """Write ``texts`` as a JSONL corpus (ids d0, d1, ...); return its path as a URL string."""
    with path.open("w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"_id": f"d{i}", "text": t}) + "\n")
    return str(path)


def measure(
    texts: list[str], label: str, model: str, batch_size: int, repeats: int, shard_rows: int, workdir: Path
) -> tuple[list[Figure], list[Ratio], dict]:
    """Time every embedding variant on ``texts``; ``label`` names the corpus variant."""
    started = time.perf_counter()
    init_ray(None)
    ray_start_s = time.perf_counter() - started
    shape = actor_shape()
    # The bare loops keep torch's own threads (every core), as a user's plain loop gets them;
    # the embed stage spreads its actors (of shape.threads each) over the same cores.
    encoder = SentenceTransformerEncoder(ModelSpec(model, batch_size=batch_size, device="cpu"))
    st = encoder.model
    url = write_jsonl(workdir / f"{label}.jsonl", texts)
    # One fresh store per repeat, sharded before timing: the embed stage never skips work.
    manifests = []
    for r in range(repeats):
        store = Store(str(workdir / f"store-{label}-{r}"))
        manifests.append((store, shard_corpus(url, store, shard_rows)))
    n, bs = len(texts), batch_size
    measurement = f"embed:{label}"

    def bare_loop(_: int) -> None:
        for i in range(0, n, bs):
            st.encode(texts[i : i + bs], batch_size=bs, convert_to_numpy=True, show_progress_bar=False)

    results: dict[int, dict] = {}  # repeat -> embed_model's summary

    variants = {
        "bare-encode-loop": bare_loop,
        "bare-encode-call": lambda _: st.encode(texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False),
        "cecq-encode": lambda _: encoder.encode(texts, "document"),
        "cecq-pipeline": lambda r: results.__setitem__(r, embed_model(*manifests[r], model, batch_size)),
    }
    times = interleaved(variants, repeats)
    what = {
        "bare-encode-loop": f"SentenceTransformer.encode on consecutive batches of {bs}, corpus order, model loaded",
        "bare-encode-call": "one SentenceTransformer.encode call over all texts (it sorts by characters)",
        "cecq-encode": "cecq encoder in process: token-length buckets over all texts, zeroing, normalising",
        "cecq-pipeline": "embed stage of embed-corpus (cecq.pipeline.fanout.embed_model): Ray actor start and "
        "model load, "
        "shard read, encode, Parquet write; Ray already running",
    }
    figs = {name: Figure(measurement, name, n, "docs", secs, what[name]) for name, secs in times.items()}
    tokens = encoder.token_lengths(texts)
    stats = {
        "docs": n,
        "mean_tokens": float(tokens.mean()),
        "p50_tokens": float(np.median(tokens)),
        "p99_tokens": float(np.percentile(tokens, 99)),
        "max_seq_length": int(st.max_seq_length),
        "ray_start_s": ray_start_s,
        "threads": shape.threads,
        "actors": shape.count,
        "shards": len(manifests[0][1].shards),
    }
    # The same runs seen from inside the actors (shard read, encode): the pipeline's steady
    # state, without actor start and model load. A result's seconds are actor-seconds, summed
    # over the parts of a shard that ran on several actors at once, so divided by the actors.
    jobs = [EmbedJob(s.to_dict(), "") for s in manifests[0][1].shards]
    used = min(shape.count, len(split_jobs(jobs, shape.count)))
    figs["cecq-pipeline-in-actor"] = Figure(
        measurement,
        "cecq-pipeline-in-actor",
        n,
        "docs",
        [results[r].seconds / used for r in range(repeats)],
        f"cecq-pipeline's time inside its actors (read, encode, write), actor-seconds over the {used} actors",
    )
    # The target: the embed stage at least as fast as the bare loop. On the long tail the
    # fair baseline is one encode call, which sorts by length itself (the per-batch loop in
    # corpus order pads every short text to its batch's longest), so that ratio leads there.
    loop = ratio(figs, "cecq-pipeline", "bare-encode-loop", None if label == "long-tail" else 1.0)
    call = ratio(figs, "cecq-pipeline", "bare-encode-call", 1.0 if label == "long-tail" else None)
    ratios = [
        *((call, loop) if label == "long-tail" else (loop, call)),
        ratio(figs, "cecq-encode", "bare-encode-loop"),
        ratio(figs, "cecq-pipeline-in-actor", "bare-encode-loop"),
    ]
    return list(figs.values()), ratios, stats
