#!/usr/bin/env bash
# Creates (or reuses) a virtualenv and builds sniper_ext into it, editable.
#   bash scripts/setup.sh [VENV]        default VENV: .venv
# TORCH_SPEC picks the torch to install when the venv has none
# (default torch==2.13.0, the CPU build on the project machines).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "== installing $TORCH_SPEC"
  pip_install "$TORCH_SPEC"
fi
echo "== installing build and test tools"
pip_install setuptools wheel ninja numpy pillow pycocotools tqdm pytest pytest-benchmark hypothesis
echo "== building sniper_ext (C++ kernels; CUDA kernels too when torch has CUDA or FORCE_CUDA=1)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
"$VENV/bin/python" -m sniper_ext.info
