#!/usr/bin/env bash
# Evaluate CKPT with a det or seg config on GPUS processes; writes <work_dir>/test_results.json.
#   tools/dist_test.sh CONFIG CKPT GPUS [--work-dir DIR] [--cfg-options k=v ...]
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 CONFIG CKPT GPUS [--work-dir DIR] [--cfg-options k=v ...]" >&2
  exit 2
fi
CONFIG=$1
CKPT=$2
GPUS=$3
shift 3
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$GPUS" -le 1 && "${NNODES:-1}" == 1 ]]; then  # one process: no launcher (works on CPU)
  exec "$PY" "$ROOT/tools/test.py" "$CONFIG" "$CKPT" --launcher none "$@"
fi
exec "$PY" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-${PORT:-29500}}" --nproc_per_node="$GPUS" \
  "$ROOT/tools/test.py" "$CONFIG" "$CKPT" --launcher pytorch "$@"
