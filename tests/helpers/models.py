"""Tiny random-weight sentence-transformers models, built locally: real model folders (BERT +
mean pooling) loaded through the same code path as a real model, without a model hub."""

from __future__ import annotations

from pathlib import Path

# Topics of the synthetic corpus: each topic's documents and queries draw on its own words,
# so a lexical model separates them easily and relevance is unambiguous.
TOPICS: dict[str, list[str]] = {
    "astronomy": "star planet galaxy orbit telescope comet nebula moon solar gravity asteroid cosmic "
    "eclipse meteor universe".split(),
    "cooking": "recipe oven flour butter sugar bake dough sauce pepper garlic onion roast simmer kitchen spice".split(),
    "football": "goal striker referee penalty stadium league match keeper pitch tackle coach team "
    "season corner offside".split(),
    "computing": "compiler kernel memory thread cache python server network database query index "
    "binary socket process algorithm".split(),
    "gardening": "soil seed compost flower garden prune tomato root water weed shovel leaf bloom "
    "greenhouse mulch".split(),
}
COMMON_WORDS = (
    "the a an of and to in is for on with at by from this that it as are was be "
    "about how what why new old good long short very many some more most query passage "
    "document text empty hello world alpha beta gamma delta"
).split()
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,:;!?'\"-()/")


def write_vocab(path: Path) -> list[str]:
    """A WordPiece vocabulary: special tokens, topic and common words, characters, ``##`` suffixes."""
    words: list[str] = []
    for w in [
        *SPECIAL_TOKENS,
        *COMMON_WORDS,
        *(w for ws in TOPICS.values() for w in ws),
        *CHARACTERS,
        *("##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"),
    ]:
        if w not in words:
            words.append(w)
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return words


def build_tiny_model(folder: Path, hidden_size: int, seed: int, prompts: dict[str, str] | None = None) -> Path:
    """Write a random-weight BERT sentence-transformers model (mean pooling) to ``folder/model``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    raw = folder / "hf"
    raw.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(raw / "vocab.txt")
    # transformers 5 names the argument `vocab`; `vocab_file` is silently ignored (every word an [UNK]).
    tokenizer = BertTokenizerFast(vocab=str(raw / "vocab.txt"), do_lower_case=True, model_max_length=128)
    assert len(tokenizer) == len(vocab), "the tiny tokenizer lost its vocabulary"
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(str(raw))
    tokenizer.save_pretrained(str(raw))
    transformer = Transformer(str(raw))
    pooling = Pooling(hidden_size, "mean")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu", prompts=prompts)
    out = folder / "model"
    model.save(str(out))
    return out


def loaded_models(monkeypatch) -> list[str]:
    """The models the pipeline's training step loads from now on (``steps.load_store_encoder``), in order."""
    from cecq.pipeline import steps

    loaded: list[str] = []
    original = steps.load_store_encoder

    def spy(store, model, *args, **kwargs):
        loaded.append(model)
        return original(store, model, *args, **kwargs)

    monkeypatch.setattr(steps, "load_store_encoder", spy)
    return loaded
