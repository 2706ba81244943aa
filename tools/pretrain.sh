#!/usr/bin/env bash
# SdAE / MAE pretraining, one process per GPU (or GPUS processes with the gloo backend on a CPU-only machine).
#
#   tools/pretrain.sh CONFIG GPUS [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
#
# Multi-node: run it on every node with NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT set (torchrun's usual variables).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
require_args 2 $# "CONFIG GPUS [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]"
CONFIG=$1
GPUS=$2
shift 2
if single_process "$GPUS"; then
  exec "$PY" "$ROOT/tools/pretrain.py" "$CONFIG" "$@"  # one process: no launcher needed (and no torchrun noise)
fi
exec_torchrun "$GPUS" "$ROOT/tools/pretrain.py" "$CONFIG" "$@"
