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

/// helper-45 #4: a transform that maps two source items to one target key
/// (`convert` S→N: "1" and "01" are both 1; not a key-reusing transform, so
/// no owned writes) coalesces their changes into one write. Its failure
/// must fail the second item's message too, else that message completes
/// and its change is lost.
#[test]
fn a_write_two_items_coalesced_into_remembers_both_items_messages() {
    let t = crate::transform::Declarative::parse(
        "key: [{attribute: id, convert: {from: pk, to: N}}]",
        &["pk".to_string()],
    )
    .unwrap();
    let msgs = vec![
        (0, vec![ev("1", Op::Insert, 10, 1)]),
        (1, vec![ev("01", Op::Insert, 11, 2)]),
        (2, vec![ev("1", Op::Modify, 12, 3)]),
        (3, vec![ev("01", Op::Modify, 13, 4)]),
    ];
    let p = plan_with(
        &msgs,
        0,
        TtlPolicy::Replicate,
        20,
        Some(&t),
        Mode::Normal,
        &Fetched::new(),
    );
    assert_eq!(p.writes.len(), 1, "one target key");
    let w = &p.writes[0];
    assert_eq!(w.messages().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    // With the groups: a failure of the write fails both items' groups.
    let groups = ["g1", "g01", "g1", "g01"];
    assert_eq!(
        failed_messages(&groups, w.messages()),
        [0, 1, 2, 3].into_iter().collect()
    );
    // Writes of one item only remember its first message.
    let (writes, _) = plan(&msgs[..1], 0, TtlPolicy::Replicate, 20);
    assert!(writes[0].other_messages.is_empty());
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
        WriteOp::Put(Cow::Owned(msgs[0].1[1].new_image.clone().unwrap()))
    );
    assert!(applies(1000, 1000) && !applies(999, 1000));
}

/// A backup taken at T may lack any write from T − 60 s on; the event of a
/// write at w is timed w rounded down to the second. Whatever the seed's
/// milliseconds, a margin of at least 60 s applies every such event (a
/// cutoff compared in milliseconds skipped a write at 40.7 s under a cutoff
/// of 40.5 s).
#[test]
fn every_write_a_backup_may_lack_is_applied_at_any_margin_of_a_minute_or_more() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(
            &(
                1_600_000_000_000i64..1_900_000_000_000,
                60_000i64..200_000,
                0i64..60_000,
                0i64..3_000,
            ),
            |(seed_ms, margin_ms, before_ms, after_ms)| {
                let cutoff = crate::control::cutoff_for_seed(seed_ms, margin_ms);
                for w in [
                    seed_ms - 60_000 + (before_ms % 1000),
                    seed_ms - before_ms,
                    seed_ms + after_ms,
                ] {
                    let timed = w.div_euclid(1000) * 1000;
                    prop_assert!(
                        applies(timed, cutoff),
                        "write at {w} timed {timed}, cutoff {cutoff}"
                    );
                }
                Ok(())
            },
        )
        .unwrap();
    assert!(applies(40_000, 40_500), "the example in the doc");
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
        refetch_keys(&msgs, 1000).is_empty(),
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
    assert_eq!(p.writes[0].op, WriteOp::Put(Cow::Owned(current)));
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
    let batch = [(0, vec![moved, marker])];
    let p = plan_with(
        &batch,
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
    let batch = [(0, vec![del, gone])];
    let p = plan_with(
        &batch,
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
    let batch = [(4, vec![blind])];
    let p = plan_with(
        &batch,
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
    // The stale key may hold another item by now: deleted only if still a's.
    let stale = WriteOp::delete(old_key.clone(), Some(&sk));
    assert_eq!(w.len(), 2);
    assert_eq!(w[0], (old_key.clone(), stale.clone()));
    assert_eq!(w[1].0, new_key);
    let w = converge(Some(&t), &sk, None, std::slice::from_ref(&old_key)).unwrap();
    assert_eq!(w, vec![(old_key.clone(), stale)]);
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
        WriteOp::Put(Cow::Owned(tombstone(&sk)))
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
    let batch = [(0, events.clone())];
    let p = plan_with(
        &batch,
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
    let batch = [(0, events)];
    let p = plan_with(
        &batch,
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
    let batch = [(3, vec![ev("a", Op::Remove, 10, 1)])];
    let p = plan_with(
        &batch,
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

/// Owned writes: target keys that pass between source items.
mod owners;
