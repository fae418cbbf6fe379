//! The user's IaC: a table as CloudFormation defines it, the stack that
//! owns it, deletion protection, a stack's template.

use aws_sdk_cloudformation::types::{StackStatus, TemplateStage};
use relay_core::iac::{self, AttrDef, Index, KeyPart, Owner, TableSpec, Throughput};

use std::future::Future;

use super::{e, Sdk};
use crate::sdk::classify;
use crate::AwsError;

/// The user's IaC: a table as CloudFormation defines it, the stack that
/// owns it, deletion protection.
pub trait Iac: Send + Sync {
    /// The table's settings as an `AWS::DynamoDB::Table` declares them
    /// (`None`: no such table).
    fn table_spec(
        &self,
        table: &str,
    ) -> impl Future<Output = Result<Option<relay_core::iac::TableSpec>, AwsError>> + Send;
    fn set_deletion_protection(
        &self,
        table: &str,
        on: bool,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// The CloudFormation stack (in this region and account) whose resource
    /// `table` is, with that resource's policies as deployed (`None`: no
    /// stack owns it).
    fn owner(
        &self,
        table: &str,
    ) -> impl Future<Output = Result<Option<relay_core::iac::Owner>, AwsError>> + Send;
    /// A stack's template as it was submitted (`TemplateStage=Original`).
    fn template(&self, stack: &str) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// The table's resource policy and its revision id (`None`: it has
    /// none). `arn`: the table's ARN.
    fn resource_policy(
        &self,
        table: &str,
        arn: &str,
    ) -> impl Future<Output = Result<Option<(String, String)>, AwsError>> + Send;
}

/// Stacks a scan for the owner reads at most (only where the service
/// cannot look a resource up by its physical id).
const OWNER_SCAN_STACKS: usize = 200;

fn keys(k: &[aws_sdk_dynamodb::types::KeySchemaElement]) -> Vec<KeyPart> {
    k.iter()
        .map(|k| KeyPart {
            name: k.attribute_name().to_string(),
            kind: k.key_type().as_str().to_string(),
        })
        .collect()
}

fn projection(p: Option<&aws_sdk_dynamodb::types::Projection>) -> (String, Vec<String>) {
    (
        p.and_then(|p| p.projection_type())
            .map(|t| t.as_str().to_string())
            .unwrap_or_else(|| "ALL".into()),
        p.map(|p| p.non_key_attributes().to_vec())
            .unwrap_or_default(),
    )
}

impl Iac for Sdk {
    async fn table_spec(&self, table: &str) -> Result<Option<TableSpec>, AwsError> {
        let Some(t) = self.describe_table(table).await? else {
            return Ok(None);
        };
        let t = &t;
        let (ddb, name) = self.at(table);
        let billing = t
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str().to_string())
            .unwrap_or_else(|| iac::PROVISIONED.into());
        let capacity = |p: Option<&aws_sdk_dynamodb::types::ProvisionedThroughputDescription>| {
            p.map(|p| Throughput {
                read: p.read_capacity_units().unwrap_or(0),
                write: p.write_capacity_units().unwrap_or(0),
            })
        };
        let stream = t.stream_specification().filter(|s| s.stream_enabled());
        let arn = t.table_arn().unwrap_or_default().to_string();
        let mut spec = TableSpec {
            name: name.to_string(),
            attributes: t
                .attribute_definitions()
                .iter()
                .map(|a| AttrDef {
                    name: a.attribute_name().to_string(),
                    ty: a.attribute_type().as_str().to_string(),
                })
                .collect(),
            key: keys(t.key_schema()),
            throughput: capacity(t.provisioned_throughput()),
            gsis: t
                .global_secondary_indexes()
                .iter()
                .map(|g| {
                    let (projection, non_key) = projection(g.projection());
                    Index {
                        name: g.index_name().unwrap_or_default().to_string(),
                        key: keys(g.key_schema()),
                        projection,
                        non_key,
                        throughput: capacity(g.provisioned_throughput()),
                    }
                })
                .collect(),
            lsis: t
                .local_secondary_indexes()
                .iter()
                .map(|l| {
                    let (projection, non_key) = projection(l.projection());
                    Index {
                        name: l.index_name().unwrap_or_default().to_string(),
                        key: keys(l.key_schema()),
                        projection,
                        non_key,
                        throughput: None,
                    }
                })
                .collect(),
            billing,
            stream_view: stream
                .and_then(|s| s.stream_view_type())
                .map(|v| v.as_str().to_string()),
            ttl_attribute: None,
            pitr: false,
            deletion_protection: t.deletion_protection_enabled().unwrap_or(false),
            table_class: t
                .table_class_summary()
                .and_then(|c| c.table_class())
                .map(|c| c.as_str().to_string()),
            kms_key: t
                .sse_description()
                .filter(|s| {
                    s.status().map(|x| x.as_str()) == Some("ENABLED")
                        && s.sse_type().map(|x| x.as_str()) == Some("KMS")
                })
                .and_then(|s| s.kms_master_key_arn())
                .map(str::to_string),
            tags: Default::default(),
        };
        spec.ttl_attribute = super::Tables::ttl_attribute(self, table).await?;
        let backups = ddb
            .describe_continuous_backups()
            .table_name(name)
            .send()
            .await
            .map_err(e("DescribeContinuousBackups"))?;
        spec.pitr = backups
            .continuous_backups_description()
            .and_then(|c| c.point_in_time_recovery_description())
            .and_then(|p| p.point_in_time_recovery_status())
            .map(|s| s.as_str() == "ENABLED")
            .unwrap_or(false);
        let mut token = None;
        // A table holds at most 50 tags; the pages are bounded by that.
        for _ in 0..50 {
            let page = ddb
                .list_tags_of_resource()
                .resource_arn(&arn)
                .set_next_token(token)
                .send()
                .await
                .map_err(e("ListTagsOfResource"))?;
            for t in page.tags() {
                spec.tags.insert(t.key().to_string(), t.value().to_string());
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(Some(spec.normalised()))
    }

    async fn set_deletion_protection(&self, table: &str, on: bool) -> Result<(), AwsError> {
        let (ddb, name) = self.at(table);
        ddb.update_table()
            .table_name(name)
            .deletion_protection_enabled(on)
            .send()
            .await
            .map_err(e("UpdateTable"))?;
        Ok(())
    }

    async fn owner(&self, table: &str) -> Result<Option<Owner>, AwsError> {
        // CloudFormation looks in its own region and account only.
        if self.is_remote(table) {
            return Ok(None);
        }
        let found = match self
            .cfn
            .describe_stack_resources()
            .physical_resource_id(table)
            .send()
            .await
        {
            Ok(d) => {
                let rows = d.stack_resources();
                match rows.iter().find(|r| holds(r, table)) {
                    Some(r) => Some((
                        r.stack_id()
                            .or(r.stack_name())
                            .unwrap_or_default()
                            .to_string(),
                        r.logical_resource_id().unwrap_or_default().to_string(),
                        r.resource_type().unwrap_or(iac::TABLE_TYPE).to_string(),
                    )),
                    // DescribeStackResources returns a stack's first 100
                    // resources only: read the rest of that stack.
                    None => match rows
                        .iter()
                        .find(|r| !deleted(r.resource_status().map(|s| s.as_str())))
                        .and_then(|r| r.stack_id())
                    {
                        Some(stack) => self.find_in_stack(stack, table).await?,
                        None => None,
                    },
                }
            }
            Err(err) => {
                let err = classify("DescribeStackResources", &err);
                if err.code != "ValidationError" {
                    return Err(err);
                }
                // AWS: "Stack for <id> does not exist" is its answer for a
                // resource in no stack. Any other ValidationError is a
                // service that cannot look up by physical id: scan instead.
                if err.message.starts_with("Stack for ") {
                    None
                } else {
                    self.scan_for_owner(table).await?
                }
            }
        };
        let Some((stack, logical_id, resource_type)) = found else {
            return Ok(None);
        };
        let d = self
            .cfn
            .describe_stacks()
            .stack_name(&stack)
            .send()
            .await
            .map_err(e("DescribeStacks"))?;
        let info = d.stacks().first();
        let name = info
            .and_then(|s| s.stack_name())
            .map(str::to_string)
            .unwrap_or_else(|| stack.clone());
        let root_stack = info
            .and_then(|s| s.root_id())
            .map(|arn| arn.split('/').nth(1).unwrap_or(arn).to_string());
        let body = self
            .cfn
            .get_template()
            .stack_name(&stack)
            .template_stage(TemplateStage::Processed)
            .send()
            .await
            .map_err(e("GetTemplate"))?;
        let (deletion_policy, update_replace_policy) =
            iac::resource_policies(body.template_body().unwrap_or_default(), &logical_id)
                .map_err(|m| AwsError::permanent("GetTemplate", "InvalidTemplate", &m))?
                .unwrap_or((None, None));
        Ok(Some(Owner {
            stack: name,
            logical_id,
            deletion_policy,
            update_replace_policy,
            root_stack,
            resource_type,
        }))
    }

    async fn resource_policy(
        &self,
        table: &str,
        arn: &str,
    ) -> Result<Option<(String, String)>, AwsError> {
        let (ddb, _) = self.at(table);
        match ddb.get_resource_policy().resource_arn(arn).send().await {
            Ok(p) => Ok(p
                .policy
                .map(|policy| (policy, p.revision_id.unwrap_or_default()))),
            Err(err) => {
                let err = classify("GetResourcePolicy", &err);
                if err.code == "PolicyNotFoundException" {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    async fn template(&self, stack: &str) -> Result<String, AwsError> {
        let t = self
            .cfn
            .get_template()
            .stack_name(stack)
            .template_stage(TemplateStage::Original)
            .send()
            .await
            .map_err(e("GetTemplate"))?;
        Ok(t.template_body().unwrap_or_default().to_string())
    }
}

/// A resource row that is `table` and still in its stack.
fn holds(r: &aws_sdk_cloudformation::types::StackResource, table: &str) -> bool {
    is_table(r.resource_type(), r.physical_resource_id(), table)
        && !deleted(r.resource_status().map(|s| s.as_str()))
}

/// A resource of a type that owns a DynamoDB table (`AWS::DynamoDB::Table`,
/// or `AWS::DynamoDB::GlobalTable` from CDK's `TableV2`), named `table`.
fn is_table(ty: Option<&str>, physical: Option<&str>, table: &str) -> bool {
    matches!(ty, Some(iac::TABLE_TYPE) | Some(iac::GLOBAL_TABLE_TYPE)) && physical == Some(table)
}

/// A resource that left its stack (deleted, or skipped under Retain), or a
/// row of a deleted stack. DELETE_FAILED and DELETE_IN_PROGRESS are still
/// in it.
fn deleted(status: Option<&str>) -> bool {
    matches!(status, Some("DELETE_COMPLETE") | Some("DELETE_SKIPPED"))
}

/// Where a table was found: (stack, logical id, resource type).
type Found = (String, String, String);

impl Sdk {
    /// The (stack id, logical id) of `table` in one stack, read page by page.
    async fn find_in_stack(&self, stack: &str, table: &str) -> Result<Option<Found>, AwsError> {
        let mut token = None;
        // At most 500 resources a stack: 5 pages of 100.
        for _ in 0..10 {
            let page = self
                .cfn
                .list_stack_resources()
                .stack_name(stack)
                .set_next_token(token)
                .send()
                .await
                .map_err(e("ListStackResources"))?;
            if let Some(r) = page.stack_resource_summaries().iter().find(|r| {
                is_table(r.resource_type(), r.physical_resource_id(), table)
                    && !deleted(r.resource_status().map(|s| s.as_str()))
            }) {
                return Ok(Some((
                    stack.to_string(),
                    r.logical_resource_id().unwrap_or_default().to_string(),
                    r.resource_type().unwrap_or(iac::TABLE_TYPE).to_string(),
                )));
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(None)
    }

    /// The (stack, logical id) holding `table`, read stack by stack (at
    /// most [`OWNER_SCAN_STACKS`]; past that, an error: unknown is not
    /// "no stack").
    async fn scan_for_owner(&self, table: &str) -> Result<Option<Found>, AwsError> {
        let live: Vec<StackStatus> = [
            "CREATE_COMPLETE",
            "UPDATE_COMPLETE",
            "UPDATE_ROLLBACK_COMPLETE",
            "IMPORT_COMPLETE",
            "IMPORT_ROLLBACK_COMPLETE",
            "ROLLBACK_COMPLETE",
            "UPDATE_ROLLBACK_FAILED",
        ]
        .into_iter()
        .map(StackStatus::from)
        .collect();
        let mut names = Vec::new();
        let mut token = None;
        while names.len() < OWNER_SCAN_STACKS {
            let page = self
                .cfn
                .list_stacks()
                .set_stack_status_filter(Some(live.clone()))
                .set_next_token(token)
                .send()
                .await
                .map_err(e("ListStacks"))?;
            names.extend(
                page.stack_summaries()
                    .iter()
                    .filter_map(|s| s.stack_name().map(str::to_string)),
            );
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let more = token.is_some() || names.len() > OWNER_SCAN_STACKS;
        names.truncate(OWNER_SCAN_STACKS);
        for stack in names {
            let d = match self
                .cfn
                .describe_stack_resources()
                .stack_name(&stack)
                .send()
                .await
            {
                Ok(d) => d,
                // Deleted since it was listed.
                Err(err) if classify("DescribeStackResources", &err).code == "ValidationError" => {
                    continue
                }
                Err(err) => return Err(classify("DescribeStackResources", &err)),
            };
            if let Some(r) = d.stack_resources().iter().find(|r| holds(r, table)) {
                return Ok(Some((
                    stack,
                    r.logical_resource_id().unwrap_or_default().to_string(),
                    r.resource_type().unwrap_or(iac::TABLE_TYPE).to_string(),
                )));
            }
            // DescribeStackResources gives a stack's first 100 resources.
            if d.stack_resources().len() >= 100 {
                if let Some(found) = self.find_in_stack(&stack, table).await? {
                    return Ok(Some(found));
                }
            }
        }
        if more {
            return Err(AwsError::permanent(
                "ListStacks",
                "OwnerUnknown",
                &format!("{table} is in none of the first {OWNER_SCAN_STACKS} stacks read (this endpoint cannot look a resource up by its physical id)"),
            ));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::{deleted, is_table};

    /// Review: a resource whose delete failed is still in its stack, and a
    /// CDK `TableV2` (`AWS::DynamoDB::GlobalTable`) owns its table too.
    #[test]
    fn owning_rows_are_tables_or_global_tables_not_yet_deleted() {
        assert!(is_table(Some("AWS::DynamoDB::Table"), Some("t"), "t"));
        assert!(is_table(Some("AWS::DynamoDB::GlobalTable"), Some("t"), "t"));
        assert!(!is_table(Some("AWS::SQS::Queue"), Some("t"), "t"));
        assert!(!is_table(Some("AWS::DynamoDB::Table"), Some("u"), "t"));
        for gone in ["DELETE_COMPLETE", "DELETE_SKIPPED"] {
            assert!(deleted(Some(gone)), "{gone}");
        }
        for held in [
            "DELETE_FAILED",
            "DELETE_IN_PROGRESS",
            "CREATE_COMPLETE",
            "IMPORT_COMPLETE",
            "UPDATE_COMPLETE",
        ] {
            assert!(!deleted(Some(held)), "{held}");
        }
        assert!(!deleted(None));
    }
}
