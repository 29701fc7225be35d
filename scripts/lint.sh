#!/usr/bin/env bash
# Lint and format checks (CI runs this; so does the pre-commit hook):
#   bash scripts/lint.sh          check only, exit 1 on any finding
#   bash scripts/lint.sh --fix    rewrite files: ruff --fix, ruff format, clang-format -i
# Tools come from the venv (scripts/setup.sh installs them, pinned in requirements-dev.txt): ruff,
# mypy, clang-format.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
[ -x "$BIN/ruff" ] || BIN=$(dirname "$(command -v ruff)")
CXX_FILES=$(git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh' 'examples/*.cpp' 'python_tests/*.h' \
  'python_tests/*.cpp' 'python_tests/*.cu')
fail=0
run() { echo "== $*"; "$@" || fail=1; }
if [ "${1:-}" = "--fix" ]; then
  "$BIN/ruff" check --fix . ; "$BIN/ruff" format . ; "$BIN/clang-format" -i $CXX_FILES
fi
run "$BIN/ruff" check .
run "$BIN/ruff" format --check .
run "$BIN/clang-format" --dry-run --Werror $CXX_FILES
run "$BIN/mypy"
[ $fail -eq 0 ] && echo "lint: clean" || echo "lint: findings above (bash scripts/lint.sh --fix rewrites what it can)"
exit $fail
