#!/usr/bin/env bash
# Quick start: set everything up, then port the bundled tiny OpenVLA-OFT checkpoint to a native build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup_system.sh
bash scripts/setup.sh
.venv/bin/omnimodel doctor
.venv/bin/omnimodel port openvla-oft "$@"
