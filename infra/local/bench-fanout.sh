#!/usr/bin/env bash
# The scan copy fanned out over 1, 2, 4 and 8 copy workers against the
# emulator's raw PutItem rate with as many writers, in one run
# (BENCHMARKS.md). Starts MiniStack if needed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
use_ministack
"$ROOT/infra/local/build.sh" >"$LOCAL_DIR/build.log" 2>&1 || { tail -n 30 "$LOCAL_DIR/build.log"; exit 1; }
cd "$ROOT"
cargo build -p relay-e2e --bin fanbench -p ddb-relay --bin ddb-relay --locked --quiet
AWS_ENDPOINT_URL="http://localhost:$MINISTACK_PORT" ./target/debug/fanbench
