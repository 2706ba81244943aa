#!/usr/bin/env bash
# SdAE / MAE pretraining, one process per GPU (or GPUS processes with the gloo backend on a CPU-only machine).
#
#   tools/pretrain.sh CONFIG GPUS [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v ...]
#
# Multi-node: run it on every node with NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT set (torchrun's usual variables).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,7p' "$0" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ "$GPUS" == 1 && "${NNODES:-1}" == 1 ]]; then
  exec "$PY" "$ROOT/tools/pretrain.py" "$CONFIG" "$@"  # one process: no launcher needed (and no torchrun noise)
fi
exec "$PY" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  --nproc_per_node="$GPUS" \
  "$ROOT/tools/pretrain.py" "$CONFIG" "$@"
