#!/usr/bin/env bash
# The whole pipe end to end on MiniStack: the replication rate (a drain of
# BENCH_CHANGES queued changes, default 10000) against the emulator's raw
# BatchWriteItem rate, and the lag p50/p99 at steady write rates (BENCH_RATES,
# default "50,200" changes/s, BENCH_SECONDS each, default 30; the target is
# polled every BENCH_POLL_MS, default 100), in one run (BENCHMARKS.md).
# Starts MiniStack if needed (and stops it afterwards if it started it).
set -euo pipefail
source "$(dirname "$0")/env.sh"
use_ministack
"$ROOT/infra/local/build.sh" >"$LOCAL_DIR/build.log" 2>&1 || { tail -n 30 "$LOCAL_DIR/build.log"; exit 1; }
cd "$ROOT"
cargo build -p relay-e2e --bin relaybench --locked --quiet
AWS_ENDPOINT_URL="http://127.0.0.1:$MINISTACK_PORT" ./target/debug/relaybench
