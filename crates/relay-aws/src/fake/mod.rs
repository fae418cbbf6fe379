//! In-memory fakes of SQS FIFO, DynamoDB (with streams, point-in-time
//! history and backups), Lambda triggers and CloudWatch, with failure and
//! latency injection.
//!
//! They enforce the real services' rules that our invariants lean on, so a
//! test fails when the code breaks one: `BatchWriteItem` refuses more than 25
//! writes or two writes on one key; FIFO delivers a group's messages in
//! order and never while an earlier one of the group is in flight; SQS drops
//! a resend with a known deduplication id; conditional writes check their
//! condition atomically. Every call yields to the scheduler first, so tasks
//! that share a fake interleave at every AWS call, as they do against AWS.

use std::sync::{Mutex, MutexGuard};

pub use crate::runtime::Clock;

#[cfg(feature = "operator")]
mod aws;
#[cfg(feature = "operator")]
mod metrics;
// Backups, restores and conditional writes serve the operator fakes only.
#[cfg_attr(not(feature = "operator"), allow(dead_code))]
mod dynamo;
pub mod events;
mod fifo;
#[cfg(feature = "operator")]
mod iac;
#[cfg(feature = "operator")]
mod lambda;
#[cfg(feature = "operator")]
mod queues;
pub mod recorders;
pub mod workload;

#[cfg(feature = "operator")]
pub use aws::FakeAws;
pub use dynamo::{Call, DbFault, FakeDynamo, FakeTable, StreamRecord};
pub use fifo::{EntryFault, FakeFifo, QueuedMessage};
#[cfg(feature = "operator")]
pub use metrics::FakeMetrics;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
