"""Distil a static (bag-of-token-vectors) model from a sentence-transformers model.

The model2vec recipe that sentence-transformers' ``StaticEmbedding.from_distillation`` runs,
done here with the libraries cecq already pins (model2vec's distillation extra pins an older
transformers): every vocabulary token goes through the transformer on its own
(``[CLS] token [SEP]``, mean-pooled), the token vectors are reduced by PCA, and each is
scaled by a SIF weight from its Zipf rank (token ids of BERT-style vocabularies run roughly
from frequent to rare). The result is a plain sentence-transformers folder holding one
``StaticEmbedding`` module, loaded like any other base model: a different, much cheaper view
of the same text, which the concatenation can use as another base model.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from cecq.encoders.sentence_transformer import resolve_model

logger = logging.getLogger(__name__)

SKIPPED_TOKENS = re.compile(r"\[unused\d+\]")


def sif_weights(n: int, coefficient: float) -> np.ndarray:
    """SIF weight a / (a + p) of tokens at Zipf ranks 1..n, p the Zipf probability."""
    inv_rank = 1.0 / np.arange(2, n + 2)
    return coefficient / (coefficient + inv_rank / inv_rank.sum())


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    """``x`` projected on its top ``dims`` principal components, signs fixed for determinism."""
    centred = x - x.mean(axis=0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    scores = centred @ vecs[:, ::-1][:, :dims]
    signs = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(scores.shape[1])])
    return scores * np.where(signs == 0, 1, signs)


def distill_static(
    model: str,
    out_dir: str | Path,
    pca_dims: int = 256,
    sif_coefficient: float = 1e-4,
    batch_size: int = 512,
    device: str = "cpu",
) -> Path:
    """Write a static model distilled from ``model`` (hub id or folder) to ``out_dir``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tqdm.auto import tqdm

    if not 0 < sif_coefficient < 1:
        raise ValueError(f"sif_coefficient must be in (0, 1), got {sif_coefficient}")
    if pca_dims < 1:
        raise ValueError(f"pca_dims must be >= 1, got {pca_dims}")
    teacher = SentenceTransformer(resolve_model(model), device=device)
    transformer = teacher[0]
    tokenizer = getattr(transformer, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    cls_id, sep_id = getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None)
    if backend is None or cls_id is None or sep_id is None:
        raise ValueError(f"{model}: distillation needs a BERT-style model with a fast tokenizer ([CLS] and [SEP])")
    special = set(tokenizer.all_special_ids)
    vocab_size = len(tokenizer)
    keep = [
        i
        for tok, i in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        if i not in special and not SKIPPED_TOKENS.fullmatch(tok)
    ]
    if pca_dims > transformer.get_embedding_dimension():
        raise ValueError(f"pca_dims {pca_dims} exceeds the model's {transformer.get_embedding_dimension()} dims")

    hf = transformer.auto_model.eval()
    vectors = np.empty((len(keep), transformer.get_embedding_dimension()), dtype=np.float32)
    with torch.inference_mode():
        # Every sequence is [CLS] token [SEP]: equal lengths, so no padding and no mask.
        for start in tqdm(range(0, len(keep), batch_size), desc=f"distilling {Path(model).name}", unit="batch"):
            ids = torch.tensor([[cls_id, i, sep_id] for i in keep[start : start + batch_size]], device=device)
            hidden = hf(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
            vectors[start : start + len(ids)] = hidden.float().mean(dim=1).cpu().numpy()
    reduced = pca(vectors.astype(np.float64), pca_dims) * sif_weights(len(keep), sif_coefficient)[:, None]
    table = np.zeros((vocab_size, pca_dims), dtype=np.float32)  # skipped tokens embed as zero
    table[keep] = reduced

    backend = type(backend).from_str(backend.to_str())  # a copy: the teacher keeps its settings
    backend.no_truncation()
    backend.no_padding()
    student = SentenceTransformer(modules=[StaticEmbedding(backend, embedding_weights=table)], device="cpu")
    out = Path(out_dir)
    student.save(str(out))
    logger.info("distilled %s: %d tokens x %d dims -> %s", model, len(keep), pca_dims, out)
    return out
