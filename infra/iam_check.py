"""Least privilege, checked on the template as CloudFormation will see it.

Expands template.yaml with aws-sam-translator (the AWS::Serverless transform)
and fails on any IAM role with a managed policy, or any statement on every
resource ("*"), except cloudwatch:PutMetricData, which has no resource-level
permissions, and only when limited to the DdbRelay namespace.

    python infra/iam_check.py [template.yaml]
"""
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """The translator asks for managed policy names only if the template
    uses them; we never resolve any."""

    def load(self):
        return {}


def as_list(v):
    return v if isinstance(v, list) else [v]


def problems(template_text):
    template = yaml_parse(template_text)
    for r in template.get("Resources", {}).values():
        if r.get("Type") == "AWS::Serverless::Function":
            r["Properties"]["CodeUri"] = "s3://bucket/key.zip"
    params = {
        "SourceTableName": "source",
        "SourceStreamArn": "arn:aws:dynamodb:us-east-1:123456789012:table/source/stream/x",
        "TargetTableName": "target",
    }
    out = transform(template, params, NoManagedPolicies())
    found = []
    roles = 0
    for name, r in out["Resources"].items():
        if r["Type"] == "AWS::Lambda::Function" and "Role" not in r["Properties"]:
            found.append(f"{name}: no role")
        if r["Type"] != "AWS::IAM::Role":
            continue
        roles += 1
        props = r["Properties"]
        for arn in props.get("ManagedPolicyArns", []):
            found.append(f"{name}: managed policy {arn} (applies to every resource)")
        for policy in props.get("Policies", []):
            for st in as_list(policy["PolicyDocument"]["Statement"]):
                actions = as_list(st.get("Action", []))
                for res in as_list(st.get("Resource", [])):
                    if res != "*":
                        continue
                    namespaced = st.get("Condition", {}).get("StringEquals", {}).get(
                        "cloudwatch:namespace"
                    )
                    if actions == ["cloudwatch:PutMetricData"] and namespaced:
                        continue
                    found.append(f"{name}: {actions} on every resource")
    if roles == 0:
        found.append("no IAM role found")
    return found


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    found = problems(open(path).read())
    for p in found:
        print(f"iam: {p}", file=sys.stderr)
    if found:
        sys.exit(1)
    print(f"iam: {path}: every role scoped, no managed policy")


if __name__ == "__main__":
    main()
