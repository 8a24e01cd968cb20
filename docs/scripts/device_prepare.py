"""Prepare the one device call of issue 16's GPU part (``docs/scripts/gpu_embed.sh``).

A device machine receives the working tree (64 MiB at most) and reaches nothing else: no
package index, no ``../shared``. So this copies, into an ignored folder of the checkout:

- the corpus to embed (SciFact's ``corpus.jsonl``, 7.8 MB);
- each model's folder without its weights (config, tokenizer, pooling): throughput depends on
  the shapes and the tokens, not on the weights' values, and the weights (91 MB for MiniLM,
  438 MB for mpnet) do not fit; the device script gives each a seeded random initialisation;
- the wheel of the one package cecq imports that the device's Python lacks (DuckDB).

Run here, from the repository root::

    .venv/bin/python docs/scripts/device_prepare.py          # writes .device/, ignored by git

then, in one device call with ``carry: [".device"]``: ``bash docs/scripts/gpu_embed.sh``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from cecq.encoders import resolve_model
from cecq.encoders.sentence_transformer import WEIGHT_SUFFIXES

MODELS = ("all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2")
DUCKDB = "duckdb==2.0.1"  # constraints.txt's pin
DEVICE_PYTHON = "3.12"  # the device image's python3 (the device tool's KINDS.md)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def copy_model(name: str, dest: Path) -> Path:
    """``name``'s folder without weight files, at ``dest/<last part of the name>``."""
    source = Path(resolve_model(name))
    if not source.is_dir():
        raise SystemExit(f"{name}: not found here as a folder ({source}); install its offline bundle first")
    target = dest / name.rsplit("/", 1)[-1]
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        source, target, ignore=lambda _, names: [n for n in names if n.endswith(WEIGHT_SUFFIXES) or n.startswith(".")]
    )
    return target


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", default=".device", help="folder to fill (default .device, git-ignored here)")
    p.add_argument("--corpus", default="../shared/data/scifact", help="BEIR folder whose corpus is embedded")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated (default {','.join(MODELS)})")
    args = p.parse_args()
    dest = Path(args.dest)
    exclude = Path(".git/info/exclude")
    if exclude.parent.parent.is_dir():  # a checkout: keep the copies out of git
        exclude.parent.mkdir(exist_ok=True)
    if exclude.parent.is_dir() and f"/{dest.name}/" not in (exclude.read_text() if exclude.is_file() else "").split():
        with exclude.open("a") as f:
            f.write(f"/{dest.name}/\n")
    (dest / "corpus").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(args.corpus) / "corpus.jsonl", dest / "corpus" / "corpus.jsonl")
    for name in args.models.split(","):
        print("model", copy_model(name.strip(), dest / "models"))
    wheels = dest / "whl"
    shutil.rmtree(wheels, ignore_errors=True)
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version"]
        + [DEVICE_PYTHON, "--implementation", "cp", *platforms, "-d", str(wheels), DUCKDB],
        check=True,
    )
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{dest}: {size / 2**20:.1f} MiB (the device call carries at most 64 MiB with the tree)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
