//! ddb-relay's AWS boundary.
//!
//! Each capability the handlers need is a small trait ([`QueueSender`],
//! [`TargetWriter`], [`SourceReader`], [`ControlStore`], [`MetricsPublisher`]).
//! [`sdk`] implements them with the AWS SDK; the `fake` feature adds
//! in-memory implementations that can inject failures, for tests. The
//! operator's calls (feature `operator`) are traits too, split by service in
//! [`operator`], so the CLI's commands run against the same fakes.
//!
//! **Boundary:** SDK types never leave this crate. Items cross it as
//! [`relay_core::item::Attrs`], errors as [`AwsError`] already classified as
//! retryable or permanent.

use std::collections::HashMap;
use std::future::Future;

use relay_core::control::ControlState;
use relay_core::item::Attrs;
use relay_core::metrics::MetricRecord;

pub mod convert;
#[cfg(feature = "fake")]
pub mod fake;
#[cfg(feature = "operator")]
pub mod operator;
pub mod runtime;
pub mod sdk;

/// Whether trying again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Throttling, a server fault, a timeout or a dropped connection.
    Retryable,
    /// Validation, missing resource, missing permission: the same request
    /// will fail again.
    Permanent,
}

/// An AWS call that failed, classified. Its text never holds item values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct AwsError {
    pub kind: ErrorKind,
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    /// The SDK's whole error chain (`-v` shows it). SDK errors carry codes
    /// and service messages, never request bodies.
    pub chain: Option<String>,
}

impl AwsError {
    pub fn retryable(operation: &'static str, code: &str, message: &str) -> Self {
        AwsError {
            kind: ErrorKind::Retryable,
            operation,
            code: code.into(),
            message: message.into(),
            chain: None,
        }
    }

    pub fn permanent(operation: &'static str, code: &str, message: &str) -> Self {
        AwsError {
            kind: ErrorKind::Permanent,
            operation,
            code: code.into(),
            message: message.into(),
            chain: None,
        }
    }

    /// The same error with the SDK's error chain attached.
    pub fn with_chain(mut self, chain: String) -> Self {
        self.chain = Some(chain);
        self
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }
}

/// One entry of a `SendMessageBatch` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendEntry {
    /// Unique within the call.
    pub id: String,
    pub body: String,
    pub group_id: String,
    pub dedup_id: String,
}

/// What SQS said about one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryStatus {
    Accepted,
    Failed { retryable: bool, code: String },
}

/// Sends FIFO messages.
pub trait QueueSender: Send + Sync {
    /// One `SendMessageBatch` call. The map has a status for every entry id;
    /// an `Err` means the whole call failed.
    fn send_batch(
        &self,
        entries: Vec<SendEntry>,
    ) -> impl Future<Output = Result<HashMap<String, EntryStatus>, AwsError>> + Send;
}

/// A write to the target. `Put` and `Delete` are unconditional (what
/// `BatchWriteItem` takes); the owned ones carry a condition and go one by
/// one through [`TargetWriter::write_one`].
///
/// It borrows the planned write's attributes: the applier hands its plan to
/// the adapter without copying an item (an adapter that must own the data,
/// as the SDK's request builders do, makes its one copy there).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Write<'a> {
    Put(&'a Attrs),
    Delete(&'a Attrs),
    /// Delete only while the item there carries `owner`'s attributes.
    DeleteOwned {
        keys: &'a Attrs,
        owner: &'a Attrs,
    },
    /// Put only where no item is, or the item there carries `owner`'s
    /// attributes (`key_attr`: a key attribute, to test absence).
    PutOwned {
        item: &'a Attrs,
        owner: &'a Attrs,
        key_attr: &'a str,
    },
}

impl<'a> Write<'a> {
    /// Whether the write has a condition (then it cannot be batched).
    pub fn is_conditional(&self) -> bool {
        matches!(self, Write::DeleteOwned { .. } | Write::PutOwned { .. })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Write::Put(_) | Write::PutOwned { .. } => "put",
            Write::Delete(_) | Write::DeleteOwned { .. } => "delete",
        }
    }

    /// The attributes holding the item's key (the item, or the keys).
    pub fn key_source(&self) -> &'a Attrs {
        match *self {
            Write::Put(i) | Write::Delete(i) => i,
            Write::DeleteOwned { keys, .. } => keys,
            Write::PutOwned { item, .. } => item,
        }
    }
}

/// Writes to the target table (and reads it, to settle a contested key).
pub trait TargetWriter: SourceReader + Send + Sync {
    /// One `BatchWriteItem` call (at most 25 writes, no two on one key).
    /// Returns the positions of the writes DynamoDB left unprocessed.
    fn batch_write(
        &self,
        writes: &[Write<'_>],
    ) -> impl Future<Output = Result<Vec<usize>, AwsError>> + Send;

    /// One `PutItem` or `DeleteItem`: an owned (conditional) write, or one
    /// write of a batch DynamoDB refused. `Ok(false)`: an owned write found
    /// another source item's item at the key and wrote nothing.
    fn write_one(&self, write: &Write<'_>) -> impl Future<Output = Result<bool, AwsError>> + Send;

    /// Marks the item at `keys` with `token` (attribute
    /// [`relay_core::apply::TOKEN_ATTR`]) while it exists and carries
    /// `owner`'s attributes. `Ok(false)`: it no longer does.
    fn mark(
        &self,
        keys: &Attrs,
        owner: &Attrs,
        token: &str,
    ) -> impl Future<Output = Result<bool, AwsError>> + Send;

    /// A `Put` or `Delete` on the condition that the item still carries the
    /// mark `token`. `Ok(false)`: another write replaced it meanwhile.
    fn write_marked(
        &self,
        write: &Write<'_>,
        token: &str,
    ) -> impl Future<Output = Result<bool, AwsError>> + Send;

    /// Takes the mark `token` back (removes the attribute) while the item
    /// still carries it: a settling that failed after marking leaves
    /// nothing of its own on another item. `Ok(false)`: the mark is gone.
    fn unmark(
        &self,
        keys: &Attrs,
        token: &str,
    ) -> impl Future<Output = Result<bool, AwsError>> + Send;
}

/// Reads the source table.
pub trait SourceReader: Send + Sync {
    /// `GetItem` with a consistent read.
    fn get_consistent(
        &self,
        keys: &Attrs,
    ) -> impl Future<Output = Result<Option<Attrs>, AwsError>> + Send;
}

/// The result of the applier's commit on the control item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fence {
    /// The control item is still at the version the batch was planned with,
    /// and `consumed_ms` now covers the batch: its messages may be deleted.
    Held,
    /// An operator changed the control item since (pause, mode switch,
    /// cutoff): nothing may be consumed under the old plan. The new state.
    Moved(Option<Box<ControlState>>),
}

/// The applier's side of the control item of a migration.
pub trait ControlStore: Send + Sync {
    /// The control item, read consistently.
    fn load(
        &self,
        migration: &str,
    ) -> impl Future<Output = Result<Option<ControlState>, AwsError>> + Send;

    /// Commits a batch planned at `version`: raises `consumed_ms` to
    /// `consumed_ms` (monotonically) if the item is still at `version`, else
    /// answers [`Fence::Moved`]. Called after the batch's writes and before
    /// its messages are reported complete, so a message is deleted only
    /// while the plan it was applied under still stands.
    fn commit(
        &self,
        migration: &str,
        version: u64,
        consumed_ms: Option<i64>,
    ) -> impl Future<Output = Result<Fence, AwsError>> + Send;
}

/// Sends a metrics record with `PutMetricData`.
pub trait MetricsPublisher: Send + Sync {
    fn publish(
        &self,
        namespace: &str,
        migration: &str,
        record: &MetricRecord,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// A publisher for when `PutMetricData` is not wanted.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMetrics;

impl MetricsPublisher for NoMetrics {
    async fn publish(&self, _: &str, _: &str, _: &MetricRecord) -> Result<(), AwsError> {
        Ok(())
    }
}
