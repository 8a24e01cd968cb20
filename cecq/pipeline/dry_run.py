"""``cecq reindex --dry-run``: what a reindex would embed, reuse and delete, and whether the
decoder policy would retrain, computed from the corpus and the store without writing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cecq.catalog.layout import embedding_path, model_key
from cecq.catalog.records import CatalogManifest, CorpusManifest, ShardInfo
from cecq.config import PipelineConfig
from cecq.encoders import model_fingerprint
from cecq.pipeline.corpus import shard_corpus
from cecq.pipeline.publish import choose_compressor
from cecq.pipeline.summary import DocumentChanges, compare_documents, id_hashes
from cecq.storage import Store


@dataclass
class ModelPlan:
    model: str
    embed: int  # documents the model would embed
    reuse: int  # documents whose vectors would be reused (committed shard, or same id and text)


@dataclass
class ReindexPlan:
    """What ``reindex`` would do, and why."""

    store: str
    corpus: str
    published_version: int
    documents: int
    shards: int
    changes: DocumentChanges
    models: list[ModelPlan] = field(default_factory=list)
    decoder_policy: str = "auto"
    changed_fraction: float = 0.0
    retrain: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        c = self.changes
        lines = [
            f"dry run: reindex {self.corpus} into {self.store} (published v{self.published_version}); nothing written",
            "",
            f"  documents   {self.documents:,} in {self.shards} shards: {c.new:,} new, {c.changed:,} changed, "
            f"{c.unchanged:,} unchanged, {c.deleted:,} deleted (leave the next version)",
        ]
        lines += [f"  {m.model}: embed {m.embed:,}, reuse {m.reuse:,}" for m in self.models]
        verdict = "retrain the decoder and quantizer" if self.retrain else "reuse the published decoder and quantizer"
        lines += [f"  decoder     --decoder-policy {self.decoder_policy}: {verdict} ({self.reason})"]
        return "\n".join(lines)


def plan_reindex(store: Store, config: PipelineConfig, previous: CatalogManifest) -> ReindexPlan:
    """Shard ``config.corpus`` in memory and compare it with the store's published version."""
    seen: list[tuple[ShardInfo, list[str], list[str]]] = []
    manifest = shard_corpus(
        config.corpus,
        store,
        config.shard_rows,
        config.id_column,
        list(config.text_columns) if config.text_columns else None,
        on_shard=lambda info, ids, hashes: seen.append((info, ids, hashes)),
        write=False,
    )
    before = CorpusManifest.from_dict(store.read_json(previous.corpus_manifest))
    prev_by_name = {s.name: s for s in before.shards}
    old = id_hashes(store, [s.path for s in before.shards])
    now = {i: h for _, ids, hashes in seen for i, h in zip(ids, hashes)}
    changes = compare_documents(old, now)
    models = []
    fingerprints = [model_fingerprint(m) for m in config.models]
    for model, fingerprint in zip(config.models, fingerprints):
        mkey = model_key(model, manifest.corpus_key, fingerprint, config.precision)  # other weights: nothing to reuse
        embed = reuse = 0
        for info, ids, hashes in seen:
            if store.exists(embedding_path(mkey, info)):
                reuse += info.rows
                continue
            prev = prev_by_name.get(info.name)  # reindex reuses vectors from the shard of the same name
            reusable = prev is not None and store.exists(embedding_path(mkey, prev))
            known = id_hashes(store, [prev.path]) if reusable else {}
            hits = sum(1 for i, h in zip(ids, hashes) if known.get(i) == h)
            reuse, embed = reuse + hits, embed + info.rows - hits
        models.append(ModelPlan(model, embed, reuse))
    changed = max((m.embed for m in models), default=0) / max(1, manifest.rows)
    reused = choose_compressor(config, previous, changed, fingerprints)
    if config.decoder_policy == "auto":
        share = f"{100 * changed:.1f}% of documents would be embedded, the limit is {100 * config.retrain_fraction:g}%"
    else:
        share = f"policy {config.decoder_policy}"
    return ReindexPlan(
        store=store.url,
        corpus=manifest.corpus_url,  # redacted
        published_version=previous.version,
        documents=manifest.rows,
        shards=len(manifest.shards),
        changes=changes,
        models=models,
        decoder_policy=config.decoder_policy,
        changed_fraction=round(changed, 4),
        retrain=reused is None,
        reason=share,
    )
