#!/usr/bin/env bash
# Idempotent: create the project's virtualenvs with the pinned tools.
#   .venv            cargo-lambda, aws-sam-cli, cfn-lint  (infra/build/requirements.txt)
#   .venv/ministack  MiniStack + cbor2 + aws-sam-translator (infra/local/requirements-ministack.txt)
# A venv is rebuilt only when its requirements file changes.
set -euo pipefail
source "$(dirname "$0")/env.sh"

install() { # venv requirements
  local venv=$1 req=$2 stamp=$1/.stamp sum
  sum=$(sha256sum "$req" | cut -d' ' -f1)
  if [[ -f $stamp && $(cat "$stamp") == "$sum" ]]; then return; fi
  echo "setup: installing $(basename "$req") into ${venv#"$ROOT"/}" >&2
  [[ -x $venv/bin/python ]] || "$PY" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir -r "$req"
  echo "$sum" > "$stamp"
}

install "$VENV" "$ROOT/infra/build/requirements.txt"
install "$MINISTACK_VENV" "$ROOT/infra/local/requirements-ministack.txt"
