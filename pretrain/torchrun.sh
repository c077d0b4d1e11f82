#!/usr/bin/env bash
# Pretraining with torchrun (no SLURM): one process per GPU, Lightning reads torchrun's env.
#
# One node, every GPU:
#   pretrain/torchrun.sh /data/shards/tuh /data/shards/hbn
# Several nodes (run the same line on every node; NODE_RANK 0..NNODES-1, MASTER = node 0):
#   NNODES=2 NODE_RANK=0 MASTER=node0:29500 pretrain/torchrun.sh /data/shards/tuh
# Extra options go after `--`: pretrain/torchrun.sh SHARDS -- --trainer.max_steps 1000
set -euo pipefail
SHARDS=()
while [[ $# -gt 0 && "$1" != "--" ]]; do SHARDS+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
[[ ${#SHARDS[@]} -gt 0 ]] || { echo "usage: $0 SHARDS_DIR... [-- OPTIONS]" >&2; exit 2; }

GPUS="${GPUS:-$(nvidia-smi -L | wc -l)}"
NNODES="${NNODES:-1}"
RUN_DIR="${RUN_DIR:-runs/pretrain-base}"
if [[ "$NNODES" -gt 1 ]]; then
    RDZV=(--nnodes "$NNODES" --node_rank "${NODE_RANK:?set NODE_RANK}" \
          --rdzv_backend c10d --rdzv_endpoint "${MASTER:?set MASTER=host:port}")
else
    RDZV=(--standalone)
fi

torchrun "${RDZV[@]}" --nproc_per_node "$GPUS" -m eegfm pretrain \
    --config "${CONFIG:-configs/pretrain/base.yaml}" \
    --data "${SHARDS[@]}" \
    --run_dir "$RUN_DIR" \
    --trainer.num_nodes "$NNODES" \
    --trainer.devices "$GPUS" \
    "$@"
