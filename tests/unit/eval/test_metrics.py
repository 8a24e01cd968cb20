"""cecq's scoring through mteb's public API gives mteb's own scores (its private scoring
function is the reference here, and only here)."""

from __future__ import annotations

import random

from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

from cecq.eval.beir import load_beir
from cecq.eval.metrics import ranking_scores


def test_public_api_scores_equal_mtebs_own(tiny_beir):
    task = load_beir(tiny_beir)
    rng = random.Random(0)
    for trial in range(3):
        results = {q: {d: rng.random() for d in rng.sample(task.doc_ids, 20)} for q in task.query_ids}
        for q in task.query_ids[trial::3]:
            results[q].update(dict.fromkeys(task.qrels[q], 2.0))  # some queries find their relevant documents
        ours = ranking_scores(task, results)
        ref = calculate_retrieval_scores(results, task.qrels, [1, 3, 5, 10, 100])
        assert ours == {"ndcg_at_10": ref.ndcg["NDCG@10"], "recall_at_100": ref.recall["Recall@100"]}
