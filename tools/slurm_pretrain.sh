#!/usr/bin/env bash
# SdAE / MAE pretraining on a Slurm cluster, one task per GPU.
#
#   GPUS=16 GPUS_PER_NODE=8 tools/slurm_pretrain.sh PARTITION JOB_NAME CONFIG [--work-dir DIR] [--resume [CKPT]] ...
#
# Extra srun options through SRUN_ARGS (e.g. SRUN_ARGS="--quotatype=auto"); CPUS_PER_TASK feeds the data workers.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
require_args 3 $# "PARTITION JOB_NAME CONFIG [--work-dir DIR] [--resume [CKPT]] [pretrain.py options]"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-10}

# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "$PY" -u "$ROOT/tools/pretrain.py" "$CONFIG" --launcher slurm "$@"
