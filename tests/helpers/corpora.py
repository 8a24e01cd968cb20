"""Small JSONL corpora for pipeline tests, and what a store publishes."""

from __future__ import annotations

import json
from pathlib import Path

from cecq.catalog import connect
from cecq.storage import Store
from tests.helpers.models import TOPICS


def write_corpus(path: Path, n: int = 45, edits: dict[int, str] | None = None, extra: int = 0) -> list[dict]:
    topics = list(TOPICS.values())
    docs = []
    for i in range(n + extra):
        words = topics[i % len(topics)]
        docs.append(
            {"_id": f"d{i:03d}", "title": words[i % 7], "text": " ".join(words[(i + j) % len(words)] for j in range(9))}
        )
    docs[3]["text"] = ""  # an empty document travels through the pipeline as a zero vector
    for i, text in (edits or {}).items():
        docs[i]["text"] = text
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return docs


def published(store: Path) -> dict[str, bytes]:
    return dict(connect(Store(str(store))).execute("SELECT id, code FROM documents").fetchall())
