#!/usr/bin/env bash
# Wipe MiniStack's state (tables, queues, stacks, functions) without restarting it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
curl -fsS --max-time 30 -X POST "http://127.0.0.1:$MINISTACK_PORT/_ministack/reset" >/dev/null
echo "ministack: reset"
