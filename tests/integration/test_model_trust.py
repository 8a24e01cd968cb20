"""The trust boundary of a store's manifest: it names the base models a reader loads. A
store on S3 (moto over HTTP) whose manifest was rewritten to name a local folder must not
make ``cecq search`` (or any reader) load it, unless the user trusts the store or allows the
model; a local store (the user's own disk) is trusted by default."""

from __future__ import annotations

import json
import shutil

import pytest

from cecq.catalog import load_store_encoder, search_store
from cecq.catalog.reader import check_store_models
from cecq.cli import main
from cecq.errors import UntrustedModelError
from cecq.storage import Store
from tests.helpers.paths import FIXTURES

LEGACY = FIXTURES / "legacy-store" / "store"


def tamper(store: Store, models: list[str]) -> None:
    """Rewrite the published manifest's models, as anyone who can write the bucket could."""
    rel = "catalog/v000003/manifest.json"
    m = store.read_json(rel)
    m["models"], m["model_keys"] = models, [*m["model_keys"], "x"][: len(models)]
    store.write_json(rel, m)


@pytest.fixture
def s3_store(s3_endpoint, request) -> Store:
    store = Store(f"s3://cecq-test/trust-{request.node.name}")
    for p in LEGACY.rglob("*"):
        if p.is_file():
            store.write_bytes(str(p.relative_to(LEGACY)), p.read_bytes())
    return store


def test_an_s3_store_naming_a_local_folder_is_refused_unless_trusted(s3_store, tiny_model_dir, monkeypatch, capsys):
    for key in ("CECQ_TRUST_STORE_MODELS", "CECQ_ALLOWED_MODELS"):
        monkeypatch.delenv(key, raising=False)
    search_store(s3_store, "star planet", 3)  # the untampered store (lexical, a hub-free kind) reads
    tamper(s3_store, ["lexical", str(tiny_model_dir)])
    with pytest.raises(UntrustedModelError, match=rf"names the base model '{tiny_model_dir}'.*a local folder"):
        search_store(s3_store, "star planet", 3)
    assert main(["search", "star planet", "--store", s3_store.url]) == 2
    err = capsys.readouterr().err
    assert "not loading it" in err and "--trust-store-models" in err and "CECQ_ALLOWED_MODELS" in err
    # Trusted by the flag, the environment or the allow-list (the folder or one above it): loaded.
    main(["--trust-store-models", "search", "star planet", "--store", s3_store.url])
    assert "not loading it" not in capsys.readouterr().err
    for env in ({"CECQ_TRUST_STORE_MODELS": "1"}, {"CECQ_ALLOWED_MODELS": f"lexical, {tiny_model_dir.parent}"}):
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            assert load_store_encoder(s3_store, str(tiny_model_dir), "x").dim == 32
    # An allow-list is the whole list: a hub id not on it is refused too; hub ids pass without one.
    monkeypatch.setenv("CECQ_ALLOWED_MODELS", "all-MiniLM-L6-v2")
    with pytest.raises(UntrustedModelError, match="not in CECQ_ALLOWED_MODELS"):
        check_store_models(s3_store, ["lexical", "intfloat/e5-small-v2"])
    check_store_models(s3_store, ["lexical", "all-MiniLM-L6-v2"])
    monkeypatch.delenv("CECQ_ALLOWED_MODELS")
    check_store_models(s3_store, ["intfloat/e5-small-v2"])
    for path_like in ("./models/m", "~/m", "/etc", "a/b/c"):
        with pytest.raises(UntrustedModelError):
            check_store_models(s3_store, [path_like])


def test_a_local_store_is_trusted_by_default_and_can_be_distrusted(tmp_path, tiny_model_dir, monkeypatch):
    shutil.copytree(LEGACY, tmp_path / "store")
    store = Store(str(tmp_path / "store"))
    tamper(store, ["lexical", str(tiny_model_dir)])
    monkeypatch.delenv("CECQ_ALLOWED_MODELS", raising=False)
    monkeypatch.delenv("CECQ_TRUST_STORE_MODELS", raising=False)
    check_store_models(store, json.loads((tmp_path / "store/catalog/v000003/manifest.json").read_text())["models"])
    monkeypatch.setenv("CECQ_TRUST_STORE_MODELS", "0")
    with pytest.raises(UntrustedModelError):
        search_store(store, "star planet", 3)
