"""The training loop: a decoder trained without labels on corpus embeddings, with the
strategy a :class:`~cecq.config.DecoderConfig` selects."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cecq.config import DecoderConfig
from cecq.decoder.losses import cosine_matrix, memory_loss, mrl_similarity_loss, neighbour_pair_weights
from cecq.decoder.model import Decoder, output_layer
from cecq.decoder.strategies import (
    ADS_LR_SCALE,
    MemoryQueue,
    apply_selection,
    initial_importance,
    pca_initialise,
    training_stages,
)
from cecq.killpoints import kill_point

logger = logging.getLogger(__name__)

# ``(epochs done, epochs at most, detail)``: fractional within an epoch, detail e.g. the validation loss
TrainingProgress = Callable[[float, float, str], None]


@dataclass
class TrainingStats:
    train_rows: int
    val_rows: int
    epochs: int = 0
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stages: list[int] = field(default_factory=list)  # sequential MRL: the size each stage added
    dim_order: list[int] | None = None  # ADS: original output dims, most important first


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    out = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    # A tiny last batch gives a noisy similarity matrix: fold it into the previous one.
    if len(out) > 1 and len(out[-1]) < 4:
        out[-2] = torch.cat([out[-2], out.pop()])
    return out


@dataclass
class _Objective:
    """The training loss of one stage, built from a DecoderConfig."""

    sizes: tuple[int, ...]
    config: DecoderConfig
    importance: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weights = None
        if self.config.loss == "neighbours":
            weights = neighbour_pair_weights(cosine_matrix(x), self.config.neighbours, self.config.neighbour_weight)
        return mrl_similarity_loss(x, y, self.sizes, weights, self.importance)


def _evaluate(decoder: Decoder, data: torch.Tensor, objective: _Objective, batch_size: int) -> float:
    decoder.eval()
    with torch.no_grad():
        losses = [float(objective(data[idx], decoder(data[idx]))) for idx in _batches(len(data), batch_size, None)]
    return float(np.mean(losses))


def _split_rows(
    embeddings: np.ndarray, config: DecoderConfig, rng: np.random.Generator, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked training rows, capped at ``max_train_rows``, split into (train, validation)."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 8:
        raise ValueError(f"need a 2-D array of at least 8 rows to train the decoder, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("training embeddings contain NaN or infinity")
    if x.shape[0] > config.max_train_rows:
        x = x[np.sort(rng.choice(x.shape[0], config.max_train_rows, replace=False))]
    perm = rng.permutation(x.shape[0])
    n_val = round(x.shape[0] * config.val_fraction) if config.val_fraction > 0 else 0
    n_val = min(n_val, x.shape[0] - 4)
    return torch.from_numpy(x[perm[n_val:]]).to(device), torch.from_numpy(x[perm[:n_val]]).to(device)


class _Trainer:
    """The state training carries across stages: the decoder, ADS importance scores, the
    S-XBM memory, the batch order generator and the statistics."""

    def __init__(self, decoder: Decoder, train: torch.Tensor, val: torch.Tensor, config: DecoderConfig, device: str):
        self.decoder, self.train, self.config = decoder, train, config
        self.val = val if len(val) >= 2 else train
        self.in_dim = train.shape[1]
        self.importance = nn.Parameter(initial_importance(decoder, train)) if config.selection == "ads" else None
        # S-XBM keeps each past row's input and its output when it was enqueued (not recomputed:
        # decoding the whole memory every step would cost more than the batch itself).
        self.memory = (
            MemoryQueue(config.memory_size, self.in_dim + decoder.out_dim, device) if config.memory_size else None
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.stats = TrainingStats(train_rows=len(train), val_rows=len(val))
        self.layer = output_layer(decoder)
        self.device = device
        self.progress: TrainingProgress | None = None
        self.max_epochs = float(config.max_epochs)
        self.detail = ""

    def snapshot(self) -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone() for k, v in self.decoder.state_dict().items()}
        if self.importance is not None:
            state["importance"] = self.importance.detach().clone()
        return state

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        self.decoder.load_state_dict({k: v for k, v in state.items() if k != "importance"})
        if self.importance is not None:
            with torch.no_grad():
                self.importance.copy_(state["importance"])

    def optimizer(self) -> torch.optim.Optimizer:
        groups: list[dict[str, Any]] = [{"params": list(self.decoder.parameters())}]
        if self.importance is not None:
            groups.append({"params": [self.importance], "lr": self.config.lr * ADS_LR_SCALE, "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def epoch(
        self,
        objective: _Objective,
        opt: torch.optim.Optimizer,
        sizes: tuple[int, ...],
        frozen: torch.Tensor,
        frozen_values: tuple[torch.Tensor, torch.Tensor],
    ) -> float:
        """One pass over the training rows; the mean batch loss."""
        config, decoder, memory = self.config, self.decoder, self.memory
        decoder.train()
        losses = []
        batches = _batches(len(self.train), config.batch_size, self.generator)
        for step, idx in enumerate(batches):
            if self.progress:
                self.progress(self.stats.epochs + step / len(batches), self.max_epochs, self.detail)
            batch = self.train[idx]
            out = decoder(batch)
            loss = objective(batch, out)
            if memory is not None and len(memory):
                past = memory.rows()
                loss = loss + config.memory_weight * memory_loss(
                    batch,
                    out,
                    past[:, : self.in_dim],
                    past[:, self.in_dim :],
                    sizes,
                    config.memory_neighbours,
                    self.importance,
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if len(frozen):
                # AdamW's weight decay moves rows even without gradient: put frozen rows back.
                with torch.no_grad():
                    self.layer.weight[frozen], self.layer.bias[frozen] = frozen_values
            if memory is not None:
                memory.enqueue(torch.cat([batch, out.detach()], dim=1))
            losses.append(loss.item())
        return float(np.mean(losses))

    def stage(self, sizes: tuple[int, ...], n_trainable: int, show_progress: bool) -> None:
        """Train the output dims a stage may change until validation stops improving; keep
        the best weights (the stage's starting point is a candidate too)."""
        from tqdm.auto import tqdm  # heavy: tqdm.auto probes for notebooks

        config, stats, importance = self.config, self.stats, self.importance
        objective = _Objective(sizes, config, importance)
        out_dim = self.decoder.out_dim
        order = (
            torch.argsort(importance.detach(), descending=True)
            if importance is not None
            else torch.arange(out_dim, device=self.device)
        )
        frozen = order[n_trainable:]
        frozen_values = (self.layer.weight[frozen].detach().clone(), self.layer.bias[frozen].detach().clone())
        opt = self.optimizer()
        best_loss, best_state, bad_epochs = (
            _evaluate(self.decoder, self.val, objective, config.batch_size),
            self.snapshot(),
            0,
        )
        stats.stages.append(min(sizes))
        bar = tqdm(
            range(config.max_epochs), desc=f"train decoder ({min(sizes)})", unit="epoch", disable=not show_progress
        )
        for _ in bar:
            stats.train_loss.append(self.epoch(objective, opt, sizes, frozen, frozen_values))
            val_loss = _evaluate(self.decoder, self.val, objective, config.batch_size)
            stats.val_loss.append(val_loss)
            stats.epochs += 1
            kill_point("training")  # crash tests: provably while the decoder trains
            bar.set_postfix(train=f"{stats.train_loss[-1]:.5f}", val=f"{val_loss:.5f}")
            self.detail = f"train loss {stats.train_loss[-1]:.5f}, val loss {val_loss:.5f}"
            if self.progress:
                self.progress(stats.epochs, self.max_epochs, self.detail)
            if val_loss < best_loss - 1e-7:
                best_loss, best_state, bad_epochs = val_loss, self.snapshot(), 0
                stats.best_epoch = stats.epochs
            else:
                bad_epochs += 1
                if bad_epochs >= config.patience:
                    break
        self.restore(best_state)
        stats.best_val_loss = best_loss


def train_decoder(
    embeddings: np.ndarray,
    config: DecoderConfig = DecoderConfig(),
    show_progress: bool = False,
    device: str | None = None,
    progress: TrainingProgress | None = None,
) -> tuple[Decoder, TrainingStats]:
    """Train a decoder on (a sample of) corpus embeddings with the MRL similarity loss and
    the strategy ``config`` selects (loss weighting, sequential MRL, ADS, S-XBM memory).

    Holds out ``config.val_fraction`` of the rows; each stage stops when its validation loss
    has not improved for ``config.patience`` epochs and keeps its best weights. Reproducible
    for a fixed ``config.seed`` on the same device. ``progress`` is told the epochs done
    (fractional within an epoch), the most there can be and the latest losses.
    """
    started = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    train, val = _split_rows(embeddings, config, np.random.default_rng(config.seed), device)
    torch.manual_seed(config.seed)
    decoder = Decoder(train.shape[1], config.out_dim, config.kind, config.hidden_dim).to(device)
    if config.init == "pca" and config.kind == "linear":
        pca_initialise(decoder, train)
    trainer = _Trainer(decoder, train, val, config, device)
    stages = training_stages(config.effective_prefix_sizes(config.out_dim), config.sequential)
    trainer.progress, trainer.max_epochs = progress, float(config.max_epochs * len(stages))
    for sizes, n_trainable in stages:
        trainer.stage(sizes, n_trainable, show_progress)
    stats = trainer.stats
    if progress:  # early stopping ends training before the most epochs
        progress(
            trainer.max_epochs, trainer.max_epochs, f"{stats.epochs} epochs, best val loss {stats.best_val_loss:.5f}"
        )
    if trainer.importance is not None:
        stats.dim_order = apply_selection(decoder, trainer.importance)
    decoder.eval()
    stats.seconds = time.perf_counter() - started
    logger.info(
        "decoder trained: %d epochs over %d stage(s), val loss %.5f, %.1fs",
        stats.epochs,
        len(stats.stages),
        stats.best_val_loss,
        stats.seconds,
    )
    return decoder.cpu(), stats
