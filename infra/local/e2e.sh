#!/usr/bin/env bash
# End-to-end tests: start MiniStack (if it is not running), build the
# functions with sam build, run the relay-e2e tests, stop what we started.
set -euo pipefail
source "$(dirname "$0")/env.sh"
started=0
if ! curl -fsS --max-time 2 "$MINISTACK_HEALTH" >/dev/null 2>&1; then
  "$ROOT/infra/local/start.sh"; started=1
fi
trap '[[ $started == 1 ]] && "$ROOT/infra/local/stop.sh"' EXIT
"$ROOT/infra/local/build.sh"
cd "$ROOT"
AWS_ENDPOINT_URL="http://localhost:$MINISTACK_PORT" \
  cargo test -p relay-e2e -p ddb-relay --locked --no-fail-fast -- --ignored --test-threads=1 "$@"
