"""Shared fixtures: tiny random-weight sentence-transformers models and small BEIR folders.

The tiny models are real sentence-transformers folders (BERT + mean pooling) written to a
temporary directory, so tests load them through :func:`cecq.encoders.load_encoder` exactly
like a real model, without any network access.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

# Offline everywhere, quiet tokenizers, no telemetry. Set before anything imports HF libraries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Topics of the synthetic corpus: each topic's documents and queries draw on its own words,
# so a lexical model separates them easily and relevance is unambiguous.
TOPICS: dict[str, list[str]] = {
    "astronomy": "star planet galaxy orbit telescope comet nebula moon solar gravity asteroid cosmic "
                 "eclipse meteor universe".split(),
    "cooking": "recipe oven flour butter sugar bake dough sauce pepper garlic onion roast simmer "
               "kitchen spice".split(),
    "football": "goal striker referee penalty stadium league match keeper pitch tackle coach team "
                "season corner offside".split(),
    "computing": "compiler kernel memory thread cache python server network database query index "
                 "binary socket process algorithm".split(),
    "gardening": "soil seed compost flower garden prune tomato root water weed shovel leaf bloom "
                 "greenhouse mulch".split(),
}
COMMON_WORDS = ("the a an of and to in is for on with at by from this that it as are was be "
                "about how what why new old good long short very many some more most query passage "
                "document text empty hello world alpha beta gamma delta").split()
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,:;!?'\"-()/")


def write_vocab(path: Path) -> list[str]:
    """A WordPiece vocabulary: special tokens, topic and common words, characters, ``##`` suffixes."""
    words: list[str] = []
    for w in [*SPECIAL_TOKENS, *COMMON_WORDS, *(w for ws in TOPICS.values() for w in ws), *CHARACTERS,
              *("##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789")]:
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
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(str(raw))
    tokenizer.save_pretrained(str(raw))
    transformer = Transformer(str(raw))
    pooling = Pooling(hidden_size, "mean")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu", prompts=prompts)
    out = folder / "model"
    model.save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-dim tiny BERT model, saved with a stored ``query`` prompt (``"query: "``)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model-32"), 32, seed=0,
                            prompts={"query": "query: ", "passage": "passage: "})


@pytest.fixture(scope="session")
def tiny_model_dir_48(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model with another hidden size (48), for concatenation tests."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model-48"), 48, seed=1)


# --- BEIR folders -------------------------------------------------------------------------

Line = dict | str  # a JSON object, or a raw line written verbatim (to make malformed files)


def write_beir(folder: Path, corpus: Sequence[Line] | None, queries: Sequence[Line] | None,
               qrels: Sequence[tuple[str, str, int | str]] | None, split: str = "test", header: bool = True) -> Path:
    """Write a BEIR folder; ``None`` for a part leaves that file out."""
    folder.mkdir(parents=True, exist_ok=True)

    def lines(items: Sequence[Line]) -> str:
        return "".join((it if isinstance(it, str) else json.dumps(it)) + "\n" for it in items)

    if corpus is not None:
        (folder / "corpus.jsonl").write_text(lines(corpus), encoding="utf-8")
    if queries is not None:
        (folder / "queries.jsonl").write_text(lines(queries), encoding="utf-8")
    if qrels is not None:
        (folder / "qrels").mkdir(exist_ok=True)
        rows = (["query-id\tcorpus-id\tscore"] if header else []) + ["\t".join(map(str, r)) for r in qrels]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def synthetic_beir_parts(docs_per_topic: int = 12, seed: int = 0):
    """Corpus, queries and qrels of the synthetic topical task (plus one empty document)."""
    rng = random.Random(seed)
    corpus: list[dict] = []
    queries: list[dict] = []
    qrels: list[tuple[str, str, int]] = []
    for t, (topic, words) in enumerate(TOPICS.items()):
        ids = []
        for i in range(docs_per_topic):
            body = rng.choices(words, k=10) + rng.choices(COMMON_WORDS[:20], k=4)
            rng.shuffle(body)
            did = f"{topic}-{i}"
            ids.append(did)
            corpus.append({"_id": did, "title": f"{words[i % len(words)]} {words[(i + 3) % len(words)]}",
                           "text": " ".join(body)})
        for j in range(2):
            qid = f"q-{topic}-{j}"
            queries.append({"_id": qid, "text": " ".join(rng.sample(words, 3))})
            for k, did in enumerate(ids):
                qrels.append((qid, did, 2 if k % 3 == j else 1))
    corpus.insert(17, {"_id": "empty-doc", "title": "", "text": ""})
    return corpus, queries, qrels


@pytest.fixture
def make_beir() -> Callable[..., Path]:
    """The :func:`write_beir` helper, for tests that build their own (often broken) folders."""
    return write_beir


@pytest.fixture
def beir_parts():
    """Fresh copies of the synthetic corpus, queries and qrels, to modify in a test."""
    return synthetic_beir_parts()


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BEIR folder: 60 documents on 5 topics, one empty document, 10 queries."""
    corpus, queries, qrels = synthetic_beir_parts()
    return write_beir(tmp_path_factory.mktemp("beir") / "tinybeir", corpus, queries, qrels)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 endpoint (moto's server) on 127.0.0.1 with the bucket ``cecq-test``; the
    environment points cecq's stores at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "CECQ_S3_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      CECQ_S3_ENDPOINT_URL=endpoint)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="cecq-test")
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_running(request):
    """Fail the module that leaves a Ray instance up in the test process, not the next
    module whose ``ray.init`` would trip over it."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail(f"{request.module.__name__} left Ray running in the test process")


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray with 2 CPUs for the tests of one module."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def prefect_api():
    """Prefect's test harness: a temporary local API for the flows of one module."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module of tiny-tensor tests: they gain nothing from threads,
    and on a busy machine spinning threads make them several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
