#!/usr/bin/env bash
# Validate a SAM template: `sam validate --lint` and cfn-lint 1.52 (pinned:
# newer cfn-lint silently misses SAM errors). Default: template.yaml.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
template="${1:-$ROOT/template.yaml}"
"$ROOT/infra/local/setup.sh"
export PATH="$ROOT/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0
sam validate --region us-east-1 --lint --template-file "$template"
cfn-lint --regions us-east-1 -- "$template"
# Least privilege as CloudFormation will see it (after the SAM transform).
"$ROOT/.venv/ministack/bin/python" "$ROOT/infra/iam_check.py" "$template"
echo "validate: $template is clean"
