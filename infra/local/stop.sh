#!/usr/bin/env bash
# Stop MiniStack by its PID file, with its Lambda processes (its process group).
set -euo pipefail
source "$(dirname "$0")/env.sh"
[[ -f $MINISTACK_PID ]] || { echo "ministack: not running (no pid file)"; exit 0; }
pid=$(cat "$MINISTACK_PID")
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  echo "ministack: stopped (pid $pid)"
else
  echo "ministack: pid $pid was not running"
fi
rm -f "$MINISTACK_PID"
