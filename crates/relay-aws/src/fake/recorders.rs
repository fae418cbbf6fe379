//! Recording implementations of the traits that do as little as they can:
//! no bookkeeping beyond counts, so CPU and allocation figures measure the
//! handlers, not the fakes (the handler benchmark and the allocation test
//! use them; the stateful fakes are for behaviour).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use relay_core::control::ControlState;
use relay_core::item::Attrs;
use relay_core::metrics::MetricRecord;

use crate::{
    AwsError, ControlStore, EntryStatus, Fence, MetricsPublisher, QueueSender, SendEntry,
    SourceReader, TargetWriter, Write,
};

/// SendMessageBatch that accepts everything; keeps the messages only when
/// asked (to build the applier's input), else counts calls.
#[derive(Debug, Default)]
pub struct RecordingQueue {
    pub keep: Option<Mutex<Vec<(String, String)>>>,
    pub calls: AtomicU64,
}

impl RecordingQueue {
    /// A queue that keeps every (body, group) it is sent, or only counts.
    pub fn new(keep: bool) -> Self {
        RecordingQueue {
            keep: keep.then(Mutex::default),
            ..RecordingQueue::default()
        }
    }

    /// The messages kept so far.
    pub fn kept(&self) -> Vec<(String, String)> {
        self.keep
            .as_ref()
            .map(|k| super::lock(k).clone())
            .unwrap_or_default()
    }
}

impl QueueSender for RecordingQueue {
    async fn send_batch(
        &self,
        entries: Vec<SendEntry>,
    ) -> Result<HashMap<String, EntryStatus>, AwsError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let status = entries
            .iter()
            .map(|e| (e.id.clone(), EntryStatus::Accepted))
            .collect();
        if let Some(k) = &self.keep {
            super::lock(k).extend(entries.into_iter().map(|e| (e.body, e.group_id)));
        }
        Ok(status)
    }
}

/// A target that takes every write (and counts them), a source that has
/// nothing, a control item (version 1, cutoff 0) that never moves.
#[derive(Debug, Default)]
pub struct NullTables {
    pub writes: AtomicU64,
}

impl SourceReader for NullTables {
    async fn get_consistent(&self, _: &Attrs) -> Result<Option<Attrs>, AwsError> {
        Ok(None)
    }
}

impl TargetWriter for NullTables {
    async fn batch_write(&self, writes: &[Write<'_>]) -> Result<Vec<usize>, AwsError> {
        self.writes
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        Ok(Vec::new())
    }
    async fn write_one(&self, _: &Write<'_>) -> Result<bool, AwsError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }
    async fn mark(&self, _: &Attrs, _: &Attrs, _: &str) -> Result<bool, AwsError> {
        Ok(true)
    }
    async fn write_marked(&self, _: &Write<'_>, _: &str) -> Result<bool, AwsError> {
        Ok(true)
    }
    async fn unmark(&self, _: &Attrs, _: &str) -> Result<bool, AwsError> {
        Ok(true)
    }
}

impl ControlStore for NullTables {
    async fn load(&self, migration: &str) -> Result<Option<ControlState>, AwsError> {
        Ok(Some(ControlState {
            migration: migration.into(),
            cutoff_ms: Some(0),
            version: 1,
            ..ControlState::default()
        }))
    }
    async fn commit(&self, _: &str, _: u64, _: Option<i64>) -> Result<Fence, AwsError> {
        Ok(Fence::Held)
    }
}

/// Metrics that go nowhere.
#[derive(Debug, Default)]
pub struct NullMetrics;

impl MetricsPublisher for NullMetrics {
    async fn publish(&self, _: &str, _: &str, r: &MetricRecord) -> Result<(), AwsError> {
        std::hint::black_box(r);
        Ok(())
    }
}
