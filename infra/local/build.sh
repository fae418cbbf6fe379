#!/usr/bin/env bash
# Build the functions for the local emulator with `sam build` (the template's
# rust-cargolambda build method, i.e. cargo-lambda) for the host architecture.
# Output: .aws-sam/build/template.yaml and one bootstrap per function.
set -euo pipefail
source "$(dirname "$0")/env.sh"
"$ROOT/infra/local/setup.sh"
export PATH="$VENV/bin:$PATH" SAM_CLI_TELEMETRY=0
cd "$ROOT"
# Placeholders: sam build needs values for parameters without defaults; the
# real ones are given at deploy time.
sam build --beta-features --parameter-overrides \
  Architecture=x86_64 SourceTableName=unused SourceStreamArn=unused TargetTableName=unused
