"""Where every artifact lives under a storage root: the one place that names paths.

```
corpus/<corpus>/<shard key>.parquet        corpus/<corpus>/manifest-<digest>.json
models/<fitted model>-<corpus>/...         embeddings/<model key>/<shard key>.parquet
runs/<run>/decoder/  runs/<run>/quantizer.parquet  runs/<run>/run.json
codes/<compressor>/<shard key>.parquet     catalog/v<N>/{manifest.json,shards.parquet}
catalog/current.json                       catalog/lease.json (who is writing the store)
                                           catalog/v<N>/index/<name>.{faiss,json}
```
"""

from __future__ import annotations

from cecq.catalog.records import CorpusManifest, ShardInfo
from cecq.encoders.registry import is_fitted
from cecq.storage import digest, slug

CURRENT = "catalog/current.json"
ARTIFACT_FOLDERS = ("corpus", "models", "embeddings", "runs", "codes")  # what runs write, beside catalog/
LEASE = "catalog/lease.json"


def corpus_shard_path(corpus_key: str, shard: ShardInfo) -> str:
    return f"corpus/{corpus_key}/{shard.key}.parquet"


def manifest_path(manifest: CorpusManifest) -> str:
    """Where a corpus manifest is stored: named by its content, so earlier ones stay readable."""
    return f"corpus/{manifest.corpus_key}/manifest-{digest(*(s.key for s in manifest.shards))[:12]}.json"


def model_key(model: str, corpus_key: str, fingerprint: str | None = None) -> str:
    """Folder name of a model's embeddings: fitted encoders are per corpus, pretrained ones
    per weights (``fingerprint``: other weights, other embeddings; None, as stores written
    before fingerprints, names the model only)."""
    if is_fitted(model):
        return f"{slug(model)}-{corpus_key}"
    return f"{slug(model, 48)}-w{digest(fingerprint)[:12]}" if fingerprint else slug(model)


def fitted_model_path(model: str, corpus_key: str) -> str:
    """Folder of a fitted encoder's files (e.g. ``models/lexical-<corpus>``)."""
    return f"models/{model_key(model, corpus_key)}"


def embedding_path(mkey: str, shard: ShardInfo) -> str:
    return f"embeddings/{mkey}/{shard.key}.parquet"


def codes_path(compressor_id: str, shard: ShardInfo) -> str:
    return f"codes/{compressor_id}/{shard.key}.parquet"


def run_dir(run_id: str) -> str:
    return f"runs/{run_id}"


def decoder_path(run_id: str) -> str:
    return f"{run_dir(run_id)}/decoder"


def quantizer_path(run_id: str) -> str:
    return f"{run_dir(run_id)}/quantizer.parquet"


def run_record_path(run_id: str) -> str:
    return f"{run_dir(run_id)}/run.json"


def version_dir(version: int) -> str:
    return f"catalog/v{version:06d}"


def version_of(manifest_rel: str) -> int:
    """The version number of a ``catalog/v<N>/manifest.json`` path."""
    return int(manifest_rel.split("/")[1][1:])


def index_dir(version: int) -> str:
    """Search indexes of a catalog version: ``<name>.faiss`` (FAISS's serialisation) and
    ``<name>.json`` (its record, written last: it commits the index)."""
    return f"{version_dir(version)}/index"


def index_file_path(version: int, name: str) -> str:
    return f"{index_dir(version)}/{slug(name)}.faiss"


def index_record_path(version: int, name: str) -> str:
    return f"{index_dir(version)}/{slug(name)}.json"
