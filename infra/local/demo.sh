#!/usr/bin/env bash
# `make demo`: set up, start MiniStack, build, run the narrated migration,
# stop what we started. Exits non-zero unless the tables end identical.
set -euo pipefail
source "$(dirname "$0")/env.sh"
t0=$(date +%s)
echo "== setup: pinned tools in .venv (first run: a minute or two)"
"$ROOT/infra/local/setup.sh"
use_ministack "== start MiniStack on 127.0.0.1:$MINISTACK_PORT"
echo "== build the Lambda binaries (sam build -> cargo lambda; first run: ~5 min)"
"$ROOT/infra/local/build.sh" >"$LOCAL_DIR/build.log" 2>&1 || { tail -n 30 "$LOCAL_DIR/build.log"; exit 1; }
echo "   built in $(( $(date +%s) - t0 )) s since start (log: .local/build.log)"
cd "$ROOT"
cargo build -p relay-e2e --bin demo -p ddb-relay --bin ddb-relay --locked --quiet
AWS_ENDPOINT_URL="http://localhost:$MINISTACK_PORT" ./target/debug/demo
