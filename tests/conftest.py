"""Shared fixtures: tiny random-weight sentence-transformers models, small BEIR folders, a
real S3 endpoint, a local Ray and Prefect's harness. The helpers they are built from are
in :mod:`tests.helpers`, importable by every test module."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# Offline everywhere, quiet tokenizers, no telemetry. Set before anything imports HF libraries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from tests.helpers.beir import synthetic_beir_parts, write_beir
from tests.helpers.local_ray import local_ray
from tests.helpers.models import build_tiny_model
from tests.helpers.paths import SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-dim tiny BERT model, saved with a stored ``query`` prompt (``"query: "``)."""
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-model-32"), 32, seed=0, prompts={"query": "query: ", "passage": "passage: "}
    )


@pytest.fixture(scope="session")
def tiny_model_dir_48(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model with another hidden size (48), for concatenation tests."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model-48"), 48, seed=1)


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
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "CECQ_S3_ENDPOINT_URL")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        CECQ_S3_ENDPOINT_URL=endpoint,
    )
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
    yield from local_ray(2)


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
