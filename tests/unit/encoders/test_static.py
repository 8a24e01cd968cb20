"""Static models distilled from a tiny sentence-transformers model (``cecq distill-static``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cecq.cli import main
from cecq.config import ModelSpec
from cecq.encoders import load_encoder
from cecq.encoders.static import distill_static, pca, sif_weights

TEXTS = ["the star and the planet", "bake the dough in the oven", "goal by the striker", ""]


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("static") / "model"
    assert main(["distill-static", str(tiny_model_dir), "--out", str(out), "--pca-dims", "16"]) == 0
    return out


def test_distilled_model_loads_as_a_base_model(static_dir):
    encoder = load_encoder(ModelSpec(str(static_dir), device="cpu"))
    vecs = encoder.encode(TEXTS, "document")
    assert vecs.shape == (4, 16) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, rtol=1e-5)
    assert not vecs[3].any()  # empty text: the zero vector, as for every base model
    assert encoder.token_lengths(TEXTS) is None and encoder.truncated == 0  # no length limit


def test_a_text_is_the_mean_of_its_token_rows(static_dir):
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    table = next(iter(load_file(str(static_dir / "model.safetensors")).values()))
    tokenizer = Tokenizer.from_file(str(static_dir / "tokenizer.json"))
    ids = tokenizer.encode(TEXTS[0], add_special_tokens=False).ids
    expected = table[ids].mean(axis=0)
    got = load_encoder(ModelSpec(str(static_dir), device="cpu")).encode(TEXTS[:1], "document")[0]
    np.testing.assert_allclose(got, expected / np.linalg.norm(expected), rtol=1e-5, atol=1e-6)
    special = tokenizer.token_to_id("[CLS]")
    assert not table[special].any()  # special tokens are not distilled


def test_distillation_is_deterministic(tmp_path, tiny_model_dir, static_dir):
    again = distill_static(str(tiny_model_dir), tmp_path / "again", pca_dims=16)
    assert (again / "model.safetensors").read_bytes() == (static_dir / "model.safetensors").read_bytes()


def test_sif_weights_grow_with_rarity_and_pca_orders_variance():
    w = sif_weights(1000, 1e-4)
    assert np.all(np.diff(w) > 0) and 0 < w[0] < w[-1] < 1
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8)) * np.array([5, 4, 3, 2, 1, 0.5, 0.2, 0.1])
    reduced = pca(x, 3)
    assert reduced.shape == (500, 3)
    var = reduced.var(axis=0)
    assert var[0] > var[1] > var[2] and var[2] > x[:, 3].var()


def test_bad_arguments_are_refused(tmp_path, tiny_model_dir, capsys):
    with pytest.raises(ValueError, match="pca_dims 64 exceeds the model's 32 dims"):
        distill_static(str(tiny_model_dir), tmp_path / "x", pca_dims=64)
    with pytest.raises(ValueError, match="sif_coefficient"):
        distill_static(str(tiny_model_dir), tmp_path / "x", sif_coefficient=2.0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("work")
    assert main(["distill-static", str(tiny_model_dir), "--out", str(tmp_path / "full")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "full" / "keep.txt").read_text() == "work"
    assert main(["distill-static", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "y")]) == 2
