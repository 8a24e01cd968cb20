"""Training losses: MRL pairwise-similarity preservation, neighbour-weighted pairs, and the
cross-batch memory term (S-XBM). One function a loss; the strategies combine them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def cosine_matrix(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    x = nn.functional.normalize(x, dim=-1, eps=1e-12)
    return x @ (x if y is None else nn.functional.normalize(y, dim=-1, eps=1e-12)).T


def neighbour_pair_weights(target: torch.Tensor, neighbours: int = 0, boost: float = 0.0) -> torch.Tensor:
    """Weights of the pairs of a batch: 0 on the diagonal, 1 elsewhere, ``1 + boost`` where the
    column is among the row's ``neighbours`` most similar by ``target``. Retrieval only reads
    the top of each ranking, so errors there cost more than errors among unrelated pairs."""
    n = target.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=target.device)
    weights = (~eye).to(target.dtype)
    k = min(neighbours, n - 1)
    if k > 0 and boost > 0:
        top = target.masked_fill(eye, -torch.inf).topk(k, dim=1).indices
        weights.scatter_(1, top, 1.0 + boost)
    return weights


def selection_views(
    outputs: torch.Tensor, sizes: Sequence[int], importance: torch.Tensor | None = None, temperature: float = 0.01
) -> list[torch.Tensor]:
    """The output each size keeps: its prefix, or with learned ``importance`` (ADS) every dim
    softly gated by whether it ranks among the ``size`` most important, so the gate passes
    gradients to the importance scores. Sizes at or above the output dimension keep it all."""
    if importance is None:
        return [outputs[..., :d] for d in sizes]
    ranked = importance.detach().sort(descending=True).values
    views = []
    for d in sizes:
        if d >= outputs.shape[-1]:
            views.append(outputs)
        else:
            cut = (ranked[d - 1] + ranked[d]) / 2
            views.append(outputs * torch.sigmoid((importance - cut) / temperature))
    return views


def mrl_similarity_loss(
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    prefix_sizes: Sequence[int],
    pair_weights: torch.Tensor | None = None,
    importance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over prefix sizes d of the mean squared difference between the in-batch cosine
    similarity matrix of ``inputs`` and that of the normalised d-prefix of ``outputs``,
    diagonal excluded. ``pair_weights`` (n, n) turns the mean into a weighted mean (see
    :func:`neighbour_pair_weights`); ``importance`` selects dims instead of prefixes."""
    n = inputs.shape[0]
    if n < 2:
        raise ValueError("the similarity loss needs at least 2 rows in a batch")
    target = cosine_matrix(inputs)
    weights = neighbour_pair_weights(target) if pair_weights is None else pair_weights
    total = inputs.new_zeros(())
    for view in selection_views(outputs, prefix_sizes, importance):
        diff = cosine_matrix(view) - target
        total = total + (weights * diff.pow(2)).sum() / weights.sum()
    return total


def memory_loss(
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    memory_inputs: torch.Tensor,
    memory_outputs: torch.Tensor,
    sizes: Sequence[int],
    neighbours: int,
    importance: torch.Tensor | None = None,
) -> torch.Tensor:
    """S-XBM: the similarity error between each batch row and its ``neighbours`` most similar
    rows of the memory (by input cosine), summed over sizes. A batch of 512 random documents
    rarely holds a document's true neighbours; the memory of past batches does. The memory's
    outputs are constants (as XBM stores them when enqueued); copies of a batch row in the
    memory (cosine ~1) are skipped."""
    target = cosine_matrix(inputs, memory_inputs)
    candidates = target.masked_fill(target > 1 - 1e-5, -torch.inf)
    hard = candidates.topk(min(neighbours, memory_inputs.shape[0]), dim=1).indices  # (batch, k)
    wanted = target.gather(1, hard)
    valid = torch.isfinite(candidates.gather(1, hard))
    total = inputs.new_zeros(())
    picked = memory_outputs[hard]  # (batch, k, out_dim): only the pairs scored, not the whole memory
    for view, mem_view in zip(selection_views(outputs, sizes, importance), selection_views(picked, sizes, importance)):
        got = torch.einsum(
            "bd,bkd->bk",
            nn.functional.normalize(view, dim=-1, eps=1e-12),
            nn.functional.normalize(mem_view, dim=-1, eps=1e-12),
        )
        total = total + ((got - wanted).pow(2) * valid).sum() / valid.sum().clamp(min=1)
    return total
