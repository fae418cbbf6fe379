//! The applier's plan for one SQS batch: cutoff, TTL policy, coalescing and
//! failure planning.
//!
//! **Invariant:** within a batch only the last change per target key is
//! written, and each write remembers the earliest message that holds a
//! change it stands for. If that write fails, that message and every later
//! message of its group are reported failed, so SQS redelivers them in
//! order; other groups complete.
//!
//! **Invariant:** every event is either turned into a write or counted as
//! skipped (before the cutoff, or a TTL delete under the skip policy).

use std::collections::{BTreeSet, HashMap};

use crate::control::Mode;
use crate::event::{ChangeEvent, Op};
use crate::item::{AttributeValue, Attrs, CanonicalKey};
use crate::transform::{Transform, TransformError};

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

/// One write to the target.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOp {
    /// Put this whole item.
    Put(Attrs),
    /// Delete the item with these keys.
    Delete(Attrs),
}

impl WriteOp {
    pub fn kind(&self) -> &'static str {
        match self {
            WriteOp::Put(_) => "put",
            WriteOp::Delete(_) => "delete",
        }
    }

    /// The write as the mode wants it: in tombstone mode a delete writes a
    /// tombstone, so a slower scan copy cannot resurrect the item.
    pub fn in_mode(self, mode: Mode) -> WriteOp {
        match (mode, self) {
            (Mode::Tombstone, WriteOp::Delete(k)) => WriteOp::Put(tombstone(&k)),
            (_, op) => op,
        }
    }
}

/// A coalesced write and what it answers for.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedWrite {
    /// The target key, canonical.
    pub key: CanonicalKey,
    /// The target key attributes.
    pub keys: Attrs,
    pub op: WriteOp,
    /// Index (in the SQS batch) of the earliest message holding an event this
    /// write stands for.
    pub first_message: usize,
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
/// Event times are rounded down to the second by DynamoDB, and the cutoff
/// already includes the safety margin, so the comparison is inclusive.
pub fn applies(event_time_ms: i64, cutoff_ms: i64) -> bool {
    event_time_ms >= cutoff_ms
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
pub struct Plan {
    pub writes: Vec<PlannedWrite>,
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
) -> Result<Vec<(Attrs, WriteOp)>, TransformError> {
    let identity = transform.is_none_or(|t| t.is_identity_key());
    let mut out: Vec<(Attrs, WriteOp)> = Vec::with_capacity(stale.len() + 1);
    let push_delete = |out: &mut Vec<(Attrs, WriteOp)>, key: &Attrs| {
        let ck = CanonicalKey::of(key);
        if !out.iter().any(|(k, _)| CanonicalKey::of(k) == ck) {
            out.push((key.clone(), WriteOp::Delete(key.clone())));
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
            out.push((key, WriteOp::Put(target)));
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
fn map_event(
    t: Option<&dyn Transform>,
    event: &ChangeEvent,
    fetched: &Fetched,
) -> Result<Vec<(Attrs, WriteOp)>, Refusal> {
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
    match (event.op, &event.new_image) {
        (Op::Remove, _) => {
            let key = match t {
                Some(t) if !identity => t.change_key(&event.keys, event.old_image.as_ref())?,
                _ => event.keys.clone(),
            };
            Ok(vec![(key.clone(), WriteOp::Delete(key))])
        }
        (_, image) => {
            let image = image.as_ref().ok_or(Refusal::SourceUnread)?;
            let (item, key) = match t {
                None => (image.clone(), event.keys.clone()),
                Some(t) if identity => (t.item(image)?, event.keys.clone()),
                Some(t) => (t.item(image)?, t.key_only(image)?),
            };
            let mut out = Vec::with_capacity(2);
            if let (false, Some(old)) = (identity, &event.old_image) {
                if let Some(t) = t {
                    if let Ok(old_key) = t.key_only(old) {
                        if CanonicalKey::of(&old_key) != CanonicalKey::of(&key) {
                            out.push((old_key.clone(), WriteOp::Delete(old_key)));
                        }
                    }
                }
            }
            out.push((key, WriteOp::Put(item)));
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
) -> (Vec<PlannedWrite>, PlanStats) {
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
pub fn plan_with(
    messages: &[(usize, Vec<ChangeEvent>)],
    cutoff_ms: i64,
    ttl: TtlPolicy,
    now_ms: i64,
    transform: Option<&dyn Transform>,
    mode: Mode,
    fetched: &Fetched,
) -> Plan {
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
            for (keys, op) in mapped {
                let op = op.in_mode(mode);
                let key = CanonicalKey::of(&keys);
                match by_key.get(&key) {
                    Some(&i) => {
                        p.stats.coalesced += 1;
                        p.writes[i].op = op;
                    }
                    None => {
                        by_key.insert(key.clone(), p.writes.len());
                        p.writes.push(PlannedWrite {
                            key,
                            keys,
                            op,
                            first_message: *index,
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
mod tests {
    use super::*;
    use crate::item::AttributeValue as V;

    fn ev(pk: &str, op: Op, t: i64, v: i64) -> ChangeEvent {
        let keys: Attrs = [("pk".to_string(), V::S(pk.into()))].into();
        let mut image = keys.clone();
        image.insert("v".into(), V::N(v.to_string()));
        ChangeEvent {
            event_id: format!("{pk}-{v}"),
            seq: v.to_string(),
            time_ms: t,
            op,
            ttl: false,
            refetch: false,
            keys,
            new_image: (op != Op::Remove).then_some(image),
            old_image: None,
        }
    }

    #[test]
    fn last_change_per_key_wins_and_remembers_its_first_message() {
        let msgs = vec![
            (
                0,
                vec![ev("a", Op::Insert, 10, 1), ev("b", Op::Insert, 10, 2)],
            ),
            (1, vec![ev("a", Op::Modify, 11, 3)]),
            (
                2,
                vec![ev("a", Op::Remove, 12, 4), ev("c", Op::Insert, 12, 5)],
            ),
        ];
        let (writes, stats) = plan(&msgs, 0, TtlPolicy::Replicate, 20);
        assert_eq!(writes.len(), 3);
        assert!(matches!(writes[0].op, WriteOp::Delete(_)));
        assert_eq!(writes[0].first_message, 0);
        assert_eq!(writes[2].first_message, 2);
        assert_eq!(stats.coalesced, 2);
        assert_eq!(stats.max_lag_ms, 10);
    }

    #[test]
    fn events_before_the_cutoff_are_skipped_and_counted() {
        let msgs = vec![(
            0,
            vec![ev("a", Op::Insert, 999, 1), ev("a", Op::Modify, 1000, 2)],
        )];
        let (writes, stats) = plan(&msgs, 1000, TtlPolicy::Replicate, 1000);
        assert_eq!(stats.skipped_before_cutoff, 1);
        assert_eq!(writes.len(), 1);
        assert_eq!(
            writes[0].op,
            WriteOp::Put(msgs[0].1[1].new_image.clone().unwrap())
        );
        assert!(applies(1000, 1000) && !applies(999, 1000));
    }

    #[test]
    fn ttl_deletes_follow_the_policy() {
        let mut del = ev("a", Op::Remove, 5, 1);
        del.ttl = true;
        let msgs = vec![(0, vec![del])];
        let (w, s) = plan(&msgs, 0, TtlPolicy::Replicate, 5);
        assert_eq!(w.len(), 1);
        assert_eq!(s.skipped_ttl, 0);
        let (w, s) = plan(&msgs, 0, TtlPolicy::Skip, 5);
        assert!(w.is_empty());
        assert_eq!(s.skipped_ttl, 1);
    }

    #[test]
    fn refetch_markers_write_the_source_current_state_or_delete() {
        let live = ev("a", Op::Modify, 5, 1).into_refetch();
        let gone = ev("b", Op::Modify, 5, 1).into_refetch();
        let unread = ev("c", Op::Modify, 5, 1).into_refetch();
        let msgs = vec![
            (0, vec![live.clone()]),
            (1, vec![gone.clone()]),
            (2, vec![unread.clone()]),
        ];
        let keys = refetch_keys(&msgs, 0);
        assert_eq!(keys.len(), 3);
        assert!(
            refetch_keys(&msgs, 6).is_empty(),
            "before the cutoff: nothing to read"
        );
        let current = item_v("a", 7);
        let fetched: Fetched = [
            (CanonicalKey::of(&live.keys), Some(current.clone())),
            (CanonicalKey::of(&gone.keys), None),
        ]
        .into();
        let p = plan_with(
            &msgs,
            0,
            TtlPolicy::Replicate,
            5,
            None,
            Mode::Normal,
            &fetched,
        );
        assert_eq!(p.writes[0].op, WriteOp::Put(current));
        assert_eq!(p.writes[1].op, WriteOp::Delete(gone.keys.clone()));
        assert_eq!(p.refused, vec![(2, Refusal::SourceUnread)]);
        assert_eq!(p.stats.refetched, 2);
    }

    fn item_v(pk: &str, v: i64) -> Attrs {
        [
            ("pk".to_string(), V::S(pk.into())),
            ("v".to_string(), V::N(v.to_string())),
        ]
        .into()
    }

    fn by_email() -> crate::transform::Declarative {
        crate::transform::Declarative::parse(
            "key: [{attribute: id, uuidv5: {from: [email]}}]",
            &["pk".to_string()],
        )
        .unwrap()
    }

    fn with_email(mut image: Attrs, email: &str) -> Attrs {
        image.insert("email".into(), V::S(email.into()));
        image
    }

    #[test]
    fn a_large_item_that_moves_under_a_key_transform_leaves_one_target_item() {
        let t = by_email();
        let projection = |e: &str| -> Attrs { [("email".to_string(), V::S(e.into()))].into() };
        // Too big for its old image: the new image and the old key sources travel.
        let mut moved = ev("a", Op::Modify, 5, 2);
        moved.new_image = Some(with_email(item_v("a", 2), "new@x"));
        moved.old_image = Some(projection("old@x"));
        // Too big even so: a refetch marker with the old key sources.
        let mut marker = ev("b", Op::Modify, 5, 2).into_refetch();
        marker.old_image = Some(projection("old-b@x"));
        let fetched: Fetched = [(
            CanonicalKey::of(&marker.keys),
            Some(with_email(item_v("b", 3), "new-b@x")),
        )]
        .into();
        let p = plan_with(
            &[(0, vec![moved, marker])],
            0,
            TtlPolicy::Replicate,
            5,
            Some(&t),
            Mode::Normal,
            &fetched,
        );
        assert!(p.refused.is_empty(), "{:?}", p.refused);
        let key = |e: &str| t.key_only(&projection(e)).unwrap();
        let ops: Vec<(Attrs, &'static str)> = p
            .writes
            .iter()
            .map(|w| (w.keys.clone(), w.op.kind()))
            .collect();
        assert_eq!(
            ops,
            vec![
                (key("old@x"), "delete"),
                (key("new@x"), "put"),
                (key("old-b@x"), "delete"),
                (key("new-b@x"), "put"),
            ]
        );
    }

    #[test]
    fn a_large_remove_under_a_key_transform_deletes_through_its_key_sources() {
        let t = by_email();
        let mut del = ev("a", Op::Remove, 5, 1);
        del.old_image = Some([("email".to_string(), V::S("x@y".into()))].into());
        let mut gone = ev("b", Op::Remove, 5, 1).into_refetch();
        gone.old_image = Some([("email".to_string(), V::S("z@y".into()))].into());
        let fetched: Fetched = [(CanonicalKey::of(&gone.keys), None)].into();
        let p = plan_with(
            &[(0, vec![del, gone])],
            0,
            TtlPolicy::Replicate,
            5,
            Some(&t),
            Mode::Normal,
            &fetched,
        );
        assert!(p.refused.is_empty(), "{:?}", p.refused);
        assert_eq!(p.writes.len(), 2);
        assert!(p.writes.iter().all(|w| w.op.kind() == "delete"));
        // Without the key sources the old key is unknown: refused, not guessed.
        let blind = ev("c", Op::Modify, 5, 1).into_refetch();
        let fetched: Fetched = [(
            CanonicalKey::of(&blind.keys),
            Some(with_email(item_v("c", 1), "c@x")),
        )]
        .into();
        let p = plan_with(
            &[(4, vec![blind])],
            0,
            TtlPolicy::Replicate,
            5,
            Some(&t),
            Mode::Normal,
            &fetched,
        );
        assert!(p.writes.is_empty());
        assert!(matches!(
            p.refused[0],
            (4, Refusal::Transform(TransformError::NoOldImage(_)))
        ));
    }

    #[test]
    fn converge_puts_the_current_item_and_deletes_stale_keys() {
        let t = by_email();
        let sk: Attrs = [("pk".to_string(), V::S("a".into()))].into();
        let cur = with_email(item_v("a", 1), "now@x");
        let old_key = t.key_only(&with_email(Attrs::new(), "then@x")).unwrap();
        let new_key = t.key_only(&cur).unwrap();
        let w = converge(
            Some(&t),
            &sk,
            Some(&cur),
            &[old_key.clone(), new_key.clone()],
        )
        .unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0], (old_key.clone(), WriteOp::Delete(old_key.clone())));
        assert_eq!(w[1].0, new_key);
        let w = converge(Some(&t), &sk, None, std::slice::from_ref(&old_key)).unwrap();
        assert_eq!(w, vec![(old_key.clone(), WriteOp::Delete(old_key.clone()))]);
        assert!(
            converge(Some(&t), &sk, None, &[]).is_err(),
            "gone, key unknown: refused"
        );
        assert_eq!(
            converge(None, &sk, None, &[]).unwrap(),
            vec![(sk.clone(), WriteOp::Delete(sk.clone()))]
        );
        assert_eq!(
            WriteOp::Delete(sk.clone()).in_mode(Mode::Tombstone),
            WriteOp::Put(tombstone(&sk))
        );
    }

    #[test]
    fn transforms_map_keys_and_tombstone_mode_keeps_deletes_visible() {
        let t = crate::transform::Declarative::parse(
            "key: [{attribute: id, concat: {from: [pk], separator: '#'}}]",
            &["pk".to_string()],
        )
        .unwrap();
        let events = vec![ev("a", Op::Insert, 10, 1), ev("a", Op::Remove, 11, 2)];
        let p = plan_with(
            &[(0, events.clone())],
            0,
            TtlPolicy::Replicate,
            20,
            Some(&t),
            Mode::Normal,
            &Fetched::new(),
        );
        assert_eq!(p.writes.len(), 1);
        assert_eq!(
            p.writes[0].keys,
            Attrs::from([("id".to_string(), V::S("a".into()))])
        );
        assert!(matches!(p.writes[0].op, WriteOp::Delete(_)));
        let p = plan_with(
            &[(0, events)],
            0,
            TtlPolicy::Replicate,
            20,
            Some(&t),
            Mode::Tombstone,
            &Fetched::new(),
        );
        match &p.writes[0].op {
            WriteOp::Put(item) => assert!(is_tombstone(item)),
            other => panic!("expected a tombstone put, got {other:?}"),
        }
    }

    #[test]
    fn a_change_the_transform_cannot_map_is_refused_not_dropped() {
        let t = crate::transform::Declarative::parse(
            "key: [{attribute: id, uuidv5: {from: [email]}}]",
            &["pk".to_string()],
        )
        .unwrap();
        // A REMOVE without an old image cannot find the target key.
        let p = plan_with(
            &[(3, vec![ev("a", Op::Remove, 10, 1)])],
            0,
            TtlPolicy::Replicate,
            20,
            Some(&t),
            Mode::Normal,
            &Fetched::new(),
        );
        assert!(p.writes.is_empty());
        assert_eq!(p.refused.len(), 1);
        assert_eq!(p.refused[0].0, 3);
    }

    #[test]
    fn a_failed_message_fails_only_its_own_group_from_there_on() {
        // Groups A and B interleaved; A's message 2 failed.
        let groups = ["A", "B", "A", "B", "A", "C"];
        let failed = failed_messages(&groups, [4, 2]);
        assert_eq!(failed.into_iter().collect::<Vec<_>>(), vec![2, 4]);
        assert!(failed_messages(&groups, []).is_empty());
        let failed = failed_messages(&groups, [1, 0]);
        assert_eq!(failed.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn consumption_counts_only_messages_that_complete() {
        let msgs = vec![
            (0, vec![ev("a", Op::Insert, 10, 1)]),
            (1, vec![ev("b", Op::Insert, 30, 1)]),
            (2, vec![]),
        ];
        assert_eq!(consumed_up_to(&msgs, &BTreeSet::new()), Some(30));
        assert_eq!(consumed_up_to(&msgs, &[1].into()), Some(10));
        assert_eq!(consumed_up_to(&msgs, &[0, 1].into()), None);
    }
}
