#!/usr/bin/env bash
# Evaluate CKPT with a det or seg config on GPUS processes; writes <work_dir>/test_results.json.
#   tools/dist_test.sh CONFIG CKPT GPUS [--work-dir DIR] [--cfg-options k=v ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
require_args 3 $# "CONFIG CKPT GPUS [--work-dir DIR] [--cfg-options k=v ...]"
CONFIG=$1
CKPT=$2
GPUS=$3
shift 3
if single_process "$GPUS"; then
  exec "$PY" "$ROOT/tools/test.py" "$CONFIG" "$CKPT" --launcher none "$@"
fi
exec_torchrun "$GPUS" "$ROOT/tools/test.py" "$CONFIG" "$CKPT" --launcher pytorch "$@"
