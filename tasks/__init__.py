"""Prefect tasks: thin, retryable wrappers around cecq's pipeline steps. They pass
storage-root-relative paths, never arrays."""

from tasks.compression import compress_task, plan_compressor_task, train_compressor_task
from tasks.corpus import fit_encoder_task, load_previous_task, shard_corpus_task
from tasks.embedding import embed_models_task, fingerprint_models_task
from tasks.indexing import build_index_task
from tasks.planning import plan_compression_task
from tasks.publishing import publish_task, summarise_task

__all__ = [
    "build_index_task",
    "compress_task",
    "embed_models_task",
    "fingerprint_models_task",
    "fit_encoder_task",
    "load_previous_task",
    "plan_compression_task",
    "plan_compressor_task",
    "publish_task",
    "shard_corpus_task",
    "summarise_task",
    "train_compressor_task",
]
