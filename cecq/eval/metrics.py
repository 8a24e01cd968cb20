"""Ranking metrics through mteb's public API: nDCG@10 and recall@100 of
``{query id: {document id: score}}`` against a task's judgements.

The task is wrapped, once, in an in-memory :class:`mteb.abstasks.AbsTaskRetrieval`, and
a search "model" that replays the given results is evaluated on it: the scores are
mteb's own (rounded to 5 decimals, as mteb reports them). Measured on SciFact's 300
test queries: 0.12 s a call, the same as mteb's private scoring function.
"""

from __future__ import annotations

import logging
import random
import sys
from typing import Any

import numpy as np
from datasets import Dataset
from mteb import TaskMetadata
from mteb.abstasks import AbsTaskRetrieval

# mteb logs at INFO on every evaluate ("Running task ...", "Evaluating retrieval scores...").
logging.getLogger("mteb").setLevel(logging.WARNING)

# Same cut-offs the private call used (1 must stay: mteb reports recall@1 as "accuracy").
K_VALUES = (1, 3, 5, 10, 100)
RETRIEVE_K = 100  # documents ranked per query
_SPLIT, _SUBSET = "test", "default"


def _metadata(name: str) -> TaskMetadata:
    return TaskMetadata(
        name=f"cecq-{name}",
        description="In-memory retrieval task built from a cecq task.",
        reference=None,
        dataset={"path": "cecq/in-memory", "revision": "none"},  # never loaded
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[_SPLIT],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation="",
    )


class _InMemoryRetrievalTask(AbsTaskRetrieval):
    """An AbsTaskRetrieval whose data is handed over in memory (no hub, no files)."""

    ignore_identical_ids = False  # query "1" and document "1" are different things
    skip_first_result = False
    k_values = K_VALUES

    def __init__(self, metadata: TaskMetadata, split_data: dict[str, Any]) -> None:
        self.metadata = metadata  # instance attribute: one metadata per cecq task
        self._split_data = split_data
        super().__init__()

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {_SUBSET: {_SPLIT: self._split_data}}
        self.data_loaded = True


class ReplaySearch:
    """A SearchProtocol object that returns precomputed ``{query id: {doc id: score}}``."""

    def __init__(self, results: dict[str, dict[str, float]]) -> None:
        self.results = results

    @property
    def mteb_model_meta(self) -> None:  # required by the protocol; unused without prediction_folder
        return None

    def index(self, corpus, *, task_metadata, hf_split, hf_subset, encode_kwargs, num_proc, **kwargs) -> None:
        pass  # nothing to index: the rankings already exist

    def search(
        self, queries, *, task_metadata, hf_split, hf_subset, top_k, encode_kwargs, top_ranked=None, num_proc, **kwargs
    ) -> dict[str, dict[str, float]]:
        # Only the task's (positive-bearing) queries: mteb drops queries without
        # positives from qrels, and a result for an unknown query would crash its MRR.
        # No top_k cut: the private call scored the full lists too.
        return {qid: self.results[qid] for qid in queries["id"] if qid in self.results}


def _seed_state() -> tuple[Any, ...]:
    torch = sys.modules.get("torch")
    return random.getstate(), np.random.get_state(), torch.get_rng_state() if torch else None


def _restore_seed_state(state: tuple[Any, ...]) -> None:
    py, npy, tch = state
    random.setstate(py)
    np.random.set_state(npy)
    if tch is not None:
        sys.modules["torch"].set_rng_state(tch)


class RetrievalScorer:
    """Scores rankings of one cecq task; build once (``scorer_for``), call ``score`` many times."""

    def __init__(self, task: Any) -> None:
        qrels = {str(q): {str(d): int(r) for d, r in rels.items()} for q, rels in task.qrels.items()}
        qids = [str(q) for q in task.query_ids]
        qtexts = list(task.query_texts)
        # The queries the private function could score are those in qrels; keep every one.
        qtext_of = dict(zip(qids, qtexts))
        qids += [q for q in qrels if q not in qtext_of]
        qtexts += [""] * (len(qids) - len(qtexts))
        split_data = {
            "queries": Dataset.from_dict({"id": qids, "text": qtexts}),
            "corpus": Dataset.from_dict({"id": [str(d) for d in task.doc_ids], "text": list(task.doc_texts)}),
            "relevant_docs": qrels,
            "top_ranked": None,
        }
        state = _seed_state()  # AbsTask.__init__ reseeds random/numpy/torch globally with 42
        try:
            self._task = _InMemoryRetrievalTask(_metadata(str(getattr(task, "name", "task"))), split_data)
        finally:
            _restore_seed_state(state)

    def score_dict(self, results: dict[str, dict[str, float]]) -> dict[str, Any]:
        """All of mteb's retrieval scores (ndcg_at_k, recall_at_k, map_at_k, mrr_at_k, ...)."""
        scores = self._task.evaluate(ReplaySearch(results), split=_SPLIT, encode_kwargs={})
        return dict(scores[_SUBSET])

    def score(self, results: dict[str, dict[str, float]]) -> dict[str, float]:
        s = self.score_dict(results)
        return {"ndcg_at_10": float(s["ndcg_at_10"]), "recall_at_100": float(s["recall_at_100"])}


_SCORERS: dict[int, tuple[Any, RetrievalScorer]] = {}  # id(task) -> (task, its scorer); the task is kept alive
_MAX_SCORERS = 16


def scorer_for(task: Any) -> RetrievalScorer:
    """The cached scorer of ``task`` (keyed by the task object itself, not its contents)."""
    hit = _SCORERS.get(id(task))
    if hit is None or hit[0] is not task:
        if len(_SCORERS) >= _MAX_SCORERS:
            _SCORERS.pop(next(iter(_SCORERS)))
        hit = _SCORERS[id(task)] = (task, RetrievalScorer(task))
    return hit[1]


def ranking_scores(task: Any, results: dict[str, dict[str, float]]) -> dict[str, float]:
    """nDCG@10 and recall@100 of ``{query id: {document id: score}}`` against the task's qrels."""
    return scorer_for(task).score(results)
