"""The parts of training strategies beyond the joint MRL loss: PCA initialisation,
SMEC's sequential stages, adaptive dimension selection (ADS) and the cross-batch memory."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cecq.decoder.model import Decoder, output_layer


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
    return [(tuple(desc[: i + 1]), desc[i]) for i in range(len(desc))]


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
        rows = rows.detach()[-self.size :]  # only the newest `size` rows can survive
        idx = (self.head + torch.arange(len(rows), device=self.buffer.device)) % self.size
        self.buffer[idx] = rows.to(self.buffer.device, self.buffer.dtype)
        self.head = (self.head + len(rows)) % self.size
        self.filled = min(self.size, self.filled + len(rows))

    def rows(self) -> torch.Tensor:
        """The stored rows, oldest first."""
        if self.filled < self.size:
            return self.buffer[: self.filled]
        return torch.cat([self.buffer[self.head :], self.buffer[: self.head]])
