//! DynamoDB: tables, backups, restores, exports, single items, scans and
//! the control item.

use aws_sdk_dynamodb::types::AttributeValue as Av;
use relay_core::control::{ControlState, ATTR_MIGRATION, ATTR_VERSION};
use relay_core::item::{AttributeValue, Attrs};

use super::condition::condition;
use super::{e, ms, Cond, ControlWrite, Sdk, TableInfo, Tables, Written};
use crate::convert::{from_sdk_item, to_sdk, to_sdk_item};
use crate::sdk::classify;
use crate::AwsError;

/// Requests a BatchGetItem makes before its unprocessed keys are an error.
const BATCH_GET_ATTEMPTS: u32 = 8;

/// Which table this is ([`TableInfo::id`]): its TableId, or its creation
/// time where an engine gives no TableId.
fn table_id(t: &aws_sdk_dynamodb::types::TableDescription) -> Option<String> {
    t.table_id().map(str::to_string).or_else(|| {
        t.creation_date_time()
            .map(|c| format!("created:{}.{:09}", c.secs(), c.subsec_nanos()))
    })
}

/// A restore's answer's TableId only: an engine without one is asked
/// DescribeTable, whose creation time then stands in, as in [`table_id`].
fn answered_id(t: Option<&aws_sdk_dynamodb::types::TableDescription>) -> Option<String> {
    t.and_then(|t| t.table_id()).map(str::to_string)
}

/// `Ok(false)` for a failed condition, the error otherwise.
/// A restore into another region must say how to encrypt the new table
/// (the API requires the override there): the default, an AWS owned key.
fn cross_region_sse() -> aws_sdk_dynamodb::types::SseSpecification {
    aws_sdk_dynamodb::types::SseSpecification::builder()
        .enabled(false)
        .build()
}

fn conditional<T>(op: &'static str, r: Result<T, AwsError>) -> Result<Option<T>, AwsError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(err) if err.code == "ConditionalCheckFailedException" => Ok(None),
        Err(err) => Err(AwsError {
            operation: op,
            ..err
        }),
    }
}

impl Tables for Sdk {
    async fn describe(&self, name: &str) -> Result<Option<TableInfo>, AwsError> {
        let Some(t) = self.describe_table(name).await? else {
            return Ok(None);
        };
        let t = &t;
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
            size_bytes: t.table_size_bytes(),
            arn: t.table_arn().map(str::to_string),
            deletion_protection: t.deletion_protection_enabled().unwrap_or(false),
            id: table_id(t),
            restored: t.restore_summary().is_some(),
        }))
    }

    async fn ttl_attribute(&self, table: &str) -> Result<Option<String>, AwsError> {
        let (ddb, table) = self.at(table);
        let d = ddb
            .describe_time_to_live()
            .table_name(table)
            .send()
            .await
            .map_err(e("DescribeTimeToLive"))?;
        Ok(d.time_to_live_description()
            .filter(|d| {
                matches!(
                    d.time_to_live_status().map(|s| s.as_str()),
                    Some("ENABLED") | Some("ENABLING")
                )
            })
            .and_then(|d| d.attribute_name())
            .map(str::to_string))
    }

    async fn pitr(&self, table: &str) -> Result<(bool, Option<i64>), AwsError> {
        let (ddb, table) = self.at(table);
        let d = ddb
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

    async fn create_backup(&self, table: &str, name: &str) -> Result<(String, i64), AwsError> {
        let (ddb, table) = self.at(table);
        let b = ddb
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
        ))
    }

    async fn backup_status(&self, arn: &str) -> Result<String, AwsError> {
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

    async fn restore_backup(&self, arn: &str, target: &str) -> Result<Option<String>, AwsError> {
        let remote = self.is_remote(target);
        let (ddb, target) = self.at(target);
        let r = ddb
            .restore_table_from_backup()
            .backup_arn(arn)
            .target_table_name(target)
            .set_sse_specification_override(remote.then(cross_region_sse))
            .send()
            .await
            .map_err(e("RestoreTableFromBackup"))?;
        Ok(answered_id(r.table_description()))
    }

    async fn restore_pitr(
        &self,
        source: &str,
        target: &str,
        at_ms: i64,
    ) -> Result<Option<String>, AwsError> {
        let (ddb, target_name) = self.at(target);
        let mut req = ddb
            .restore_table_to_point_in_time()
            .target_table_name(target_name);
        req = if self.is_remote(target) {
            // Called in the target's region, naming the source by ARN.
            let arn = self
                .describe(source)
                .await?
                .and_then(|t| t.arn)
                .ok_or_else(|| {
                    AwsError::permanent(
                        "RestoreTableToPointInTime",
                        "ResourceNotFoundException",
                        &format!("source table {source} has no ARN (not found)"),
                    )
                })?;
            req.source_table_arn(arn)
                .sse_specification_override(cross_region_sse())
        } else {
            req.source_table_name(source)
        };
        let r = req
            .restore_date_time(aws_smithy_types::DateTime::from_millis(at_ms))
            .send()
            .await
            .map_err(e("RestoreTableToPointInTime"))?;
        Ok(answered_id(r.table_description()))
    }

    async fn export(
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

    async fn export_status(
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

    async fn delete_table(&self, name: &str) -> Result<(), AwsError> {
        let (ddb, name) = self.at(name);
        match ddb.delete_table().table_name(name).send().await {
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

    async fn get_item(&self, table: &str, key: &Attrs) -> Result<Option<Attrs>, AwsError> {
        let (ddb, table) = self.at(table);
        let r = ddb
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

    async fn batch_get(&self, table: &str, keys: &[Attrs]) -> Result<Vec<Attrs>, AwsError> {
        let (ddb, table) = self.at(table);
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut found = Vec::with_capacity(keys.len());
        let mut todo: Vec<_> = keys.iter().map(to_sdk_item).collect();
        let unknown = |u: crate::convert::UnknownType| {
            AwsError::permanent("BatchGetItem", "UnknownType", &u.to_string())
        };
        for attempt in 0..BATCH_GET_ATTEMPTS {
            if todo.is_empty() {
                break;
            }
            if attempt > 0 {
                // Unprocessed keys mean throttling: back off (100 ms
                // doubling, at most 3.2 s, with jitter).
                let ms = 50u64 << attempt.min(6);
                let jitter = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::from(d.subsec_nanos()))
                    % (ms / 2 + 1);
                tokio::time::sleep(std::time::Duration::from_millis(ms / 2 + jitter)).await;
            }
            let ka = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut todo)))
                .build()
                .map_err(|e| AwsError::permanent("BatchGetItem", "Build", &e.to_string()))?;
            let r = ddb
                .batch_get_item()
                .request_items(table, ka)
                .send()
                .await
                .map_err(e("BatchGetItem"))?;
            if let Some(items) = r.responses().and_then(|m| m.get(table)) {
                for i in items {
                    found.push(from_sdk_item(i).map_err(unknown)?);
                }
            }
            if let Some(left) = r.unprocessed_keys().and_then(|m| m.get(table)) {
                todo = left.keys().to_vec();
            }
        }
        if !todo.is_empty() {
            return Err(AwsError::retryable(
                "BatchGetItem",
                "UnprocessedKeys",
                &format!(
                    "{} key(s) of {table} still unprocessed after {BATCH_GET_ATTEMPTS} attempts (throttled)",
                    todo.len()
                ),
            ));
        }
        Ok(found)
    }

    async fn put_item(&self, table: &str, item: &Attrs, cond: &Cond) -> Result<Written, AwsError> {
        let (ddb, table) = self.at(table);
        let (expr, names, values) = condition(cond);
        let r = ddb
            .put_item()
            .table_name(table)
            .set_item(Some(to_sdk_item(item)))
            .set_condition_expression(expr)
            .set_expression_attribute_names(
                (!names.is_empty()).then(|| names.into_iter().collect()),
            )
            .set_expression_attribute_values(
                (!values.is_empty()).then(|| values.into_iter().collect()),
            )
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(e("PutItem"));
        Ok(match conditional("PutItem", r)? {
            Some(r) => Written {
                done: true,
                wcu: r.consumed_capacity().and_then(|c| c.capacity_units()),
            },
            None => Written {
                done: false,
                wcu: None,
            },
        })
    }

    async fn delete_item(
        &self,
        table: &str,
        key: &Attrs,
        cond: &Cond,
    ) -> Result<Written, AwsError> {
        let (ddb, table) = self.at(table);
        let (expr, names, values) = condition(cond);
        let r = ddb
            .delete_item()
            .table_name(table)
            .set_key(Some(to_sdk_item(key)))
            .set_condition_expression(expr)
            .set_expression_attribute_names(
                (!names.is_empty()).then(|| names.into_iter().collect()),
            )
            .set_expression_attribute_values(
                (!values.is_empty()).then(|| values.into_iter().collect()),
            )
            .send()
            .await
            .map_err(e("DeleteItem"));
        Ok(Written {
            done: conditional("DeleteItem", r)?.is_some(),
            wcu: None,
        })
    }

    async fn set_attr(
        &self,
        table: &str,
        key: &Attrs,
        name: &str,
        value: Option<AttributeValue>,
        cond: &Cond,
    ) -> Result<Written, AwsError> {
        let (ddb, table) = self.at(table);
        let (expr, mut names, mut values) = condition(cond);
        names.push(("#n".into(), name.to_string()));
        let update = match value {
            Some(v) => {
                values.push((":n".into(), to_sdk(&v)));
                "SET #n = :n"
            }
            None => "REMOVE #n",
        };
        let r = ddb
            .update_item()
            .table_name(table)
            .set_key(Some(to_sdk_item(key)))
            .update_expression(update)
            .set_condition_expression(expr)
            .set_expression_attribute_names(Some(names.into_iter().collect()))
            .set_expression_attribute_values(
                (!values.is_empty()).then(|| values.into_iter().collect()),
            )
            .send()
            .await
            .map_err(e("UpdateItem"));
        Ok(Written {
            done: conditional("UpdateItem", r)?.is_some(),
            wcu: None,
        })
    }

    async fn scan_page(
        &self,
        table: &str,
        segment: i32,
        total: i32,
        start: Option<Attrs>,
        consistent: bool,
    ) -> Result<(Vec<Attrs>, Option<Attrs>), AwsError> {
        let (ddb, table) = self.at(table);
        let r = ddb
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

    async fn control(
        &self,
        table: &str,
        migration: &str,
    ) -> Result<Option<ControlState>, AwsError> {
        let key = Attrs::from([(
            ATTR_MIGRATION.to_string(),
            AttributeValue::S(migration.to_string()),
        )]);
        match self.get_item(table, &key).await? {
            None => Ok(None),
            Some(item) => ControlState::from_item(&item)
                .map(Some)
                .map_err(|err| AwsError::permanent("GetItem", "BadControlItem", &err.to_string())),
        }
    }

    async fn write_control(
        &self,
        table: &str,
        next: &ControlState,
        expected: u64,
    ) -> Result<ControlWrite, AwsError> {
        let (ddb, table) = self.at(table);
        let mut set = vec!["#ver = :ver".to_string()];
        let mut remove = Vec::new();
        let mut req = ddb
            .update_item()
            .table_name(table)
            .key(ATTR_MIGRATION, Av::S(next.migration.clone()))
            .expression_attribute_names("#ver", ATTR_VERSION)
            .expression_attribute_values(":ver", Av::N((expected + 1).to_string()));
        for (i, (name, value)) in next.operator_attrs().into_iter().enumerate() {
            req = req.expression_attribute_names(format!("#a{i}"), name);
            match value {
                Some(v) => {
                    set.push(format!("#a{i} = :a{i}"));
                    req = req.expression_attribute_values(format!(":a{i}"), to_sdk(&v));
                }
                None => remove.push(format!("#a{i}")),
            }
        }
        let mut update = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let req = req.update_expression(update);
        let req = if expected == 0 {
            req.condition_expression("attribute_not_exists(#ver) OR #ver = :zero")
                .expression_attribute_values(":zero", Av::N("0".into()))
        } else {
            req.condition_expression("#ver = :expected")
                .expression_attribute_values(":expected", Av::N(expected.to_string()))
        };
        let r = req
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await
            .map_err(e("UpdateItem(control)"));
        match conditional("UpdateItem(control)", r)? {
            None => Ok(ControlWrite::Conflict),
            Some(out) => {
                let state = match out.attributes() {
                    Some(a) => from_sdk_item(a)
                        .ok()
                        .and_then(|i| ControlState::from_item(&i).ok()),
                    None => None,
                };
                Ok(ControlWrite::Written(Box::new(state.unwrap_or_else(
                    || {
                        let mut s = next.clone();
                        s.version = expected + 1;
                        s
                    },
                ))))
            }
        }
    }
}
