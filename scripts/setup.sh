#!/usr/bin/env bash
# Creates (or reuses) a virtualenv and builds sniper_ext into it, editable.
#   bash scripts/setup.sh [VENV]        default VENV: .venv
# TORCH_SPEC picks the torch to install when the venv has none
# (default torch==2.13.0, the CPU build on the project machines).
# A second run with nothing changed takes seconds: the tools are installed
# once per list, and the extension is rebuilt only when its sources, the
# build settings or torch changed (SNIPER_REBUILD=1 forces a rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: $2" >&2; exit 1; }; }
need "$PY" "no Python found ($PY); install Python >= 3.10 or set PYTHON"
need c++ "no C++ compiler (c++) found; install a C++17 compiler (e.g. apt-get install g++)"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "== installing $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
fi
TOOLS=$(sha1sum requirements-dev.txt | cut -d' ' -f1)  # build, test and lint tools (pinned linters)
if [ "$(cat "$VENV/.sniper_tools" 2>/dev/null)" != "$TOOLS" ]; then
  echo "== installing build and test tools (requirements-dev.txt)"
  pip_install -r requirements-dev.txt
  echo "$TOOLS" >"$VENV/.sniper_tools"
fi

# Everything the compiled libraries depend on: sources, build scripts, torch, settings.
stamp=$({
  find csrc setup.py pyproject.toml -type f -print0 | LC_ALL=C sort -z | xargs -0 sha1sum
  "$VENV/bin/python" -c "import torch; print(torch.__version__, torch.version.cuda)"
  echo "FORCE_CUDA=${FORCE_CUDA:-} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-} SNIPER_DEBUG=${SNIPER_DEBUG:-}"
  echo "CUDA_HOME=${CUDA_HOME:-} $(realpath "$PWD")"
} | sha1sum | cut -d' ' -f1)
if [ "${SNIPER_REBUILD:-0}" != 1 ] && [ "$(cat "$VENV/.sniper_build" 2>/dev/null)" = "$stamp" ] &&
   ls sniper_ext/_C*.so >/dev/null 2>&1 && "$VENV/bin/python" -c "import sniper_ext" 2>/dev/null; then
  echo "== sniper_ext is up to date (SNIPER_REBUILD=1 forces a rebuild)"
else
  echo "== building sniper_ext (C++ kernels; CUDA kernels too when torch has CUDA or FORCE_CUDA=1)"
  rm -f "$VENV/.sniper_build"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
  echo "$stamp" >"$VENV/.sniper_build"
fi
"$VENV/bin/python" -m sniper_ext.info
