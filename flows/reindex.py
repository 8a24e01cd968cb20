"""Flow ``reindex``: embed only new or changed documents and publish a new catalog version."""

from __future__ import annotations

from prefect import flow

from cecq.config import DecoderConfig
from cecq.pipeline import DecoderPolicy, PipelineConfig
from flows.embed_corpus import run_steps
from tasks import load_previous_task


@flow(name="reindex", log_prints=True)
def reindex(corpus: str, store: str, decoder_policy: DecoderPolicy = "auto", retrain_fraction: float = 0.25,
            ray_address: str | None = None) -> dict:
    """Re-index ``corpus`` into an existing ``store`` with the models, dims and bits (or byte budget and quantization) it was
    built with. Unchanged shards are not re-embedded or rewritten; the decoder is reused or
    retrained by ``decoder_policy`` ('auto': retrain when more than ``retrain_fraction`` of
    the documents are new or changed)."""
    previous = load_previous_task(store)
    if previous is None:
        raise ValueError(f"store {store} has no published catalog: run embed-corpus first")
    prev = previous["config"]
    config = PipelineConfig(
        corpus=corpus, store=store, models=tuple(previous["models"]), shard_rows=prev["shard_rows"], dims=previous["dims"],
        bits=prev["bits"], budget_bytes=prev.get("budget_bytes"), quantization=prev.get("quantization", "scalar"), id_column=prev["id_column"], text_columns=tuple(prev["text_columns"]) if prev["text_columns"] else None,
        batch_size=prev["batch_size"], decoder=DecoderConfig(**{**prev["decoder"], "prefix_sizes": tuple(prev["decoder"]["prefix_sizes"])}),
        decoder_policy=decoder_policy, retrain_fraction=retrain_fraction, model_weights=prev.get("model_weights", "equal"),
    )
    return run_steps(config, ray_address, previous)
