//! In-memory fakes of SQS FIFO and DynamoDB, with failure injection.
//!
//! They enforce the real services' rules that our invariants lean on, so a
//! test fails when the code breaks one: `BatchWriteItem` refuses more than 25
//! writes or two writes on one key; FIFO delivers a group's messages in
//! order and never while an earlier one of the group is in flight; SQS drops
//! a resend with a known deduplication id.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use relay_core::control::{ControlState, ATTR_MIGRATION};
use relay_core::item::{AttributeValue, Attrs, CanonicalKey};

use crate::{
    AwsError, ControlReader, EntryStatus, QueueSender, SendEntry, SourceReader, TargetWriter, Write,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fault for one SQS entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryFault {
    /// Retryable failure (e.g. throttled).
    Retryable,
    /// Sender fault: the entry is invalid.
    Permanent,
}

type EntryFaultFn = Box<dyn FnMut(&SendEntry) -> Option<EntryFault> + Send>;
type CallFaultFn = Box<dyn FnMut(&[SendEntry]) -> Option<AwsError> + Send>;

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
    dlq: Vec<QueuedMessage>,
    accepted: Vec<QueuedMessage>,
    accepted_entries: Vec<SendEntry>,
    next_sequence: u64,
    calls: u64,
    /// Calls that carried two entries of one group: always a bug.
    same_group_violations: u64,
    entry_fault: Option<EntryFaultFn>,
    call_fault: Option<CallFaultFn>,
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
            for m in q.iter_mut() {
                if out.len() >= max {
                    break;
                }
                m.receive_count += 1;
                out.push(m.clone());
            }
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
        s.dlq.extend(to_dlq);
        for m in delivered {
            s.in_flight.remove(&m.group_id);
        }
    }

    /// Messages waiting (visible or in flight).
    pub fn depth(&self) -> usize {
        lock(&self.state).groups.values().map(VecDeque::len).sum()
    }

    pub fn dlq(&self) -> Vec<QueuedMessage> {
        lock(&self.state).dlq.clone()
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
                None => {
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
                    out.insert(e.id, EntryStatus::Accepted);
                }
            }
        }
        Ok(out)
    }
}

/// A fault for one DynamoDB call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbFault {
    /// The call fails as a whole.
    Error(AwsError),
    /// `BatchWriteItem` only: these positions are left unprocessed, the
    /// others are written.
    Unprocessed(Vec<usize>),
}

/// A call, as fault functions see it.
#[derive(Debug)]
pub struct Call<'a> {
    pub op: &'static str,
    pub table: &'a str,
    pub writes: &'a [Write],
}

type DbFaultFn = Box<dyn FnMut(&Call<'_>) -> Option<DbFault> + Send>;

#[derive(Default)]
struct Table {
    key_attrs: Vec<String>,
    items: BTreeMap<CanonicalKey, Attrs>,
}

#[derive(Default)]
struct DbState {
    tables: HashMap<String, Table>,
    fault: Option<DbFaultFn>,
    calls: HashMap<&'static str, u64>,
}

/// An in-memory DynamoDB.
#[derive(Clone, Default)]
pub struct FakeDynamo {
    state: Arc<Mutex<DbState>>,
}

impl std::fmt::Debug for FakeDynamo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDynamo").finish_non_exhaustive()
    }
}

fn validation(op: &'static str, msg: &str) -> AwsError {
    AwsError::permanent(op, "ValidationException", msg)
}

impl FakeDynamo {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn create_table(&self, name: &str, key_attrs: &[&str]) {
        lock(&self.state).tables.insert(
            name.to_string(),
            Table {
                key_attrs: key_attrs.iter().map(|s| s.to_string()).collect(),
                items: BTreeMap::new(),
            },
        );
    }

    pub fn table(&self, name: &str) -> FakeTable {
        FakeTable {
            db: self.clone(),
            name: name.to_string(),
        }
    }

    pub fn set_faults(&self, f: impl FnMut(&Call<'_>) -> Option<DbFault> + Send + 'static) {
        lock(&self.state).fault = Some(Box::new(f));
    }

    pub fn clear_faults(&self) {
        lock(&self.state).fault = None;
    }

    /// The items of a table, by canonical key.
    pub fn items(&self, table: &str) -> BTreeMap<CanonicalKey, Attrs> {
        lock(&self.state)
            .tables
            .get(table)
            .map(|t| t.items.clone())
            .unwrap_or_default()
    }

    /// Calls made, by operation name.
    pub fn calls(&self, op: &str) -> u64 {
        lock(&self.state).calls.get(op).copied().unwrap_or(0)
    }

    /// Writes directly, bypassing faults (test set-up).
    pub fn put(&self, table: &str, item: Attrs) {
        let mut s = lock(&self.state);
        if let Some(t) = s.tables.get_mut(table) {
            if let Ok(k) = key_of(&t.key_attrs, &item, "PutItem") {
                t.items.insert(k, item);
            }
        }
    }

    fn fault(&self, call: &Call<'_>) -> Option<DbFault> {
        let mut s = lock(&self.state);
        *s.calls.entry(call.op).or_insert(0) += 1;
        s.fault.as_mut().and_then(|f| f(call))
    }

    fn apply(&self, table: &str, op: &'static str, w: &Write) -> Result<(), AwsError> {
        let mut s = lock(&self.state);
        let t = s.tables.get_mut(table).ok_or_else(|| {
            AwsError::permanent(
                op,
                "ResourceNotFoundException",
                "Requested resource not found",
            )
        })?;
        match w {
            Write::Put(item) => {
                let k = key_of(&t.key_attrs, item, op)?;
                t.items.insert(k, item.clone());
            }
            Write::Delete(keys) => {
                let k = key_of(&t.key_attrs, keys, op)?;
                t.items.remove(&k);
            }
        }
        Ok(())
    }
}

fn key_of(key_attrs: &[String], item: &Attrs, op: &'static str) -> Result<CanonicalKey, AwsError> {
    let mut key = Attrs::new();
    for a in key_attrs {
        let v = item.get(a).ok_or_else(|| {
            validation(
                op,
                &format!(
                    "One or more parameter values were invalid: Missing the key {a} in the item"
                ),
            )
        })?;
        key.insert(a.clone(), v.clone());
    }
    Ok(CanonicalKey::of(&key))
}

/// One table of a [`FakeDynamo`].
#[derive(Clone, Debug)]
pub struct FakeTable {
    db: FakeDynamo,
    name: String,
}

impl TargetWriter for FakeTable {
    async fn batch_write(&self, writes: &[Write]) -> Result<Vec<usize>, AwsError> {
        const OP: &str = "BatchWriteItem";
        if writes.is_empty() || writes.len() > 25 {
            return Err(validation(
                OP,
                "Too many items requested for the BatchWriteItem call",
            ));
        }
        {
            let s = lock(&self.db.state);
            let t = s.tables.get(&self.name).ok_or_else(|| {
                AwsError::permanent(
                    OP,
                    "ResourceNotFoundException",
                    "Requested resource not found",
                )
            })?;
            let mut seen = HashSet::new();
            for w in writes {
                let k = match w {
                    Write::Put(i) | Write::Delete(i) => key_of(&t.key_attrs, i, OP)?,
                };
                if !seen.insert(k) {
                    return Err(validation(
                        OP,
                        "Provided list of item keys contains duplicates",
                    ));
                }
            }
        }
        let call = Call {
            op: OP,
            table: &self.name,
            writes,
        };
        let unprocessed = match self.db.fault(&call) {
            Some(DbFault::Error(e)) => return Err(e),
            Some(DbFault::Unprocessed(u)) => u,
            None => Vec::new(),
        };
        for (i, w) in writes.iter().enumerate() {
            if !unprocessed.contains(&i) {
                self.db.apply(&self.name, OP, w)?;
            }
        }
        Ok(unprocessed)
    }

    async fn write_one(&self, write: &Write) -> Result<(), AwsError> {
        let op = match write {
            Write::Put(_) => "PutItem",
            Write::Delete(_) => "DeleteItem",
        };
        let call = Call {
            op,
            table: &self.name,
            writes: std::slice::from_ref(write),
        };
        match self.db.fault(&call) {
            Some(DbFault::Error(e)) => Err(e),
            _ => self.db.apply(&self.name, op, write),
        }
    }
}

impl SourceReader for FakeTable {
    async fn get_consistent(&self, keys: &Attrs) -> Result<Option<Attrs>, AwsError> {
        const OP: &str = "GetItem";
        let call = Call {
            op: OP,
            table: &self.name,
            writes: &[],
        };
        if let Some(DbFault::Error(e)) = self.db.fault(&call) {
            return Err(e);
        }
        let s = lock(&self.db.state);
        let t = s.tables.get(&self.name).ok_or_else(|| {
            AwsError::permanent(
                OP,
                "ResourceNotFoundException",
                "Requested resource not found",
            )
        })?;
        let k = key_of(&t.key_attrs, keys, OP)?;
        Ok(t.items.get(&k).cloned())
    }
}

impl ControlReader for FakeTable {
    async fn load(&self, migration: &str) -> Result<Option<ControlState>, AwsError> {
        let key: Attrs = [(
            ATTR_MIGRATION.to_string(),
            AttributeValue::S(migration.into()),
        )]
        .into();
        match self.get_consistent(&key).await? {
            None => Ok(None),
            Some(item) => ControlState::from_item(&item).map(Some).map_err(|e| {
                AwsError::permanent("GetItem(control)", "InvalidControlItem", &e.to_string())
            }),
        }
    }
}

/// Builders of AWS-shaped Lambda events, for tests.
pub mod events {
    use aws_lambda_events::event::dynamodb::Event;
    use aws_lambda_events::event::sqs::SqsEvent;
    use relay_core::item::Attrs;
    use serde_json::{json, Value};

    use super::QueuedMessage;

    /// One stream record to build.
    #[derive(Clone, Debug)]
    pub struct Record {
        pub event_id: String,
        /// `INSERT`, `MODIFY` or `REMOVE`.
        pub event_name: String,
        pub seq: String,
        /// Seconds since the epoch.
        pub time_s: i64,
        pub keys: Attrs,
        pub new_image: Option<Attrs>,
        pub old_image: Option<Attrs>,
        pub ttl: bool,
    }

    /// The stream ARN used by [`stream_event`].
    pub fn stream_arn(table: &str) -> String {
        format!(
            "arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-11-01T00:00:00.000"
        )
    }

    /// A DynamoDB stream event as Lambda delivers it.
    pub fn stream_event(table: &str, records: &[Record]) -> Event {
        let arn = stream_arn(table);
        let recs: Vec<Value> = records
            .iter()
            .map(|r| {
                let mut dynamodb = json!({
                    "ApproximateCreationDateTime": r.time_s,
                    "Keys": r.keys,
                    "SequenceNumber": r.seq,
                    "SizeBytes": 100,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                });
                if let Some(n) = &r.new_image {
                    dynamodb["NewImage"] = json!(n);
                }
                if let Some(o) = &r.old_image {
                    dynamodb["OldImage"] = json!(o);
                }
                let mut rec = json!({
                    "eventID": r.event_id,
                    "eventName": r.event_name,
                    "eventVersion": "1.1",
                    "eventSource": "aws:dynamodb",
                    "awsRegion": "us-east-1",
                    "dynamodb": dynamodb,
                    "eventSourceARN": arn,
                });
                if r.ttl {
                    rec["userIdentity"] =
                        json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"});
                }
                rec
            })
            .collect();
        serde_json::from_value(json!({ "Records": recs }))
            .unwrap_or_else(|e| panic!("test stream event does not parse: {e}"))
    }

    /// An SQS FIFO event as Lambda delivers it.
    pub fn sqs_event(messages: &[QueuedMessage]) -> SqsEvent {
        let recs: Vec<Value> = messages
            .iter()
            .map(|m| {
                json!({
                    "messageId": m.message_id,
                    "receiptHandle": format!("rh-{}", m.message_id),
                    "body": m.body,
                    "attributes": {
                        "ApproximateReceiveCount": m.receive_count.to_string(),
                        "SentTimestamp": "1793750400000",
                        "SequenceNumber": format!("{:020}", m.sequence),
                        "MessageGroupId": m.group_id,
                        "SenderId": "AROAEXAMPLE:forwarder",
                        "MessageDeduplicationId": m.dedup_id,
                        "ApproximateFirstReceiveTimestamp": "1793750400001"
                    },
                    "messageAttributes": {},
                    "md5OfBody": "00000000000000000000000000000000",
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:relay.fifo",
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        serde_json::from_value(json!({ "Records": recs }))
            .unwrap_or_else(|e| panic!("test SQS event does not parse: {e}"))
    }
}
