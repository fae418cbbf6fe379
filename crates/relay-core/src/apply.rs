//! The applier's plan for one SQS batch: cutoff, TTL policy, coalescing and
//! failure planning.
//!
//! **Invariant:** within a batch only the last change per target key is
//! written, and each write remembers the earliest message that holds a
//! change it stands for, and of every other source item whose change
//! coalesced into it (a transform that maps two items to one key). If that
//! write fails, those messages and every later message of their groups are
//! reported failed, so SQS redelivers them in order; other groups complete.
//!
//! **Invariant:** every event is either turned into a write or counted as
//! skipped (before the cutoff, or a TTL delete under the skip policy).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use crate::control::Mode;
use crate::event::{ChangeEvent, Op};
use crate::item::{AttributeValue, Attrs, CanonicalKey};
use crate::transform::{with_keys, Transform, TransformError};

/// Marks a tombstone item (a delete seen during a scan copy).
pub const TOMBSTONE_ATTR: &str = "ddb_relay_tombstone";

/// The tombstone that stands for a deleted target item during a scan copy:
/// the key and the marker, so a slower copy of the old item cannot
/// resurrect it (the copy's puts require the key to be absent).
pub fn tombstone(key: &Attrs) -> Attrs {
    let mut t = key.clone();
    t.insert(TOMBSTONE_ATTR.into(), AttributeValue::Bool(true));
    t
}

/// True for a tombstone item.
pub fn is_tombstone(item: &Attrs) -> bool {
    matches!(item.get(TOMBSTONE_ATTR), Some(AttributeValue::Bool(true)))
}

/// What to do with REMOVEs made by DynamoDB's TTL process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TtlPolicy {
    /// Delete the target item too (the default: the tables converge).
    #[default]
    Replicate,
    /// Keep the target item and count the skip (the target has its own TTL).
    Skip,
}

/// One write to the target. A plain put borrows the event's image when
/// it is written as it came (no transform): planning copies no item.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOp<'a> {
    /// Put this whole item.
    Put(Cow<'a, Attrs>),
    /// Delete the item with these keys.
    Delete(Attrs),
    /// Delete the item at `keys` only while it belongs to `owner` (a source
    /// key, as the target item carries it): under a transform whose target
    /// keys can pass from one source item to another, a delete for one item
    /// must never remove another's.
    DeleteOwned { keys: Attrs, owner: Attrs },
    /// Put `item` only where the key is absent or the item there belongs to
    /// `owner`. A live item that finds another source item's there settles
    /// the key from fresh source reads ([`settle`]); a tombstone
    /// ([`WriteOp::DeleteOwned`] in tombstone mode) leaves it alone.
    PutOwned { item: Attrs, owner: Attrs },
}

impl<'a> WriteOp<'a> {
    pub fn kind(&self) -> &'static str {
        match self {
            WriteOp::Put(_) | WriteOp::PutOwned { .. } => "put",
            WriteOp::Delete(_) | WriteOp::DeleteOwned { .. } => "delete",
        }
    }

    /// The item a put writes (`None`: a delete).
    pub fn put_item(&self) -> Option<&Attrs> {
        match self {
            WriteOp::Put(item) => Some(item),
            WriteOp::PutOwned { item, .. } => Some(item),
            WriteOp::Delete(_) | WriteOp::DeleteOwned { .. } => None,
        }
    }

    /// A delete of `keys` on behalf of the source item `owner` (plain when
    /// there is no owner to check).
    pub fn delete(keys: Attrs, owner: Option<&Attrs>) -> WriteOp<'a> {
        match owner {
            Some(o) => WriteOp::DeleteOwned {
                keys,
                owner: o.clone(),
            },
            None => WriteOp::Delete(keys),
        }
    }

    /// A put of `item` on behalf of the source item `owner` (plain when
    /// there is no owner to check). The item must carry its owner, else
    /// later writes could not tell whose it is: refused (a custom transform
    /// that drops or changes the source key).
    pub fn put(item: Cow<'a, Attrs>, owner: Option<&Attrs>) -> Result<WriteOp<'a>, TransformError> {
        match owner {
            Some(o) => {
                // Key attributes (S, N or B): equal as stored.
                let carried = o.iter().all(|(k, v)| item.get(k) == Some(v));
                if !carried {
                    return Err(TransformError::NoOwner(o.keys().cloned().collect()));
                }
                Ok(WriteOp::PutOwned {
                    item: item.into_owned(),
                    owner: o.clone(),
                })
            }
            None => Ok(WriteOp::Put(item)),
        }
    }

    /// The write as the mode wants it: in tombstone mode a delete writes a
    /// tombstone (carrying its owner), so a slower scan copy cannot
    /// resurrect the item.
    pub fn in_mode(self, mode: Mode) -> WriteOp<'a> {
        match (mode, self) {
            (Mode::Tombstone, WriteOp::Delete(k)) => WriteOp::Put(Cow::Owned(tombstone(&k))),
            (Mode::Tombstone, WriteOp::DeleteOwned { keys, owner }) => {
                let mut item = tombstone(&keys);
                item.extend(owner.clone());
                WriteOp::PutOwned { item, owner }
            }
            (_, op) => op,
        }
    }
}

/// The owner a delete for the source item `keys` must check, when the
/// transform lets target keys pass between source items (else `None`).
pub fn owner_of(
    transform: Option<&dyn Transform>,
    keys: &Attrs,
) -> Result<Option<Attrs>, TransformError> {
    match transform {
        Some(t) if t.reuses_keys(&mut keys.keys()) => match t.owner_attrs(keys) {
            Some(owner) => Ok(Some(owner)),
            None => Err(TransformError::NoOwner(keys.keys().cloned().collect())),
        },
        _ => Ok(None),
    }
}

/// The attribute a writer marks a target item with while it settles who
/// the item's key belongs to (the applier on a contested key, `verify
/// --repair`, `dlq repair`): any other write replaces the whole item and
/// drops the mark, so a write conditioned on the mark never overwrites a
/// change it did not see.
pub const TOKEN_ATTR: &str = "ddb_relay_repair";

/// The attribute that makes a target item a repair's placeholder (its key,
/// owner and token only, holding an absent key's place while the repair
/// decides): a copy's put replaces it as it would an absent item, so a
/// placeholder left by a repair that a restart overtook (or that died)
/// never keeps a key from the new copy.
pub const PLACEHOLDER_ATTR: &str = "ddb_relay_placeholder";

/// A source item, as read fresh from the source: its key and its current
/// state (`None`: gone).
#[derive(Clone, Copy, Debug)]
pub struct Read<'a> {
    pub key: &'a Attrs,
    pub current: Option<&'a Attrs>,
}

/// Who the contested target key `key` belongs to, from fresh reads of the
/// source item that wants it (`claimant`) and of the one the target holds
/// there (`occupant`, when the target item names one; `held` is that target
/// item as read): the claimant's current item if it maps to `key`, else
/// the occupant's if it does; an occupant whose source item is gone is
/// kept (its delete is still on its way, or was skipped by the TTL policy);
/// else nothing. Under a transform whose keys pass between source items
/// only the source orders two items' writes to one target key (their
/// changes travel in different message groups); a write of the result must
/// be conditioned on the key not having changed since the reads. A current
/// item the transform cannot map does not map here (its own change is
/// refused on its own).
pub fn settle(
    t: &dyn Transform,
    key: &Attrs,
    claimant: Read<'_>,
    occupant: Option<(Read<'_>, &Attrs)>,
) -> Result<WriteOp<'static>, TransformError> {
    let here = CanonicalKey::of(key);
    let maps_here = |item: &Attrs| t.key_only(item).is_ok_and(|k| CanonicalKey::of(&k) == here);
    for r in std::iter::once(claimant).chain(occupant.map(|(r, _)| r)) {
        if let Some(item) = r.current.filter(|i| maps_here(i)) {
            return Ok(WriteOp::Put(Cow::Owned(t.item(item)?)));
        }
    }
    if let Some((Read { current: None, .. }, held)) = occupant {
        let mut kept = held.clone();
        kept.remove(TOKEN_ATTR);
        return Ok(WriteOp::Put(Cow::Owned(kept)));
    }
    Ok(WriteOp::Delete(key.clone()))
}

/// A coalesced write and what it answers for.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedWrite<'a> {
    /// The target key, canonical.
    pub key: CanonicalKey,
    /// The target key attributes.
    pub keys: Attrs,
    pub op: WriteOp<'a>,
    /// The key of the source item the write is for (the last one, when
    /// writes of several items coalesced).
    pub source_keys: Attrs,
    /// Index (in the SQS batch) of the earliest message holding an event this
    /// write stands for.
    pub first_message: usize,
    /// Messages holding changes of other source items that coalesced into
    /// this write (each item's earliest among them; empty unless the
    /// transform maps two source items to one target key, as a `concat`
    /// whose parts can hold the separator does). A failed write fails them
    /// too.
    pub other_messages: Vec<usize>,
}

impl PlannedWrite<'_> {
    /// Every message a failure of this write must fail (with its group's
    /// later messages).
    pub fn messages(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.first_message).chain(self.other_messages.iter().copied())
    }
}

/// Counters for one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanStats {
    pub events: u64,
    pub skipped_before_cutoff: u64,
    pub skipped_ttl: u64,
    /// Events whose write was superseded by a later event for the same key.
    pub coalesced: u64,
    /// Refetch markers resolved from the source's current state.
    pub refetched: u64,
    /// Age of the oldest applied event at planning time.
    pub max_lag_ms: i64,
}

/// Whether an event at `event_time_ms` is applied under `cutoff_ms`.
///
/// DynamoDB rounds an event's time down to the second, so an event is
/// compared with the cutoff's own second: a write at 40.7 s is timed 40 s,
/// and a cutoff of 40.5 s must apply it (it may be missing from a backup
/// taken at 100.5 s, whose uncertain minute starts at 40.5 s). Compared with
/// the cutoff in milliseconds, a margin of exactly 60 s would skip it.
/// Applying a little more than the margin asks for is harmless (the overlap
/// is applied in order, promise 1); skipping one write is a lost write.
pub fn applies(event_time_ms: i64, cutoff_ms: i64) -> bool {
    event_time_ms >= cutoff_ms.div_euclid(1000) * 1000
}

/// Why a message cannot be applied now (it fails, with the later messages
/// of its group, and is redelivered).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error("the source item of a refetch marker could not be read")]
    SourceUnread,
}

/// A plan: the writes, the counters, and the messages holding a change that
/// cannot be applied now.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    pub writes: Vec<PlannedWrite<'a>>,
    pub stats: PlanStats,
    pub refused: Vec<(usize, Refusal)>,
}

/// The source items the refetch markers of a batch need read, by source
/// key (markers before the cutoff need nothing).
pub fn refetch_keys(messages: &[(usize, Vec<ChangeEvent>)], cutoff_ms: i64) -> Vec<Attrs> {
    let mut seen = std::collections::HashSet::new();
    messages
        .iter()
        .flat_map(|(_, events)| events)
        .filter(|e| e.needs_refetch() && applies(e.time_ms, cutoff_ms))
        .filter(|e| seen.insert(CanonicalKey::of(&e.keys)))
        .map(|e| e.keys.clone())
        .collect()
}

/// The source's current items, by source key, as read for refetch markers
/// (`None`: the item is gone). A key missing from the map was not read.
pub type Fetched = HashMap<CanonicalKey, Option<Attrs>>;

/// The target writes that bring the target to the source item's current
/// state: the transformed item at its target key, or, when the source item
/// is gone, a delete; plus a delete of every `stale` target key the item
/// may still occupy (a moved item's old key). The applier's refetch markers,
/// `verify --repair` and `dlq repair` all go through here, so a repair
/// writes exactly what the applier would.
///
/// `stale` holds target keys known to be possibly occupied by this source
/// item; when the item is gone and the target key can be derived from the
/// source keys, that key is deleted too. An empty result means nothing to
/// do (an insert whose item is gone again: its REMOVE follows).
pub fn converge(
    transform: Option<&dyn Transform>,
    source_keys: &Attrs,
    current: Option<&Attrs>,
    stale: &[Attrs],
) -> Result<Vec<(Attrs, WriteOp<'static>)>, TransformError> {
    let identity = transform.is_none_or(|t| t.is_identity_key());
    let owner = owner_of(transform, source_keys)?;
    let mut out: Vec<(Attrs, WriteOp<'static>)> = Vec::with_capacity(stale.len() + 1);
    let push_delete = |out: &mut Vec<(Attrs, WriteOp<'static>)>, key: &Attrs| {
        let ck = CanonicalKey::of(key);
        if !out.iter().any(|(k, _)| CanonicalKey::of(k) == ck) {
            out.push((key.clone(), WriteOp::delete(key.clone(), owner.as_ref())));
        }
    };
    match current {
        Some(item) => {
            let (target, key) = match transform {
                None => (item.clone(), source_keys.clone()),
                Some(t) => {
                    let target = t.item(item)?;
                    let key = if identity {
                        source_keys.clone()
                    } else {
                        t.key_only(item)?
                    };
                    (target, key)
                }
            };
            let ck = CanonicalKey::of(&key);
            for old in stale {
                if CanonicalKey::of(old) != ck {
                    push_delete(&mut out, old);
                }
            }
            out.push((key, WriteOp::put(Cow::Owned(target), owner.as_ref())?));
        }
        None => {
            for old in stale {
                push_delete(&mut out, old);
            }
            let from_keys = match transform {
                None => Ok(source_keys.clone()),
                Some(_) if identity => Ok(source_keys.clone()),
                Some(t) => t.change_key(source_keys, None),
            };
            match from_keys {
                Ok(k) => push_delete(&mut out, &k),
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => {}
            }
        }
    }
    Ok(out)
}

/// The target key a change's old image (or its projection) occupied.
fn old_target_key(
    transform: Option<&dyn Transform>,
    event: &ChangeEvent,
) -> Result<Option<Attrs>, TransformError> {
    match transform {
        None => Ok(Some(event.keys.clone())),
        Some(t) if t.is_identity_key() => Ok(Some(event.keys.clone())),
        Some(t) => match (&event.old_image, event.op) {
            (None, Op::Insert) => Ok(None),
            (old, _) => t.change_key(&event.keys, old.as_ref()).map(Some),
        },
    }
}

/// The target writes one event asks for: usually one; two when a transform
/// derives the key from an attribute the change modified (the item moves).
/// A refetch marker goes through [`converge`] with the source's current
/// item from `fetched`.
fn map_event<'a>(
    t: Option<&dyn Transform>,
    event: &'a ChangeEvent,
    fetched: &Fetched,
) -> Result<Vec<(Attrs, WriteOp<'a>)>, Refusal> {
    let identity = t.is_none_or(|t| t.is_identity_key());
    if event.needs_refetch() {
        let current = fetched
            .get(&CanonicalKey::of(&event.keys))
            .ok_or(Refusal::SourceUnread)?;
        let stale: Vec<Attrs> = old_target_key(t, event)
            .ok()
            .flatten()
            .into_iter()
            .collect();
        if stale.is_empty() && !identity {
            if event.op == Op::Insert {
                // Nothing occupied a target key before an insert.
                return Ok(match current {
                    Some(_) => converge(t, &event.keys, current.as_ref(), &[])?,
                    None => Vec::new(),
                });
            }
            // A modified or removed item's old target key is unknown (no
            // old image or key sources): never guess.
            return Err(Refusal::Transform(TransformError::NoOldImage(
                t.map(|t| t.key_sources().into_iter().collect())
                    .unwrap_or_default(),
            )));
        }
        return Ok(converge(t, &event.keys, current.as_ref(), &stale)?);
    }
    let owner = owner_of(t, &event.keys)?;
    match (event.op, &event.new_image) {
        (Op::Remove, _) => {
            let key = match t {
                Some(t) if !identity => t.change_key(&event.keys, event.old_image.as_ref())?,
                _ => event.keys.clone(),
            };
            Ok(vec![(key.clone(), WriteOp::delete(key, owner.as_ref()))])
        }
        (_, image) => {
            let image = image.as_ref().ok_or(Refusal::SourceUnread)?;
            let (item, key) = match t {
                None => (Cow::Borrowed(image), event.keys.clone()),
                Some(t) if identity => (Cow::Owned(t.item(image)?), event.keys.clone()),
                Some(t) => (Cow::Owned(t.item(image)?), t.key_only(image)?),
            };
            let mut out = Vec::with_capacity(2);
            if let (false, Some(old)) = (identity, &event.old_image) {
                if let Some(t) = t {
                    if let Ok(old_key) = t.key_only(&with_keys(old, &event.keys)) {
                        if CanonicalKey::of(&old_key) != CanonicalKey::of(&key) {
                            out.push((old_key.clone(), WriteOp::delete(old_key, owner.as_ref())));
                        }
                    }
                }
            }
            out.push((key, WriteOp::put(item, owner.as_ref())?));
            Ok(out)
        }
    }
}

/// Plans the writes for decoded messages `(batch index, events)`, given in
/// batch order, with no transform, in normal mode, with no refetch reads.
pub fn plan(
    messages: &[(usize, Vec<ChangeEvent>)],
    cutoff_ms: i64,
    ttl: TtlPolicy,
    now_ms: i64,
) -> (Vec<PlannedWrite<'_>>, PlanStats) {
    let p = plan_with(
        messages,
        cutoff_ms,
        ttl,
        now_ms,
        None,
        Mode::Normal,
        &Fetched::new(),
    );
    (p.writes, p.stats)
}

/// [`plan`] with an optional transform, the control item's mode (in
/// tombstone mode deletes become tombstone puts) and the source's current
/// items for the refetch markers.
pub fn plan_with<'a>(
    messages: &'a [(usize, Vec<ChangeEvent>)],
    cutoff_ms: i64,
    ttl: TtlPolicy,
    now_ms: i64,
    transform: Option<&dyn Transform>,
    mode: Mode,
    fetched: &Fetched,
) -> Plan<'a> {
    let mut p = Plan::default();
    let mut by_key: HashMap<CanonicalKey, usize> = HashMap::new();
    for (index, events) in messages {
        for event in events {
            p.stats.events += 1;
            if !applies(event.time_ms, cutoff_ms) {
                p.stats.skipped_before_cutoff += 1;
                continue;
            }
            if event.ttl && event.op == Op::Remove && ttl == TtlPolicy::Skip {
                p.stats.skipped_ttl += 1;
                continue;
            }
            p.stats.max_lag_ms = p.stats.max_lag_ms.max(now_ms - event.time_ms);
            let mapped = match map_event(transform, event, fetched) {
                Ok(m) => m,
                Err(e) => {
                    p.refused.push((*index, e));
                    continue;
                }
            };
            if event.needs_refetch() {
                p.stats.refetched += 1;
            }
            // Under a transform whose target keys pass between source
            // items, writes coalesce per (target key, source item): one
            // item's delete must not replace another's put of the same key.
            let reuse = transform.is_some_and(|t| t.reuses_keys(&mut event.keys.keys()));
            for (keys, op) in mapped {
                let op = op.in_mode(mode);
                let key = if reuse {
                    CanonicalKey::of(&Attrs::from([
                        ("t".to_string(), AttributeValue::M(keys.clone())),
                        ("s".to_string(), AttributeValue::M(event.keys.clone())),
                    ]))
                } else {
                    CanonicalKey::of(&keys)
                };
                match by_key.get(&key) {
                    Some(&i) => {
                        p.stats.coalesced += 1;
                        let w = &mut p.writes[i];
                        // Another source item's change on the same target
                        // key: its message must fail with the write too.
                        if w.source_keys != event.keys
                            && w.first_message != *index
                            && !w.other_messages.contains(index)
                        {
                            w.other_messages.push(*index);
                        }
                        w.op = op;
                        w.source_keys = event.keys.clone();
                    }
                    None => {
                        by_key.insert(key.clone(), p.writes.len());
                        p.writes.push(PlannedWrite {
                            key,
                            keys,
                            op,
                            source_keys: event.keys.clone(),
                            first_message: *index,
                            other_messages: Vec::new(),
                        });
                    }
                }
            }
        }
    }
    p
}

/// The messages to report failed: each failed message and every later
/// message *of its message group* (FIFO order is per group). Other groups'
/// messages complete, so one poison message never returns healthy groups
/// to the queue until they too reach the DLQ. `groups[i]` is message i's
/// MessageGroupId.
pub fn failed_messages(
    groups: &[&str],
    failed: impl IntoIterator<Item = usize>,
) -> BTreeSet<usize> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for i in failed {
        if let Some(g) = groups.get(i) {
            let f = first.entry(g).or_insert(i);
            *f = (*f).min(i);
        }
    }
    groups
        .iter()
        .enumerate()
        .filter(|(i, g)| first.get(*g).is_some_and(|f| i >= f))
        .map(|(i, _)| i)
        .collect()
}

/// The applier's consumption high-water mark for a batch: the newest event
/// time in the messages that complete (SQS deletes them). `None` when no
/// completing message holds an event.
pub fn consumed_up_to(
    messages: &[(usize, Vec<ChangeEvent>)],
    failed: &BTreeSet<usize>,
) -> Option<i64> {
    messages
        .iter()
        .filter(|(i, _)| !failed.contains(i))
        .flat_map(|(_, events)| events.iter().map(|e| e.time_ms))
        .max()
}

#[cfg(test)]
mod tests;
