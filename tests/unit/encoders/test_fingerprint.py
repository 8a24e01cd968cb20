"""Base models are fingerprinted by their weights: a model folder retrained in place gets a
new fingerprint (and so new embedding keys and a new run id); other files do not count."""

from __future__ import annotations

import shutil

from cecq.catalog.layout import model_key
from cecq.catalog.records import run_id_for
from cecq.config import PipelineConfig
from cecq.encoders import model_fingerprint


def test_a_folder_is_fingerprinted_by_its_weight_files(tmp_path, tiny_model_dir):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    fp = model_fingerprint(str(folder))
    assert fp is not None and fp.startswith("sha256:") and len(fp) == len("sha256:") + 64
    assert model_fingerprint(str(tiny_model_dir)) == fp  # same weights, other folder: same fingerprint
    (folder / "README.md").write_text("notes")
    assert model_fingerprint(str(folder)) == fp  # not a weight file
    [weights] = [p for p in folder.rglob("*.safetensors")]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    changed = model_fingerprint(str(folder))
    assert changed != fp and changed.startswith("sha256:")
    assert model_key(str(folder), "c", changed) != model_key(str(folder), "c", fp) != model_key(str(folder), "c")


def test_fitted_models_and_unknown_hub_ids_have_none_and_keep_their_keys_and_run_ids():
    assert model_fingerprint("lexical") is None  # its state is the store's own files, per corpus
    assert model_fingerprint("nobody/not-a-cached-model") is None  # offline and not cached
    assert model_key("lexical", "c", None) == "lexical-c" and model_key("org/m", "c") == "org__m"
    # an explicit number format keeps a pretrained model's vectors apart; a fitted model has none
    assert model_key("org/m", "c", "fp", "bf16") == model_key("org/m", "c", "fp") + "-bf16"
    assert model_key("org/m", "c", precision="auto") == "org__m"
    assert model_key("lexical", "c", None, "bf16") == "lexical-c"
    config = PipelineConfig(corpus="c.jsonl", store="s", models=("lexical",))
    assert run_id_for(config, "m.json", [None]) == run_id_for(config, "m.json")  # ids of existing runs stay
    assert run_id_for(config, "m.json", ["sha256:ab"]) != run_id_for(config, "m.json")
