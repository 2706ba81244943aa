#!/usr/bin/env bash
# Idempotent, reproducible install of the pinned stack (requirements.txt) into .venv/, then of the suite itself (the
# package sdae_suite, editable: the checkout's code is what runs).
#
# Why a script and not a plain `pip install -r`: PyPI has mmcv 2.1.0 (the newest that mmdet 3.3.0 / mmseg 1.2.2 accept)
# only as a source distribution, and it does not compile against torch 2.14 headers as shipped (it hard-codes -std=c++17,
# the headers need C++20). We build it once with that one flag changed, strip the debug info from the extension
# (82 MB -> ~1.5 MB) and keep the wheel in a cache OUTSIDE the repository, so later installs take seconds.
#
# Environment:
#   SDAE_WHEEL_CACHE  where built wheels are kept (default ~/.cache/sdae-suite/wheels)
#   SDAE_VENV         the virtual environment (default .venv in the repository root)
#   PYTHON            the interpreter to create it with (default python3.11, else python3)
#   SDAE_MMCV_CUDA    1: build mmcv's CUDA ops (needs nvcc and a GPU), 0: CPU ops only (what `make gpu-check`'s tier 1
#                     uses to stay within a short GPU lease), unset: CUDA ops when nvcc and a GPU are present
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SDAE_VENV:-$ROOT/.venv}"
CACHE="${SDAE_WHEEL_CACHE:-$HOME/.cache/sdae-suite/wheels}"
REQ="$ROOT/requirements.txt"
PY_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.sdae-install-stamp"

say() { printf '[install] %s\n' "$*"; }
pin() { grep -E "^$1==" "$REQ" | sed -E 's/[[:space:]]*#.*$//; s/[[:space:]]+$//'; }

# Fast path: nothing changed since the last successful install (same requirements, same script, venv intact).
want_stamp="$( (cat "$REQ" "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}"; echo "mmcv-cuda=${SDAE_MMCV_CUDA:-auto}") | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]]; then
  if "$VENV/bin/python" -c "import mmcv.ops, mmdet, mmseg, timm, sdae_suite.backbones" 2>/dev/null; then
    say "up to date ($VENV)"
    exit 0
  fi
  say "stamp matches but imports fail: reinstalling"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY_BIN" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "[install] Python 3.11 is required (found $("$PY_BIN" --version)); set PYTHON=/path/to/python3.11" >&2; exit 1; }
  say "creating $VENV with $PY_BIN"
  "$PY_BIN" -m venv "$VENV"
fi
PIP=(pip_quiet "$VENV/bin/python" -m pip --disable-pip-version-check)
# pip byte-compiles each package serially as it installs it (a fresh .venv took 2 min 47 s on 2 cores that way, 1 min
# 39 s this way); compileall below does the same ~13k modules on every core at once. The .pyc files must exist: with
# PYTHONDONTWRITEBYTECODE set (as on the machines we measure on) Python never writes them, and every process of a
# pipeline would recompile torch and the OpenMMLab stack on import (~20 s more per process, measured).
INSTALL=(install -q --no-compile)
# pip repeats a warning per package for this machine's file:// extra indexes that lack it: noise, not news.
pip_quiet() { "$@" 2>&1 | { grep -v '^WARNING: Location .* is ignored' || true; }; }

say "build prerequisites and torch"
"${PIP[@]}" "${INSTALL[@]}" "$(pin setuptools)" "$(pin wheel)" "$(pin ninja)" "$(pin psutil)" "$(pin packaging)" \
  "$(pin numpy)" "$(pin torch)" "$(pin torchvision)"

# ---- mmcv with compiled ops, from the wheel cache or built once ----
MMCV_VER="$(pin mmcv | cut -d= -f3)"
TORCH_VER="$(pin torch | cut -d= -f3)"
if [[ "${SDAE_MMCV_CUDA:-auto}" != 0 ]] && command -v nvcc >/dev/null 2>&1 \
   && "$VENV/bin/python" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  FLAVOUR="cuda$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
  export FORCE_CUDA=1
else
  [[ "${SDAE_MMCV_CUDA:-auto}" == 1 ]] && { echo "[install] SDAE_MMCV_CUDA=1 needs nvcc on PATH and a visible GPU" >&2; exit 1; }
  FLAVOUR="cpu"
fi
WHEEL_DIR="$CACHE/mmcv-$MMCV_VER-torch$TORCH_VER-$FLAVOUR"
have_mmcv() { "$VENV/bin/python" - "$MMCV_VER" "$FLAVOUR" <<'PY' 2>/dev/null
import sys
import mmcv, mmcv.ops  # noqa: F401  (the compiled extension must load)
from mmcv.utils import ext_loader
cuda = ext_loader.load_ext('_ext', ['get_compiling_cuda_version']).get_compiling_cuda_version() != 'not available'
sys.exit(0 if mmcv.__version__ == sys.argv[1] and cuda == sys.argv[2].startswith('cuda') else 1)
PY
}
if have_mmcv; then
  say "mmcv $MMCV_VER with ops already installed"
else
  if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    say "building mmcv $MMCV_VER ($FLAVOUR) from source once: ~13 min on 2 cores; cached in $WHEEL_DIR"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "${PIP[@]}" download -q --no-deps --no-binary :all: "mmcv==$MMCV_VER" -d "$work"
    tar -xzf "$work"/mmcv-"$MMCV_VER".tar.gz -C "$work"
    src="$work/mmcv-$MMCV_VER"
    # The one change needed: torch >= 2.14 headers require C++20.
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    grep -q -- '-std=c++20' "$src/setup.py" || { echo "[install] could not patch $src/setup.py (-std flag not found)" >&2; exit 1; }
    (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" wheel -q --no-build-isolation --no-deps . -w "$work/dist")
    # Strip debug info from the extension: same code, a wheel ~20x smaller.
    "$VENV/bin/python" -m wheel unpack "$work"/dist/mmcv-*.whl -d "$work/unpacked"
    find "$work/unpacked" -name '*.so' -exec strip --strip-debug {} +
    mkdir -p "$WHEEL_DIR.tmp"
    "$VENV/bin/python" -m wheel pack "$work"/unpacked/mmcv-* -d "$WHEEL_DIR.tmp"
    rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.tmp" "$WHEEL_DIR"   # atomic publish: a half-built cache never exists
  fi
  say "installing mmcv from $WHEEL_DIR"
  "${PIP[@]}" "${INSTALL[@]}" --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
fi

say "the rest of requirements.txt"
"${PIP[@]}" "${INSTALL[@]}" -r "$REQ" --find-links "$WHEEL_DIR"

say "the suite itself (editable)"
# --no-deps: the stack above is the pinned one; --no-build-isolation: setuptools is already here (no download).
"${PIP[@]}" "${INSTALL[@]}" --no-deps --no-build-isolation -e "$ROOT"

say "byte-compiling the stack on $(nproc) cores"
# exit status 1 is expected: a few third-party files are not Python 3.11 syntax (torch's py312 test helpers), which
# pip's own compile step skips just as silently
"$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
  >/dev/null 2>&1 || true
(cd / && "$VENV/bin/python" -c "import mmcv.ops, mmdet, mmseg, timm, pycocotools, sdae_suite.backbones") \
  || { echo "[install] the installed stack does not import; run: make doctor" >&2; exit 1; }
echo "$want_stamp" > "$STAMP"
say "done ($VENV)"
