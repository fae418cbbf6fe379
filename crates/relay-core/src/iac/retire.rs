//! The source's retirement: the read-only resource policy for the rollback
//! window, the runbook's steps and the rollback, as exact commands.

use super::render::{sh, step, Step};
use super::Owner;

/// The Sid of the statement the read-only step adds.
pub const READ_ONLY_SID: &str = "DdbRelayRetiredReadOnly";

/// The read-only resource policy for the source's rollback window: every
/// principal is denied writes; reads (and its stream) still work.
/// `existing`: the table's resource policy now, kept whole, with the Deny
/// statement added to it (replacing an earlier one of ours).
pub fn read_only_policy(
    table_arn: &str,
    existing: Option<&str>,
) -> Result<serde_json::Value, String> {
    let deny = deny_writes(table_arn);
    let Some(text) = existing else {
        return Ok(serde_json::json!({"Version": "2012-10-17", "Statement": [deny]}));
    };
    let mut doc: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("the table's resource policy does not parse as JSON: {e}"))?;
    let obj = doc
        .as_object_mut()
        .ok_or("the table's resource policy is not a JSON object")?;
    let mut statements = match obj.remove("Statement") {
        Some(serde_json::Value::Array(a)) => a,
        Some(one @ serde_json::Value::Object(_)) => vec![one],
        None => Vec::new(),
        Some(_) => return Err("the table's resource policy has an odd Statement".into()),
    };
    statements.retain(|st| st.get("Sid").and_then(|v| v.as_str()) != Some(READ_ONLY_SID));
    statements.push(deny);
    obj.insert("Statement".into(), serde_json::Value::Array(statements));
    Ok(doc)
}

/// The table's own resource policy: `policy` without the statement the
/// read-only step added (adopt run again inside the window reads it back
/// with ours in it). `None`: nothing of the table's own is left.
pub fn own_policy(policy: &str) -> Result<Option<String>, String> {
    let mut doc: serde_json::Value = serde_json::from_str(policy)
        .map_err(|e| format!("the table's resource policy does not parse as JSON: {e}"))?;
    let Some(obj) = doc.as_object_mut() else {
        return Err("the table's resource policy is not a JSON object".into());
    };
    let ours =
        |st: &serde_json::Value| st.get("Sid").and_then(|v| v.as_str()) == Some(READ_ONLY_SID);
    match obj.get_mut("Statement") {
        Some(serde_json::Value::Array(a)) => {
            if !a.iter().any(ours) {
                return Ok(Some(policy.to_string()));
            }
            a.retain(|st| !ours(st));
            if a.is_empty() {
                return Ok(None);
            }
        }
        Some(one) if ours(one) => return Ok(None),
        _ => return Ok(Some(policy.to_string())),
    }
    serde_json::to_string(&doc)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The most a DynamoDB resource policy may be, in bytes (whitespace counts).
pub const MAX_RESOURCE_POLICY_BYTES: usize = 20 * 1024;

fn deny_writes(table_arn: &str) -> serde_json::Value {
    serde_json::json!({
            "Sid": READ_ONLY_SID,
            "Effect": "Deny",
            "Principal": "*",
            "Action": [
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:BatchWriteItem",
                "dynamodb:PartiQLInsert",
                "dynamodb:PartiQLUpdate",
                "dynamodb:PartiQLDelete"
            ],
            "Resource": table_arn,
    })
}

/// What the lookup of a table's CloudFormation owner found.
#[derive(Clone, Copy, Debug)]
pub enum Ownership<'a> {
    Owned(&'a Owner),
    /// No stack holds it.
    Free,
    /// The lookup failed or could not finish: the steps cover a stack.
    Unknown,
}

/// The ddb-relay stack a retirement deletes, and what its template
/// retains (the control table and the three queues).
#[derive(Clone, Copy, Debug)]
pub struct RelayStack<'a> {
    pub name: &'a str,
    pub control_table: &'a str,
    pub queue_url: &'a str,
    pub dlq_url: &'a str,
    pub stream_failure_url: &'a str,
}

/// Retiring the source after cutover: read-only for a rollback window,
/// out of its old stack with Retain, then deleted on purpose (after a last
/// backup that is AVAILABLE). `relay`: the ddb-relay stack, deleted with
/// what it retains. `policy_revision`: the revision of the source's
/// resource policy when `adopt` read it (`None`: it had none); the
/// read-only step fails if the policy changed since. No step undoes an
/// earlier one: the rollback is [`rollback_step`], apart.
pub fn retire_steps(
    source: &str,
    region: &str,
    owner: Ownership<'_>,
    relay: &RelayStack<'_>,
    dir: &str,
    policy_revision: Option<&str>,
) -> Vec<Step> {
    let (t, r) = (sh(source), sh(region));
    let relay_stack = relay.name;
    let file = |f: &str| sh(&format!("{dir}/{f}"));
    let mut steps = vec![
        step(
            format!("Keep {source} from being deleted by anything but the last step"),
            Some(format!("ddb-relay --stack {} protect", sh(relay_stack))),
        ),
        step(
            format!("Rollback window: make {source} read-only (writes denied to every principal; reads and backups still work; TTL deletes go on). A writer still pointed at it now fails loudly instead of writing where nothing relays it. {} The put fails if the policy changed since adopt read it: run adopt --write again", match policy_revision {
                Some(_) => "The table's own resource policy is kept: the Deny statement is added to it (original-policy.json holds it as it was).",
                None => "The table had no resource policy.",
            }),
            Some(format!("aws dynamodb put-resource-policy --region {r} --resource-arn {} --policy {} --expected-revision-id {}", table_arn_of(source, region), sh(&format!("file://{dir}/read-only-policy.json")), sh(policy_revision.unwrap_or("NO_POLICY")))),
        ),
    ];
    let retain_then_remove = |stack: &str, logical: &str, retains: bool, steps: &mut Vec<Step>| {
        if !retains {
            steps.push(step(
                format!("In stack {stack}'s template set `DeletionPolicy: Retain` and `UpdateReplacePolicy: Retain` on {logical} (CDK: removalPolicy: RemovalPolicy.RETAIN) and deploy that change alone (if CloudFormation reports no changes, change the resource's Metadata too); check that the deployed stack says so"),
                Some(format!("ddb-relay --stack {} protect --dry-run", sh(relay_stack))),
            ));
        }
        steps.push(step(
            format!("Remove {logical} (and every reference to it) from stack {stack}'s template and deploy: CloudFormation reports it DELETE_SKIPPED and the table stays. Check that it is out of the stack and still there"),
            Some(format!("{{ aws cloudformation describe-stack-resource --region {r} --stack-name {} --logical-resource-id {logical} 2>&1 || true; }} | grep -qE 'Resource \\[?{logical}\\]? does not exist' && echo {} && aws dynamodb describe-table --region {r} --table-name {t} --query Table.TableStatus", sh(stack), sh(&format!("{logical} is out of stack {stack}")))),
        ));
    };
    match owner {
        Ownership::Owned(o) => retain_then_remove(&o.stack, &o.logical_id, o.retains(), &mut steps),
        Ownership::Unknown => steps.push(step(
            format!("The stack that owns {source} could not be looked up. If one does: set `DeletionPolicy: Retain` and `UpdateReplacePolicy: Retain` on its resource, deploy that alone, check it (`ddb-relay --stack {relay_stack} protect --dry-run` names the stack when it can), then remove the resource and deploy"),
            None,
        )),
        Ownership::Free => steps.push(step(
            format!("{source} is in no CloudFormation stack: remove it from whatever tool manages it without deleting it (Terraform: `terraform state rm`)"),
            None,
        )),
    }
    let rs = sh(relay_stack);
    // Visible, in flight (a `dlq list` holds messages for minutes) and
    // delayed: all three must be 0.
    let empty = |url: &str| {
        format!("test \"$(aws sqs get-queue-attributes --region {r} --queue-url {} --attribute-names ApproximateNumberOfMessages ApproximateNumberOfMessagesNotVisible ApproximateNumberOfMessagesDelayed --query 'Attributes.[ApproximateNumberOfMessages,ApproximateNumberOfMessagesNotVisible,ApproximateNumberOfMessagesDelayed]' --output text)\" = \"$(printf '0\\t0\\t0')\"", sh(url))
    };
    let delete_queue =
        |url: &str| format!("aws sqs delete-queue --region {r} --queue-url {}", sh(url));
    steps.push(step(
        "Delete the ddb-relay stack (its functions and triggers; neither table is in it). The command stops first unless its queue, dead-letter queue and stream failure queue are all empty. A change still in the dead-letter or stream failure queue is not in the target; after the switch, `ddb-relay dlq repair` would copy the source's item over the application's newer writes, so decide each key by hand (`ddb-relay dlq list`)",
        Some(format!(
            "{} && {} && {} && aws cloudformation delete-stack --region {r} --stack-name {rs} && aws cloudformation wait stack-delete-complete --region {r} --stack-name {rs}",
            empty(relay.queue_url),
            empty(relay.dlq_url),
            empty(relay.stream_failure_url),
        )),
    ));
    steps.push(step(
        "Then what its template retains: the control table",
        Some(format!(
            "aws dynamodb delete-table --region {r} --table-name {}",
            sh(relay.control_table)
        )),
    ));
    steps.push(step(
        "And its three queues",
        Some(format!(
            "{} ; {} ; {}",
            delete_queue(relay.queue_url),
            delete_queue(relay.dlq_url),
            delete_queue(relay.stream_failure_url),
        )),
    ));
    let backup = format!("{source}-retired");
    steps.push(step(
        format!("After the window: a last on-demand backup of {source} (kept until you delete it); its ARN is saved in retired-backup-arn"),
        Some(format!("arn=\"$(aws dynamodb create-backup --region {r} --table-name {t} --backup-name {} --query BackupDetails.BackupArn --output text)\" && mkdir -p {} && printf '%s\\n' \"$arn\" > {} && echo \"$arn\"", sh(&backup), sh(dir), file("retired-backup-arn"))),
    ));
    steps.push(step(
        "Once that backup is AVAILABLE (the command checks the backup the last step made, by its ARN), turn deletion protection off and delete the table, on purpose",
        Some(format!("test \"$(aws dynamodb describe-backup --region {r} --backup-arn \"$(cat {})\" --query BackupDescription.BackupDetails.BackupStatus --output text)\" = AVAILABLE && aws dynamodb update-table --region {r} --table-name {t} --no-deletion-protection-enabled && aws dynamodb delete-table --region {r} --table-name {t}", file("retired-backup-arn"))),
    ));
    steps
}

/// The table's ARN, read at the time the command runs.
fn table_arn_of(table: &str, region: &str) -> String {
    format!(
        "\"$(aws dynamodb describe-table --region {} --table-name {} --query Table.TableArn --output text)\"",
        sh(region),
        sh(table)
    )
}

/// Rolling back inside the window: lift the read-only policy (put the
/// table's own policy back when it had one, from `dir`). Not a step of the
/// retirement: run it only to go back.
pub fn rollback_step(source: &str, region: &str, dir: &str, had_policy: bool) -> Step {
    let arn = table_arn_of(source, region);
    let r = sh(region);
    step(
        format!("inside the window only: lift the read-only policy{} and point the application back at {source}. Writes made to the new table since cutover are only in the new table", if had_policy { " (the table's own policy, as adopt read it, is put back)" } else { "" }),
        Some(if had_policy {
            format!("aws dynamodb put-resource-policy --region {r} --resource-arn {arn} --policy {}", sh(&format!("file://{dir}/original-policy.json")))
        } else {
            format!("aws dynamodb delete-resource-policy --region {r} --resource-arn {arn}")
        }),
    )
}
