"""Loading BEIR folders, and what is reported about malformed ones."""

from __future__ import annotations

import numpy as np
import pytest

from cecq.encoders import LexicalEncoder, validate_texts
from cecq.errors import DataError
from cecq.eval.beir import join_title_text, load_beir


def test_load_tiny_beir(tiny_beir, beir_parts):
    corpus, queries, qrels = beir_parts
    task = load_beir(tiny_beir)
    assert task.name == "tinybeir"
    assert task.doc_ids == [d["_id"] for d in corpus]  # file order is kept
    assert len(task.doc_ids) == 61 and len(task.doc_texts) == 61
    i = task.doc_ids.index("astronomy-0")
    assert task.doc_texts[i] == f"{corpus[i]['title']} {corpus[i]['text']}"
    assert task.doc_texts[task.doc_ids.index("empty-doc")] == ""
    assert task.query_ids == [q["_id"] for q in queries]
    assert task.query_texts == [q["text"] for q in queries]
    assert sum(len(r) for r in task.qrels.values()) == len(qrels)
    assert task.qrels["q-cooking-1"]["cooking-1"] == 2 and task.qrels["q-cooking-1"]["cooking-0"] == 1
    assert task.notes == {"empty_documents": 1, "qrels_unknown_documents": 0, "qrels_unknown_queries": 0}


def test_join_title_text():
    assert join_title_text("Title", "body") == "Title body"
    assert join_title_text(None, "body") == "body"
    assert join_title_text("", "") == ""
    assert validate_texts(("a", "")) == ["a", ""]


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_missing_file_is_named(tmp_path, make_beir, beir_parts, missing):
    corpus, queries, qrels = beir_parts
    folder = make_beir(
        tmp_path / "b",
        None if missing == "corpus.jsonl" else corpus,
        None if missing == "queries.jsonl" else queries,
        None if missing.startswith("qrels") else qrels,
    )
    with pytest.raises(DataError, match=missing):
        load_beir(folder)


def test_missing_split_and_folder(tmp_path, tiny_beir):
    with pytest.raises(DataError, match=r"dev\.tsv"):
        load_beir(tiny_beir, split="dev")
    with pytest.raises(DataError, match="nowhere"):
        load_beir(tmp_path / "nowhere")


def test_malformed_json_line_names_file_and_line(tmp_path, make_beir, beir_parts):
    corpus, queries, qrels = beir_parts
    corpus = corpus[:4] + ['{"_id": "broken", "text": "no closing brace"'] + corpus[4:]
    folder = make_beir(tmp_path / "b", corpus, queries, qrels)
    with pytest.raises(DataError, match=r"corpus\.jsonl:5: malformed JSON"):
        load_beir(folder)
    folder = make_beir(tmp_path / "c", beir_parts[0], queries[:2] + ["[1, 2]"], qrels)
    with pytest.raises(DataError, match=r"queries\.jsonl:3: expected a JSON object"):
        load_beir(folder)


def test_duplicate_ids_are_named(tmp_path, make_beir, beir_parts):
    corpus, queries, qrels = beir_parts
    folder = make_beir(tmp_path / "b", corpus + [{"_id": "football-3", "title": "", "text": "again"}], queries, qrels)
    with pytest.raises(DataError, match="football-3"):
        load_beir(folder)
    folder = make_beir(tmp_path / "c", corpus, queries + [{"_id": "q-astronomy-0", "text": "again"}], qrels)
    with pytest.raises(DataError, match="q-astronomy-0"):
        load_beir(folder)


def test_missing_id_and_bad_fields(tmp_path, make_beir, beir_parts):
    corpus, queries, qrels = beir_parts
    folder = make_beir(tmp_path / "a", corpus[:2] + [{"title": "t", "text": "no id"}] + corpus[2:], queries, qrels)
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: missing '_id'"):
        load_beir(folder)
    folder = make_beir(tmp_path / "b", corpus + [{"_id": "x", "text": 17}], queries, qrels)
    with pytest.raises(DataError, match="'text' must be a string"):
        load_beir(folder)
    folder = make_beir(tmp_path / "c", corpus + [{"_id": "y"}], queries, qrels)
    with pytest.raises(DataError, match="'y' has neither"):
        load_beir(folder)
    folder = make_beir(tmp_path / "d", corpus, [{"text": "no id"}] + queries, qrels)
    with pytest.raises(DataError, match=r"queries\.jsonl:1: missing '_id'"):
        load_beir(folder)
    folder = make_beir(tmp_path / "e", [], queries, qrels)
    with pytest.raises(DataError, match="no documents"):
        load_beir(folder)


def test_numeric_ids_become_strings(tmp_path, make_beir):
    folder = make_beir(
        tmp_path / "b",
        [{"_id": 1, "text": "one"}, {"_id": 2, "text": "two"}],
        [{"_id": 10, "text": "q"}],
        [("10", "2", 1)],
    )
    task = load_beir(folder)
    assert task.doc_ids == ["1", "2"] and task.query_ids == ["10"] and task.qrels == {"10": {"2": 1}}


def test_unknown_ids_in_qrels_are_dropped_and_counted(tmp_path, make_beir, beir_parts):
    corpus, queries, qrels = beir_parts
    extra = [("q-astronomy-0", "no-such-doc", 1), ("q-cooking-0", "ghost", 2), ("no-such-query", "cooking-1", 1)]
    folder = make_beir(tmp_path / "b", corpus, queries, qrels + extra)
    task = load_beir(folder)
    assert task.notes["qrels_unknown_documents"] == 2
    assert task.notes["qrels_unknown_queries"] == 1
    assert "no-such-doc" not in task.qrels["q-astronomy-0"] and "ghost" not in task.qrels["q-cooking-0"]
    assert "no-such-query" not in task.qrels
    assert sum(len(r) for r in task.qrels.values()) == len(qrels)


def test_queries_without_positive_judgements_are_dropped(tmp_path, make_beir, beir_parts):
    corpus, queries, qrels = beir_parts
    qrels = [r for r in qrels if r[0] != "q-football-0"] + [("q-football-0", "football-1", 0)]
    folder = make_beir(
        tmp_path / "b", corpus, queries + [{"_id": "lonely", "text": "no judgements"}], qrels, header=False
    )
    task = load_beir(folder)
    assert "q-football-0" not in task.query_ids and "lonely" not in task.query_ids
    assert len(task.query_ids) == len(queries) - 1 == len(task.query_texts)


def test_bad_qrels_rows(tmp_path, make_beir, beir_parts):
    corpus, queries, qrels = beir_parts
    folder = make_beir(tmp_path / "a", corpus, queries, qrels[:3] + [("q-astronomy-0", "astronomy-1", "high")])
    with pytest.raises(DataError, match=r"test\.tsv:5: score 'high'"):
        load_beir(folder)
    folder = make_beir(tmp_path / "b", corpus, queries, qrels)
    with (folder / "qrels" / "test.tsv").open("a") as f:
        f.write("q-astronomy-0\tastronomy-1\n")
    with pytest.raises(DataError, match="3 tab-separated columns"):
        load_beir(folder)
    folder = make_beir(tmp_path / "c", corpus, queries, [("no-such-query", "cooking-1", 1)])
    with pytest.raises(DataError, match="no usable judgements"):
        load_beir(folder)


def test_empty_documents_are_counted(tmp_path, make_beir, beir_parts):
    corpus, queries, qrels = beir_parts
    corpus += [
        {"_id": "blank", "title": " ", "text": "\n"},
        {"_id": "title-only", "title": "moon"},
        {"_id": "n", "title": None, "text": None},
    ]
    task = load_beir(make_beir(tmp_path / "b", corpus, queries, qrels))
    assert task.notes["empty_documents"] == 3  # empty-doc, blank, n (title-only has text)
    assert task.doc_texts[task.doc_ids.index("title-only")] == "moon"


# --- a real collection ------------------------------------------------------------------------


def test_cranfield_empty_documents_encode_without_nan(shared_data):
    folder = shared_data / "cranfield"
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(f"shared Cranfield collection not found at {folder}")
    task = load_beir(folder)
    assert len(task.doc_ids) == 1400
    assert task.notes["empty_documents"] == 2
    empty = [i for i, t in enumerate(task.doc_texts) if not t.strip()]
    assert sorted(task.doc_ids[i] for i in empty) == ["471", "995"]
    assert len(task.query_ids) == 225
    lex = LexicalEncoder.fit(task.doc_texts, dim=32, seed=0)
    rows = list(range(20)) + empty
    v = lex.encode([task.doc_texts[i] for i in rows])
    assert not np.any(np.isnan(v))
    assert np.all(v[20:] == 0.0)
    np.testing.assert_allclose(np.linalg.norm(v[:20], axis=1), 1.0, rtol=1e-5)
