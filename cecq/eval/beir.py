"""Reading retrieval tasks in the BEIR layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cecq.errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class RetrievalTask:
    """A retrieval task: documents, queries and graded relevance judgements."""

    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    notes: dict[str, int] = field(default_factory=dict)


def join_title_text(title: str | None, text: str | None) -> str:
    """BEIR / MTEB document text: ``"{title} {text}"`` stripped."""
    return f"{title or ''} {text or ''}".strip()


def check_unique_ids(ids: Sequence[str], source: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise DataError(f"duplicate id {i!r} in {source}")
        seen.add(i)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _id_of(obj: dict, path: Path, lineno: int) -> str:
    if "_id" not in obj or obj["_id"] is None:
        raise DataError(f"{path}:{lineno}: missing '_id'")
    return str(obj["_id"])


def _text_of(obj: dict, key: str, path: Path, lineno: int) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise DataError(f"{path}:{lineno}: '{key}' must be a string, got {type(value).__name__}")
    return value


def read_beir_corpus(path: Path) -> tuple[list[str], list[str], int]:
    """Read ``corpus.jsonl``: ids, title+text joined, and how many texts are empty."""
    ids: list[str] = []
    texts: list[str] = []
    for lineno, obj in _read_jsonl(path):
        ids.append(_id_of(obj, path, lineno))
        if "text" not in obj and "title" not in obj:
            raise DataError(f"{path}:{lineno}: document {ids[-1]!r} has neither 'text' nor 'title'")
        texts.append(join_title_text(_text_of(obj, "title", path, lineno), _text_of(obj, "text", path, lineno)))
    check_unique_ids(ids, str(path))
    return ids, texts, sum(1 for t in texts if not t.strip())


def load_beir(folder: str | Path, split: str = "test") -> RetrievalTask:
    """Load a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``).

    Only queries with at least one judgement are kept. Judgements that name an unknown
    document or query are dropped with a warning and counted in ``notes``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"BEIR folder not found: {root}")
    corpus_path, queries_path, qrels_path = (
        root / "corpus.jsonl",
        root / "queries.jsonl",
        root / "qrels" / f"{split}.tsv",
    )
    for p in (corpus_path, queries_path, qrels_path):
        if not p.is_file():
            raise DataError(f"BEIR folder {root} is missing {p.relative_to(root)}")

    doc_ids, doc_texts, empty_docs = read_beir_corpus(corpus_path)
    if not doc_ids:
        raise DataError(f"{corpus_path} holds no documents")
    queries: dict[str, str] = {}
    for lineno, obj in _read_jsonl(queries_path):
        qid = _id_of(obj, queries_path, lineno)
        if qid in queries:
            raise DataError(f"duplicate id {qid!r} in {queries_path}")
        queries[qid] = _text_of(obj, "text", queries_path, lineno) or ""

    known_docs = set(doc_ids)
    qrels: dict[str, dict[str, int]] = {}
    unknown_docs = unknown_queries = 0
    with qrels_path.open("r", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        for lineno, row in enumerate(reader, start=1):
            if not row or (lineno == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid")):
                continue
            if len(row) < 3:
                raise DataError(f"{qrels_path}:{lineno}: expected 3 tab-separated columns, got {len(row)}")
            qid, did, score = row[0].strip(), row[1].strip(), row[2].strip()
            try:
                rel = int(float(score))
            except ValueError:
                raise DataError(f"{qrels_path}:{lineno}: score {score!r} is not a number") from None
            if did not in known_docs:
                unknown_docs += 1
                continue
            if qid not in queries:
                unknown_queries += 1
                continue
            qrels.setdefault(qid, {})[did] = rel
    if unknown_docs or unknown_queries:
        logger.warning(
            "%s: dropped %d judgements naming unknown documents and %d naming unknown queries",
            qrels_path,
            unknown_docs,
            unknown_queries,
        )
    qrels = {q: r for q, r in qrels.items() if any(v > 0 for v in r.values())}
    if not qrels:
        raise DataError(f"{qrels_path} has no usable judgements (none with score > 0 for known ids)")
    query_ids = [q for q in queries if q in qrels]
    return RetrievalTask(
        name=root.name,
        doc_ids=doc_ids,
        doc_texts=doc_texts,
        query_ids=query_ids,
        query_texts=[queries[q] for q in query_ids],
        qrels=qrels,
        notes={
            "empty_documents": empty_docs,
            "qrels_unknown_documents": unknown_docs,
            "qrels_unknown_queries": unknown_queries,
        },
    )


def load_beir_corpus(folder: str | Path) -> RetrievalTask:
    """Only the documents of a BEIR folder (``corpus.jsonl``): a task without queries or
    judgements, to fit on (its queries and qrels, if any, are never read)."""
    root = Path(folder)
    corpus_path = root / "corpus.jsonl"
    if not root.is_dir():
        raise DataError(f"BEIR folder not found: {root}")
    if not corpus_path.is_file():
        raise DataError(f"BEIR folder {root} is missing corpus.jsonl")
    doc_ids, doc_texts, empty_docs = read_beir_corpus(corpus_path)
    if not doc_ids:
        raise DataError(f"{corpus_path} holds no documents")
    return RetrievalTask(root.name, doc_ids, doc_texts, [], [], {}, notes={"empty_documents": empty_docs})
