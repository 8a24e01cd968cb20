"""The decoder: a small network from the concatenated dimension to a Matryoshka output."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cecq.encoders.base import l2_normalize, nonempty_rows
from cecq.errors import DimensionMismatchError


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


def output_layer(decoder: Decoder) -> nn.Linear:
    """The layer whose rows are the decoder's output dims."""
    return decoder.net if decoder.kind == "linear" else decoder.net[-1]


def trimmed(decoder: Decoder, dim: int) -> Decoder:
    """A copy that computes only the first ``dim`` outputs (the last layer's first rows):
    what an index whose codes read that prefix stores. ``decode(trimmed(d, k), x)`` equals
    ``decode(d, x, k)`` bit for bit."""
    if not 1 <= dim <= decoder.out_dim:
        raise ValueError(f"prefix size {dim} is outside 1..{decoder.out_dim}")
    out = Decoder(decoder.in_dim, dim, decoder.kind, decoder.hidden_dim)
    state = decoder.state_dict()
    with torch.no_grad():  # every parameter as it was, the output layer's cut to its first rows
        for name, param in out.named_parameters():
            param.copy_(state[name][: param.shape[0]])
    out.train(decoder.training)
    return out


def decode(decoder: Decoder, x: np.ndarray, dim: int | None = None, batch_size: int = 32768) -> np.ndarray:
    """Map concatenated embeddings through the decoder and return the normalised ``dim``-prefix."""
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
            chunk = torch.from_numpy(x[i : i + batch_size]).to(param.device, param.dtype)
            out[i : i + batch_size] = decoder.prefix(chunk, dim).float().cpu().numpy()
    l2_normalize(out, out=out)  # in place: no second output-sized array
    out[~nonempty_rows(x)] = 0.0  # empty documents stay empty
    return out
