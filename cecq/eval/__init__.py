"""Evaluation on retrieval tasks: BEIR folders (``beir``), mteb's scoring (``metrics``), the
evaluation of base models, their concatenation and compressed variants (``evaluate``), and
the baselines they are compared with (``baselines``). Only ``beir`` is imported here: the
others pull in mteb (8 s to import), so callers import them where they need them."""

from cecq.eval.beir import RetrievalTask, join_title_text, load_beir

__all__ = ["RetrievalTask", "join_title_text", "load_beir"]
