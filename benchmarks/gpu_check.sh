#!/usr/bin/env bash
# The GPU check of issue #16: fine-tune (full, mlp head) and predict eegfm_tiny on real eegmat
# shards, float32 on the CPU and bf16-mixed on one GPU, and print balanced accuracy and windows/s
# of each, so the two can be compared (same metrics within noise is the expectation).
#
#   bash benchmarks/gpu_check.sh [OUT] [ACCELERATOR]      # defaults: runs/gpu-check, cuda
#
# Needs ../shared/eeg beside the checkout (or SHARED=...). About 5 min on one H100 plus the CPU
# run's time (the CPU half can be skipped with CPU=0;
# FINETUNE_ARGS="--max_folds 1 --train.epochs 1" makes a quick check of the script itself).
set -euo pipefail
OUT=${1:-runs/gpu-check}
ACCELERATOR=${2:-cuda}
SHARED=${SHARED:-../shared/eeg}
mkdir -p "$OUT"

eegfm prep "$SHARED/eegmat" --out "$OUT/shards" --no-progress
runs=("$ACCELERATOR bf16-mixed")
[ "${CPU:-1}" = 1 ] && runs=("cpu 32-true" "${runs[@]}")
for run in "${runs[@]}"; do
    read -r device precision <<<"$run"
    dir="$OUT/$device-$precision"
    SECONDS=0
    eegfm finetune --config configs/finetune/eegmat.yaml --data "$OUT/shards" \
        --models '[random_init]' --align '[none]' --head mlp --freeze false --train.lr 1e-3 \
        --train.accelerator "$device" --train.precision "$precision" --out "$dir" \
        --progress false \
        ${FINETUNE_ARGS:-}
    fit_s=$SECONDS
    SECONDS=0
    eegfm predict --model "$dir/model_random_init" --input "$SHARED/eegmat" \
        --accelerator "$device" --precision "$precision" --batch_size 256 \
        --out "$dir/predictions.csv" --progress false > "$dir/predict.log"
    predict_s=$SECONDS
    python - "$dir" "$fit_s" "$predict_s" "$device" "$precision" <<'PY'
import json, sys
import pandas as pd
folder, fit_s, predict_s, device, precision = sys.argv[1:]
results = json.load(open(f"{folder}/results.json"))["models"]["random_init"]
windows = len(pd.read_csv(f"{folder}/predictions.csv"))
scores = [v["balanced_accuracy"] for v in results["per_subject"].values()]
print(f"{device} {precision}: balanced accuracy {sum(scores) / len(scores):.3f} "
      f"({len(scores)} test subjects); fine-tuning {fit_s} s; predict {windows} windows in "
      f"{predict_s} s = {windows / max(int(predict_s), 1):.0f} windows/s (whole command)")
PY
done
