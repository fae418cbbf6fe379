//! The operator's AWS calls (feature `operator`, used by the `ddb-relay`
//! CLI and its tests): one small trait per service, implemented on the SDK
//! by [`Sdk`] (one file per service) and in memory by `fake::FakeAws`.
//!
//! **Boundary:** like the rest of this crate, SDK types stay here. Items are
//! [`Attrs`], errors are [`AwsError`] with the service's code, so the CLI
//! can turn them into one-line messages that name the fix.

use std::collections::HashMap;
use std::future::Future;

use relay_core::control::ControlState;
use relay_core::item::{AttributeValue, Attrs};

use crate::AwsError;

mod cloudformation;
mod cloudwatch;
mod condition;
mod dynamodb;
mod iac;
pub use iac::Iac;
mod lambda;
mod s3;
mod sdk;
mod server_time;
pub use sdk::Sdk;
mod sqs;

/// The outputs of a stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackInfo {
    pub name: String,
    pub status: String,
    pub outputs: HashMap<String, String>,
    /// Template parameters, as deployed (`NoEcho` ones are masked by AWS).
    pub parameters: HashMap<String, String>,
}

impl StackInfo {
    pub fn output(&self, key: &str) -> Option<&str> {
        self.outputs.get(key).map(String::as_str)
    }
}

/// A deployed ddb-relay stack: what its outputs and parameters name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub name: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub stream_failure_url: String,
    pub forwarder: String,
    pub applier: String,
    pub control_table: String,
    pub source_table: String,
    pub target_table: String,
    pub migration: String,
    pub margin_ms: i64,
    /// The deployed `TransformSpec` (`None`: no transform, or a stack that
    /// does not report its parameters).
    pub transform_spec: Option<String>,
    /// The forwarder's `StreamStartingPosition` (`None`: not reported).
    pub starting_position: Option<String>,
    /// The stack's `MetricsMode` parameter (`None`: an emulator that does
    /// not report its parameters). `off`: the functions publish no metrics.
    pub metrics_mode: Option<String>,
    /// The stack's `TtlDeletes` parameter (`None`: not reported; the
    /// template's default is `replicate`).
    pub ttl_deletes: Option<String>,
    /// The copy workers (`None`: a stack deployed without them).
    pub work: Option<Work>,
    /// Where the target is, when not next to the stack.
    pub target: relay_core::place::TargetPlace,
    /// The applier's and the worker's role ARNs (outputs `ApplierRoleArn`,
    /// `WorkerRoleArn`; empty on older stacks).
    pub roles: Vec<String>,
}

/// The work queue the CLI fans a copy out on, and the worker Lambda that
/// drains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Work {
    pub queue_url: String,
    pub dlq_url: String,
    pub worker: String,
    /// At most this many workers at once (the trigger's MaximumConcurrency;
    /// 0: no maximum).
    pub concurrency: u64,
    /// The one bucket the workers may read exports from (`None`: the stack
    /// does not report its parameters; `Some("")`: none).
    pub export_bucket: Option<String>,
}

impl Deployment {
    /// Reads a ddb-relay stack's outputs; the error names the missing one.
    pub fn from_stack(info: &StackInfo) -> Result<Deployment, String> {
        let name = &info.name;
        let get = |k: &str| {
            info.output(k).map(str::to_string).ok_or_else(|| {
                format!(
                    "stack {name} has no output {k}: is it a ddb-relay stack (status {})?",
                    info.status
                )
            })
        };
        let margin_s: i64 = get("CutoffMarginSeconds")?
            .parse()
            .map_err(|_| format!("stack {name}: output CutoffMarginSeconds is not a number"))?;
        Ok(Deployment {
            name: name.clone(),
            queue_url: get("QueueUrl")?,
            dlq_url: get("DeadLetterQueueUrl")?,
            stream_failure_url: get("StreamFailureQueueUrl")?,
            forwarder: get("ForwarderFunction")?,
            applier: get("ApplierFunction")?,
            control_table: get("ControlTable")?,
            source_table: get("SourceTable")?,
            target_table: get("TargetTable")?,
            migration: get("MigrationId")?,
            margin_ms: margin_s * 1000,
            transform_spec: info
                .parameters
                .get("TransformSpec")
                .filter(|s| !s.trim().is_empty())
                .cloned(),
            starting_position: info.parameters.get("StreamStartingPosition").cloned(),
            metrics_mode: info.parameters.get("MetricsMode").cloned(),
            ttl_deletes: info.parameters.get("TtlDeletes").cloned(),
            work: match (
                info.output("WorkQueueUrl"),
                info.output("WorkDeadLetterQueueUrl"),
                info.output("WorkerFunction"),
            ) {
                (Some(q), Some(d), Some(w)) => Some(Work {
                    queue_url: q.into(),
                    dlq_url: d.into(),
                    worker: w.into(),
                    concurrency: info
                        .output("WorkerConcurrency")
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0),
                    export_bucket: info.parameters.get("ExportBucketName").cloned(),
                }),
                _ => None,
            },
            roles: ["ApplierRoleArn", "WorkerRoleArn"]
                .iter()
                .filter_map(|k| info.output(k).map(str::to_string))
                .collect(),
            target: {
                let read = |k: &str| {
                    info.output(k)
                        .or_else(|| info.parameters.get(k).map(String::as_str))
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(str::to_string)
                };
                let place = relay_core::place::TargetPlace {
                    region: read("TargetRegion"),
                    role_arn: read("TargetRoleArn"),
                    external_id: read("TargetExternalId"),
                };
                place
                    .check()
                    .map_err(|(v, p)| format!("stack {name}: {v} {p}"))?;
                place
            },
        })
    }
}

/// An event source mapping, as far as the operator cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub uuid: String,
    pub state: String,
    pub source_arn: String,
    /// Lambda's last processing result ("OK", "No records processed",
    /// "PROBLEM: …"), when the service reports one.
    pub last_result: Option<String>,
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
    /// DescribeTable's TableSizeBytes (updated about every six hours).
    pub size_bytes: Option<i64>,
    pub arn: Option<String>,
    pub deletion_protection: bool,
    /// Which table this is, told apart from one deleted and created again
    /// under the same name: DescribeTable's TableId, or its creation time
    /// (`created:<seconds>.<nanoseconds>`) where an engine gives no TableId
    /// (moto).
    pub id: Option<String>,
    /// DescribeTable carries a RestoreSummary: the table was restored from
    /// a backup or a point in time. AWS and moto say so; MiniStack does not.
    pub restored: bool,
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

/// Queue attributes the operator checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueAttrs {
    pub visible: u64,
    pub in_flight: u64,
    pub visibility_s: u64,
    pub retention_s: i64,
}

/// The result of a conditional control-item write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlWrite {
    Written(Box<ControlState>),
    /// Somebody else changed the item since it was read.
    Conflict,
}

/// A condition on a single-item write.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    Always,
    /// No item with this key (the named key attribute is absent).
    Absent(String),
    /// An item exists (the named attribute is present).
    Exists(String),
    /// The named attribute holds this value.
    Equals(String, AttributeValue),
    /// Every one of these holds.
    All(Vec<Cond>),
    /// At least one of these holds (none given: never).
    Any(Vec<Cond>),
}

impl Cond {
    /// The item exists (its key attribute `key_attr` is present) and
    /// belongs to the source item `owner` (every owner attribute equal).
    pub fn owned_by(key_attr: &str, owner: &Attrs) -> Cond {
        let mut all = vec![Cond::Exists(key_attr.to_string())];
        let mut attrs: Vec<_> = owner.iter().collect();
        attrs.sort_by(|a, b| a.0.cmp(b.0));
        all.extend(
            attrs
                .into_iter()
                .map(|(n, v)| Cond::Equals(n.clone(), v.clone())),
        );
        Cond::All(all)
    }
}

/// What a conditional write did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Written {
    /// False when the condition failed (nothing was written).
    pub done: bool,
    /// Write capacity consumed, when the service reports it.
    pub wcu: Option<f64>,
}

/// A statistic of a metric query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    Sum,
    Maximum,
}

/// One metric series to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricQuery {
    pub namespace: String,
    pub name: String,
    pub dims: Vec<(String, String)>,
    pub stat: Stat,
}

impl MetricQuery {
    pub fn new(namespace: &str, name: &str, dims: &[(&str, &str)], stat: Stat) -> Self {
        MetricQuery {
            namespace: namespace.into(),
            name: name.into(),
            dims: dims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stat,
        }
    }
}

/// Datapoints of one series: (timestamp ms, value), oldest first.
pub type Series = Vec<(i64, f64)>;

/// CloudFormation.
pub trait Stacks: Send + Sync {
    fn stack(&self, name: &str) -> impl Future<Output = Result<StackInfo, AwsError>> + Send;
}

/// Lambda: triggers and function settings.
pub trait Triggers: Send + Sync {
    /// The function's mapping whose source ARN starts with `prefix`.
    fn mapping(
        &self,
        function: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Mapping, AwsError>> + Send;
    fn mapping_state(&self, uuid: &str) -> impl Future<Output = Result<String, AwsError>> + Send;
    fn set_mapping(
        &self,
        uuid: &str,
        enabled: bool,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn function_timeout_s(
        &self,
        function: &str,
    ) -> impl Future<Output = Result<u64, AwsError>> + Send;
    /// One environment variable of a function, as deployed.
    fn function_env(
        &self,
        function: &str,
        var: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
}

/// SQS.
pub trait Queues: Send + Sync {
    fn queue_attrs(&self, url: &str) -> impl Future<Output = Result<QueueAttrs, AwsError>> + Send;
    /// Receives up to `max` (<= 10) messages, hidden for `visibility_s`.
    fn receive(
        &self,
        url: &str,
        max: i32,
        visibility_s: i32,
    ) -> impl Future<Output = Result<Vec<RawMessage>, AwsError>> + Send;
    fn delete_message(
        &self,
        url: &str,
        receipt: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Sends one message to a standard queue.
    fn send_message(
        &self,
        url: &str,
        body: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Makes a received message visible again at once.
    fn release_message(
        &self,
        url: &str,
        receipt: &str,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// DynamoDB: tables, backups, restores, exports, single items and scans.
pub trait Tables: Send + Sync {
    /// `None` when the table does not exist.
    fn describe(
        &self,
        table: &str,
    ) -> impl Future<Output = Result<Option<TableInfo>, AwsError>> + Send;
    /// The table's TTL attribute, when TTL is enabled (or enabling).
    fn ttl_attribute(
        &self,
        table: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    /// (PITR enabled, latest restorable time in ms).
    fn pitr(
        &self,
        table: &str,
    ) -> impl Future<Output = Result<(bool, Option<i64>), AwsError>> + Send;
    /// Starts an on-demand backup; returns (ARN, creation time ms).
    fn create_backup(
        &self,
        table: &str,
        name: &str,
    ) -> impl Future<Output = Result<(String, i64), AwsError>> + Send;
    fn backup_status(&self, arn: &str) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// Restores `target` from a backup; returns the new table's TableId
    /// from the restore's answer, when it gives one (else `None`:
    /// DescribeTable's [`TableInfo::id`] tells it).
    fn restore_backup(
        &self,
        arn: &str,
        target: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    /// Restores `target` from `source` at `at_ms`; returns the new table's
    /// id, as [`Tables::restore_backup`].
    fn restore_pitr(
        &self,
        source: &str,
        target: &str,
        at_ms: i64,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
    /// Starts an export to S3; returns its ARN.
    fn export(
        &self,
        table_arn: &str,
        bucket: &str,
        prefix: &str,
        at_ms: Option<i64>,
    ) -> impl Future<Output = Result<String, AwsError>> + Send;
    /// (status, export time ms, manifest prefix).
    fn export_status(
        &self,
        arn: &str,
    ) -> impl Future<Output = Result<(String, Option<i64>, Option<String>), AwsError>> + Send;
    /// Deletes a table; absent is fine.
    fn delete_table(&self, name: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// A consistent read.
    fn get_item(
        &self,
        table: &str,
        key: &Attrs,
    ) -> impl Future<Output = Result<Option<Attrs>, AwsError>> + Send;
    /// Eventually consistent reads of up to 100 keys (BatchGetItem; keys
    /// DynamoDB leaves unprocessed are read again): the items found, in no
    /// particular order.
    fn batch_get(
        &self,
        table: &str,
        keys: &[Attrs],
    ) -> impl Future<Output = Result<Vec<Attrs>, AwsError>> + Send;
    fn put_item(
        &self,
        table: &str,
        item: &Attrs,
        cond: &Cond,
    ) -> impl Future<Output = Result<Written, AwsError>> + Send;
    fn delete_item(
        &self,
        table: &str,
        key: &Attrs,
        cond: &Cond,
    ) -> impl Future<Output = Result<Written, AwsError>> + Send;
    /// Sets (or, with `None`, removes) one attribute, creating the item if
    /// needed.
    fn set_attr(
        &self,
        table: &str,
        key: &Attrs,
        name: &str,
        value: Option<AttributeValue>,
        cond: &Cond,
    ) -> impl Future<Output = Result<Written, AwsError>> + Send;
    /// One page of a (parallel) scan: items and the key to continue from.
    fn scan_page(
        &self,
        table: &str,
        segment: i32,
        total: i32,
        start: Option<Attrs>,
        consistent: bool,
    ) -> impl Future<Output = Result<(Vec<Attrs>, Option<Attrs>), AwsError>> + Send;
    /// The control item.
    fn control(
        &self,
        table: &str,
        migration: &str,
    ) -> impl Future<Output = Result<Option<ControlState>, AwsError>> + Send;
    /// Writes the operator's attributes of `next` with `version = expected
    /// + 1`, only if the stored version is still `expected` (or the item is
    /// absent when `expected` is 0): two operators cannot clobber each
    /// other, and the applier's `consumed_ms` is never overwritten.
    fn write_control(
        &self,
        table: &str,
        next: &ControlState,
        expected: u64,
    ) -> impl Future<Output = Result<ControlWrite, AwsError>> + Send;
}

/// CloudWatch.
pub trait Metrics: Send + Sync {
    /// Several series over `[since_ms, until_ms]` at 60 s resolution, in one
    /// request (GetMetricData); one `Series` per query, in order.
    fn metrics(
        &self,
        queries: &[MetricQuery],
        since_ms: i64,
        until_ms: i64,
    ) -> impl Future<Output = Result<Vec<Series>, AwsError>> + Send;
}

/// S3: the objects of an export.
pub trait Objects: Send + Sync {
    /// Streams an object into the file at `dest` (created or truncated);
    /// returns its size. Memory stays at one chunk whatever the size.
    fn download(
        &self,
        bucket: &str,
        key: &str,
        dest: &std::path::Path,
    ) -> impl Future<Output = Result<u64, AwsError>> + Send;
}

/// Every service the operator touches.
pub trait Aws: Stacks + Triggers + Queues + Tables + Metrics + Objects + Iac {}

impl<T: Stacks + Triggers + Queues + Tables + Metrics + Objects + Iac> Aws for T {}

fn e<E, R>(op: &'static str) -> impl FnOnce(aws_sdk_dynamodb::error::SdkError<E, R>) -> AwsError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: crate::sdk::HasStatus + std::fmt::Debug,
{
    move |err| crate::sdk::classify(op, &err)
}

fn ms(t: &aws_smithy_types::DateTime) -> i64 {
    t.secs() * 1000 + i64::from(t.subsec_nanos() / 1_000_000)
}

#[cfg(test)]
mod tests;
