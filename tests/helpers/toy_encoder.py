"""A toy encoder kind, as a user would add one outside cecq: one module and one registry
line. ``toy-hash`` is pretrained (nothing to fit): the hashing trick over lower-cased
words, 32 dims. Loaded as a plugin (``CECQ_PLUGINS=tests.helpers.toy_encoder``)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from cecq.config import ModelSpec
from cecq.encoders import Encoder, TextKind, register_encoder

DIM = 32


class HashEncoder(Encoder):
    def __init__(self, name: str):
        self.name, self.dim = name, DIM

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> HashEncoder:
        return cls(spec.name)

    def _encode(self, texts: list[str], kind: TextKind, show_progress: bool) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIM] += 1.0
        return out

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "type": "toy-hash", "source": "hashing", "revision": None, "dim": DIM}


register_encoder("toy-hash", HashEncoder)
