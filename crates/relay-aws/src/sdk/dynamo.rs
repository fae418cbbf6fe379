//! `DynamoTable`: the target writer, source reader and control store on the
//! DynamoDB SDK.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};
use relay_core::control::{ControlState, ATTR_MIGRATION};
use relay_core::item::{same_item, AttributeValue, Attrs};

use super::{classify, HasStatus};
use crate::convert::{from_sdk_item, to_sdk_item};
use crate::{AwsError, ControlStore, Fence, SourceReader, TargetWriter, Write};

/// One DynamoDB table, as a write target and as a consistent-read source.
#[derive(Clone, Debug)]
pub struct DynamoTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoTable {
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoTable {
            client: aws_sdk_dynamodb::Client::new(config),
            table: table.into(),
        }
    }

    pub fn from_client(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoTable {
            client,
            table: table.into(),
        }
    }
}

fn to_request(w: &Write<'_>) -> Result<WriteRequest, AwsError> {
    let bad = |_| AwsError::permanent("BatchWriteItem", "ConstructionFailure", "invalid write");
    Ok(match w {
        Write::DeleteOwned { .. } | Write::PutOwned { .. } => {
            return Err(AwsError::permanent(
                "BatchWriteItem",
                "ValidationException",
                "a conditional write cannot be batched",
            ))
        }
        Write::Put(item) => WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .set_item(Some(to_sdk_item(item)))
                    .build()
                    .map_err(bad)?,
            )
            .build(),
        Write::Delete(keys) => WriteRequest::builder()
            .delete_request(
                DeleteRequest::builder()
                    .set_key(Some(to_sdk_item(keys)))
                    .build()
                    .map_err(bad)?,
            )
            .build(),
    })
}

/// A request DynamoDB handed back unprocessed, read back once: a put's item
/// or a delete's key (`None`: neither could be read).
enum Returned {
    Put(Attrs),
    Delete(Attrs),
}

fn returned(r: &WriteRequest) -> Option<Returned> {
    if let Some(p) = r.put_request() {
        return from_sdk_item(p.item()).ok().map(Returned::Put);
    }
    r.delete_request()
        .and_then(|d| from_sdk_item(d.key()).ok())
        .map(Returned::Delete)
}

/// Whether `w` is the write handed back as `r` (the same item, whatever
/// the spelling of its numbers or the order of its sets).
fn is_returned(w: &Write<'_>, r: &Returned) -> bool {
    match (w, r) {
        (Write::Put(item), Returned::Put(back)) => same_item(item, back),
        (Write::Delete(keys), Returned::Delete(back)) => same_item(keys, back),
        _ => false,
    }
}

impl TargetWriter for DynamoTable {
    async fn batch_write(&self, writes: &[Write<'_>]) -> Result<Vec<usize>, AwsError> {
        const OP: &str = "BatchWriteItem";
        let requests = writes
            .iter()
            .map(to_request)
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .batch_write_item()
            .request_items(&self.table, requests)
            .send()
            .await
            .map_err(|e| classify(OP, &e))?;
        let Some(left) = out.unprocessed_items().and_then(|m| m.get(&self.table)) else {
            return Ok(Vec::new());
        };
        let mut unprocessed = Vec::with_capacity(left.len());
        for r in left {
            let back = returned(r);
            match back.and_then(|b| writes.iter().position(|w| is_returned(w, &b))) {
                Some(i) => unprocessed.push(i),
                // Cannot tell which: retrying all of them is safe.
                None => return Ok((0..writes.len()).collect()),
            }
        }
        Ok(unprocessed)
    }

    async fn write_one(&self, write: &Write<'_>) -> Result<bool, AwsError> {
        let (expr, names, values) = match write {
            Write::Put(_) | Write::Delete(_) => (None, None, None),
            Write::DeleteOwned { owner, .. } => {
                let (e, n, v) = owner_condition(owner, None);
                (Some(e), Some(n), Some(v))
            }
            Write::PutOwned {
                owner, key_attr, ..
            } => {
                let (e, n, v) = owner_condition(owner, Some(key_attr));
                (Some(e), Some(n), Some(v))
            }
        };
        self.conditional_write(write, expr, names, values).await
    }

    async fn mark(&self, keys: &Attrs, owner: &Attrs, token: &str) -> Result<bool, AwsError> {
        const OP: &str = "UpdateItem";
        let (expr, mut names, mut values) = owner_condition(owner, None);
        names.insert("#t".into(), relay_core::apply::TOKEN_ATTR.into());
        values.insert(
            ":t".into(),
            aws_sdk_dynamodb::types::AttributeValue::S(token.into()),
        );
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(to_sdk_item(keys)))
            .update_expression("SET #t = :t")
            .condition_expression(expr)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        held(OP, r.map(|_| ()))
    }

    async fn write_marked(&self, write: &Write<'_>, token: &str) -> Result<bool, AwsError> {
        let names = Names::from([("#t".to_string(), relay_core::apply::TOKEN_ATTR.to_string())]);
        let values = Values::from([(
            ":t".to_string(),
            aws_sdk_dynamodb::types::AttributeValue::S(token.into()),
        )]);
        self.conditional_write(write, Some("#t = :t".into()), Some(names), Some(values))
            .await
    }

    async fn unmark(&self, keys: &Attrs, token: &str) -> Result<bool, AwsError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(to_sdk_item(keys)))
            .update_expression("REMOVE #t")
            .condition_expression("#t = :t")
            .expression_attribute_names("#t", relay_core::apply::TOKEN_ATTR)
            .expression_attribute_values(
                ":t",
                aws_sdk_dynamodb::types::AttributeValue::S(token.into()),
            )
            .send()
            .await;
        held("UpdateItem", r.map(|_| ()))
    }
}

impl DynamoTable {
    /// `PutItem` or `DeleteItem` with an optional condition; `Ok(false)`
    /// when the condition failed.
    async fn conditional_write(
        &self,
        write: &Write<'_>,
        expr: Option<String>,
        names: Option<Names>,
        values: Option<Values>,
    ) -> Result<bool, AwsError> {
        match write {
            Write::Put(item) | Write::PutOwned { item, .. } => {
                let r = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(to_sdk_item(item)))
                    .set_condition_expression(expr)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .send()
                    .await;
                held("PutItem", r.map(|_| ()))
            }
            Write::Delete(keys) | Write::DeleteOwned { keys, .. } => {
                let r = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(to_sdk_item(keys)))
                    .set_condition_expression(expr)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .send()
                    .await;
                held("DeleteItem", r.map(|_| ()))
            }
        }
    }
}

type Names = HashMap<String, String>;
type Values = HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

/// `#o0 = :o0 AND …` over the owner's attributes; with `absent_key`, also
/// true where no item is.
fn owner_condition(owner: &Attrs, absent_key: Option<&str>) -> (String, Names, Values) {
    let mut names = Names::new();
    let mut values = Values::new();
    let mut parts = Vec::new();
    let mut attrs: Vec<(&String, &AttributeValue)> = owner.iter().collect();
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (name, value)) in attrs.into_iter().enumerate() {
        names.insert(format!("#o{i}"), name.clone());
        values.insert(format!(":o{i}"), crate::convert::to_sdk(value));
        parts.push(format!("#o{i} = :o{i}"));
    }
    let owned = parts.join(" AND ");
    let expr = match absent_key {
        Some(k) => {
            names.insert("#k".into(), k.to_string());
            format!("attribute_not_exists(#k) OR ({owned})")
        }
        None => owned,
    };
    (expr, names, values)
}

/// Whether a conditional write's condition held: a failed condition is
/// `Ok(false)`, not an error.
fn held<E, R>(op: &'static str, r: Result<(), SdkError<E, R>>) -> Result<bool, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: HasStatus + std::fmt::Debug,
{
    match r {
        Ok(()) => Ok(true),
        Err(e) => {
            let err = classify(op, &e);
            if err.code == "ConditionalCheckFailedException" {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}

impl SourceReader for DynamoTable {
    async fn get_consistent(&self, keys: &Attrs) -> Result<Option<Attrs>, AwsError> {
        const OP: &str = "GetItem";
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(to_sdk_item(keys)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(OP, &e))?;
        match out.item() {
            None => Ok(None),
            Some(item) => from_sdk_item(item)
                .map(Some)
                .map_err(|e| AwsError::permanent(OP, "UnknownAttributeType", &e.to_string())),
        }
    }
}

impl ControlStore for DynamoTable {
    async fn load(&self, migration: &str) -> Result<Option<ControlState>, AwsError> {
        const OP: &str = "GetItem(control)";
        let key: Attrs = [(
            ATTR_MIGRATION.to_string(),
            AttributeValue::S(migration.into()),
        )]
        .into();
        let Some(item) = self.get_consistent(&key).await? else {
            return Ok(None);
        };
        ControlState::from_item(&item)
            .map(Some)
            .map_err(|e| AwsError::permanent(OP, "InvalidControlItem", &e.to_string()))
    }

    async fn commit(
        &self,
        migration: &str,
        version: u64,
        consumed_ms: Option<i64>,
    ) -> Result<Fence, AwsError> {
        use aws_sdk_dynamodb::types::AttributeValue as Av;
        const OP: &str = "UpdateItem(control)";
        // Raise consumed_ms if the item is still at `version`. A failed
        // condition means either another batch already raised it past ours
        // (fine) or an operator moved the item (fenced): a consistent read
        // tells which, and is itself the fence when there is nothing to raise.
        if let Some(t) = consumed_ms {
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(ATTR_MIGRATION, Av::S(migration.into()))
                .update_expression("SET #c = :t")
                .condition_expression("#v = :v AND (attribute_not_exists(#c) OR #c < :t)")
                .expression_attribute_names("#c", relay_core::control::ATTR_CONSUMED_MS)
                .expression_attribute_names("#v", relay_core::control::ATTR_VERSION)
                .expression_attribute_values(":t", Av::N(t.to_string()))
                .expression_attribute_values(":v", Av::N(version.to_string()))
                .send()
                .await;
            match r {
                Ok(_) => return Ok(Fence::Held),
                Err(err) => {
                    let err = classify(OP, &err);
                    if err.code != "ConditionalCheckFailedException" {
                        return Err(err);
                    }
                }
            }
        }
        let state = self.load(migration).await?;
        Ok(fence_from(state, version, consumed_ms))
    }
}

/// The commit's answer from the control item as read after a failed (or
/// skipped) conditional update.
pub fn fence_from(state: Option<ControlState>, version: u64, consumed_ms: Option<i64>) -> Fence {
    match state {
        Some(s) if s.version == version && s.consumed_ms >= consumed_ms => Fence::Held,
        // Same version but below our mark: only a concurrent writer racing
        // the condition can cause this; reporting Moved makes the caller
        // reload and commit again, never consume unrecorded.
        other => Fence::Moved(other.map(Box::new)),
    }
}
