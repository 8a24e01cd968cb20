"""Where every artifact lives under a storage root: the one place that names paths.

```
corpus/<corpus>/<shard key>.parquet        corpus/<corpus>/manifest-<digest>.json
corpus/<corpus>/guard-{queries,answers}-<key>.parquet  (the guarded weights' pseudo-queries)
models/<fitted model>-<corpus>/...         embeddings/<model key>/<shard key>.parquet
runs/<run>/decoder/  runs/<run>/quantizer.parquet  runs/<run>/run.json
codes/<compressor>/<shard key>.parquet     catalog/v<N>/{manifest.json,shards.parquet}
catalog/current.json                       catalog/lease.json (who is writing the store)
                                           catalog/v<N>/index/<name>.{faiss,json}
```
"""

from __future__ import annotations

from dataclasses import replace

from cecq.catalog.records import CorpusManifest, ShardInfo
from cecq.encoders.registry import is_fitted
from cecq.storage import add_recovery_hint, digest, slug

CURRENT = "catalog/current.json"
ARTIFACT_FOLDERS = ("corpus", "models", "embeddings", "runs", "codes")  # what runs write, beside catalog/
LEASE = "catalog/lease.json"
CURRENT_FORMAT = 1  # format version of catalog/current.json (absent: 1)

# How each damaged artifact is recovered (shown by every reader that finds one truncated or
# corrupt). Derived artifacts are rewritten by a rerun of the step that writes them, which
# checks what it would skip; the catalog's manifests and pointer are the published history.
_RERUN = "rerun the same `cecq embed-corpus` or `cecq reindex`: it rewrites this derived file"
_RETRAIN = (
    "rerun the `cecq embed-corpus` that trained it (same corpus and options; see the runs view): "
    "it retrains it, byte for byte (training is seeded); `cecq reindex` retrains when it finds it damaged"
)
for _pattern, _hint in (
    ("corpus/*", _RERUN + " from the corpus"),
    ("models/*", _RERUN + " (refits the model)"),
    ("embeddings/*", _RERUN + " (re-embeds the shard)"),
    ("codes/*", _RERUN + " (recompresses the shard)"),
    ("runs/*/decoder/*", _RETRAIN),
    ("runs/*/quantizer.parquet", _RETRAIN),
    ("runs/*/run.json", "rerun the run's `cecq embed-corpus` (same corpus and options): publishing rewrites it"),
    ("catalog/v*/shards.parquet", "rerun `cecq reindex`: it publishes a new version with a whole list"),
    (
        "catalog/v*/manifest.json",
        "restore it from a backup (catalog manifests are the published history and are not derived); "
        "or give this version up: delete its catalog/v<N>/ folder, set catalog/current.json to the "
        'previous version ({"version": <N-1>}, or delete catalog/ if it was the first) and rerun '
        "`cecq embed-corpus`: committed shards are reused",
    ),
    (
        LEASE,
        "delete it once no `cecq embed-corpus`, `cecq reindex` or `cecq gc` is running on this store: "
        "the lease only keeps two writers apart, and the next one writes it anew",
    ),
    (
        CURRENT,
        'restore it from a backup, or write {"version": <N>} into it, N the newest catalog/v<N>/ '
        "whose manifest.json reads whole",
    ),
):
    add_recovery_hint(_pattern, _hint)


def corpus_shard_path(corpus_key: str, shard: ShardInfo) -> str:
    return f"corpus/{corpus_key}/{shard.key}.parquet"


def manifest_path(manifest: CorpusManifest) -> str:
    """Where a corpus manifest is stored: named by its content, so earlier ones stay readable."""
    return f"corpus/{manifest.corpus_key}/manifest-{digest(*(s.key for s in manifest.shards))[:12]}.json"


GUARD_KINDS = ("query", "document")  # the guard's pseudo-queries, and what is left of their documents


def guard_shard(manifest: CorpusManifest, seed: int, kind: str, rows: int = 0) -> ShardInfo:
    """The guarded weights' pseudo-queries (``kind`` 'query') or their answers ('document'),
    cut from ``manifest``'s corpus with ``seed`` and stored like a corpus shard, so that the
    embedding pool embeds them with each pretrained model (at ``embedding_path(model key,
    shard)``). Named by the corpus manifest and the seed, so a reader can name the files a
    version needs without reading them; ``rows`` is only carried."""
    if kind not in GUARD_KINDS:
        raise ValueError(f"guard kind must be one of {GUARD_KINDS}, got {kind!r}")
    name = "guard-queries" if kind == "query" else "guard-answers"
    info = ShardInfo(name, "", rows, digest(manifest_path(manifest), str(seed), name))
    return replace(info, path=corpus_shard_path(manifest.corpus_key, info))


def model_key(model: str, corpus_key: str, fingerprint: str | None = None, precision: str = "auto") -> str:
    """Folder name of a model's embeddings: fitted encoders are per corpus, pretrained ones
    per weights (``fingerprint``: other weights, other embeddings; None, as stores written
    before fingerprints, names the model only) and per explicit number format (``precision``
    other than ``auto``: ``-bf16``)."""
    if is_fitted(model):
        return f"{slug(model)}-{corpus_key}"
    key = f"{slug(model, 48)}-w{digest(fingerprint)[:12]}" if fingerprint else slug(model)
    return key if precision == "auto" else f"{key}-{precision}"


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
