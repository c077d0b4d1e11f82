#!/usr/bin/env bash
# The evaluation harness on eegmat (24 subjects in ../shared): every model of
# configs/finetune/eegmat.yaml (encoders, classical pipelines, four networks from scratch), each
# unaligned and subject-aligned, subject-grouped 5-fold, with paired statistics. The encoder is
# the demo's: eegfm_tiny, 300 masked-reconstruction steps on the same recordings (seed 0).
#   bash benchmarks/eval_eegmat.sh [OUT]      # about an hour on a 2-core CPU
# Prep, pretraining and each finished model of the fine-tuning report are kept in OUT: a rerun
# after an interruption picks up where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/eval-eegmat}
SOURCE=${EEGMAT:-../shared/eeg/eegmat}

eegfm prep "$SOURCE" --out "$OUT/shards"
if [ ! -f "$OUT/pretrain/encoder/config.json" ]; then
  eegfm pretrain --config configs/pretrain/tiny.yaml --data "$OUT/shards" \
    --run_dir "$OUT/pretrain" --seed_everything 0 --trainer.max_steps 300
fi
eegfm finetune --config configs/finetune/eegmat.yaml --data "$OUT/shards" \
  --checkpoint "$OUT/pretrain/encoder" --out "$OUT/finetune"
