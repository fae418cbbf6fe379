//! An SQS FIFO queue with a dead-letter queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use super::lock;
use crate::{AwsError, EntryStatus, QueueSender, SendEntry};

/// A fault for one SQS entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryFault {
    /// Retryable failure (e.g. throttled).
    Retryable,
    /// Sender fault: the entry is invalid.
    Permanent,
    /// Ambiguous: the entry is queued (deduplicated as usual), but the
    /// answer says it failed and may be retried (a response lost, or a
    /// call abandoned after SQS took it).
    Ambiguous,
}

type EntryFaultFn = Box<dyn FnMut(&SendEntry) -> Option<EntryFault> + Send>;
type CallFaultFn = Box<dyn FnMut(&[SendEntry]) -> Option<AwsError> + Send>;
type SendLatencyFn = Box<dyn FnMut(&[SendEntry]) -> std::time::Duration + Send>;

/// A message in the fake queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    pub message_id: String,
    pub group_id: String,
    pub dedup_id: String,
    pub body: String,
    pub receive_count: u32,
    /// Order of acceptance across the queue (SQS's SequenceNumber).
    pub sequence: u64,
}

#[derive(Default)]
struct FifoState {
    group_order: Vec<String>,
    groups: HashMap<String, VecDeque<QueuedMessage>>,
    in_flight: HashSet<String>,
    dedup_seen: HashSet<String>,
    /// Messages delivered and not yet completed.
    delivered: HashSet<String>,
    /// The DLQ, with whether each message is held by a receive.
    dlq: Vec<(QueuedMessage, bool)>,
    accepted: Vec<QueuedMessage>,
    accepted_entries: Vec<SendEntry>,
    next_sequence: u64,
    calls: u64,
    /// Calls that carried two entries of one group: always a bug.
    same_group_violations: u64,
    entry_fault: Option<EntryFaultFn>,
    call_fault: Option<CallFaultFn>,
    latency: Option<SendLatencyFn>,
    max_receive_count: u32,
}

/// A FIFO queue with a dead-letter queue.
#[derive(Clone)]
pub struct FakeFifo {
    state: Arc<Mutex<FifoState>>,
}

impl std::fmt::Debug for FakeFifo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeFifo").finish_non_exhaustive()
    }
}

impl FakeFifo {
    /// A queue whose messages move to the DLQ after `max_receive_count` receives.
    pub fn new(max_receive_count: u32) -> Self {
        FakeFifo {
            state: Arc::new(Mutex::new(FifoState {
                max_receive_count,
                ..FifoState::default()
            })),
        }
    }

    /// Injects per-entry faults.
    pub fn set_entry_faults(
        &self,
        f: impl FnMut(&SendEntry) -> Option<EntryFault> + Send + 'static,
    ) {
        lock(&self.state).entry_fault = Some(Box::new(f));
    }

    /// Injects whole-call failures.
    pub fn set_call_faults(
        &self,
        f: impl FnMut(&[SendEntry]) -> Option<AwsError> + Send + 'static,
    ) {
        lock(&self.state).call_fault = Some(Box::new(f));
    }

    /// Every `SendMessageBatch` call sleeps (in tokio time) as long as `f`
    /// says before it takes effect.
    pub fn set_latency(&self, f: impl FnMut(&[SendEntry]) -> std::time::Duration + Send + 'static) {
        lock(&self.state).latency = Some(Box::new(f));
    }

    pub fn clear_faults(&self) {
        let mut s = lock(&self.state);
        s.entry_fault = None;
        s.call_fault = None;
    }

    /// Receives up to `max` messages, as a Lambda FIFO poller does: from
    /// groups with nothing in flight, each group's messages in order.
    pub fn receive(&self, max: usize) -> Vec<QueuedMessage> {
        let mut s = lock(&self.state);
        let mut out = Vec::new();
        let order = s.group_order.clone();
        for g in order {
            if out.len() >= max {
                break;
            }
            if s.in_flight.contains(&g) {
                continue;
            }
            let Some(q) = s.groups.get_mut(&g) else {
                continue;
            };
            if q.is_empty() {
                continue;
            }
            let mut got = Vec::new();
            for m in q.iter_mut() {
                if out.len() + got.len() >= max {
                    break;
                }
                m.receive_count += 1;
                got.push(m.clone());
            }
            s.delivered.extend(got.iter().map(|m| m.message_id.clone()));
            out.extend(got);
            s.in_flight.insert(g);
        }
        out
    }

    /// Ends a receive: messages not in `failed` are deleted; failed ones
    /// become visible again, or move to the DLQ past the receive limit.
    pub fn complete(&self, delivered: &[QueuedMessage], failed: &HashSet<String>) {
        let mut s = lock(&self.state);
        let max = s.max_receive_count;
        let mut to_dlq = Vec::new();
        for m in delivered {
            let Some(q) = s.groups.get_mut(&m.group_id) else {
                continue;
            };
            let Some(pos) = q.iter().position(|x| x.message_id == m.message_id) else {
                continue;
            };
            if !failed.contains(&m.message_id) {
                q.remove(pos);
            } else if q[pos].receive_count >= max {
                if let Some(dead) = q.remove(pos) {
                    to_dlq.push(dead);
                }
            }
        }
        s.dlq.extend(to_dlq.into_iter().map(|m| (m, false)));
        for m in delivered {
            s.in_flight.remove(&m.group_id);
            s.delivered.remove(&m.message_id);
        }
    }

    /// (visible, in flight) messages of the main queue.
    pub fn counts(&self) -> (u64, u64) {
        let s = lock(&self.state);
        let total: usize = s.groups.values().map(VecDeque::len).sum();
        let in_flight = s.delivered.len();
        ((total - in_flight.min(total)) as u64, in_flight as u64)
    }

    /// (visible, held) messages of the DLQ.
    pub fn dlq_counts(&self) -> (u64, u64) {
        let s = lock(&self.state);
        let held = s.dlq.iter().filter(|(_, h)| *h).count();
        ((s.dlq.len() - held) as u64, held as u64)
    }

    /// Receives up to `max` DLQ messages that nobody holds, and holds them.
    pub fn receive_dlq(&self, max: usize) -> Vec<QueuedMessage> {
        let mut s = lock(&self.state);
        let mut out = Vec::new();
        for (m, held) in s.dlq.iter_mut() {
            if out.len() >= max {
                break;
            }
            if !*held {
                *held = true;
                m.receive_count += 1;
                out.push(m.clone());
            }
        }
        out
    }

    /// Deletes a DLQ message.
    pub fn delete_dlq(&self, message_id: &str) {
        lock(&self.state)
            .dlq
            .retain(|(m, _)| m.message_id != message_id);
    }

    /// Makes a held DLQ message visible again.
    pub fn release_dlq(&self, message_id: &str) {
        for (m, held) in lock(&self.state).dlq.iter_mut() {
            if m.message_id == message_id {
                *held = false;
            }
        }
    }

    /// Messages waiting (visible or in flight).
    pub fn depth(&self) -> usize {
        lock(&self.state).groups.values().map(VecDeque::len).sum()
    }

    pub fn dlq(&self) -> Vec<QueuedMessage> {
        lock(&self.state)
            .dlq
            .iter()
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// Every message the queue accepted, in acceptance order.
    pub fn accepted(&self) -> Vec<QueuedMessage> {
        lock(&self.state).accepted.clone()
    }

    /// Every entry SQS answered "accepted", including resends it dropped
    /// as duplicates, in order.
    pub fn accepted_entries(&self) -> Vec<SendEntry> {
        lock(&self.state).accepted_entries.clone()
    }

    /// `SendMessageBatch` calls made.
    pub fn calls(&self) -> u64 {
        lock(&self.state).calls
    }

    /// Calls that carried two entries of one group (must stay 0).
    pub fn same_group_violations(&self) -> u64 {
        lock(&self.state).same_group_violations
    }
}

impl QueueSender for FakeFifo {
    async fn send_batch(
        &self,
        entries: Vec<SendEntry>,
    ) -> Result<HashMap<String, EntryStatus>, AwsError> {
        tokio::task::yield_now().await;
        let delay = lock(&self.state)
            .latency
            .as_mut()
            .map(|f| f(&entries))
            .unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut s = lock(&self.state);
        s.calls += 1;
        if entries.is_empty() || entries.len() > 10 {
            return Err(AwsError::permanent(
                "SendMessageBatch",
                "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                "a batch holds 1 to 10 entries",
            ));
        }
        let groups: HashSet<&str> = entries.iter().map(|e| e.group_id.as_str()).collect();
        if groups.len() != entries.len() {
            s.same_group_violations += 1;
        }
        if let Some(f) = s.call_fault.as_mut() {
            if let Some(err) = f(&entries) {
                return Err(err);
            }
        }
        let mut out = HashMap::new();
        for e in entries {
            let fault = s.entry_fault.as_mut().and_then(|f| f(&e));
            let ambiguous = fault == Some(EntryFault::Ambiguous);
            match fault {
                Some(EntryFault::Retryable) => {
                    out.insert(
                        e.id,
                        EntryStatus::Failed {
                            retryable: true,
                            code: "ThrottlingException".into(),
                        },
                    );
                }
                Some(EntryFault::Permanent) => {
                    out.insert(
                        e.id,
                        EntryStatus::Failed {
                            retryable: false,
                            code: "InvalidMessageContents".into(),
                        },
                    );
                }
                Some(EntryFault::Ambiguous) | None => {
                    s.accepted_entries.push(e.clone());
                    if s.dedup_seen.insert(e.dedup_id.clone()) {
                        s.next_sequence += 1;
                        let m = QueuedMessage {
                            message_id: format!("m-{}", s.next_sequence),
                            group_id: e.group_id.clone(),
                            dedup_id: e.dedup_id,
                            body: e.body,
                            receive_count: 0,
                            sequence: s.next_sequence,
                        };
                        if !s.groups.contains_key(&m.group_id) {
                            s.group_order.push(m.group_id.clone());
                        }
                        s.groups
                            .entry(m.group_id.clone())
                            .or_default()
                            .push_back(m.clone());
                        s.accepted.push(m);
                    }
                    out.insert(
                        e.id,
                        if ambiguous {
                            EntryStatus::Failed {
                                retryable: true,
                                code: "InternalError".into(),
                            }
                        } else {
                            EntryStatus::Accepted
                        },
                    );
                }
            }
        }
        Ok(out)
    }
}
