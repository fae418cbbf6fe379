#!/usr/bin/env bash
# Cold start and peak RSS of the release bootstraps, as `sam build` makes
# them, each run as a process against a local fake Lambda Runtime API on
# 127.0.0.1 that also answers their AWS calls (BENCHMARKS.md). No emulator.
set -euo pipefail
source "$(dirname "$0")/env.sh"
mkdir -p "$LOCAL_DIR"
"$ROOT/infra/local/build.sh" >"$LOCAL_DIR/build.log" 2>&1 || { tail -n 30 "$LOCAL_DIR/build.log"; exit 1; }
cd "$ROOT"
cargo build --release -p relay-e2e --bin coldstart --locked --quiet
./target/release/coldstart
