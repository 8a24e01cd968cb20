"""``cecq distill-static``: build a static base model from a sentence-transformers model."""

from __future__ import annotations

import argparse
from pathlib import Path

from cecq.encoders.static import distill_static


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill-static",
        help="distil a static base model from a sentence-transformers model",
        description="Embed every vocabulary token of MODEL, reduce by PCA and weight by Zipf rank "
        "(the model2vec recipe); write a sentence-transformers folder that --model accepts.",
    )
    p.add_argument("model", help="Hugging Face id, local path or built-in name (e.g. all-MiniLM-L6-v2)")
    p.add_argument("--out", required=True, help="folder to write the static model to")
    p.add_argument("--pca-dims", type=int, default=256, help="vector size of the static model (default 256)")
    p.add_argument("--device", default="cpu", help="torch device for the teacher's forward passes (default cpu)")
    p.set_defaults(func=cmd_distill)


def cmd_distill(args: argparse.Namespace) -> int:
    if Path(args.out).exists() and any(Path(args.out).iterdir()):
        raise FileExistsError(f"--out {args.out} exists and is not empty")
    print(distill_static(args.model, args.out, pca_dims=args.pca_dims, device=args.device))
    return 0
