#!/usr/bin/env bash
# End-to-end tests: start MiniStack (if it is not running), build the
# functions with sam build, run the ignored (end-to-end) tests of every test
# binary, stop what we started.
#
# The tests wait on the emulator, not the CPU (it is ~85% idle during a
# sequential run), and every test names its own stacks, tables, queues and
# buckets, so the test binaries run in three shards at once against the one
# emulator, each shard one binary and one test at a time. Arguments go to
# every test binary (a name filter, --nocapture).
# E2E_SHARDS=1 runs everything in one shard, one after the other (any
# other value: three shards).
set -euo pipefail
source "$(dirname "$0")/env.sh"
use_ministack
t_build=$(date +%s)
"$ROOT/infra/local/build.sh"
echo "e2e: sam build (release, three functions) took $(( $(date +%s) - t_build ))s" >&2
cd "$ROOT"
export AWS_ENDPOINT_URL="http://localhost:$MINISTACK_PORT"

# --workspace --tests: the same features and targets `make unit` built, so
# nothing is compiled again (`-p relay-e2e -p ddb-relay` unifies features
# differently and rebuilt the whole dependency tree: 1.5 min of CI).
# Lines: kind:target name, package directory, executable. Compiler
# messages are rendered to stderr as cargo test would show them.
targets=$(cargo test --workspace --tests --locked --no-run --message-format=json-render-diagnostics |
  "$PY" -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        kind = "test" if "test" in m["target"]["kind"] else "unit"
        print(kind + ":" + m["target"]["name"], os.path.dirname(m["manifest_path"]), m["executable"])
')

# Three shards of about equal length (sequential seconds at the last count,
# 2026-11-29: transform 444, plan 160 | no_lost_writes 505, local_stack 107 |
# cli 305, adopt 185, validate 38). Binaries not named in the first two
# (no end-to-end tests, or new ones) run in the third.
shard_a=" test:transform test:plan "
shard_b=" test:no_lost_writes test:local_stack "
for t in $shard_a $shard_b test:cli test:adopt test:validate; do
  grep -q "^$t " <<<"$targets" || {
    echo "e2e: no test binary ${t#test:} among the workspace's test targets (renamed? update infra/local/e2e.sh)" >&2
    exit 1
  }
done
if [[ ${E2E_SHARDS:-3} == 1 ]]; then shard_a=" " shard_b=" "; fi

# sam's managed bucket stack (`sam deploy --resolve-s3`) is created on first
# use; two shards' first deploys at once would both try. Create it first,
# in the region the deploys use (infra/local/deploy.sh).
AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}" \
  "$VENV/bin/python" -c 'import sys; from samcli.lib.bootstrap.bootstrap import manage_stack; manage_stack(None, sys.argv[1])' \
  "${AWS_REGION:-us-east-1}" >/dev/null

mkdir -p "$LOCAL_DIR"
results="$LOCAL_DIR/e2e-results.$$"
: >"$results"
bg=()
# On any exit (an interrupt too): stop each background shard's whole
# process group (its test binary and what that started) while it still
# runs (once it has ended, its number could be another group's), then
# MiniStack if we started it (this replaces use_ministack's trap).
cleanup() {
  local g
  for g in "${bg[@]}"; do
    if jobs -rp | grep -qx "$g"; then kill -TERM -- "-$g" 2>/dev/null || true; fi
  done
  rm -f "$results"
  if [[ -n ${MINISTACK_STARTED:-} ]]; then "$ROOT/infra/local/stop.sh"; fi
}
trap cleanup EXIT

# Runs the binaries of one shard in order (stdin closed: the target list is
# the loop's); its output is prefixed with [tag]; the result of each binary
# is appended to $results.
run_shard() {
  local tag=$1 list=$2 rc=0 name dir exe t0
  while read -r name dir exe; do
    [[ -n $name ]] || continue
    if [[ $list == rest ]]; then
      if [[ $shard_a == *" $name "* || $shard_b == *" $name "* ]]; then continue; fi
    elif [[ $list != *" $name "* ]]; then
      continue
    fi
    t0=$(date +%s)
    if (cd "$dir" && "$exe" --ignored --test-threads=1 "${@:3}" </dev/null) 2>&1 | sed -u "s/^/[$tag] /"; then
      echo "$name ok $(($(date +%s) - t0))s" >>"$results"
    else
      echo "$name FAILED $(($(date +%s) - t0))s" >>"$results"
      rc=1
    fi
  done <<<"$targets"
  return $rc
}

start=$(date +%s)
# Shards A and B each in its own process group, so that cleanup can stop
# all of it. (Their output still goes to this terminal: with `stty tostop`
# they would be stopped, so do not set that. A SIGTERM sent to this script
# alone, not to its group, stops A, B and MiniStack but not shard C's
# running test.)
set -m
run_shard A "$shard_a" "$@" &
bg+=($!)
run_shard B "$shard_b" "$@" &
bg+=($!)
set +m
rc=0
run_shard C rest "$@" || rc=1
for g in "${bg[@]}"; do wait "$g" || rc=1; done
bg=()
echo
echo "e2e: $(( $(date +%s) - start ))s in all; per test binary (those with end-to-end tests):"
grep -v " ok 0s$" "$results" | sed 's/^/  /' || true
exit $rc
