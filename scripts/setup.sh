#!/usr/bin/env bash
# Python set-up: a virtual environment in .venv with omnimodel (editable) and its pinned deps.
# One line per step; the full pip output goes to ~/.cache/omnimodel/logs/ (OMNIMODEL_LOG_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/steps.sh
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || step "virtual environment .venv" "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >>"$STEP_LOG" 2>&1 || true
step "torch 2.13.0" .venv/bin/python -m pip install -q "torch==2.13.0"
step "omnimodel and its pinned dependencies" .venv/bin/python -m pip install -q -e ".[dev]"
echo "python environment ready: $(pwd)/.venv (log: $STEP_LOG)"
