#!/usr/bin/env bash
# End-to-end tests: start MiniStack (if it is not running), build the
# functions with sam build, run the relay-e2e tests, stop what we started.
set -euo pipefail
source "$(dirname "$0")/env.sh"
use_ministack
"$ROOT/infra/local/build.sh"
cd "$ROOT"
# --workspace --tests: the same features and targets `make unit` built, so
# nothing is compiled again (`-p relay-e2e -p ddb-relay` unifies features
# differently and rebuilt the whole dependency tree: 1.5 min of CI).
AWS_ENDPOINT_URL="http://localhost:$MINISTACK_PORT" \
  cargo test --workspace --tests --locked --no-fail-fast -- --ignored --test-threads=1 "$@"
