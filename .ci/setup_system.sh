#!/usr/bin/env bash
# System setup for the sandbox tests: Docker engine + debootstrap, dockerd running, sandbox image built.
# Idempotent: skips what is already there. Called by .ci/run (as root) before the tests.
# Optional: OMNIMODEL_PYTHON=.venv/bin/python also pre-builds the GGML CPU libraries for the
# docker and local sandboxes (otherwise the first test that needs one builds it, ~1 min each).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/steps.sh  # one line per step; full output in $STEP_LOG (~/.cache/omnimodel/logs/)

log() { echo "[setup_system] $*"; }
SUDO=""
[[ "$(id -u)" == "0" ]] || SUDO="sudo"

need_pkgs=()
command -v dockerd >/dev/null || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
for tool in g++ cmake ninja; do
    command -v "$tool" >/dev/null || need_pkgs+=("$( [[ $tool == ninja ]] && echo ninja-build || echo "$tool")")
done
if (( ${#need_pkgs[@]} )); then
    step "apt-get update" $SUDO apt-get update -qq
    step "apt-get install ${need_pkgs[*]}" $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
fi

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    # A dockerd of an earlier session that was killed leaves its pid file behind.
    if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        $SUDO rm -f /var/run/docker.pid
    fi
    mkdir -p "${OMNIMODEL_LOG_DIR:-/tmp}"
    $SUDO nohup dockerd >"${OMNIMODEL_LOG_DIR:-/tmp}/omnimodel-dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { log "dockerd did not answer in 60 s; see ${OMNIMODEL_LOG_DIR:-/tmp}/omnimodel-dockerd.log"; tail -20 "${OMNIMODEL_LOG_DIR:-/tmp}/omnimodel-dockerd.log" >&2; exit 1; }
fi
log "docker engine $(docker version --format '{{.Server.Version}}')"

step "sandbox image $(bash sandbox/build_image.sh --print-tag)" bash sandbox/build_image.sh

if [[ -n "${OMNIMODEL_PYTHON:-}" ]]; then
    for box in docker local; do
        step "GGML cpu build for the $box sandbox" env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
            "$OMNIMODEL_PYTHON" -m omnimodel.cli toolchain build --backend cpu --sandbox "$box"
    done
fi
