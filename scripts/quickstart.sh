#!/usr/bin/env bash
# Quick start: set everything up, then port the bundled tiny OpenVLA-OFT checkpoint to a native build.
# Set-up prints one line per step (full logs under ~/.cache/omnimodel/logs/).
set -euo pipefail
cd "$(dirname "$0")/.."
export STEP_LOG=${STEP_LOG:-${OMNIMODEL_LOG_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/omnimodel/logs}/quickstart-$(date +%Y%m%d-%H%M%S).log}
bash .ci/setup_system.sh
bash scripts/setup.sh
source scripts/steps.sh
# the table goes to the log; a missing required component fails here with the table's tail
COLUMNS=160 step "omnimodel doctor --strict (table in the log; run it alone to see it)" .venv/bin/omnimodel doctor --strict
.venv/bin/omnimodel port openvla-oft "$@"
