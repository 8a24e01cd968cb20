#!/usr/bin/env bash
# Issue 16's GPU part in one device call: cecq's encoder (the code an embedding actor runs on a
# GPU) in fp16 and bf16 at batches of 64, 256 and 1024 against a bare fp16
# SentenceTransformer.encode loop on the same GPU, with documents/s, useful TFLOP/s and the
# share of the GPU's measured matrix-product peak, for MiniLM and mpnet on SciFact's 5,183
# documents. Prepared here by docs/scripts/device_prepare.py (which says what travels and why);
# run there, from the repository root, with carry [".device"]:
#
#     bash docs/scripts/gpu_embed.sh        # writes $OUT/gpu-<model>.json and .md
#
# The weights are a seeded random initialisation of each model's own architecture: the time
# depends on the shapes and the tokens, not on the weights' values. (So the "min cosine to
# fp32" column describes a random network's rounding, not the trained model's.) The Ray actor
# around the encoder is not run there (Ray's wheel alone is over the 64 MiB a call carries);
# its start is measured on the CPU by `cecq bench perf --only embed,process`.
#
# The same script runs on a CPU as a rehearsal (it is how it was tested before a device was lent):
#     PY=.venv/bin/python DEVICE=cpu DOCS=32 BATCHES=8,32 REPEATS=1 bash docs/scripts/gpu_embed.sh
set -euo pipefail
DEV=${DEV:-.device}
OUT=${OUT:-/tmp/gpu-embed}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
DOCS=${DOCS:-0}
BATCHES=${BATCHES:-64,256,1024}
REPEATS=${REPEATS:-3}
mkdir -p "$OUT"
[ -f "$DEV/corpus/corpus.jsonl" ] || { echo "no $DEV: run docs/scripts/device_prepare.py here first" >&2; exit 2; }
if ! "$PY" -c "import duckdb" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$DEV"/whl/*.whl
fi
export PYTHONPATH="$PWD:/tmp/site" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv | tee "$OUT/gpu.csv"
fi
"$PY" - "$DEV"/models/* <<'EOF'
import sys, torch
from pathlib import Path
from transformers import AutoConfig, AutoModel
for folder in sys.argv[1:]:
    if not any(Path(folder).glob("*.safetensors")):
        torch.manual_seed(0)
        AutoModel.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)
        print("random weights:", folder)
EOF
for model in "$DEV"/models/*; do
    name=$(basename "$model")
    "$PY" -m cecq.cli bench perf --only gpu --corpus "$DEV/corpus" --model "$model" --repeats "$REPEATS" \
        --gpu-device "$DEVICE" --gpu-docs "$DOCS" --gpu-batch-sizes "$BATCHES" --gpu-precisions fp16,bf16 \
        --json "$OUT/gpu-$name.json" \
        2> >(grep -v "Loading weights" >&2) | tee "$OUT/gpu-$name.md"
done
