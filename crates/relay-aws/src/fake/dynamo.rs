//! An in-memory DynamoDB: tables with streams, point-in-time history and
//! fuzzy backups, conditional writes, faults and latency.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relay_core::apply::TOKEN_ATTR;
use relay_core::control::{ControlState, ATTR_CONSUMED_MS, ATTR_MIGRATION, ATTR_VERSION};
use relay_core::item::{AttributeValue, Attrs, CanonicalKey};

use super::{lock, Clock};
use crate::{AwsError, ControlStore, Fence, SourceReader, TargetWriter, Write};

/// A fault for one DynamoDB call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbFault {
    /// The call fails as a whole.
    Error(AwsError),
    /// `BatchWriteItem` only: these positions are left unprocessed, the
    /// others are written.
    Unprocessed(Vec<usize>),
}

/// A call, as fault and latency functions see it.
#[derive(Debug)]
pub struct Call<'a> {
    pub op: &'static str,
    pub table: &'a str,
    pub writes: &'a [Write<'a>],
}

type DbFaultFn = Box<dyn FnMut(&Call<'_>) -> Option<DbFault> + Send>;
type LatencyFn = Box<dyn FnMut(&Call<'_>) -> Duration + Send>;

/// One record of a table's stream, as DynamoDB Streams would carry it.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    pub event_id: String,
    pub seq: u64,
    pub time_ms: i64,
    /// `INSERT`, `MODIFY` or `REMOVE`.
    pub event_name: &'static str,
    pub keys: Attrs,
    pub new_image: Option<Attrs>,
    pub old_image: Option<Attrs>,
    /// A delete made by DynamoDB's TTL process.
    pub ttl: bool,
}

impl StreamRecord {
    /// The record as a Lambda stream-event record builder.
    pub fn to_record(&self) -> super::events::Record {
        super::events::Record {
            event_id: self.event_id.clone(),
            event_name: self.event_name.to_string(),
            seq: format!("{:021}", self.seq),
            time_s: self.time_ms.div_euclid(1000),
            keys: self.keys.clone(),
            new_image: self.new_image.clone(),
            old_image: self.old_image.clone(),
            ttl: self.ttl,
        }
    }
}

#[derive(Default)]
struct Table {
    key_attrs: Vec<String>,
    items: BTreeMap<CanonicalKey, Attrs>,
    /// CREATING until this time, then ACTIVE.
    ready_at_ms: i64,
    stream: Option<Vec<StreamRecord>>,
    /// Every change, with its time (for point-in-time restores).
    history: Vec<(i64, CanonicalKey, Option<Attrs>)>,
    pitr: bool,
    /// Its TableId (a new one each time a table of that name is created).
    id: u64,
    /// Created by a restore (DescribeTable's RestoreSummary).
    restored: bool,
}

struct Backup {
    table: String,
    created_ms: i64,
    ready_at_ms: i64,
    snapshot: Option<BTreeMap<CanonicalKey, Attrs>>,
}

#[derive(Default)]
struct DbState {
    tables: HashMap<String, Table>,
    backups: HashMap<String, Backup>,
    fault: Option<DbFaultFn>,
    latency: Option<LatencyFn>,
    calls: HashMap<&'static str, u64>,
    clock: Clock,
    next_seq: u64,
    next_table_id: u64,
    /// How long a restore takes, and how fuzzy a backup is (each item is
    /// taken at its own time within ± this of the backup time).
    restore_ms: i64,
    backup_fuzz_ms: i64,
    rng: Option<fastrand::Rng>,
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

fn not_found(op: &'static str) -> AwsError {
    AwsError::permanent(
        op,
        "ResourceNotFoundException",
        "Requested resource not found",
    )
}

pub(crate) fn key_of(
    key_attrs: &[String],
    item: &Attrs,
    op: &'static str,
) -> Result<CanonicalKey, AwsError> {
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

fn key_attrs_of(key_attrs: &[String], item: &Attrs) -> Attrs {
    key_attrs
        .iter()
        .filter_map(|a| item.get(a).map(|v| (a.clone(), v.clone())))
        .collect()
}

impl FakeDynamo {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake whose stream records, histories and backups follow `clock`,
    /// whose restores take `restore_ms` and whose backups are fuzzy by
    /// `backup_fuzz_ms` (random per item, from `seed`).
    pub fn with_clock(clock: Clock, restore_ms: i64, backup_fuzz_ms: i64, seed: u64) -> Self {
        let db = FakeDynamo::default();
        {
            let mut s = lock(&db.state);
            s.clock = clock;
            s.restore_ms = restore_ms;
            s.backup_fuzz_ms = backup_fuzz_ms;
            s.rng = Some(fastrand::Rng::with_seed(seed));
        }
        db
    }

    pub fn now_ms(&self) -> i64 {
        lock(&self.state).clock.now_ms()
    }

    pub fn create_table(&self, name: &str, key_attrs: &[&str]) {
        let mut s = lock(&self.state);
        s.next_table_id += 1;
        let id = s.next_table_id;
        s.tables.insert(
            name.to_string(),
            Table {
                key_attrs: key_attrs.iter().map(|s| s.to_string()).collect(),
                id,
                ..Table::default()
            },
        );
    }

    /// Turns on the table's stream (NEW_AND_OLD_IMAGES) and point-in-time
    /// history.
    pub fn enable_stream_and_pitr(&self, name: &str) {
        if let Some(t) = lock(&self.state).tables.get_mut(name) {
            t.stream.get_or_insert_with(Vec::new);
            t.pitr = true;
        }
    }

    /// Stream records of `name` from position `from` on.
    pub fn stream(&self, name: &str, from: usize) -> Vec<StreamRecord> {
        lock(&self.state)
            .tables
            .get(name)
            .and_then(|t| t.stream.as_ref())
            .map(|s| s.get(from..).unwrap_or_default().to_vec())
            .unwrap_or_default()
    }

    pub fn table(&self, name: &str) -> FakeTable {
        FakeTable {
            db: self.clone(),
            name: name.to_string(),
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        lock(&self.state).tables.contains_key(name)
    }

    pub fn set_faults(&self, f: impl FnMut(&Call<'_>) -> Option<DbFault> + Send + 'static) {
        lock(&self.state).fault = Some(Box::new(f));
    }

    pub fn clear_faults(&self) {
        lock(&self.state).fault = None;
    }

    /// Every call sleeps (in tokio time) as long as `f` says before it
    /// takes effect.
    pub fn set_latency(&self, f: impl FnMut(&Call<'_>) -> Duration + Send + 'static) {
        lock(&self.state).latency = Some(Box::new(f));
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

    /// Writes directly, bypassing faults (test set-up and source writes).
    pub fn put(&self, table: &str, item: Attrs) {
        let mut s = lock(&self.state);
        let _ = mutate(&mut s, table, "PutItem", &item, Some(item.clone()), false);
    }

    /// Deletes directly, bypassing faults; `ttl` marks it as DynamoDB's TTL
    /// process (its stream record carries the service identity).
    pub fn delete(&self, table: &str, key: &Attrs, ttl: bool) {
        let mut s = lock(&self.state);
        let _ = mutate(&mut s, table, "DeleteItem", key, None, ttl);
    }

    /// Runs the fault and latency hooks of a call, yielding first.
    pub(crate) async fn enter(&self, call: &Call<'_>) -> Option<DbFault> {
        tokio::task::yield_now().await;
        let (fault, delay) = {
            let mut s = lock(&self.state);
            *s.calls.entry(call.op).or_insert(0) += 1;
            let fault = s.fault.as_mut().and_then(|f| f(call));
            let delay = s.latency.as_mut().map(|f| f(call)).unwrap_or_default();
            (fault, delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        fault
    }

    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut DbStateRef<'_>) -> T) -> T {
        let mut s = lock(&self.state);
        f(&mut DbStateRef(&mut s))
    }
}

/// Access to the state for the other fakes of this module (its operations
/// are in `admin.rs`: describe, restores, backups, scans, conditional writes).
pub(crate) struct DbStateRef<'a>(&'a mut DbState);

mod admin;

/// Applies one change to a table: items, history and stream.
fn mutate(
    s: &mut DbState,
    table: &str,
    op: &'static str,
    key_source: &Attrs,
    new: Option<Attrs>,
    ttl: bool,
) -> Result<(), AwsError> {
    let now = s.clock.now_ms();
    s.next_seq += 1;
    let seq = s.next_seq;
    let t = s.tables.get_mut(table).ok_or_else(|| not_found(op))?;
    let ck = key_of(&t.key_attrs, key_source, op)?;
    let old = match &new {
        Some(item) => t.items.insert(ck.clone(), item.clone()),
        None => t.items.remove(&ck),
    };
    if t.pitr {
        t.history.push((now, ck, new.clone()));
    }
    if let Some(stream) = t.stream.as_mut() {
        let event_name = match (&old, &new) {
            (None, Some(_)) => "INSERT",
            (Some(_), Some(_)) => "MODIFY",
            (Some(_), None) => "REMOVE",
            (None, None) => return Ok(()),
        };
        stream.push(StreamRecord {
            event_id: format!("ev-{seq}"),
            seq,
            time_ms: now,
            event_name,
            keys: key_attrs_of(&t.key_attrs, key_source),
            new_image: new,
            old_image: old,
            ttl,
        });
    }
    Ok(())
}

/// The condition of a single-item write, checked against the stored item.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Check {
    Always,
    Absent(String),
    Exists(String),
    Equals(String, AttributeValue),
    /// The control item's version (absent counts as 0).
    Version(u64),
    All(Vec<Check>),
    Any(Vec<Check>),
}

fn holds(check: &Check, current: Option<&Attrs>) -> bool {
    match check {
        Check::Always => true,
        Check::Absent(a) => current.is_none_or(|i| !i.contains_key(a)),
        Check::Exists(a) => current.is_some_and(|i| i.contains_key(a)),
        Check::Equals(a, v) => current.and_then(|i| i.get(a)).is_some_and(|x| {
            CanonicalKey::of(&Attrs::from([(String::new(), x.clone())]))
                == CanonicalKey::of(&Attrs::from([(String::new(), v.clone())]))
        }),
        Check::Version(v) => {
            let stored = current
                .and_then(|i| i.get(ATTR_VERSION))
                .and_then(|x| match x {
                    AttributeValue::N(n) => n.parse::<u64>().ok(),
                    _ => None,
                })
                .unwrap_or(0);
            stored == *v
        }
        Check::All(all) => all.iter().all(|c| holds(c, current)),
        Check::Any(any) => any.iter().any(|c| holds(c, current)),
    }
}

/// One table of a [`FakeDynamo`].
#[derive(Clone, Debug)]
pub struct FakeTable {
    db: FakeDynamo,
    name: String,
}

impl TargetWriter for FakeTable {
    async fn batch_write(&self, writes: &[Write<'_>]) -> Result<Vec<usize>, AwsError> {
        const OP: &str = "BatchWriteItem";
        if writes.is_empty() || writes.len() > 25 {
            return Err(validation(
                OP,
                "Too many items requested for the BatchWriteItem call",
            ));
        }
        {
            let s = lock(&self.db.state);
            let t = s.tables.get(&self.name).ok_or_else(|| not_found(OP))?;
            let mut seen = HashSet::new();
            for w in writes {
                if w.is_conditional() {
                    return Err(validation(OP, "a conditional write cannot be batched"));
                }
                let k = key_of(&t.key_attrs, w.key_source(), OP)?;
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
        let unprocessed = match self.db.enter(&call).await {
            Some(DbFault::Error(e)) => return Err(e),
            Some(DbFault::Unprocessed(u)) => u,
            None => Vec::new(),
        };
        let mut s = lock(&self.db.state);
        for (i, w) in writes.iter().enumerate() {
            if !unprocessed.contains(&i) {
                match w {
                    Write::DeleteOwned { .. } | Write::PutOwned { .. } => {}
                    Write::Put(item) => {
                        mutate(&mut s, &self.name, OP, item, Some((*item).clone()), false)?
                    }
                    Write::Delete(keys) => mutate(&mut s, &self.name, OP, keys, None, false)?,
                }
            }
        }
        Ok(unprocessed)
    }

    async fn write_one(&self, write: &Write<'_>) -> Result<bool, AwsError> {
        let check = match write {
            Write::Put(_) | Write::Delete(_) => Check::Always,
            Write::DeleteOwned { owner, .. } => owned_by(owner),
            Write::PutOwned {
                owner, key_attr, ..
            } => Check::Any(vec![Check::Absent(key_attr.to_string()), owned_by(owner)]),
        };
        self.write_if(write, &check).await
    }

    async fn mark(&self, keys: &Attrs, owner: &Attrs, token: &str) -> Result<bool, AwsError> {
        const OP: &str = "UpdateItem";
        self.enter(OP, &[]).await?;
        let mut s = lock(&self.db.state);
        let current = DbStateRef(&mut s).get(&self.name, keys)?;
        if !holds(&owned_by(owner), current.as_ref()) {
            return Ok(false);
        }
        let mut item = current.unwrap_or_default();
        item.insert(TOKEN_ATTR.into(), AttributeValue::S(token.into()));
        mutate(&mut s, &self.name, OP, keys, Some(item), false)?;
        Ok(true)
    }

    async fn write_marked(&self, write: &Write<'_>, token: &str) -> Result<bool, AwsError> {
        let check = Check::Equals(TOKEN_ATTR.into(), AttributeValue::S(token.into()));
        self.write_if(write, &check).await
    }

    async fn unmark(&self, keys: &Attrs, token: &str) -> Result<bool, AwsError> {
        const OP: &str = "UpdateItem";
        self.enter(OP, &[]).await?;
        let mut s = lock(&self.db.state);
        let current = DbStateRef(&mut s).get(&self.name, keys)?;
        let mut item = match current {
            Some(i) if i.get(TOKEN_ATTR) == Some(&AttributeValue::S(token.into())) => i,
            _ => return Ok(false),
        };
        item.remove(TOKEN_ATTR);
        mutate(&mut s, &self.name, OP, keys, Some(item), false)?;
        Ok(true)
    }
}

/// The item exists and carries every one of `owner`'s attributes.
fn owned_by(owner: &Attrs) -> Check {
    Check::All(
        owner
            .iter()
            .map(|(k, v)| Check::Equals(k.clone(), v.clone()))
            .collect(),
    )
}

impl FakeTable {
    /// A call of `op` on this table, as faults and latency see it.
    async fn enter(&self, op: &'static str, writes: &[Write<'_>]) -> Result<(), AwsError> {
        let call = Call {
            op,
            table: &self.name,
            writes,
        };
        match self.db.enter(&call).await {
            Some(DbFault::Error(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// `PutItem` or `DeleteItem` where `check` holds; `Ok(false)` otherwise.
    async fn write_if(&self, write: &Write<'_>, check: &Check) -> Result<bool, AwsError> {
        let op = match write.kind() {
            "put" => "PutItem",
            _ => "DeleteItem",
        };
        self.enter(op, std::slice::from_ref(write)).await?;
        let mut s = lock(&self.db.state);
        let keys = write.key_source();
        let current = DbStateRef(&mut s).get(&self.name, keys)?;
        if !holds(check, current.as_ref()) {
            return Ok(false);
        }
        let new = match write {
            Write::Put(item) | Write::PutOwned { item, .. } => Some((*item).clone()),
            Write::Delete(_) | Write::DeleteOwned { .. } => None,
        };
        mutate(&mut s, &self.name, op, keys, new, false)?;
        Ok(true)
    }
}

impl SourceReader for FakeTable {
    async fn get_consistent(&self, keys: &Attrs) -> Result<Option<Attrs>, AwsError> {
        const OP: &str = "GetItem";
        self.enter(OP, &[]).await?;
        self.db.with_state(|s| s.get(&self.name, keys))
    }
}

fn control_key(migration: &str) -> Attrs {
    [(
        ATTR_MIGRATION.to_string(),
        AttributeValue::S(migration.into()),
    )]
    .into()
}

impl ControlStore for FakeTable {
    async fn load(&self, migration: &str) -> Result<Option<ControlState>, AwsError> {
        match self.get_consistent(&control_key(migration)).await? {
            None => Ok(None),
            Some(item) => ControlState::from_item(&item).map(Some).map_err(|e| {
                AwsError::permanent("GetItem(control)", "InvalidControlItem", &e.to_string())
            }),
        }
    }

    async fn commit(
        &self,
        migration: &str,
        version: u64,
        consumed_ms: Option<i64>,
    ) -> Result<Fence, AwsError> {
        const OP: &str = "UpdateItem(control)";
        self.enter(OP, &[]).await?;
        let key = control_key(migration);
        let raised = match consumed_ms {
            None => false,
            Some(t) => self.db.with_state(|s| {
                let current = s.get(&self.name, &key)?;
                let below = current
                    .as_ref()
                    .and_then(|i| ControlState::from_item(i).ok())
                    .is_none_or(|c| c.consumed_ms.is_none_or(|c| c < t));
                if !below {
                    return Ok(false);
                }
                s.write_if(
                    &self.name,
                    OP,
                    &key,
                    |cur| {
                        cur.map(|i| {
                            let mut i = i.clone();
                            i.insert(ATTR_CONSUMED_MS.into(), AttributeValue::N(t.to_string()));
                            i
                        })
                    },
                    &Check::Version(version),
                )
            })?,
        };
        if raised {
            return Ok(Fence::Held);
        }
        let state = self.load(migration).await?;
        Ok(crate::sdk::fence_from(state, version, consumed_ms))
    }
}
