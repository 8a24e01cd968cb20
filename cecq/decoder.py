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


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    x = nn.functional.normalize(x, dim=-1, eps=1e-12)
    return x @ x.T


def mrl_similarity_loss(inputs: torch.Tensor, outputs: torch.Tensor, prefix_sizes: Sequence[int]) -> torch.Tensor:
    """Sum over prefix sizes d of the mean squared difference between the in-batch cosine
    similarity matrix of ``inputs`` and that of the normalised d-prefix of ``outputs``,
    diagonal excluded."""
    n = inputs.shape[0]
    if n < 2:
        raise ValueError("the similarity loss needs at least 2 rows in a batch")
    target = cosine_matrix(inputs)
    off_diag = ~torch.eye(n, dtype=torch.bool, device=inputs.device)
    total = inputs.new_zeros(())
    for d in prefix_sizes:
        diff = cosine_matrix(outputs[:, :d]) - target
        total = total + diff[off_diag].pow(2).mean()
    return total


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


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    out = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    # A tiny last batch gives a noisy similarity matrix: fold it into the previous one.
    if len(out) > 1 and len(out[-1]) < 4:
        out[-2] = torch.cat([out[-2], out.pop()])
    return out


def _evaluate(decoder: Decoder, data: torch.Tensor, prefix_sizes: Sequence[int], batch_size: int) -> float:
    decoder.eval()
    with torch.no_grad():
        losses = [float(mrl_similarity_loss(data[idx], decoder(data[idx]), prefix_sizes)) for idx in _batches(len(data), batch_size, None)]
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


def train_decoder(embeddings: np.ndarray, config: DecoderConfig = DecoderConfig(), show_progress: bool = False,
                  device: str | None = None) -> tuple[Decoder, TrainingStats]:
    """Train a decoder on (a sample of) corpus embeddings with the MRL similarity loss.

    Holds out ``config.val_fraction`` of the rows, stops when the validation loss has not
    improved for ``config.patience`` epochs and returns the best weights. Reproducible for
    a fixed ``config.seed`` on the same device.
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
    prefix_sizes = config.effective_prefix_sizes(out_dim)
    torch.manual_seed(config.seed)
    decoder = Decoder(x.shape[1], out_dim, config.kind, config.hidden_dim).to(device)
    if config.init == "pca" and config.kind == "linear":
        pca_initialise(decoder, train)
    opt = torch.optim.AdamW(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    stats = TrainingStats(train_rows=len(train), val_rows=len(val))
    # The starting point (e.g. PCA) is a candidate too: training must beat it to replace it.
    val_data = val if len(val) >= 2 else train
    stats.best_val_loss = _evaluate(decoder, val_data, prefix_sizes, config.batch_size)
    best_state = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
    bad_epochs = 0
    bar = tqdm(range(config.max_epochs), desc="train decoder", unit="epoch", disable=not show_progress)
    for epoch in bar:
        decoder.train()
        losses = []
        for idx in _batches(len(train), config.batch_size, gen):
            batch = train[idx]
            loss = mrl_similarity_loss(batch, decoder(batch), prefix_sizes)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        stats.train_loss.append(float(np.mean(losses)))
        val_loss = _evaluate(decoder, val_data, prefix_sizes, config.batch_size)
        stats.val_loss.append(val_loss)
        stats.epochs = epoch + 1
        bar.set_postfix(train=f"{stats.train_loss[-1]:.5f}", val=f"{val_loss:.5f}")
        if val_loss < stats.best_val_loss - 1e-7:
            stats.best_val_loss, stats.best_epoch, bad_epochs = val_loss, epoch + 1, 0
            best_state = {k: v.detach().clone() for k, v in decoder.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                break
    decoder.load_state_dict(best_state)
    decoder.eval()
    stats.seconds = time.perf_counter() - started
    logger.info("decoder trained: %d epochs (best %d), val loss %.5f, %.1fs", stats.epochs, stats.best_epoch, stats.best_val_loss, stats.seconds)
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
