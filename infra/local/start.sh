#!/usr/bin/env bash
# Start MiniStack on 127.0.0.1 only, in the background, with a PID file and a
# log file under .local/. A no-op when it is already running and healthy.
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$LOCAL_DIR"

healthy() { curl -fsS --max-time 2 "$MINISTACK_HEALTH" >/dev/null 2>&1; }

if [[ -f $MINISTACK_PID ]] && kill -0 "$(cat "$MINISTACK_PID")" 2>/dev/null; then
  if healthy; then echo "ministack: already running (pid $(cat "$MINISTACK_PID"))"; exit 0; fi
fi
if healthy; then
  echo "ministack: something else answers on 127.0.0.1:$MINISTACK_PORT; stop it first" >&2
  exit 1
fi
[[ -x $MINISTACK_VENV/bin/ministack ]] || "$(dirname "$0")/setup.sh"

# setsid: MiniStack runs Lambda bootstraps as child processes; stop.sh kills the group.
# AWS_ENDPOINT_URL is handed to those processes, so the functions' SDK calls
# come back here instead of going to AWS.
AWS_ENDPOINT_URL="http://127.0.0.1:$MINISTACK_PORT" BIND_HOST=127.0.0.1 GATEWAY_PORT="$MINISTACK_PORT" \
  STATE_DIR="$LOCAL_DIR/ministack-state" TMPDIR="$LOCAL_DIR" \
  AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" \
  setsid "$MINISTACK_VENV/bin/ministack" >"$MINISTACK_LOG" 2>&1 </dev/null &
echo $! > "$MINISTACK_PID"

for _ in $(seq 1 120); do
  if healthy; then echo "ministack: up on 127.0.0.1:$MINISTACK_PORT (pid $(cat "$MINISTACK_PID"), log ${MINISTACK_LOG#"$ROOT"/})"; exit 0; fi
  if ! kill -0 "$(cat "$MINISTACK_PID")" 2>/dev/null; then break; fi
  sleep 0.5
done
echo "ministack: did not become healthy; last log lines:" >&2
tail -n 20 "$MINISTACK_LOG" >&2 || true
"$(dirname "$0")/stop.sh" || true
exit 1
