"""Flow ``reindex``: embed only new or changed documents and publish a new catalog version."""

from __future__ import annotations

from prefect import flow

from cecq.catalog.reader import check_store_models
from cecq.config import DecoderPolicy, IndexConfig, PipelineConfig
from cecq.pipeline.publish import claim_store, reindex_config
from cecq.storage import Store
from flows.embed_corpus import run_steps
from tasks import load_previous_task

P = PipelineConfig


@flow(name="reindex", log_prints=True)
def reindex(
    corpus: str,
    store: str,
    decoder_policy: DecoderPolicy = P.decoder_policy,
    retrain_fraction: float = P.retrain_fraction,
    ray_address: str | None = None,
    index: str | None = None,
    nlist: int | None = IndexConfig.nlist,
) -> dict:
    """Re-index ``corpus`` into an existing ``store`` with the configuration it was built
    with (models, dims, codes). Unchanged shards are not re-embedded or rewritten; the
    decoder is reused or retrained by ``decoder_policy`` ('auto': retrain when more than
    ``retrain_fraction`` of the documents are new or changed). With ``index`` (flat, ivf)
    the new version gets a FAISS search index (built from its codes)."""
    with claim_store(Store(store), "reindex") as lease:
        previous = load_previous_task(store)
        if previous is None:
            raise ValueError(f"store {store} has no published catalog: run embed-corpus first")
        check_store_models(Store(store), previous.models)  # the store names the models reindex loads
        config = reindex_config(previous, corpus, store, decoder_policy, retrain_fraction)
        return run_steps(config, ray_address, previous, lease_owner=lease.owner, index=index, nlist=nlist)
