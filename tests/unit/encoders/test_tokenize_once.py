"""Each text is tokenized once: the token lengths (for the truncation count and the length
order) come from the same tokenization the model encodes, and the output is byte-identical
to measuring the lengths in a pass of their own and encoding through ``model.encode``."""

from __future__ import annotations

import numpy as np
import pytest

from cecq.config import ModelSpec
from cecq.encoders import load_encoder
from tests.helpers.models import TOPICS

WORDS = [w for ws in TOPICS.values() for w in ws]


def corpus(n: int = 150) -> list[str]:
    """Texts of 0 to ~400 tokens (the tiny model's limit is 128), with odd spacing, unknown
    and non-ASCII words, numbers and punctuation."""
    rng = np.random.default_rng(0)
    texts = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.pareto(1.2) * 20) % 400).tolist()
        if i % 7 == 0:
            words += ["Große", "東京", "3.14159", "(x)", "naïve"]
        texts.append(("  " if i % 5 == 0 else "") + " ".join(words) + ("\n" if i % 3 == 0 else ""))
    texts[4], texts[9] = "", "   \t "
    return texts


@pytest.fixture
def encoders(tiny_model_dir):
    """The same tiny model twice: one tokenizing once, one made to keep the two passes."""
    once = load_encoder(ModelSpec(str(tiny_model_dir), device="cpu", batch_size=16))
    twice = load_encoder(ModelSpec(str(tiny_model_dir), device="cpu", batch_size=16))
    twice._one_pass = False
    return once, twice


def test_one_tokenization_gives_the_same_embeddings_and_truncated_count(encoders):
    once, twice = encoders
    texts = corpus()
    assert once._single_pass(), "the plain BERT model should tokenize once"
    np.testing.assert_array_equal(once._tokens(texts).lengths, twice.token_lengths(texts))
    a, b = once.encode(texts, "document"), twice.encode(texts, "document")
    assert a.dtype == b.dtype == np.float32 and a.tobytes() == b.tobytes()
    assert once.truncated == twice.truncated > 0


def test_each_text_is_tokenized_once(encoders, monkeypatch):
    once, twice = encoders
    texts = corpus(60)
    once._single_pass()  # the probe, once a model
    tokenizer_cls = type(once.model.tokenizer)
    seen: list[int] = []
    call = tokenizer_cls.__call__

    def counting(self, text=None, *args, **kwargs):
        seen.append(len(text) if isinstance(text, list) else 1)
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(tokenizer_cls, "__call__", counting)
    once.encode(texts, "document")
    assert sum(seen) == len(texts)
    seen.clear()
    twice.encode(texts, "document")
    assert sum(seen) == 2 * len(texts)  # what it was: a lengths pass, then encode's own


def test_a_prompt_keeps_the_two_passes(tiny_model_dir, monkeypatch):
    """Lengths were always measured without the prompt; ordering by the prompted length would
    change the batches, so texts with a prompt are encoded as before."""
    enc = load_encoder(ModelSpec(str(tiny_model_dir), device="cpu", batch_size=16, query_prompt="query: "))
    monkeypatch.setattr(enc, "_tokenize_once", lambda texts: pytest.fail("tokenized once with a prompt"))
    assert enc.encode(corpus(20), "query").shape == (20, 32)
