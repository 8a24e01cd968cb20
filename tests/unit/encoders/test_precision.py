"""A neural base model's number format: ``ModelSpec.precision`` is validated, applied where
the model is loaded and where an actor moves it to its device, and changes the vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cecq.config import ModelSpec
from cecq.encoders import load_encoder
from cecq.encoders.sentence_transformer import torch_dtype
from cecq.errors import ConfigError
from tests.helpers.models import TOPICS

TEXTS = [" ".join(ws[i : i + 6]) for ws in TOPICS.values() for i in range(0, 12, 3)]


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, fp16, bf16, got 'fp8'"):
        ModelSpec("m", precision="fp8")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("precision", "device", "dtype"),
    [
        ("auto", "cpu", torch.float32),
        ("auto", "cuda", torch.float16),
        ("auto", "cuda:1", torch.float16),
        ("bf16", "cpu", torch.bfloat16),
        ("fp16", "cpu", torch.float16),
        ("fp32", "cuda", torch.float32),
    ],
)
def test_torch_dtype(precision, device, dtype):
    assert torch_dtype(precision, device) is dtype


def _dtypes(encoder) -> set[torch.dtype]:
    return {p.dtype for p in encoder.model.parameters()}


def test_bf16_holds_from_load_and_through_to_device_and_stays_close_to_fp32(tiny_model_dir):
    fp32 = load_encoder(ModelSpec(str(tiny_model_dir), device="cpu"))
    bf16 = load_encoder(ModelSpec(str(tiny_model_dir), device="cpu", precision="bf16"))
    assert _dtypes(fp32) == {torch.float32} and _dtypes(bf16) == {torch.bfloat16}
    bf16.to_device("cpu")  # what an embedding actor does: the spec's format stays
    fp32.to_device("cpu")
    assert _dtypes(bf16) == {torch.bfloat16} and _dtypes(fp32) == {torch.float32}
    a, b = fp32.encode(TEXTS), bf16.encode(TEXTS)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    assert not np.array_equal(a, b), "bf16 gave fp32's very bytes: the precision was not applied"
    cosine = (a * b).sum(axis=1)  # both normalised
    assert cosine.min() > 0.99, cosine.min()


def test_bf16_through_sentence_transformers_own_encode(tiny_model_dir):
    """A prompt sends texts through ``model.encode`` (not cecq's one tokenization): bf16 there too."""
    specs = [ModelSpec(str(tiny_model_dir), device="cpu", query_prompt="q: ", precision=p) for p in ("fp32", "bf16")]
    q32, q16 = (load_encoder(s).encode(TEXTS, "query") for s in specs)
    assert q16.dtype == np.float32 and not np.array_equal(q32, q16)
    assert (q32 * q16).sum(axis=1).min() > 0.99


def test_a_pipeline_config_refuses_an_unknown_precision():
    from cecq.config import PipelineConfig

    with pytest.raises(ConfigError, match="precision must be one of"):
        PipelineConfig(corpus="c.jsonl", store="s", precision="int8")  # type: ignore[arg-type]
