#!/usr/bin/env bash
# Train a det or seg config on a Slurm cluster.
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR \
#       [--pretrained CKPT] [--resume [CKPT]] [--cfg-options k=v ...]
# On SIGTERM, or SIGUSR1 SIGNAL_AHEAD (120) seconds before the time limit, the run checkpoints after its iteration and
# exits 75; the job is then requeued and resumes by itself (launch_common.sh, srun_requeueing). In an sbatch script,
# submit with --requeue.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
require_args 4 $# "PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
shift 4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
srun_requeueing "$WORK_DIR" -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "$PY" -u "$ROOT/tools/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "$@"
