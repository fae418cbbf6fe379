//! The retirement runbook and the read-only resource policy.

use super::render::*;
use super::*;

const RELAY: RelayStack<'static> = RelayStack {
    name: "relay",
    control_table: "relay-control",
    queue_url: "http://q/relay-queue.fifo",
    dlq_url: "http://q/relay-dlq.fifo",
    stream_failure_url: "http://q/relay-failures",
};

#[test]
fn retirement_protects_first_and_deletes_last_after_a_backup() {
    let o = Owner {
        stack: "app".into(),
        logical_id: "Orders".into(),
        deletion_policy: None,
        update_replace_policy: None,
        root_stack: None,
        resource_type: TABLE_TYPE.into(),
    };
    let steps = retire_steps(
        "orders",
        "us-east-1",
        Ownership::Owned(&o),
        &RELAY,
        "my dir",
        None,
    );
    let cmds: Vec<&str> = steps.iter().filter_map(|s| s.command.as_deref()).collect();
    assert_eq!(cmds[0], "ddb-relay --stack relay protect");
    assert!(
        cmds[1].contains("put-resource-policy")
            && cmds[1].ends_with(
                "--policy 'file://my dir/read-only-policy.json' --expected-revision-id NO_POLICY"
            ),
        "{}",
        cmds[1]
    );
    // No step undoes an earlier one: the rollback is apart.
    assert!(!cmds.iter().any(|c| c.contains("delete-resource-policy")));
    assert!(rollback_step("orders", "us-east-1", "my dir", false)
        .command
        .unwrap()
        .contains("delete-resource-policy"));
    assert!(steps.iter().any(|s| s
        .what
        .contains("`DeletionPolicy: Retain` and `UpdateReplacePolicy: Retain` on Orders")));
    // "Out of the stack" is read for that one resource (no 100-row cap).
    let removed = cmds
        .iter()
        .find(|c| c.contains("describe-stack-resource "))
        .unwrap();
    assert!(
        removed.contains("--stack-name app --logical-resource-id Orders")
            && removed.contains("grep -qE 'Resource \\[?Orders\\]? does not exist'"),
        "{removed}"
    );
    let backup = cmds
        .iter()
        .position(|c| c.contains("create-backup"))
        .unwrap();
    let delete = cmds
        .iter()
        .position(|c| c.contains("delete-table --region us-east-1 --table-name orders"))
        .unwrap();
    assert!(backup < delete && delete == cmds.len() - 1);
    // The backup's ARN is saved (only once the backup call succeeded), and
    // the delete checks that very backup.
    assert!(
        cmds[backup].starts_with("arn=\"$(aws dynamodb create-backup")
            && cmds[backup].ends_with("--output text)\" && mkdir -p 'my dir' && printf '%s\\n' \"$arn\" > 'my dir/retired-backup-arn' && echo \"$arn\""),
        "{}",
        cmds[backup]
    );
    assert!(
        cmds[delete].starts_with("test \"$(aws dynamodb describe-backup --region us-east-1 --backup-arn \"$(cat 'my dir/retired-backup-arn')\""),
        "{}",
        cmds[delete]
    );
    assert!(!cmds[delete].contains("list-backups"));
    assert!(cmds[delete].contains("= AVAILABLE && aws dynamodb update-table --region us-east-1 --table-name orders --no-deletion-protection-enabled &&"));
    // The relay stack goes, but only while none of its queues holds
    // anything (visible, in flight or delayed); then, each a step of its
    // own (re-runnable), what it retains: the control table, the queues.
    let relay = cmds
        .iter()
        .position(|c| c.contains("delete-stack"))
        .unwrap();
    let at = |p: &str| {
        cmds[relay]
            .find(p)
            .unwrap_or_else(|| panic!("{p} in {}", cmds[relay]))
    };
    for q in ["relay-queue.fifo", "relay-dlq.fifo", "relay-failures"] {
        assert!(at(&format!("--queue-url http://q/{q} --attribute-names ApproximateNumberOfMessages ApproximateNumberOfMessagesNotVisible ApproximateNumberOfMessagesDelayed")) < at("delete-stack"), "{q}");
        assert!(
            cmds[relay + 2].contains(&format!(
                "delete-queue --region us-east-1 --queue-url http://q/{q}"
            )),
            "{q}"
        );
    }
    assert_eq!(
        cmds[relay + 1],
        "aws dynamodb delete-table --region us-east-1 --table-name relay-control"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.what.contains("decide each key by hand")),
        "no blind repair after the switch"
    );
    // A retaining owner needs no policy edit; an unknown one gets the generic steps.
    let kept = Owner {
        deletion_policy: Some("Retain".into()),
        update_replace_policy: Some("Retain".into()),
        ..o
    };
    assert!(!retire_steps(
        "orders",
        "us-east-1",
        Ownership::Owned(&kept),
        &RELAY,
        "d",
        None
    )
    .iter()
    .any(|s| s.what.contains("`DeletionPolicy: Retain`")));
    assert!(
        retire_steps("orders", "us-east-1", Ownership::Unknown, &RELAY, "d", None)
            .iter()
            .any(|s| s.what.contains("could not be looked up") && s.what.contains("Retain"))
    );
    assert!(
        retire_steps("orders", "us-east-1", Ownership::Free, &RELAY, "d", None)
            .iter()
            .any(|s| s.what.contains("in no CloudFormation stack"))
    );
    let p = read_only_policy("arn:aws:dynamodb:us-east-1:1:table/orders", None).unwrap();
    assert_eq!(p["Statement"][0]["Effect"], "Deny");
    assert!(p["Statement"][0]["Action"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| !a.as_str().unwrap().contains("Get")));
}

/// Review M1: the source's own resource policy is kept. The Deny statement
/// is added to it (once, however often adopt runs), the put is conditional
/// on the revision adopt read, and the rollback puts the original back.
#[test]
fn the_read_only_step_keeps_the_tables_own_resource_policy() {
    let arn = "arn:aws:dynamodb:us-east-1:1:table/orders";
    let own = r#"{"Version":"2012-10-17","Id":"mine","Statement":{"Sid":"Reader","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::2:root"},"Action":"dynamodb:GetItem","Resource":"*"}}"#;
    let merged = read_only_policy(arn, Some(own)).unwrap();
    assert_eq!(merged["Id"], "mine");
    let st = merged["Statement"].as_array().unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(
        st[0]["Sid"], "Reader",
        "the table's own statement stays first"
    );
    assert_eq!(st[1]["Sid"], READ_ONLY_SID);
    // Adopt run again over the read-only policy: still one Deny.
    let again = read_only_policy(arn, Some(&merged.to_string())).unwrap();
    assert_eq!(again, merged);
    assert!(read_only_policy(arn, Some("not json")).is_err());
    let steps = retire_steps(
        "orders",
        "us-east-1",
        Ownership::Free,
        &RELAY,
        "d",
        Some("rev-7"),
    );
    let put = steps[1].command.as_deref().unwrap();
    assert!(
        put.ends_with("--policy file://d/read-only-policy.json --expected-revision-id rev-7"),
        "{put}"
    );
    assert!(steps[1].what.contains("original-policy.json"));
    // Adopt run again inside the window reads the policy back with our
    // statement in it: the table's own policy is what is left (its one
    // statement now in a list, which means the same).
    let mut want: serde_json::Value = serde_json::from_str(own).unwrap();
    want["Statement"] = serde_json::json!([want["Statement"].clone()]);
    let left: serde_json::Value =
        serde_json::from_str(&own_policy(&merged.to_string()).unwrap().unwrap()).unwrap();
    assert_eq!(left, want);
    assert_eq!(own_policy(own).unwrap().as_deref(), Some(own), "untouched");
    let only_ours = read_only_policy(arn, None).unwrap().to_string();
    assert_eq!(own_policy(&only_ours).unwrap(), None, "the table had none");
    assert!(own_policy("[").is_err());
    let back = rollback_step("orders", "us-east-1", "d", true)
        .command
        .unwrap();
    assert!(
        back.contains("put-resource-policy")
            && back.ends_with("--policy file://d/original-policy.json"),
        "{back}"
    );
}

#[test]
fn exposure_is_cleared_by_deletion_protection_or_by_both_retain_policies() {
    let owner = |d: Option<&str>, u: Option<&str>| Owner {
        stack: "app".into(),
        logical_id: "Orders".into(),
        deletion_policy: d.map(str::to_string),
        update_replace_policy: u.map(str::to_string),
        root_stack: None,
        resource_type: TABLE_TYPE.into(),
    };
    let none = owner(None, None);
    let e = exposure("orders", false, Some(&none));
    assert!(e.exposed);
    assert!(e.detail.contains("stack app as Orders"), "{}", e.detail);
    assert!(e.detail.contains("ddb-relay protect"), "{}", e.detail);
    assert!(
        e.detail.contains("DeletionPolicy not set (Delete)"),
        "{}",
        e.detail
    );
    // One policy is not enough: a replacing edit deletes it all the same.
    assert!(exposure("orders", false, Some(&owner(Some("Retain"), None))).exposed);
    assert!(
        exposure(
            "orders",
            false,
            Some(&owner(Some("Retain"), Some("Delete")))
        )
        .exposed
    );
    assert!(
        exposure(
            "orders",
            false,
            Some(&owner(Some("<expression>"), Some("Retain")))
        )
        .exposed
    );
    assert!(
        !exposure(
            "orders",
            false,
            Some(&owner(Some("Retain"), Some("Retain")))
        )
        .exposed
    );
    assert!(
        !exposure(
            "orders",
            false,
            Some(&owner(Some("RetainExceptOnCreate"), Some("Retain")))
        )
        .exposed
    );
    assert!(!exposure("orders", true, Some(&none)).exposed);
    assert!(!exposure("orders", true, None).exposed);
    assert!(exposure("orders", false, None).exposed);
}
