# Sourced by the set-up scripts: `step "what" cmd args...` runs a command with its whole output in
# one log file and prints one line per step; on failure the log's tail and its path.
OMNIMODEL_LOG_DIR=${OMNIMODEL_LOG_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/omnimodel/logs}
mkdir -p "$OMNIMODEL_LOG_DIR"
STEP_LOG=${STEP_LOG:-$OMNIMODEL_LOG_DIR/setup-$(date +%Y%m%d-%H%M%S).log}
export OMNIMODEL_LOG_DIR STEP_LOG

step() {
    local what=$1 start rc
    shift
    start=$(date +%s)
    echo "=== $what: $*" >>"$STEP_LOG"
    if "$@" >>"$STEP_LOG" 2>&1; then
        echo "  ok  $what ($(( $(date +%s) - start )) s)"
    else
        rc=$?
        echo "  FAIL $what (exit $rc); last lines of $STEP_LOG:" >&2
        tail -15 "$STEP_LOG" >&2
        exit "$rc"
    fi
}
