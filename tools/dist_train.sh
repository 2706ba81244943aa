#!/usr/bin/env bash
# Train a det or seg config on GPUS processes (the config decides which task).
#   tools/dist_train.sh CONFIG GPUS [--work-dir DIR] [--resume [CKPT]] [--pretrained CKPT] [--cfg-options k=v ...]
# GPUS=1 runs one plain process (works on a CPU-only machine); more start torch.distributed.run.
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (as tools/pretrain.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
require_args 2 $# "CONFIG GPUS [--work-dir DIR] [--resume [CKPT]] [--pretrained CKPT] [--cfg-options k=v ...]"
CONFIG=$1
GPUS=$2
shift 2
if single_process "$GPUS"; then
  exec "$PY" "$ROOT/tools/train.py" "$CONFIG" --launcher none "$@"
fi
exec_torchrun "$GPUS" "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
