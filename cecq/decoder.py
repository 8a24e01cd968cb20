"""The decoder: a small network from the concatenated dimension to a Matryoshka output,
trained without labels to preserve the pairwise cosine similarities of its input."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cecq.config import DecoderConfig

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "decoder.safetensors"
CONFIG_FILE = "decoder.json"


class DimensionMismatchError(ValueError):
    """The decoder's input dimension does not match the embeddings given to it."""


class Decoder(nn.Module):
    """Linear map (or one-hidden-layer MLP) from ``in_dim`` to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "linear", hidden_dim: int = 1024):
        super().__init__()
        self.in_dim, self.out_dim, self.kind, self.hidden_dim = in_dim, out_dim, kind, hidden_dim
        if kind == "linear":
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        else:
            raise ValueError(f"decoder kind must be 'linear' or 'mlp', got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise DimensionMismatchError(f"decoder expects inputs of dimension {self.in_dim}, got {x.shape[-1]}")
        return self.net(x)

    def prefix(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """The first ``dim`` outputs only: the last layer's other rows are never computed
        (a 256-prefix of a 512-wide linear decoder is half the multiply)."""
        if x.shape[-1] != self.in_dim:
            raise DimensionMismatchError(f"decoder expects inputs of dimension {self.in_dim}, got {x.shape[-1]}")
        last = self.net if self.kind == "linear" else self.net[-1]
        h = x if self.kind == "linear" else self.net[1](self.net[0](x))
        return nn.functional.linear(h, last.weight[:dim], last.bias[:dim])


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


def selection_views(outputs: torch.Tensor, sizes: Sequence[int], importance: torch.Tensor | None = None,
                    temperature: float = 0.01) -> list[torch.Tensor]:
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


def mrl_similarity_loss(inputs: torch.Tensor, outputs: torch.Tensor, prefix_sizes: Sequence[int],
                        pair_weights: torch.Tensor | None = None, importance: torch.Tensor | None = None) -> torch.Tensor:
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


def memory_loss(inputs: torch.Tensor, outputs: torch.Tensor, memory_inputs: torch.Tensor, memory_outputs: torch.Tensor,
                sizes: Sequence[int], neighbours: int, importance: torch.Tensor | None = None) -> torch.Tensor:
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
        got = torch.einsum("bd,bkd->bk", nn.functional.normalize(view, dim=-1, eps=1e-12),
                           nn.functional.normalize(mem_view, dim=-1, eps=1e-12))
        total = total + ((got - wanted).pow(2) * valid).sum() / valid.sum().clamp(min=1)
    return total


class MemoryQueue:
    """A first-in first-out queue of the last ``size`` rows seen (S-XBM's cross-batch memory)."""

    def __init__(self, size: int, dim: int, device: str | torch.device = "cpu"):
        if size < 1:
            raise ValueError(f"memory size must be >= 1, got {size}")
        self.size = size
        self.buffer = torch.zeros(size, dim, device=device)
        self.filled = 0
        self.head = 0  # where the next row goes; once full, also the oldest row

    def __len__(self) -> int:
        return self.filled

    def enqueue(self, rows: torch.Tensor) -> None:
        rows = rows.detach()[-self.size:]  # only the newest `size` rows can survive
        idx = (self.head + torch.arange(len(rows), device=self.buffer.device)) % self.size
        self.buffer[idx] = rows.to(self.buffer.device, self.buffer.dtype)
        self.head = (self.head + len(rows)) % self.size
        self.filled = min(self.size, self.filled + len(rows))

    def rows(self) -> torch.Tensor:
        """The stored rows, oldest first."""
        if self.filled < self.size:
            return self.buffer[:self.filled]
        return torch.cat([self.buffer[self.head:], self.buffer[:self.head]])


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
    out = [order[i:i + batch_size] for i in range(0, n, batch_size)]
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


def pca_initialise(decoder: Decoder, x: torch.Tensor) -> None:
    """Set a linear decoder to the uncentred PCA projection of ``x``: the top principal
    directions come first, so every prefix is the best linear map of its size for dot
    products, a good start for the MRL loss. Output dims beyond the input's stay random."""
    if decoder.kind != "linear":
        raise ValueError("PCA initialisation applies to linear decoders")
    second_moment = (x.T @ x) / x.shape[0]
    eigvals, eigvecs = torch.linalg.eigh(second_moment.double())
    top = eigvecs[:, torch.argsort(eigvals, descending=True)].T.float()  # (in_dim, in_dim), rows = directions
    n = min(decoder.out_dim, top.shape[0])
    with torch.no_grad():
        decoder.net.weight[:n] = top[:n].to(decoder.net.weight.device)
        decoder.net.bias.zero_()


def output_layer(decoder: Decoder) -> nn.Linear:
    """The layer whose rows are the decoder's output dims."""
    return decoder.net if decoder.kind == "linear" else decoder.net[-1]


# ADS importance scores start spaced this far apart in the order of the outputs' second
# moments (for a PCA start: the prefix order), with gates as soft as one spacing.
ADS_SPACING = 0.01
ADS_LR_SCALE = 5.0


def initial_importance(decoder: Decoder, x: torch.Tensor) -> torch.Tensor:
    """ADS's starting importance: decreasing in each output dim's mean square on ``x``."""
    with torch.no_grad():
        energy = decoder(x).pow(2).mean(0)
    ranks = torch.empty_like(energy)
    ranks[torch.argsort(energy, descending=True)] = torch.arange(len(energy), dtype=energy.dtype, device=energy.device)
    return -ADS_SPACING * ranks


def apply_selection(decoder: Decoder, importance: torch.Tensor) -> list[int]:
    """Reorder the decoder's output dims by decreasing ``importance``, so every prefix that
    :func:`decode` keeps is the most important set of its size (and the saved weights need
    nothing more to reproduce the selection). Returns the original index of each new dim."""
    order = torch.argsort(importance.detach().cpu(), descending=True, stable=True)
    layer = output_layer(decoder)
    with torch.no_grad():
        layer.weight.copy_(layer.weight[order.to(layer.weight.device)])
        layer.bias.copy_(layer.bias[order.to(layer.bias.device)])
    return order.tolist()


def training_stages(sizes: Sequence[int], sequential: bool) -> list[tuple[tuple[int, ...], int]]:
    """``(loss sizes, trainable output dims)`` per stage. Joint MRL is one stage over every
    size. Sequential MRL (SMEC) trains the largest size alone first, then adds the next
    smaller size while freezing the dims it drops, and so on down: each stage tunes only
    the dims every smaller size still shares, keeping the larger sizes in the loss."""
    desc = sorted(set(sizes), reverse=True)
    if not sequential:
        return [(tuple(desc), desc[0])]
    return [(tuple(desc[:i + 1]), desc[i]) for i in range(len(desc))]


def train_decoder(embeddings: np.ndarray, config: DecoderConfig = DecoderConfig(), show_progress: bool = False,
                  device: str | None = None) -> tuple[Decoder, TrainingStats]:
    """Train a decoder on (a sample of) corpus embeddings with the MRL similarity loss and
    the strategy ``config`` selects (loss weighting, sequential MRL, ADS, S-XBM memory).

    Holds out ``config.val_fraction`` of the rows; each stage stops when its validation loss
    has not improved for ``config.patience`` epochs and keeps its best weights. Reproducible
    for a fixed ``config.seed`` on the same device.
    """
    from tqdm.auto import tqdm

    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 8:
        raise ValueError(f"need a 2-D array of at least 8 rows to train the decoder, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("training embeddings contain NaN or infinity")
    started = time.perf_counter()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(config.seed)
    if x.shape[0] > config.max_train_rows:
        x = x[np.sort(rng.choice(x.shape[0], config.max_train_rows, replace=False))]
    perm = rng.permutation(x.shape[0])
    n_val = int(round(x.shape[0] * config.val_fraction)) if config.val_fraction > 0 else 0
    n_val = min(n_val, x.shape[0] - 4)
    val = torch.from_numpy(x[perm[:n_val]]).to(device)
    train = torch.from_numpy(x[perm[n_val:]]).to(device)

    out_dim = config.out_dim
    torch.manual_seed(config.seed)
    decoder = Decoder(x.shape[1], out_dim, config.kind, config.hidden_dim).to(device)
    if config.init == "pca" and config.kind == "linear":
        pca_initialise(decoder, train)
    importance = nn.Parameter(initial_importance(decoder, train)) if config.selection == "ads" else None
    # S-XBM keeps each past row's input and its output when it was enqueued (not recomputed:
    # decoding the whole memory every step would cost more than the batch itself).
    memory = MemoryQueue(config.memory_size, x.shape[1] + out_dim, device) if config.memory_size else None
    gen = torch.Generator().manual_seed(config.seed)
    stats = TrainingStats(train_rows=len(train), val_rows=len(val))
    val_data = val if len(val) >= 2 else train
    layer = output_layer(decoder)

    def snapshot() -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
        if importance is not None:
            state["importance"] = importance.detach().clone()
        return state

    def restore(state: dict[str, torch.Tensor]) -> None:
        decoder.load_state_dict({k: v for k, v in state.items() if k != "importance"})
        if importance is not None:
            with torch.no_grad():
                importance.copy_(state["importance"])

    for sizes, n_trainable in training_stages(config.effective_prefix_sizes(out_dim), config.sequential):
        objective = _Objective(sizes, config, importance)
        order = torch.argsort(importance.detach(), descending=True) if importance is not None else torch.arange(out_dim, device=device)
        frozen = order[n_trainable:]
        frozen_values = (layer.weight[frozen].detach().clone(), layer.bias[frozen].detach().clone())
        groups: list[dict[str, Any]] = [{"params": list(decoder.parameters())}]
        if importance is not None:
            groups.append({"params": [importance], "lr": config.lr * ADS_LR_SCALE, "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
        # The starting point (e.g. PCA, or the last stage) is a candidate too: training must beat it.
        best_loss, best_state, bad_epochs = _evaluate(decoder, val_data, objective, config.batch_size), snapshot(), 0
        stats.stages.append(min(sizes))
        bar = tqdm(range(config.max_epochs), desc=f"train decoder ({min(sizes)})", unit="epoch", disable=not show_progress)
        for epoch in bar:
            decoder.train()
            losses = []
            for idx in _batches(len(train), config.batch_size, gen):
                batch = train[idx]
                out = decoder(batch)
                loss = objective(batch, out)
                if memory is not None and len(memory):
                    past = memory.rows()
                    loss = loss + config.memory_weight * memory_loss(batch, out, past[:, :x.shape[1]], past[:, x.shape[1]:], sizes,
                                                                     config.memory_neighbours, importance)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if len(frozen):
                    # AdamW's weight decay moves rows even without gradient: put frozen rows back.
                    with torch.no_grad():
                        layer.weight[frozen], layer.bias[frozen] = frozen_values
                if memory is not None:
                    memory.enqueue(torch.cat([batch, out.detach()], dim=1))
                losses.append(loss.item())
            stats.train_loss.append(float(np.mean(losses)))
            val_loss = _evaluate(decoder, val_data, objective, config.batch_size)
            stats.val_loss.append(val_loss)
            stats.epochs += 1
            bar.set_postfix(train=f"{stats.train_loss[-1]:.5f}", val=f"{val_loss:.5f}")
            if val_loss < best_loss - 1e-7:
                best_loss, best_state, bad_epochs = val_loss, snapshot(), 0
                stats.best_epoch = stats.epochs
            else:
                bad_epochs += 1
                if bad_epochs >= config.patience:
                    break
        restore(best_state)
        stats.best_val_loss = best_loss
    if importance is not None:
        stats.dim_order = apply_selection(decoder, importance)
    decoder.eval()
    stats.seconds = time.perf_counter() - started
    logger.info("decoder trained: %d epochs over %d stage(s), val loss %.5f, %.1fs", stats.epochs, len(stats.stages),
                stats.best_val_loss, stats.seconds)
    return decoder.cpu(), stats


def decode(decoder: Decoder, x: np.ndarray, dim: int | None = None, batch_size: int = 32768) -> np.ndarray:
    """Map concatenated embeddings through the decoder and return the normalised ``dim``-prefix."""
    from cecq.encoders import l2_normalize, nonempty_rows

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != decoder.in_dim:
        raise DimensionMismatchError(
            f"decoder expects inputs of dimension {decoder.in_dim}, got shape {x.shape}; "
            "were the embeddings made with the same base models, in the same order?"
        )
    dim = decoder.out_dim if dim is None else int(dim)
    if not 1 <= dim <= decoder.out_dim:
        raise ValueError(f"prefix size {dim} is outside 1..{decoder.out_dim}")
    param = next(decoder.parameters())
    out = np.empty((x.shape[0], dim), dtype=np.float32)
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            chunk = torch.from_numpy(x[i:i + batch_size]).to(param.device, param.dtype)
            out[i:i + batch_size] = decoder.prefix(chunk, dim).float().cpu().numpy()
    l2_normalize(out, out=out)  # in place: no second output-sized array
    out[~nonempty_rows(x)] = 0.0  # empty documents stay empty
    return out


def save_decoder(decoder: Decoder, folder: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Write ``decoder.safetensors`` and ``decoder.json`` (dims, kind, and any metadata)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in decoder.state_dict().items()}, str(folder / WEIGHTS_FILE))
    config = {"in_dim": decoder.in_dim, "out_dim": decoder.out_dim, "kind": decoder.kind, "hidden_dim": decoder.hidden_dim, **(metadata or {})}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=float))


def load_decoder(folder: str | Path, expected_in_dim: int | None = None) -> tuple[Decoder, dict[str, Any]]:
    """Load a decoder saved by :func:`save_decoder`; check its input dimension if given."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"no decoder in {folder} (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = json.loads((folder / CONFIG_FILE).read_text())
    if expected_in_dim is not None and config["in_dim"] != expected_in_dim:
        raise DimensionMismatchError(
            f"decoder in {folder} takes {config['in_dim']}-dim inputs but the models give {expected_in_dim}; "
            f"it was trained for models {config.get('models')}"
        )
    decoder = Decoder(config["in_dim"], config["out_dim"], config["kind"], config["hidden_dim"])
    decoder.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    decoder.eval()
    return decoder, config
