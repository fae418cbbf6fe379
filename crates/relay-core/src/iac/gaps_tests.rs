//! What a restore dropped, and the commands that give it back.

use super::*;

fn orders() -> TableSpec {
    super::tests::orders()
}

#[test]
fn gaps_name_what_a_restore_dropped_with_the_exact_command() {
    let source = orders().normalised();
    let mut target = source.clone();
    target.name = "orders v2".into();
    assert!(gaps(&source, &target, "us-east-1", "relay").is_empty());
    target.ttl_attribute = None;
    target.pitr = false;
    target.stream_view = None;
    target.tags.clear();
    target.deletion_protection = false;
    target.key.reverse(); // keys are not gaps
    let g = gaps(&source, &target, "eu-west-1", "relay");
    let by = |s: &str| {
        g.iter()
            .find(|x| x.setting == s)
            .unwrap_or_else(|| panic!("{s}: {g:?}"))
            .fix
            .clone()
    };
    assert_eq!(g.len(), 5, "{g:#?}");
    assert_eq!(by("ttl"), "aws dynamodb update-time-to-live --region eu-west-1 --table-name 'orders v2' --time-to-live-specification Enabled=true,AttributeName=expires");
    assert_eq!(by("pitr"), "aws dynamodb update-continuous-backups --region eu-west-1 --table-name 'orders v2' --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true");
    assert!(by("stream").starts_with("aws dynamodb update-table --region eu-west-1 --table-name 'orders v2' --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES  # only if"), "{}", by("stream"));
    assert!(
        by("tags").ends_with(r#"--tags '[{"Key":"team","Value":"payments"}]'"#),
        "{}",
        by("tags")
    );
    assert_eq!(
        by("deletion_protection"),
        "ddb-relay --stack relay protect --target"
    );
}

/// Review: a gap is printed only where the target lacks what the source
/// has; a fix never turns off something the target has and the source
/// has not.
#[test]
fn gaps_only_add_what_the_source_had() {
    let source = TableSpec {
        ttl_attribute: None,
        pitr: false,
        kms_key: None,
        deletion_protection: false,
        ..orders().normalised()
    };
    let target = TableSpec {
        ttl_attribute: Some("expires".into()),
        pitr: true,
        kms_key: Some("arn:aws:kms:us-east-1:1:key/k".into()),
        deletion_protection: true,
        ..source.clone()
    };
    let g = gaps(&source, &target, "us-east-1", "relay");
    assert!(g.is_empty(), "{g:#?}");
    for fix in gaps(&target, &source, "us-east-1", "relay")
        .iter()
        .map(|g| &g.fix)
    {
        assert!(
            !fix.contains("Enabled=false") && !fix.contains("=false"),
            "{fix}"
        );
    }
}
