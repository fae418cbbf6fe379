//! What a restored or copied target lacks that the source had, with the
//! exact command that gives it the source's setting.

use serde::Serialize;

use super::{render, TableSpec, PROVISIONED};

/// A setting the source has and the target lacks (or has otherwise), with
/// the exact command that gives the target the source's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub setting: String,
    pub source: String,
    pub target: String,
    pub fix: String,
}

/// What a restored or copied target does not carry over from the source
/// (restores drop TTL, PITR, tags, streams, deletion protection). Keys and
/// indexes are not compared: changing them is why you migrate.
/// `region` is the target's region for the commands, `stack` the
/// ddb-relay stack.
pub fn gaps(source: &TableSpec, target: &TableSpec, region: &str, stack: &str) -> Vec<Gap> {
    let t = render::sh(&target.name);
    let r = render::sh(region);
    let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
    let mut out = Vec::new();
    let mut gap = |setting: &str, s: String, tv: String, fix: String| {
        out.push(Gap {
            setting: setting.into(),
            source: s,
            target: tv,
            fix,
        })
    };
    // Only what the target lacks: a fix never turns off a setting the
    // target has and the source had not.
    if source.ttl_attribute.is_some() && source.ttl_attribute != target.ttl_attribute {
        let fix = match (&source.ttl_attribute, &target.ttl_attribute) {
            (Some(a), None) => format!("aws dynamodb update-time-to-live --region {r} --table-name {t} --time-to-live-specification Enabled=true,AttributeName={}", render::sh(a)),
            (_, Some(a)) => format!("aws dynamodb update-time-to-live --region {r} --table-name {t} --time-to-live-specification Enabled=false,AttributeName={}  # then enable it on the source's attribute (one change per hour)", render::sh(a)),
            (None, None) => unreachable!(),
        };
        gap(
            "ttl",
            show(&source.ttl_attribute),
            show(&target.ttl_attribute),
            fix,
        );
    }
    if source.pitr && !target.pitr {
        gap(
            "pitr",
            source.pitr.to_string(),
            target.pitr.to_string(),
            format!("aws dynamodb update-continuous-backups --region {r} --table-name {t} --point-in-time-recovery-specification PointInTimeRecoveryEnabled={}", source.pitr),
        );
    }
    if source.stream_view.is_some() && source.stream_view != target.stream_view {
        let fix = match (&source.stream_view, &target.stream_view) {
            (Some(v), None) => format!("aws dynamodb update-table --region {r} --table-name {t} --stream-specification StreamEnabled=true,StreamViewType={v}  # only if something besides ddb-relay reads the source's stream"),
            // Changing an existing stream gives it a new ARN: whatever reads
            // the target's stream would lose its place.
            _ => "# the target's stream differs; changing it gives it a new ARN, so keep it unless nothing reads it".into(),
        };
        gap(
            "stream",
            show(&source.stream_view),
            show(&target.stream_view),
            fix,
        );
    }
    let missing: Vec<_> = source
        .tags
        .iter()
        .filter(|(k, v)| target.tags.get(*k) != Some(v))
        .collect();
    if !missing.is_empty() {
        let tags: Vec<serde_json::Value> = missing
            .iter()
            .map(|(k, v)| serde_json::json!({"Key": k, "Value": v}))
            .collect();
        gap(
            "tags",
            format!("{:?}", source.tags),
            format!("{:?}", target.tags),
            format!(
                "aws dynamodb tag-resource --region {r} --resource-arn \"$(aws dynamodb describe-table --region {r} --table-name {t} --query Table.TableArn --output text)\" --tags {}",
                render::sh(&serde_json::Value::Array(tags).to_string())
            ),
        );
    }
    if source.table_class.is_some() && source.table_class != target.table_class {
        let c = source.table_class.as_deref().unwrap_or("STANDARD");
        gap(
            "table_class",
            c.into(),
            target
                .table_class
                .clone()
                .unwrap_or_else(|| "STANDARD".into()),
            format!("aws dynamodb update-table --region {r} --table-name {t} --table-class {c}"),
        );
    }
    if let Some(k) = source
        .kms_key
        .as_ref()
        .filter(|k| target.kms_key.as_ref() != Some(*k))
    {
        let fix = format!("aws dynamodb update-table --region {r} --table-name {t} --sse-specification Enabled=true,SSEType=KMS,KMSMasterKeyId={}", render::sh(k));
        gap("sse", show(&source.kms_key), show(&target.kms_key), fix);
    }
    if source.billing != target.billing {
        let fix = match source.throughput {
            Some(c) if source.billing == PROVISIONED && target.gsis.is_empty() => format!("aws dynamodb update-table --region {r} --table-name {t} --billing-mode PROVISIONED --provisioned-throughput ReadCapacityUnits={},WriteCapacityUnits={}", c.read, c.write),
            Some(c) if source.billing == PROVISIONED => format!("# in one update-table call: --billing-mode PROVISIONED --provisioned-throughput ReadCapacityUnits={},WriteCapacityUnits={} and each index's capacity in --global-secondary-index-updates (the target's indexes are not the source's)", c.read, c.write),
            _ => format!("aws dynamodb update-table --region {r} --table-name {t} --billing-mode {}", source.billing),
        };
        gap(
            "billing",
            source.billing.clone(),
            target.billing.clone(),
            fix,
        );
    }
    if source.deletion_protection && !target.deletion_protection {
        gap(
            "deletion_protection",
            "true".into(),
            "false".into(),
            format!("ddb-relay --stack {} protect --target", render::sh(stack)),
        );
    }
    out
}
