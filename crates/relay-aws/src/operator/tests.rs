use super::*;

fn info(outputs: &[(&str, &str)]) -> StackInfo {
    let mut all: HashMap<String, String> = [
        "QueueUrl",
        "DeadLetterQueueUrl",
        "StreamFailureQueueUrl",
        "ForwarderFunction",
        "ApplierFunction",
        "ControlTable",
        "MigrationId",
    ]
    .iter()
    .map(|k| (k.to_string(), "x".to_string()))
    .collect();
    all.insert("SourceTable".into(), "users".into());
    all.insert("TargetTable".into(), "users".into());
    all.insert("CutoffMarginSeconds".into(), "60".into());
    all.extend(outputs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    StackInfo {
        name: "s".into(),
        status: "CREATE_COMPLETE".into(),
        outputs: all,
        parameters: HashMap::new(),
    }
}

fn stack(outputs: &[(&str, &str)]) -> Deployment {
    Deployment::from_stack(&info(outputs)).unwrap()
}

async fn conf() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .load()
        .await
}

#[tokio::test]
async fn a_target_elsewhere_is_reached_only_through_its_own_client() {
    let base = conf().await;
    let mut s = stack(&[
        ("TargetRegion", "us-west-2"),
        ("TargetRoleArn", "arn:aws:iam::222222222222:role/t"),
        (
            "ApplierRoleArn",
            "arn:aws:iam::111111111111:role/s-ApplierRole-1",
        ),
    ]);
    assert_eq!(s.roles.len(), 1);
    let mut sdk = Sdk::new(&base);
    sdk.route_target(&base, &mut s, "us-east-1").await;
    assert_eq!(s.target_table, "users@us-west-2/222222222222");
    let (client, name) = sdk.at(&s.target_table);
    assert_eq!(name, "users");
    assert_eq!(
        client.config().region().map(|r| r.as_ref()),
        Some("us-west-2")
    );
    assert!(sdk.is_remote(&s.target_table));
    // The source, of the same name, stays on the stack's client.
    let (client, name) = sdk.at(&s.source_table);
    assert_eq!(name, "users");
    assert_eq!(
        client.config().region().map(|r| r.as_ref()),
        Some("us-east-1")
    );
    assert!(!sdk.is_remote(&s.source_table));

    // A target in the stack's own region and account: nothing changes.
    let mut here = stack(&[("TargetRegion", "us-east-1")]);
    let mut sdk = Sdk::new(&base);
    sdk.route_target(&base, &mut here, "us-east-1").await;
    assert_eq!(
        (here.target_table.as_str(), here.target.region.as_deref()),
        ("users", None)
    );
    assert!(!sdk.is_remote("users"));

    let bad = Deployment::from_stack(&info(&[("TargetRoleArn", "not-an-arn")]));
    assert!(bad.unwrap_err().contains("TARGET_ROLE_ARN"));
}
