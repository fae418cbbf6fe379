//! The applier's plan for one SQS batch: cutoff, TTL policy, coalescing and
//! failure planning.
//!
//! **Invariant:** within a batch only the last change per target key is
//! written, and each write remembers the earliest message that holds a
//! change it stands for. If that write fails, that message and every later
//! one are reported failed, so SQS redelivers all of them in order.
//!
//! **Invariant:** every event is either turned into a write or counted as
//! skipped (before the cutoff, or a TTL delete under the skip policy).

use std::collections::HashMap;

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
    /// Read the source item with these keys (consistent read) and write its
    /// current state, or delete if it is gone.
    Refetch(Attrs),
}

impl WriteOp {
    pub fn kind(&self) -> &'static str {
        match self {
            WriteOp::Put(_) => "put",
            WriteOp::Delete(_) => "delete",
            WriteOp::Refetch(_) => "refetch",
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
    /// Age of the oldest applied event at planning time.
    pub max_lag_ms: i64,
}

/// Whether an event at `event_time_ms` is applied under `cutoff_ms`.
/// Event times are rounded down to the second by DynamoDB, and the cutoff
/// already includes the safety margin, so the comparison is inclusive.
pub fn applies(event_time_ms: i64, cutoff_ms: i64) -> bool {
    event_time_ms >= cutoff_ms
}

/// The write one event asks for (before coalescing).
fn write_for(event: &ChangeEvent) -> WriteOp {
    if event.refetch {
        return WriteOp::Refetch(event.keys.clone());
    }
    match (event.op, &event.new_image) {
        (Op::Remove, _) => WriteOp::Delete(event.keys.clone()),
        (_, Some(image)) => WriteOp::Put(image.clone()),
        (_, None) => WriteOp::Refetch(event.keys.clone()),
    }
}

/// Plans the writes for decoded messages `(batch index, events)`, given in
/// batch order, with no transform, in normal mode.
pub fn plan(
    messages: &[(usize, Vec<ChangeEvent>)],
    cutoff_ms: i64,
    ttl: TtlPolicy,
    now_ms: i64,
) -> (Vec<PlannedWrite>, PlanStats) {
    let p = plan_with(messages, cutoff_ms, ttl, now_ms, None, Mode::Normal);
    (p.writes, p.stats)
}

/// A plan: the writes, the counters, and the messages holding a change the
/// transform could not map (they fail, with every later message).
#[derive(Debug, Default)]
pub struct Plan {
    pub writes: Vec<PlannedWrite>,
    pub stats: PlanStats,
    pub refused: Vec<(usize, TransformError)>,
}

/// The target writes one event asks for: usually one; two when a transform
/// derives the key from an attribute the change modified (the item moves).
fn map_event(
    t: &dyn Transform,
    event: &ChangeEvent,
) -> Result<Vec<(Attrs, WriteOp)>, TransformError> {
    let identity = t.is_identity_key();
    let key_of_change = |old: Option<&Attrs>| {
        if identity {
            Ok(event.keys.clone())
        } else {
            t.change_key(&event.keys, old)
        }
    };
    match write_for(event) {
        WriteOp::Refetch(keys) => Ok(vec![(key_of_change(None)?, WriteOp::Refetch(keys))]),
        WriteOp::Delete(_) => {
            let key = key_of_change(event.old_image.as_ref())?;
            Ok(vec![(key.clone(), WriteOp::Delete(key))])
        }
        WriteOp::Put(image) => {
            let item = t.item(&image)?;
            let key = if identity {
                event.keys.clone()
            } else {
                t.key_only(&image)?
            };
            let mut out = Vec::with_capacity(2);
            if let (false, Some(old)) = (identity, &event.old_image) {
                if let Ok(old_key) = t.key_only(old) {
                    if CanonicalKey::of(&old_key) != CanonicalKey::of(&key) {
                        out.push((old_key.clone(), WriteOp::Delete(old_key)));
                    }
                }
            }
            out.push((key, WriteOp::Put(item)));
            Ok(out)
        }
    }
}

/// [`plan`] with an optional transform and the control item's mode (in
/// tombstone mode deletes become tombstone puts).
pub fn plan_with(
    messages: &[(usize, Vec<ChangeEvent>)],
    cutoff_ms: i64,
    ttl: TtlPolicy,
    now_ms: i64,
    transform: Option<&dyn Transform>,
    mode: Mode,
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
            let mapped = match transform {
                None => vec![(event.keys.clone(), write_for(event))],
                Some(t) => match map_event(t, event) {
                    Ok(m) => m,
                    Err(e) => {
                        p.refused.push((*index, e));
                        continue;
                    }
                },
            };
            for (keys, op) in mapped {
                let op = match (mode, op) {
                    (Mode::Tombstone, WriteOp::Delete(k)) => WriteOp::Put(tombstone(&k)),
                    (_, op) => op,
                };
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

/// The first message to report failed: the earliest of the first message
/// that could not be decoded and the first messages of failed writes.
/// That message and every later one in the batch go back to the queue.
pub fn failure_point(
    first_undecodable: Option<usize>,
    failed_writes: impl IntoIterator<Item = usize>,
) -> Option<usize> {
    failed_writes.into_iter().chain(first_undecodable).min()
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
    fn refetch_markers_become_refetch_writes() {
        let e = ev("a", Op::Modify, 5, 1).into_refetch();
        let (w, _) = plan(&[(0, vec![e.clone()])], 0, TtlPolicy::Replicate, 5);
        assert_eq!(w[0].op, WriteOp::Refetch(e.keys));
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
        );
        assert!(p.writes.is_empty());
        assert_eq!(p.refused.len(), 1);
        assert_eq!(p.refused[0].0, 3);
    }

    #[test]
    fn failure_point_is_the_earliest() {
        assert_eq!(failure_point(None, []), None);
        assert_eq!(failure_point(Some(4), [6, 2]), Some(2));
        assert_eq!(failure_point(Some(1), [6, 2]), Some(1));
    }
}
