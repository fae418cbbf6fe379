//! The operator's AWS calls (feature `ops`, used by the `ddb-relay` CLI):
//! stack outputs, triggers, queues, tables, backups and restores, the control
//! item with conditional writes, and metrics.
//!
//! **Boundary:** like the rest of this crate, SDK types stay here. Items are
//! [`Attrs`], errors are [`AwsError`] with the service's code, so the CLI
//! can turn them into one-line messages that name the fix.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue as Av, TableStatus};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::convert::{from_sdk_item, to_sdk_item};
use crate::sdk::{classify, HasStatus};
use crate::AwsError;
use relay_core::control::{ControlState, ATTR_MIGRATION, ATTR_VERSION};
use relay_core::item::Attrs;

/// Clients for every service the operator touches.
#[derive(Clone, Debug)]
pub struct Ops {
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub cfn: aws_sdk_cloudformation::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub cw: aws_sdk_cloudwatch::Client,
}

fn e<E, R>(op: &'static str) -> impl FnOnce(aws_sdk_dynamodb::error::SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error,
    R: HasStatus,
{
    move |err| classify(op, &err)
}

fn ms(t: &aws_smithy_types::DateTime) -> i64 {
    t.secs() * 1000 + i64::from(t.subsec_nanos() / 1_000_000)
}

/// The outputs of a ddb-relay stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackInfo {
    pub name: String,
    pub status: String,
    pub outputs: HashMap<String, String>,
}

impl StackInfo {
    pub fn output(&self, key: &str) -> Option<&str> {
        self.outputs.get(key).map(String::as_str)
    }
}

/// An event source mapping, as far as the operator cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub uuid: String,
    pub state: String,
    pub source_arn: String,
}

/// A table, as far as the operator cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    pub status: String,
    pub key_names: Vec<String>,
    pub stream_arn: Option<String>,
    pub stream_view: Option<String>,
    pub item_count: Option<i64>,
}

/// A message read from a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMessage {
    pub id: String,
    pub receipt: String,
    pub body: String,
    pub group: Option<String>,
    pub receive_count: u64,
    pub sent_ms: Option<i64>,
}

/// The result of a conditional control-item write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlWrite {
    Written(ControlState),
    /// Somebody else changed the item since it was read.
    Conflict,
}

impl Ops {
    pub fn new(conf: &aws_config::SdkConfig) -> Self {
        Ops {
            ddb: aws_sdk_dynamodb::Client::new(conf),
            sqs: aws_sdk_sqs::Client::new(conf),
            cfn: aws_sdk_cloudformation::Client::new(conf),
            lambda: aws_sdk_lambda::Client::new(conf),
            cw: aws_sdk_cloudwatch::Client::new(conf),
        }
    }

    // ------------------------------------------------------------ stacks

    pub async fn stack(&self, name: &str) -> Result<StackInfo, AwsError> {
        let d = self
            .cfn
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .map_err(e("DescribeStacks"))?;
        let s = d.stacks().first().ok_or_else(|| {
            AwsError::permanent("DescribeStacks", "ValidationError", "stack not found")
        })?;
        Ok(StackInfo {
            name: name.to_string(),
            status: s
                .stack_status()
                .map(|x| x.as_str().to_string())
                .unwrap_or_default(),
            outputs: s
                .outputs()
                .iter()
                .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
                .collect(),
        })
    }

    // ------------------------------------------------------------ triggers

    /// The function's mappings whose source ARN starts with `prefix`
    /// (`arn:aws:sqs:` or `arn:aws:dynamodb:`).
    pub async fn mapping(&self, function: &str, prefix: &str) -> Result<Mapping, AwsError> {
        let list = self
            .lambda
            .list_event_source_mappings()
            .function_name(function)
            .send()
            .await
            .map_err(e("ListEventSourceMappings"))?;
        list.event_source_mappings()
            .iter()
            .find(|m| m.event_source_arn().is_some_and(|a| a.starts_with(prefix)))
            .map(|m| Mapping {
                uuid: m.uuid().unwrap_or_default().to_string(),
                state: m.state().unwrap_or("Unknown").to_string(),
                source_arn: m.event_source_arn().unwrap_or_default().to_string(),
            })
            .ok_or_else(|| {
                AwsError::permanent(
                    "ListEventSourceMappings",
                    "ResourceNotFoundException",
                    &format!("no {prefix}* trigger on function {function}"),
                )
            })
    }

    pub async fn mapping_state(&self, uuid: &str) -> Result<String, AwsError> {
        let m = self
            .lambda
            .get_event_source_mapping()
            .uuid(uuid)
            .send()
            .await
            .map_err(e("GetEventSourceMapping"))?;
        Ok(m.state().unwrap_or("Unknown").to_string())
    }

    pub async fn set_mapping(&self, uuid: &str, enabled: bool) -> Result<(), AwsError> {
        self.lambda
            .update_event_source_mapping()
            .uuid(uuid)
            .enabled(enabled)
            .send()
            .await
            .map_err(e("UpdateEventSourceMapping"))?;
        Ok(())
    }

    pub async fn function_timeout(&self, function: &str) -> Result<u64, AwsError> {
        let c = self
            .lambda
            .get_function_configuration()
            .function_name(function)
            .send()
            .await
            .map_err(e("GetFunctionConfiguration"))?;
        Ok(c.timeout().unwrap_or(3).max(0) as u64)
    }

    // ------------------------------------------------------------ queues

    /// (visible, in flight).
    pub async fn queue_counts(&self, url: &str) -> Result<(u64, u64), AwsError> {
        use aws_sdk_sqs::types::QueueAttributeName as N;
        let a = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(N::ApproximateNumberOfMessages)
            .attribute_names(N::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(e("GetQueueAttributes"))?;
        let attrs = a.attributes().cloned().unwrap_or_default();
        let n = |k: N| attrs.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((
            n(N::ApproximateNumberOfMessages),
            n(N::ApproximateNumberOfMessagesNotVisible),
        ))
    }

    pub async fn queue_visibility_s(&self, url: &str) -> Result<u64, AwsError> {
        use aws_sdk_sqs::types::QueueAttributeName as N;
        let a = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(N::VisibilityTimeout)
            .send()
            .await
            .map_err(e("GetQueueAttributes"))?;
        Ok(a.attributes()
            .and_then(|m| m.get(&N::VisibilityTimeout))
            .and_then(|v| v.parse().ok())
            .unwrap_or(30))
    }

    /// Receives up to `max` (<= 10) messages, hidden for `visibility_s`.
    pub async fn receive(
        &self,
        url: &str,
        max: i32,
        visibility_s: i32,
    ) -> Result<Vec<RawMessage>, AwsError> {
        use aws_sdk_sqs::types::MessageSystemAttributeName as S;
        let r = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, 10))
            .visibility_timeout(visibility_s)
            .message_system_attribute_names(S::All)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(e("ReceiveMessage"))?;
        Ok(r.messages()
            .iter()
            .map(|m| {
                let attrs = m.attributes();
                let get = |k: S| attrs.and_then(|a| a.get(&k)).cloned();
                RawMessage {
                    id: m.message_id().unwrap_or_default().to_string(),
                    receipt: m.receipt_handle().unwrap_or_default().to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    group: get(S::MessageGroupId),
                    receive_count: get(S::ApproximateReceiveCount)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    sent_ms: get(S::SentTimestamp).and_then(|v| v.parse().ok()),
                }
            })
            .collect())
    }

    pub async fn delete_message(&self, url: &str, receipt: &str) -> Result<(), AwsError> {
        self.sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(e("DeleteMessage"))?;
        Ok(())
    }

    /// Makes a received message visible again at once.
    pub async fn release_message(&self, url: &str, receipt: &str) -> Result<(), AwsError> {
        self.sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(e("ChangeMessageVisibility"))?;
        Ok(())
    }

    // ------------------------------------------------------------ tables

    /// `None` when the table does not exist.
    pub async fn table(&self, name: &str) -> Result<Option<TableInfo>, AwsError> {
        let d = match self.ddb.describe_table().table_name(name).send().await {
            Ok(d) => d,
            Err(err) => {
                let err = classify("DescribeTable", &err);
                return if err.code == "ResourceNotFoundException" {
                    Ok(None)
                } else {
                    Err(err)
                };
            }
        };
        let Some(t) = d.table() else { return Ok(None) };
        let mut keys: Vec<(bool, String)> = t
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.key_type().as_str() != "HASH",
                    k.attribute_name().to_string(),
                )
            })
            .collect();
        keys.sort();
        let spec = t.stream_specification();
        let enabled = spec.map(|s| s.stream_enabled()).unwrap_or(false);
        Ok(Some(TableInfo {
            name: name.to_string(),
            status: t
                .table_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            key_names: keys.into_iter().map(|(_, n)| n).collect(),
            stream_arn: if enabled {
                t.latest_stream_arn().map(str::to_string)
            } else {
                None
            },
            stream_view: if enabled {
                spec.and_then(|s| s.stream_view_type())
                    .map(|v| v.as_str().to_string())
            } else {
                None
            },
            item_count: t.item_count(),
        }))
    }

    pub async fn table_active(&self, name: &str) -> Result<bool, AwsError> {
        let d = self
            .ddb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(e("DescribeTable"))?;
        Ok(d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active))
    }

    /// (PITR enabled, latest restorable time in ms).
    pub async fn pitr(&self, table: &str) -> Result<(bool, Option<i64>), AwsError> {
        let d = self
            .ddb
            .describe_continuous_backups()
            .table_name(table)
            .send()
            .await
            .map_err(e("DescribeContinuousBackups"))?;
        let p = d
            .continuous_backups_description()
            .and_then(|c| c.point_in_time_recovery_description());
        let enabled = p
            .and_then(|p| p.point_in_time_recovery_status())
            .is_some_and(|s| s.as_str() == "ENABLED");
        let latest = p.and_then(|p| p.latest_restorable_date_time()).map(ms);
        Ok((enabled, latest))
    }

    /// Starts an on-demand backup; returns (ARN, creation time ms, status).
    pub async fn create_backup(
        &self,
        table: &str,
        name: &str,
    ) -> Result<(String, i64, String), AwsError> {
        let b = self
            .ddb
            .create_backup()
            .table_name(table)
            .backup_name(name)
            .send()
            .await
            .map_err(e("CreateBackup"))?;
        let d = b.backup_details().ok_or_else(|| {
            AwsError::permanent("CreateBackup", "NoDetails", "no backup details returned")
        })?;
        Ok((
            d.backup_arn().to_string(),
            ms(d.backup_creation_date_time()),
            d.backup_status().as_str().to_string(),
        ))
    }

    pub async fn backup_status(&self, arn: &str) -> Result<String, AwsError> {
        let d = self
            .ddb
            .describe_backup()
            .backup_arn(arn)
            .send()
            .await
            .map_err(e("DescribeBackup"))?;
        Ok(d.backup_description()
            .and_then(|b| b.backup_details())
            .map(|b| b.backup_status().as_str().to_string())
            .unwrap_or_default())
    }

    pub async fn restore_backup(&self, arn: &str, target: &str) -> Result<(), AwsError> {
        self.ddb
            .restore_table_from_backup()
            .backup_arn(arn)
            .target_table_name(target)
            .send()
            .await
            .map_err(e("RestoreTableFromBackup"))?;
        Ok(())
    }

    pub async fn restore_pitr(
        &self,
        source: &str,
        target: &str,
        at_ms: i64,
    ) -> Result<(), AwsError> {
        self.ddb
            .restore_table_to_point_in_time()
            .source_table_name(source)
            .target_table_name(target)
            .restore_date_time(aws_smithy_types::DateTime::from_millis(at_ms))
            .send()
            .await
            .map_err(e("RestoreTableToPointInTime"))?;
        Ok(())
    }

    /// Starts an export to S3; returns its ARN.
    pub async fn export(
        &self,
        table_arn: &str,
        bucket: &str,
        prefix: &str,
        at_ms: Option<i64>,
    ) -> Result<String, AwsError> {
        let mut req = self
            .ddb
            .export_table_to_point_in_time()
            .table_arn(table_arn)
            .s3_bucket(bucket)
            .s3_prefix(prefix)
            .export_format(aws_sdk_dynamodb::types::ExportFormat::DynamodbJson);
        if let Some(t) = at_ms {
            req = req.export_time(aws_smithy_types::DateTime::from_millis(t));
        }
        let r = req.send().await.map_err(e("ExportTableToPointInTime"))?;
        Ok(r.export_description()
            .and_then(|d| d.export_arn())
            .unwrap_or_default()
            .to_string())
    }

    /// (status, export time ms, manifest prefix).
    pub async fn export_status(
        &self,
        arn: &str,
    ) -> Result<(String, Option<i64>, Option<String>), AwsError> {
        let d = self
            .ddb
            .describe_export()
            .export_arn(arn)
            .send()
            .await
            .map_err(e("DescribeExport"))?;
        let x = d.export_description();
        Ok((
            x.and_then(|x| x.export_status())
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            x.and_then(|x| x.export_time()).map(ms),
            x.and_then(|x| x.export_manifest()).map(str::to_string),
        ))
    }

    pub async fn table_arn(&self, name: &str) -> Result<String, AwsError> {
        let d = self
            .ddb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(e("DescribeTable"))?;
        Ok(d.table()
            .and_then(|t| t.table_arn())
            .unwrap_or_default()
            .to_string())
    }

    pub async fn delete_table(&self, name: &str) -> Result<(), AwsError> {
        match self.ddb.delete_table().table_name(name).send().await {
            Ok(_) => Ok(()),
            Err(err) => {
                let err = classify("DeleteTable", &err);
                if err.code == "ResourceNotFoundException" {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    pub async fn get_item(&self, table: &str, key: &Attrs) -> Result<Option<Attrs>, AwsError> {
        let r = self
            .ddb
            .get_item()
            .table_name(table)
            .set_key(Some(to_sdk_item(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(e("GetItem"))?;
        match r.item() {
            None => Ok(None),
            Some(i) => from_sdk_item(i)
                .map(Some)
                .map_err(|u| AwsError::permanent("GetItem", "UnknownType", &u.to_string())),
        }
    }

    pub async fn put_item(&self, table: &str, item: &Attrs) -> Result<(), AwsError> {
        self.ddb
            .put_item()
            .table_name(table)
            .set_item(Some(to_sdk_item(item)))
            .send()
            .await
            .map_err(e("PutItem"))?;
        Ok(())
    }

    pub async fn delete_item(&self, table: &str, key: &Attrs) -> Result<(), AwsError> {
        self.ddb
            .delete_item()
            .table_name(table)
            .set_key(Some(to_sdk_item(key)))
            .send()
            .await
            .map_err(e("DeleteItem"))?;
        Ok(())
    }

    /// One page of a (parallel) scan: items and the key to continue from.
    pub async fn scan_page(
        &self,
        table: &str,
        segment: i32,
        total: i32,
        start: Option<Attrs>,
        consistent: bool,
    ) -> Result<(Vec<Attrs>, Option<Attrs>), AwsError> {
        let r = self
            .ddb
            .scan()
            .table_name(table)
            .segment(segment)
            .total_segments(total)
            .consistent_read(consistent)
            .set_exclusive_start_key(start.as_ref().map(to_sdk_item))
            .send()
            .await
            .map_err(e("Scan"))?;
        let unknown = |u: crate::convert::UnknownType| {
            AwsError::permanent("Scan", "UnknownType", &u.to_string())
        };
        let items = r
            .items()
            .iter()
            .map(|i| from_sdk_item(i).map_err(unknown))
            .collect::<Result<Vec<_>, _>>()?;
        let next = match r.last_evaluated_key() {
            Some(k) if !k.is_empty() => Some(from_sdk_item(k).map_err(unknown)?),
            _ => None,
        };
        Ok((items, next))
    }

    /// Puts `item` only if no item with its key exists (attribute
    /// `key_attr` absent). Returns whether it was written (false: newer data
    /// or a tombstone is there) and the write capacity consumed, if reported.
    pub async fn put_if_absent(
        &self,
        table: &str,
        item: &Attrs,
        key_attr: &str,
    ) -> Result<(bool, Option<f64>), AwsError> {
        match self
            .ddb
            .put_item()
            .table_name(table)
            .set_item(Some(to_sdk_item(item)))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", key_attr)
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await
        {
            Ok(r) => Ok((true, r.consumed_capacity().and_then(|c| c.capacity_units()))),
            Err(err) => {
                let err = classify("PutItem", &err);
                if err.code == "ConditionalCheckFailedException" {
                    Ok((false, None))
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Sets one attribute of an item (creating the item if needed), with no
    /// condition: for state that one writer owns (a scan segment's checkpoint).
    pub async fn set_attr(
        &self,
        table: &str,
        key: &Attrs,
        name: &str,
        value: relay_core::item::AttributeValue,
    ) -> Result<(), AwsError> {
        self.ddb
            .update_item()
            .table_name(table)
            .set_key(Some(to_sdk_item(key)))
            .update_expression("SET #n = :v")
            .expression_attribute_names("#n", name)
            .expression_attribute_values(":v", crate::convert::to_sdk(&value))
            .send()
            .await
            .map_err(e("UpdateItem"))?;
        Ok(())
    }

    /// Deletes the item at `key` only while it is still a tombstone.
    pub async fn delete_if_marked(
        &self,
        table: &str,
        key: &Attrs,
        marker: &str,
    ) -> Result<bool, AwsError> {
        match self
            .ddb
            .delete_item()
            .table_name(table)
            .set_key(Some(to_sdk_item(key)))
            .condition_expression("attribute_exists(#m)")
            .expression_attribute_names("#m", marker)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(err) => {
                let err = classify("DeleteItem", &err);
                if err.code == "ConditionalCheckFailedException" {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }

    // ------------------------------------------------------------ control

    pub async fn control(
        &self,
        table: &str,
        migration: &str,
    ) -> Result<Option<ControlState>, AwsError> {
        let key = Attrs::from([(
            ATTR_MIGRATION.to_string(),
            relay_core::item::AttributeValue::S(migration.to_string()),
        )]);
        match self.get_item(table, &key).await? {
            None => Ok(None),
            Some(item) => ControlState::from_item(&item)
                .map(Some)
                .map_err(|err| AwsError::permanent("GetItem", "BadControlItem", &err.to_string())),
        }
    }

    /// Writes `next` with `version = expected + 1` only if the stored
    /// version is still `expected` (or the item is absent when `expected`
    /// is 0): two operators cannot clobber each other.
    pub async fn write_control(
        &self,
        table: &str,
        next: &ControlState,
        expected: u64,
    ) -> Result<ControlWrite, AwsError> {
        let mut state = next.clone();
        state.version = expected + 1;
        let req = self
            .ddb
            .put_item()
            .table_name(table)
            .set_item(Some(to_sdk_item(&state.to_item())));
        let req = if expected == 0 {
            req.condition_expression("attribute_not_exists(#v) OR #v = :zero")
                .expression_attribute_names("#v", ATTR_VERSION)
                .expression_attribute_values(":zero", Av::N("0".into()))
        } else {
            req.condition_expression("#v = :v")
                .expression_attribute_names("#v", ATTR_VERSION)
                .expression_attribute_values(":v", Av::N(expected.to_string()))
        };
        match req.send().await {
            Ok(_) => Ok(ControlWrite::Written(state)),
            Err(err) => {
                let err = classify("PutItem", &err);
                if err.code == "ConditionalCheckFailedException" {
                    Ok(ControlWrite::Conflict)
                } else {
                    Err(err)
                }
            }
        }
    }

    // ------------------------------------------------------------ metrics

    /// Sum (or maximum) of a metric over `[since_ms, now]`; `None` when no
    /// datapoint exists.
    pub async fn metric(
        &self,
        namespace: &str,
        name: &str,
        dims: &[(&str, &str)],
        since_ms: i64,
        max: bool,
    ) -> Result<Option<f64>, AwsError> {
        use aws_sdk_cloudwatch::types::{Dimension, Statistic};
        let now = crate::runtime::now_ms();
        let mut req = self
            .cw
            .get_metric_statistics()
            .namespace(namespace)
            .metric_name(name)
            .start_time(aws_smithy_types::DateTime::from_millis(since_ms))
            .end_time(aws_smithy_types::DateTime::from_millis(now + 60_000))
            .period(60)
            .statistics(if max {
                Statistic::Maximum
            } else {
                Statistic::Sum
            });
        for (n, v) in dims {
            req = req.dimensions(Dimension::builder().name(*n).value(*v).build());
        }
        let r = req.send().await.map_err(e("GetMetricStatistics"))?;
        let values = r
            .datapoints()
            .iter()
            .filter_map(|d| if max { d.maximum() } else { d.sum() });
        Ok(if max {
            values.reduce(f64::max)
        } else {
            values.reduce(|a, b| a + b)
        })
    }
}
