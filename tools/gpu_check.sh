#!/usr/bin/env bash
# GPU check, one GPU, about 5 minutes: everything flora_mm does differently on CUDA, measured.
#   1. the frozen-weight / trainable-bias norm failure (BitFit) and its fix (tools/check_norm_bias.py);
#   2. every method on ConvNeXt-V2-L, 4 x 800 x 1216, bf16 autocast (routes measured on this GPU), and LoRA / FLoRA
#      again with the CPU-fitted cost_model routes, for comparison;
#   3. every method on InternViT-6B, 2 x 512, bf16 autocast, bf16 frozen base, activation checkpointing.
# Needs torch with CUDA, timm and mmengine (no mmcv / mmdet). Results: $GPU_CHECK_DIR (default work_dirs/gpu_check),
# one JSON + markdown + PNG per benchmark; the ratios are printed. Each step runs even if an earlier one failed.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=${GPU_CHECK_DIR:-work_dirs/gpu_check}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$DIR"
STATUS=0
step() { echo "=== $* ($(date +%T))"; "$@" || { echo "=== FAILED: $*"; STATUS=1; }; }

step $PY tools/check_norm_bias.py --device cuda --json "$DIR/norm_bias.json"
BENCH=($PY tools/benchmark.py --device cuda --amp bf16)
step "${BENCH[@]}" --arch large --img 800x1216 --batch 4 --reps 10 --json "$DIR/convnextv2_large.json"
step "${BENCH[@]}" --arch large --img 800x1216 --batch 4 --reps 10 --route-policy cost_model --methods lora flora \
  --json "$DIR/convnextv2_large_cost_model.json"
step "${BENCH[@]}" --arch internvit-6b --img 512 --batch 2 --rank 16 --base-dtype bf16 --with-cp --reps 5 \
  --json "$DIR/internvit_6b.json"
exit $STATUS
