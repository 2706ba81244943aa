#!/usr/bin/env bash
# SdAE / MAE pretraining on a Slurm cluster, one task per GPU.
#
#   GPUS=16 GPUS_PER_NODE=8 tools/slurm_pretrain.sh PARTITION JOB_NAME CONFIG [--work-dir DIR] [--resume [CKPT]] ...
#
# Extra srun options through SRUN_ARGS (e.g. SRUN_ARGS="--quotatype=auto"); CPUS_PER_TASK feeds the data workers.
# Preemption and time limits: Slurm's SIGTERM, or SIGUSR1 SIGNAL_AHEAD (120) seconds before the limit, makes the run
# checkpoint after its iteration and exit 75; the job is then requeued and resumes by itself (launch_common.sh,
# srun_requeueing). In an sbatch script, submit with --requeue.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/launch_common.sh"
require_args 3 $# "PARTITION JOB_NAME CONFIG [--work-dir DIR] [--resume [CKPT]] [pretrain.py options]"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
# The work dir the run writes its status to (pretrain.py's default when --work-dir is not given): the requeue reads it.
WORK_DIR="work_dirs/$(basename "$CONFIG" .py)"
ARGS=("$@")
for ((i = 0; i < ${#ARGS[@]}; i++)); do
  case "${ARGS[i]}" in
    --work-dir=*) WORK_DIR="${ARGS[i]#--work-dir=}" ;;
    --work-dir) WORK_DIR="${ARGS[i + 1]:-$WORK_DIR}" ;;
  esac
done
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-10}

# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
srun_requeueing "$WORK_DIR" -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "$PY" -u "$ROOT/tools/pretrain.py" "$CONFIG" --launcher slurm --work-dir "$WORK_DIR" "$@"
