# Sourced by the infra/local scripts: where the local stack lives.
# Override any of these in the environment.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
MINISTACK_VENV="${MINISTACK_VENV:-$VENV/ministack}"
LOCAL_DIR="${LOCAL_DIR:-$ROOT/.local}"
MINISTACK_PORT="${MINISTACK_PORT:-4566}"
MINISTACK_PID="$LOCAL_DIR/ministack.pid"
MINISTACK_LOG="$LOCAL_DIR/ministack.log"
MINISTACK_HEALTH="http://127.0.0.1:$MINISTACK_PORT/_ministack/health"
PY="${PY:-python3}"
# Set by use_ministack when this script started MiniStack (never inherited).
MINISTACK_STARTED=

# Starts MiniStack unless it is already up; on exit, stops it only if this
# script started it (an emulator someone else started keeps running).
use_ministack() {
  if curl -fsS --max-time 2 "$MINISTACK_HEALTH" >/dev/null 2>&1; then return 0; fi
  [[ -n ${1:-} ]] && echo "$1"
  "$ROOT/infra/local/start.sh"
  MINISTACK_STARTED=1
  trap '"$ROOT/infra/local/stop.sh"' EXIT
}
