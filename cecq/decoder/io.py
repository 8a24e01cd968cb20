"""Decoder files: ``decoder.safetensors`` (weights) and ``decoder.json`` (shape and metadata)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from cecq.decoder.model import Decoder
from cecq.errors import DimensionMismatchError, check_version

WEIGHTS_FILE = "decoder.safetensors"
CONFIG_FILE = "decoder.json"
DECODER_FORMAT = 1  # format version of decoder.json and its weights (absent: 1, the first release)


def save_decoder(decoder: Decoder, folder: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Write ``decoder.safetensors`` and ``decoder.json`` (dims, kind, and any metadata)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in decoder.state_dict().items()}, str(folder / WEIGHTS_FILE))
    config = {
        "in_dim": decoder.in_dim,
        "out_dim": decoder.out_dim,
        "kind": decoder.kind,
        "hidden_dim": decoder.hidden_dim,
        "format_version": DECODER_FORMAT,
        **(metadata or {}),
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=float))


def load_decoder(folder: str | Path, expected_in_dim: int | None = None) -> tuple[Decoder, dict[str, Any]]:
    """Load a decoder saved by :func:`save_decoder`; check its input dimension if given."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"no decoder in {folder} (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = json.loads((folder / CONFIG_FILE).read_text())
    check_version(f"decoder {folder / CONFIG_FILE}", int(config.get("format_version", 1)), DECODER_FORMAT)
    if expected_in_dim is not None and config["in_dim"] != expected_in_dim:
        raise DimensionMismatchError(
            f"decoder in {folder} takes {config['in_dim']}-dim inputs but the models give {expected_in_dim}; "
            f"it was trained for models {config.get('models')}"
        )
    decoder = Decoder(config["in_dim"], config["out_dim"], config["kind"], config["hidden_dim"])
    decoder.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    decoder.eval()
    return decoder, config
