"""After `sam deploy` to the emulator: leave the stack as AWS would, and
check the deployed transform.

- MiniStack reports an event source mapping that CloudFormation created with
  Enabled: false as Enabled (it does not poll it). AWS would leave it
  disabled (and a redeploy sets it back to the template's state), so the
  applier trigger is disabled here, and `ddb-relay preflight` is ready.
- With a transform file, the stack's deployed TransformSpec must say the
  same thing; anything else fails loudly.

    python after_deploy.py STACK [TRANSFORM_FILE]
"""
import json
import sys
import time

import boto3
import yaml


def spec_of(text):
    text = text.strip()
    if not text:
        return None
    return json.loads(text) if text.startswith("{") else yaml.safe_load(text)


def main():
    stack = sys.argv[1]
    cfn = boto3.client("cloudformation")
    described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    applier = outputs["ApplierFunction"]
    lam = boto3.client("lambda")
    for m in lam.list_event_source_mappings(FunctionName=applier)["EventSourceMappings"]:
        if not m["EventSourceArn"].startswith("arn:aws:sqs:"):
            continue
        if m.get("State") != "Disabled":
            lam.update_event_source_mapping(UUID=m["UUID"], Enabled=False)
            for _ in range(120):
                if lam.get_event_source_mapping(UUID=m["UUID"]).get("State") == "Disabled":
                    break
                time.sleep(0.5)
            else:
                sys.exit(f"deploy: the applier trigger of {stack} did not become Disabled")
        print(f"deploy: applier trigger of {stack} is Disabled (as the template creates it)")
    if len(sys.argv) > 2 and sys.argv[2]:
        want = spec_of(open(sys.argv[2]).read())
        params = {p["ParameterKey"]: p.get("ParameterValue", "") for p in described.get("Parameters", [])}
        got_text = params.get("TransformSpec", "")
        try:
            got = spec_of(got_text)
        except Exception as e:  # noqa: BLE001 - any parse failure is a mismatch
            got = f"<does not parse: {e}>"
        if got != want:
            sys.exit(
                f"deploy: the stack's TransformSpec ({got_text!r}) differs from {sys.argv[2]}: "
                "the transform did not survive the deploy"
            )
        print(f"deploy: TransformSpec of {stack} matches {sys.argv[2]}")


if __name__ == "__main__":
    main()
