"""Small BEIR folders: a synthetic topical task, and a writer for (often broken) folders."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from tests.helpers.models import COMMON_WORDS, TOPICS

Line = dict | str  # a JSON object, or a raw line written verbatim (to make malformed files)


def write_beir(
    folder: Path,
    corpus: Sequence[Line] | None,
    queries: Sequence[Line] | None,
    qrels: Sequence[tuple[str, str, int | str]] | None,
    split: str = "test",
    header: bool = True,
) -> Path:
    """Write a BEIR folder; ``None`` for a part leaves that file out."""
    folder.mkdir(parents=True, exist_ok=True)

    def lines(items: Sequence[Line]) -> str:
        return "".join((it if isinstance(it, str) else json.dumps(it)) + "\n" for it in items)

    if corpus is not None:
        (folder / "corpus.jsonl").write_text(lines(corpus), encoding="utf-8")
    if queries is not None:
        (folder / "queries.jsonl").write_text(lines(queries), encoding="utf-8")
    if qrels is not None:
        (folder / "qrels").mkdir(exist_ok=True)
        rows = (["query-id\tcorpus-id\tscore"] if header else []) + ["\t".join(map(str, r)) for r in qrels]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def synthetic_beir_parts(docs_per_topic: int = 12, seed: int = 0):
    """Corpus, queries and qrels of the synthetic topical task (plus one empty document)."""
    rng = random.Random(seed)
    corpus: list[dict] = []
    queries: list[dict] = []
    qrels: list[tuple[str, str, int]] = []
    for topic, words in TOPICS.items():
        ids = []
        for i in range(docs_per_topic):
            body = rng.choices(words, k=10) + rng.choices(COMMON_WORDS[:20], k=4)
            rng.shuffle(body)
            did = f"{topic}-{i}"
            ids.append(did)
            corpus.append(
                {"_id": did, "title": f"{words[i % len(words)]} {words[(i + 3) % len(words)]}", "text": " ".join(body)}
            )
        for j in range(2):
            qid = f"q-{topic}-{j}"
            queries.append({"_id": qid, "text": " ".join(rng.sample(words, 3))})
            for k, did in enumerate(ids):
                qrels.append((qid, did, 2 if k % 3 == j else 1))
    corpus.insert(17, {"_id": "empty-doc", "title": "", "text": ""})
    return corpus, queries, qrels


def small_eval_config(model_dir: Path, **overrides):
    """A quick ``cecq eval`` configuration on the tiny model and the lexical view: 8 dims at 1
    bit and a 2-byte budget, asymmetric scoring, a 16-dim decoder trained for 2 epochs."""
    from cecq.config import DecoderConfig, EvalConfig, ModelSpec

    base = {
        "models": (ModelSpec(str(model_dir), device="cpu"), ModelSpec("lexical")),
        "dims": (8,),
        "bits": (1,),
        "scorings": ("asymmetric",),
        "decoder": DecoderConfig(out_dim=16, max_epochs=2, batch_size=16),
        "budgets": (2,),
    }
    return EvalConfig(**{**base, **overrides})


def lexical_eval_config(**overrides):
    """The quickest ``cecq eval`` configuration: the lexical view alone (24 dims), 8 dims at
    2 bits, asymmetric scoring, a decoder trained for 2 epochs."""
    from cecq.config import DecoderConfig, EvalConfig, ModelSpec

    base = {
        "models": (ModelSpec("lexical", dim=24),),
        "dims": (8,),
        "bits": (2,),
        "scorings": ("asymmetric",),
        "decoder": DecoderConfig(max_epochs=2),
    }
    return EvalConfig(**{**base, **overrides})
