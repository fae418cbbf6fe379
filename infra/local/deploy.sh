#!/usr/bin/env bash
# Deploy template.yaml (as built by build.sh) to the local emulator with
# `sam deploy`, exactly as to AWS; only the endpoint differs.
#   infra/local/deploy.sh STACK Key=Value...   (template parameters)
#   TRANSFORM_FILE=t.yaml infra/local/deploy.sh STACK ...   (a transform, JSON or YAML)
# Local deploys run the host's architecture (x86_64), send metrics with
# PutMetricData (the emulator does not extract EMF from logs), and set no
# applier or worker maximum concurrency and no parallelization factor (MiniStack echoes
# them back as strings, which the SDK cannot parse), and give the copy workers
# 30 s (so a longer copy exercises continuations). Afterwards the applier
# trigger is left disabled, as AWS leaves it (see after_deploy.py), and a
# transform file is checked against what the stack deployed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
[[ $# -ge 1 ]] || { echo "usage: $0 STACK [Key=Value...]" >&2; exit 2; }
stack=$1; shift
[[ -f $ROOT/.aws-sam/build/template.yaml ]] || "$ROOT/infra/local/build.sh"
export PATH="$VENV/bin:$PATH" SAM_CLI_TELEMETRY=0
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://localhost:$MINISTACK_PORT}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" AWS_REGION="${AWS_REGION:-us-east-1}"
extra=()
if [[ -n ${TRANSFORM_FILE:-} ]]; then
  [[ -f $TRANSFORM_FILE ]] || { echo "deploy: TRANSFORM_FILE $TRANSFORM_FILE not found" >&2; exit 2; }
  # One line of JSON, passed as one argument: no shell or make quoting can cut it.
  spec=$("$VENV/bin/python" -c 'import json,sys,yaml; t=open(sys.argv[1]).read().strip(); print(json.dumps(json.loads(t) if t.startswith("{") else yaml.safe_load(t), separators=(",",":")))' "$TRANSFORM_FILE")
  extra+=("TransformSpec='$spec'")
fi
cd "$ROOT"
sam deploy --template-file .aws-sam/build/template.yaml --stack-name "$stack" \
  --resolve-s3 --capabilities CAPABILITY_IAM --no-confirm-changeset \
  --no-fail-on-empty-changeset --region "$AWS_REGION" \
  --parameter-overrides Architecture=x86_64 MetricsMode=putmetricdata ApplierMaxConcurrency=0 ParallelizationFactor=1 \
  WorkerConcurrency=0 WorkerTimeoutSeconds=30 "$@" "${extra[@]}"
"$VENV/bin/python" "$ROOT/infra/local/after_deploy.py" "$stack" "${TRANSFORM_FILE:-}"
