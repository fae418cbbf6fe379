//! The operator's view of the fakes: every service trait of
//! [`crate::operator`] on one in-memory account, so the CLI's commands run
//! in tests and simulations exactly as against AWS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use relay_core::control::ControlState;
use relay_core::item::{AttributeValue, Attrs};

use super::dynamo::Check;
use super::{lock, FakeDynamo, FakeFifo, FakeMetrics};
use crate::operator::{
    Cond, ControlWrite, MetricQuery, Metrics, Objects, Series, StackInfo, Stacks, TableInfo,
    Tables, Written,
};
use crate::AwsError;

#[derive(Clone, Debug)]
pub(super) struct Trigger {
    pub(super) uuid: String,
    pub(super) function: String,
    pub(super) source_arn: String,
    pub(super) enabled: bool,
}

pub(super) type MappingLatency = Box<dyn FnMut(Option<bool>) -> std::time::Duration + Send>;

#[derive(Default)]
pub(super) struct State {
    pub(super) triggers: Vec<Trigger>,
    pub(super) timeouts: HashMap<String, u64>,
    pub(super) env: HashMap<(String, String), String>,
    stacks: HashMap<String, StackInfo>,
    /// When set, every metrics read fails with it.
    metrics_fault: Option<AwsError>,
    /// Point-in-time restores are possible up to now minus this.
    pitr_lag_ms: i64,
    /// Stream labels (creation times) other than [`super::events::stream_arn`]'s.
    stream_labels: HashMap<String, String>,
    /// When set, enabling or disabling a trigger fails with it.
    pub(super) mapping_fault: Option<AwsError>,
    /// With `mapping_fault`: only updates of the trigger of this function fail.
    pub(super) mapping_fault_of: Option<String>,
    /// With `mapping_fault`: the update takes effect, then reports it
    /// (a timeout after the service applied it).
    pub(super) mapping_fault_lands: bool,
    /// Restores answer without the new table's description (its id).
    pub(super) restores_answer_no_table: bool,
    /// How long a trigger call takes (see [`FakeAws::set_mapping_latency`]).
    pub(super) mapping_latency: Option<MappingLatency>,
    page_size: usize,
    /// S3 objects by (bucket, key).
    objects: HashMap<(String, String), Vec<u8>>,
    /// Tables with deletion protection on.
    pub(super) protected: std::collections::HashSet<String>,
    /// The CloudFormation owner of a table, by table name.
    pub(super) owners: HashMap<String, relay_core::iac::Owner>,
    /// Deployed templates, by stack name.
    pub(super) templates: HashMap<String, String>,
    /// TTL attributes of tables with TTL enabled, by table name.
    pub(super) ttl_attributes: HashMap<String, String>,
}

/// One in-memory account: DynamoDB, the FIFO queue and its DLQ, the
/// functions' triggers, CloudWatch and CloudFormation.
#[derive(Clone)]
pub struct FakeAws {
    pub db: FakeDynamo,
    pub queue: FakeFifo,
    pub metrics: FakeMetrics,
    pub queue_url: String,
    pub dlq_url: String,
    pub failures_url: String,
    pub(super) state: Arc<Mutex<State>>,
    /// Standard queues: any URL but the FIFO queue and its DLQ.
    pub(crate) standard: Arc<Mutex<super::queues::StandardQueues>>,
    /// AWS's clock as this account's responses tell it: the simulation's
    /// (the database's) time, observed at each stack and table call to the
    /// second, as the SDK's clients read every response's `Date`.
    pub server_time: crate::runtime::ServerTime,
}

impl std::fmt::Debug for FakeAws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAws").finish_non_exhaustive()
    }
}

/// The ARN the fakes give a table.
pub fn table_arn(name: &str) -> String {
    format!("arn:aws:dynamodb:us-east-1:123456789012:table/{name}")
}

impl FakeAws {
    pub fn new(db: FakeDynamo, queue: FakeFifo, metrics: FakeMetrics) -> Self {
        FakeAws {
            db,
            queue,
            metrics,
            queue_url: "https://sqs.us-east-1.amazonaws.com/123456789012/relay.fifo".into(),
            dlq_url: "https://sqs.us-east-1.amazonaws.com/123456789012/relay-dlq.fifo".into(),
            failures_url: "https://sqs.us-east-1.amazonaws.com/123456789012/relay-failures".into(),
            state: Arc::new(Mutex::new(State {
                pitr_lag_ms: 1_000,
                page_size: 10,
                ..State::default()
            })),
            standard: Arc::default(),
            server_time: Default::default(),
        }
    }

    /// Adds a function with its trigger (on `source_arn`) and timeout.
    pub fn add_function(&self, function: &str, source_arn: &str, enabled: bool, timeout_s: u64) {
        let mut s = lock(&self.state);
        let uuid = format!("esm-{function}");
        s.triggers.push(Trigger {
            uuid,
            function: function.into(),
            source_arn: source_arn.into(),
            enabled,
        });
        s.timeouts.insert(function.into(), timeout_s);
    }

    /// Points `function`'s trigger at `source_arn` (a redeploy onto a
    /// replaced stream).
    pub fn retarget_trigger(&self, function: &str, source_arn: &str) {
        for t in lock(&self.state).triggers.iter_mut() {
            if t.function == function {
                t.source_arn = source_arn.into();
            }
        }
    }

    pub fn set_env(&self, function: &str, var: &str, value: &str) {
        lock(&self.state)
            .env
            .insert((function.into(), var.into()), value.into());
    }

    pub fn add_stack(&self, info: StackInfo) {
        lock(&self.state).stacks.insert(info.name.clone(), info);
    }

    /// Whether a function's trigger is enabled (the simulation's pollers
    /// invoke only then).
    pub fn trigger_enabled(&self, function: &str) -> bool {
        lock(&self.state)
            .triggers
            .iter()
            .any(|t| t.function == function && t.enabled)
    }

    /// Enables TTL on `table` with the attribute `attr`.
    pub fn set_ttl_attribute(&self, table: &str, attr: &str) {
        lock(&self.state)
            .ttl_attributes
            .insert(table.into(), attr.into());
    }

    /// Point-in-time restores reach up to now minus `ms`.
    pub fn set_pitr_lag(&self, ms: i64) {
        lock(&self.state).pitr_lag_ms = ms;
    }

    /// `describe` says the table's stream was created at `label`
    /// (`2026-11-04T00:05:00.000`, as in a stream ARN). Only `describe`
    /// changes: the forwarder's trigger and the stream's events keep the
    /// ARN they had. So with a label other than the events' own, this is
    /// the source's stream replaced (disabled and enabled again) under a
    /// stack that still reads the old one; with the events' label, a
    /// stream created at that time.
    pub fn set_stream_label(&self, table: &str, label: &str) {
        lock(&self.state)
            .stream_labels
            .insert(table.into(), label.into());
    }

    /// Trigger updates fail with `err` (e.g. AccessDenied) while set.
    pub fn fail_mapping_updates(&self, err: Option<AwsError>) {
        let mut s = lock(&self.state);
        s.mapping_fault = err;
        s.mapping_fault_of = None;
    }

    /// How long each trigger call takes, by what it is: `None` a read (its
    /// answer, read at once, travels that long), `Some(enabled)` an update
    /// (applied when the time is over).
    pub fn set_mapping_latency(
        &self,
        f: impl FnMut(Option<bool>) -> std::time::Duration + Send + 'static,
    ) {
        lock(&self.state).mapping_latency = Some(Box::new(f));
    }

    /// Updates of `function`'s trigger only fail with `err` while set.
    pub fn fail_mapping_updates_of(&self, function: &str, err: Option<AwsError>) {
        let mut s = lock(&self.state);
        s.mapping_fault = err;
        s.mapping_fault_of = Some(function.to_string());
    }

    /// Whether restores answer without the new table (as an engine may):
    /// its id is then DescribeTable's.
    pub fn answer_restores_without_table(&self, yes: bool) {
        lock(&self.state).restores_answer_no_table = yes;
    }

    /// Whether the failed trigger updates above take effect all the same
    /// (the service applied them and the answer was lost).
    pub fn land_failed_mapping_updates(&self, lands: bool) {
        lock(&self.state).mapping_fault_lands = lands;
    }

    pub fn fail_metrics(&self, err: Option<AwsError>) {
        lock(&self.state).metrics_fault = err;
    }

    /// Stores an S3 object.
    pub fn put_object(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        lock(&self.state)
            .objects
            .insert((bucket.into(), key.into()), bytes);
    }

    /// Removes an S3 object.
    pub fn remove_object(&self, bucket: &str, key: &str) {
        lock(&self.state)
            .objects
            .remove(&(bucket.to_string(), key.to_string()));
    }

    /// Items per scan page.
    pub fn set_page_size(&self, n: usize) {
        lock(&self.state).page_size = n.max(1);
    }

    /// Records that a CloudFormation stack owns `table` (and its template).
    pub fn set_owner(&self, table: &str, owner: relay_core::iac::Owner, template: &str) {
        let mut s = lock(&self.state);
        s.templates.insert(owner.stack.clone(), template.into());
        s.owners.insert(table.into(), owner);
    }

    /// Whether deletion protection is on for `table`.
    pub fn is_protected(&self, table: &str) -> bool {
        lock(&self.state).protected.contains(table)
    }

    fn unsupported(op: &'static str) -> AwsError {
        AwsError::permanent(op, "UnsupportedOperation", "not supported by the fake")
    }
}

impl Stacks for FakeAws {
    async fn stack(&self, name: &str) -> Result<StackInfo, AwsError> {
        tokio::task::yield_now().await;
        self.server_time.observe(self.db.now_ms() / 1000 * 1000);
        lock(&self.state).stacks.get(name).cloned().ok_or_else(|| {
            AwsError::permanent("DescribeStacks", "ValidationError", "stack not found")
        })
    }
}

fn check(cond: &Cond) -> Check {
    match cond {
        Cond::Always => Check::Always,
        Cond::Absent(a) => Check::Absent(a.clone()),
        Cond::Exists(a) => Check::Exists(a.clone()),
        Cond::Equals(a, v) => Check::Equals(a.clone(), v.clone()),
        Cond::All(all) => Check::All(all.iter().map(check).collect()),
        Cond::Any(any) => Check::Any(any.iter().map(check).collect()),
    }
}

impl FakeAws {
    /// The id a restore's answer carries, unless told to carry none.
    fn restore_answer(&self, id: u64) -> Option<String> {
        (!lock(&self.state).restores_answer_no_table).then(|| format!("fake-table-{id}"))
    }

    pub(super) async fn enter(&self, op: &'static str, table: &str) -> Result<(), AwsError> {
        self.server_time.observe(self.db.now_ms() / 1000 * 1000);
        let call = super::Call {
            op,
            table,
            writes: &[],
        };
        match self.db.enter(&call).await {
            Some(super::DbFault::Error(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

impl Tables for FakeAws {
    async fn describe(&self, table: &str) -> Result<Option<TableInfo>, AwsError> {
        self.enter("DescribeTable", table).await?;
        let label = lock(&self.state).stream_labels.get(table).cloned();
        let stream_arn = |table: &str| {
            let arn = super::events::stream_arn(table);
            match (&label, arn.rsplit_once("/stream/")) {
                (Some(l), Some((table_arn, _))) => format!("{table_arn}/stream/{l}"),
                _ => arn,
            }
        };
        Ok(self.db.with_state(|s| {
            s.describe(table).map(|d| TableInfo {
                name: table.into(),
                status: d.status,
                key_names: d.key_names,
                stream_arn: d.stream.then(|| stream_arn(table)),
                stream_view: d.stream.then(|| "NEW_AND_OLD_IMAGES".to_string()),
                item_count: Some(d.count),
                size_bytes: None,
                arn: Some(table_arn(table)),
                deletion_protection: self.is_protected(table),
                id: Some(format!("fake-table-{}", d.id)),
                restored: d.restored,
            })
        }))
    }

    async fn ttl_attribute(&self, table: &str) -> Result<Option<String>, AwsError> {
        self.enter("DescribeTimeToLive", table).await?;
        Ok(lock(&self.state).ttl_attributes.get(table).cloned())
    }

    async fn pitr(&self, table: &str) -> Result<(bool, Option<i64>), AwsError> {
        self.enter("DescribeContinuousBackups", table).await?;
        let lag = lock(&self.state).pitr_lag_ms;
        self.db.with_state(|s| match s.pitr(table) {
            None => Err(AwsError::permanent(
                "DescribeContinuousBackups",
                "TableNotFoundException",
                "table not found",
            )),
            Some(on) => Ok((on, on.then(|| s.now_ms() - lag))),
        })
    }

    async fn create_backup(&self, table: &str, _name: &str) -> Result<(String, i64), AwsError> {
        self.enter("CreateBackup", table).await?;
        self.db.with_state(|s| s.create_backup(table))
    }

    async fn backup_status(&self, arn: &str) -> Result<String, AwsError> {
        self.enter("DescribeBackup", "").await?;
        self.db.with_state(|s| s.backup_status(arn))
    }

    async fn restore_backup(&self, arn: &str, target: &str) -> Result<Option<String>, AwsError> {
        self.enter("RestoreTableFromBackup", target).await?;
        self.db
            .with_state(|s| {
                let (table, items) = s.backup(arn).ok_or_else(|| {
                    AwsError::permanent(
                        "RestoreTableFromBackup",
                        "BackupNotFoundException",
                        "backup not available",
                    )
                })?;
                s.create_from(&table, target, items, "RestoreTableFromBackup")
            })
            .map(|id| self.restore_answer(id))
    }

    async fn restore_pitr(
        &self,
        source: &str,
        target: &str,
        at_ms: i64,
    ) -> Result<Option<String>, AwsError> {
        self.enter("RestoreTableToPointInTime", target).await?;
        self.db
            .with_state(|s| {
                let items = s.state_at(source, at_ms)?;
                s.create_from(source, target, items, "RestoreTableToPointInTime")
            })
            .map(|id| self.restore_answer(id))
    }

    async fn export(
        &self,
        _table_arn: &str,
        _bucket: &str,
        _prefix: &str,
        _at_ms: Option<i64>,
    ) -> Result<String, AwsError> {
        Err(Self::unsupported("ExportTableToPointInTime"))
    }

    async fn export_status(
        &self,
        _arn: &str,
    ) -> Result<(String, Option<i64>, Option<String>), AwsError> {
        Err(Self::unsupported("DescribeExport"))
    }

    async fn delete_table(&self, name: &str) -> Result<(), AwsError> {
        self.enter("DeleteTable", name).await?;
        if self.is_protected(name) {
            return Err(AwsError::permanent(
                "DeleteTable",
                "ValidationException",
                "Resource cannot be deleted as it is currently protected against manual deletion.",
            ));
        }
        self.db.with_state(|s| s.delete_table(name));
        Ok(())
    }

    async fn get_item(&self, table: &str, key: &Attrs) -> Result<Option<Attrs>, AwsError> {
        self.enter("GetItem", table).await?;
        self.db.with_state(|s| s.get(table, key))
    }

    async fn batch_get(&self, table: &str, keys: &[Attrs]) -> Result<Vec<Attrs>, AwsError> {
        self.enter("BatchGetItem", table).await?;
        let mut found = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(i) = self.db.with_state(|s| s.get(table, k))? {
                found.push(i);
            }
        }
        Ok(found)
    }

    async fn put_item(&self, table: &str, item: &Attrs, cond: &Cond) -> Result<Written, AwsError> {
        self.enter("PutItem", table).await?;
        let done = self.db.with_state(|s| {
            s.write_if(table, "PutItem", item, |_| Some(item.clone()), &check(cond))
        })?;
        Ok(Written {
            done,
            wcu: done.then_some(1.0),
        })
    }

    async fn delete_item(
        &self,
        table: &str,
        key: &Attrs,
        cond: &Cond,
    ) -> Result<Written, AwsError> {
        self.enter("DeleteItem", table).await?;
        let done = self
            .db
            .with_state(|s| s.write_if(table, "DeleteItem", key, |_| None, &check(cond)))?;
        Ok(Written { done, wcu: None })
    }

    async fn set_attr(
        &self,
        table: &str,
        key: &Attrs,
        name: &str,
        value: Option<AttributeValue>,
        cond: &Cond,
    ) -> Result<Written, AwsError> {
        self.enter("UpdateItem", table).await?;
        let done = self.db.with_state(|s| {
            s.write_if(
                table,
                "UpdateItem",
                key,
                |cur| {
                    let mut item = cur.cloned().unwrap_or_else(|| key.clone());
                    match &value {
                        Some(v) => item.insert(name.to_string(), v.clone()),
                        None => item.remove(name),
                    };
                    Some(item)
                },
                &check(cond),
            )
        })?;
        Ok(Written { done, wcu: None })
    }

    async fn scan_page(
        &self,
        table: &str,
        segment: i32,
        total: i32,
        start: Option<Attrs>,
        _consistent: bool,
    ) -> Result<(Vec<Attrs>, Option<Attrs>), AwsError> {
        self.enter("Scan", table).await?;
        let limit = lock(&self.state).page_size;
        self.db
            .with_state(|s| s.scan(table, segment, total, start.as_ref(), limit))
    }

    async fn control(
        &self,
        table: &str,
        migration: &str,
    ) -> Result<Option<ControlState>, AwsError> {
        let key: Attrs = [(
            relay_core::control::ATTR_MIGRATION.to_string(),
            AttributeValue::S(migration.into()),
        )]
        .into();
        match self.get_item(table, &key).await? {
            None => Ok(None),
            Some(item) => ControlState::from_item(&item)
                .map(Some)
                .map_err(|e| AwsError::permanent("GetItem", "BadControlItem", &e.to_string())),
        }
    }

    async fn write_control(
        &self,
        table: &str,
        next: &ControlState,
        expected: u64,
    ) -> Result<ControlWrite, AwsError> {
        self.enter("UpdateItem(control)", table).await?;
        let key: Attrs = [(
            relay_core::control::ATTR_MIGRATION.to_string(),
            AttributeValue::S(next.migration.clone()),
        )]
        .into();
        let mut written = None;
        let done = self.db.with_state(|s| {
            s.write_if(
                table,
                "UpdateItem(control)",
                &key,
                |cur| {
                    let mut item = cur.cloned().unwrap_or_else(|| key.clone());
                    for (name, value) in next.operator_attrs() {
                        match value {
                            Some(v) => item.insert(name.to_string(), v),
                            None => item.remove(name),
                        };
                    }
                    item.insert(
                        relay_core::control::ATTR_VERSION.into(),
                        AttributeValue::N((expected + 1).to_string()),
                    );
                    written = ControlState::from_item(&item).ok();
                    Some(item)
                },
                &Check::Version(expected),
            )
        })?;
        Ok(match (done, written) {
            (true, Some(s)) => ControlWrite::Written(Box::new(s)),
            _ => ControlWrite::Conflict,
        })
    }
}

impl Objects for FakeAws {
    async fn download(
        &self,
        bucket: &str,
        key: &str,
        dest: &std::path::Path,
    ) -> Result<u64, AwsError> {
        tokio::task::yield_now().await;
        let bytes = lock(&self.state)
            .objects
            .get(&(bucket.to_string(), key.to_string()))
            .cloned()
            .ok_or_else(|| {
                AwsError::permanent(
                    "GetObject",
                    "NoSuchKey",
                    "The specified key does not exist.",
                )
            })?;
        std::fs::write(dest, &bytes)
            .map_err(|err| AwsError::permanent("GetObject", "LocalFile", &err.to_string()))?;
        Ok(bytes.len() as u64)
    }
}

impl Metrics for FakeAws {
    async fn metrics(
        &self,
        queries: &[MetricQuery],
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<Series>, AwsError> {
        tokio::task::yield_now().await;
        if let Some(e) = lock(&self.state).metrics_fault.clone() {
            return Err(e);
        }
        Ok(queries
            .iter()
            .map(|q| self.metrics.query(q, since_ms, until_ms))
            .collect())
    }
}
