# Sourced by the tools/*.sh launchers, never run on its own: the preamble they all share.
#   ROOT        the repository root
#   PY          the Python that runs the tools: $PYTHON when set (tools/run_benchmark.py exports its own interpreter,
#               so that every stage runs in the environment the pipeline runs in), else .venv/bin/python, else python3
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
  PY="$(command -v "$PYTHON" || true)"
  if [[ -z "$PY" ]]; then
    echo "$(basename "$0"): PYTHON=$PYTHON is not an executable; point it at the environment's python or unset it" >&2
    exit 2
  fi
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
  PY="$ROOT/.venv/bin/python"
else
  PY=python3
fi
# The suite is an installed package (tools/install.sh installs this checkout in editable mode): say so at once if not.
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('sdae_suite.backbones') is None)" 2>/dev/null; then
  echo "$(basename "$0"): $PY cannot import sdae_suite; install the suite first: bash tools/install.sh (or pip install -e .)" >&2
  exit 2
fi

# require_args MIN GIVEN USAGE: print the usage line and exit 2 when fewer than MIN arguments were given.
require_args() {
  if (($2 < $1)); then
    echo "usage: $(basename "$0") $3" >&2
    exit 2
  fi
}

# single_process GPUS: true for one process on one node, which needs no launcher (and works on a CPU-only machine).
single_process() {
  [[ "$1" -le 1 && "${NNODES:-1}" == 1 ]]
}

# exec_torchrun GPUS SCRIPT [ARGS...]: GPUS processes per node through torch.distributed.run, multi-node through
# torchrun's usual variables (NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT; PORT is accepted for MASTER_PORT).
# torchrun forwards SIGTERM to its workers but dies on SIGUSR1 (the signal Slurm sends ahead of a time limit, to every
# process of the job step): it is ignored here, and the workers install their own handler (a checkpoint, then exit 75).
exec_torchrun() {
  local gpus=$1
  shift
  trap '' USR1
  exec "$PY" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-${PORT:-29500}}" --nproc_per_node="$gpus" \
    "$@"
}

# The exit status of a run that wrote its checkpoint on SIGTERM / SIGUSR1 (sdae_suite.contracts.EXIT_PREEMPTED).
EXIT_PREEMPTED=75

# run_preempted WORK_DIR SINCE: true when WORK_DIR/run_status.json, written at or after SINCE (seconds since the
# epoch), says 'preempted'. With --kill-on-bad-exit, srun kills the tasks still tearing down once the first one has
# exited with 75, and its own exit status may then be the killed tasks': the status file is the record that holds.
run_preempted() {
  "$PY" - "$1/run_status.json" "$2" <<'PYEOF'
import json, os, sys
path, since = sys.argv[1], float(sys.argv[2])
try:
    preempted = json.load(open(path)).get('status') == 'preempted' and os.path.getmtime(path) >= since
except (OSError, ValueError):
    preempted = False
sys.exit(0 if preempted else 1)
PYEOF
}

# srun_requeueing WORK_DIR SRUN_ARGS... : run the srun command line; while the run ends preempted (exit status 75, or
# its run_status.json says so: every task finished its iteration and the checkpoint is written), start it again with
# --resume appended:
#   - inside a Slurm job (SLURM_JOB_ID set), `scontrol requeue` the job and exit 75: the requeued job runs the same
#     script again, which appends --resume itself (Slurm sets SLURM_RESTART_COUNT on a requeued job);
#   - outside one, or when the requeue is refused (an salloc session, a job that may not be requeued), run srun again
#     (a new allocation), up to MAX_REQUEUES times (default 100).
# Slurm sends SIGUSR1 SIGNAL_AHEAD seconds (default 120) before the time limit; SIGTERM (preemption, scancel) is
# handled the same way by the run. This shell survives both: it waits for srun to end, then decides.
srun_requeueing() {
  local work_dir=$1 resume=() attempt=0 rc started
  shift
  if [[ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]]; then
    resume=(--resume)
    echo "$(basename "$0"): job requeued ${SLURM_RESTART_COUNT} time(s): resuming from the last checkpoint" >&2
  fi
  while true; do
    trap 'echo "$(basename "$0"): signal received; the run checkpoints after its current iteration" >&2' TERM USR1
    started=$(date +%s)
    set +e
    srun --signal="USR1@${SIGNAL_AHEAD:-120}" "$@" "${resume[@]}"
    rc=$?
    set -e
    trap - TERM USR1
    if [[ $rc -eq 0 ]] || { [[ $rc -ne $EXIT_PREEMPTED ]] && ! run_preempted "$work_dir" "$started"; }; then
      return "$rc"
    fi
    rc=$EXIT_PREEMPTED
    if [[ -n "${SLURM_JOB_ID:-}" ]]; then
      if scontrol requeue "$SLURM_JOB_ID"; then
        echo "$(basename "$0"): preempted after a checkpoint; requeued job $SLURM_JOB_ID, which resumes from it" >&2
        return "$rc"
      fi
      echo "$(basename "$0"): scontrol requeue $SLURM_JOB_ID was refused; running srun again instead" >&2
    fi
    attempt=$((attempt + 1))
    if ((attempt > ${MAX_REQUEUES:-100})); then
      echo "$(basename "$0"): preempted ${attempt} times; giving up (MAX_REQUEUES=${MAX_REQUEUES:-100}). The same" \
        "command with --resume continues from the last checkpoint" >&2
      return "$rc"
    fi
    resume=(--resume)
    echo "$(basename "$0"): preempted after a checkpoint; starting again with --resume (restart ${attempt})" >&2
  done
}
