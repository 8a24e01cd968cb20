"""A model's compute a document, read from its config files: what the embedding pool sizes
and orders jobs by."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cecq.encoders.registry import encoder_class
from cecq.encoders.sentence_transformer import model_shape


def shaped_folder(folder: Path, layers: int, width: int, limit: int | None) -> Path:
    """A model folder holding only the config files (no weights: nothing is loaded)."""
    folder.mkdir(parents=True)
    config = {"model_type": "bert", "num_hidden_layers": layers, "hidden_size": width, "max_position_embeddings": 512}
    (folder / "config.json").write_text(json.dumps(config))
    if limit is not None:
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": limit}))
    return folder


def cost(name: str | Path) -> float:
    return encoder_class(str(name)).cost(str(name))


def test_minilms_shape_costs_one_and_mpnets_about_twelve(tmp_path):
    minilm = shaped_folder(tmp_path / "minilm", 6, 384, 256)
    mpnet = shaped_folder(tmp_path / "mpnet", 12, 768, 384)
    assert model_shape(str(minilm)) == (6, 384, 256)
    assert cost(minilm) == pytest.approx(1.0)
    assert cost(mpnet) == pytest.approx(11.7, abs=0.05)
    # a long-context model counts 512 tokens: documents are rarely longer
    assert cost(shaped_folder(tmp_path / "long", 6, 384, 8192)) == cost(shaped_folder(tmp_path / "at512", 6, 384, 512))
    # without a sentence-transformers config, the position limit is the token limit
    assert model_shape(str(shaped_folder(tmp_path / "bare", 6, 384, None))) == (6, 384, 512)


def test_a_tiny_model_costs_less_than_a_wider_one_and_unknown_ones_one(tiny_model_dir, tiny_model_dir_48, tmp_path):
    small, wide = cost(tiny_model_dir), cost(tiny_model_dir_48)
    assert 0 < small < wide < 0.1
    assert model_shape(str(tiny_model_dir))[:2] == (2, 32)
    assert cost(tmp_path / "missing") == 1.0  # a path that does not exist: no estimate
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text("{not json")
    assert cost(tmp_path / "odd") == 1.0
    assert cost("lexical") == encoder_class("lexical").relative_cost < 0.1
