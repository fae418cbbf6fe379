#!/usr/bin/env bash
# Peak RSS of verify and of the tombstone sweep at 1k..200k items, against
# the one-partition baseline, in one run (BENCHMARKS.md). Starts MiniStack
# if needed; about 15 minutes on 2 cores (loading 400k items dominates).
set -euo pipefail
source "$(dirname "$0")/env.sh"
use_ministack
"$ROOT/infra/local/build.sh" >"$LOCAL_DIR/build.log" 2>&1 || { tail -n 30 "$LOCAL_DIR/build.log"; exit 1; }
cd "$ROOT"
AWS_ENDPOINT_URL="http://localhost:$MINISTACK_PORT" cargo bench -p ddb-relay --bench memory --locked
