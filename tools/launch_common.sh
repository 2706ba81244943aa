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
exec_torchrun() {
  local gpus=$1
  shift
  exec "$PY" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-${PORT:-29500}}" --nproc_per_node="$gpus" \
    "$@"
}
