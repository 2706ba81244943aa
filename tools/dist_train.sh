#!/usr/bin/env bash
# Train a det or seg config on GPUS processes (the config decides which task).
#   tools/dist_train.sh CONFIG GPUS [--work-dir DIR] [--resume [CKPT]] [--pretrained CKPT] [--cfg-options k=v ...]
# GPUS=1 runs one plain process (works on a CPU-only machine); more start torch.distributed.run.
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (as tools/pretrain.sh).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG GPUS [--work-dir DIR] [--resume [CKPT]] [--pretrained CKPT] [--cfg-options k=v ...]" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$GPUS" -le 1 && "${NNODES:-1}" == 1 ]]; then  # one process: no launcher (works on CPU)
  exec "$PY" "$ROOT/tools/train.py" "$CONFIG" --launcher none "$@"
fi
exec "$PY" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-${PORT:-29500}}" --nproc_per_node="$GPUS" \
  "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
