//! Writes under transforms whose target keys pass between source items.

use super::*;

#[test]
fn under_a_key_that_passes_between_items_deletes_name_their_owner() {
    let t = by_email();
    let key = |e: &str| t.key_only(&with_email(Attrs::new(), e)).unwrap();
    let pk = |s: &str| -> Attrs { [("pk".to_string(), V::S(s.into()))].into() };
    // A leaves x for z, then B leaves y for x: one batch, two groups.
    let mut a = ev("a", Op::Modify, 5, 2);
    a.new_image = Some(with_email(item_v("a", 2), "z@x"));
    a.old_image = Some(with_email(item_v("a", 1), "x@x"));
    let mut b = ev("b", Op::Modify, 6, 2);
    b.new_image = Some(with_email(item_v("b", 2), "x@x"));
    b.old_image = Some(with_email(item_v("b", 1), "y@x"));
    let batch = [(0, vec![a]), (1, vec![b])];
    let p = plan_with(
        &batch,
        0,
        TtlPolicy::Replicate,
        6,
        Some(&t),
        Mode::Normal,
        &Fetched::new(),
    );
    assert!(p.refused.is_empty(), "{:?}", p.refused);
    // Not coalesced across items: A's delete of x and B's put of x both stay.
    assert_eq!(p.stats.coalesced, 0);
    let ops: Vec<(Attrs, WriteOp<'_>)> = p
        .writes
        .iter()
        .map(|w| (w.keys.clone(), w.op.clone()))
        .collect();
    assert_eq!(ops.len(), 4);
    assert_eq!(
        ops[0].1,
        WriteOp::DeleteOwned {
            keys: key("x@x"),
            owner: pk("a")
        }
    );
    // B's put of x checks x is free or B's (else the key is settled).
    assert!(
        matches!(&ops[3].1, WriteOp::PutOwned { item, owner } if item["pk"] == V::S("b".into()) && *owner == pk("b"))
    );
    assert_eq!(ops[3].0, key("x@x"));
    // In tombstone mode the delete becomes a tombstone that names its owner.
    match (WriteOp::DeleteOwned {
        keys: key("x@x"),
        owner: pk("a"),
    })
    .in_mode(Mode::Tombstone)
    {
        WriteOp::PutOwned { item, owner } => {
            assert!(is_tombstone(&item));
            assert_eq!(item["pk"], V::S("a".into()));
            assert_eq!(owner, pk("a"));
        }
        other => panic!("{other:?}"),
    }
    // One item's own changes still coalesce per target key.
    let mut a1 = ev("a", Op::Modify, 5, 2);
    a1.new_image = Some(with_email(item_v("a", 2), "z@x"));
    let mut a2 = ev("a", Op::Modify, 6, 3);
    a2.new_image = Some(with_email(item_v("a", 3), "z@x"));
    let batch = [(0, vec![a1, a2])];
    let p = plan_with(
        &batch,
        0,
        TtlPolicy::Replicate,
        6,
        Some(&t),
        Mode::Normal,
        &Fetched::new(),
    );
    assert_eq!((p.writes.len(), p.stats.coalesced), (1, 1));
}

#[test]
fn keys_that_cannot_pass_between_items_keep_plain_deletes() {
    let concat = crate::transform::Declarative::parse(
        "key: [{attribute: id, concat: {from: [pk], separator: '#'}}]",
        &["pk".to_string()],
    )
    .unwrap();
    let sk: Attrs = [("pk".to_string(), V::S("a".into()))].into();
    assert_eq!(owner_of(Some(&concat), &sk).unwrap(), None);
    assert_eq!(owner_of(None, &sk).unwrap(), None);
    assert_eq!(owner_of(Some(&by_email()), &sk).unwrap(), Some(sk.clone()));
    // A transform that overwrites the source key cannot tell owners apart.
    let blind = crate::transform::Declarative::parse(
        "key: [{attribute: pk, uuidv5: {from: [email]}}]",
        &["pk".to_string()],
    )
    .unwrap();
    assert!(matches!(
        owner_of(Some(&blind), &sk),
        Err(TransformError::NoOwner(_))
    ));
}

#[test]
fn a_contested_key_goes_to_whichever_item_the_source_maps_there() {
    let t = by_email();
    let key = t.key_only(&with_email(Attrs::new(), "x@x")).unwrap();
    let pk = |s: &str| -> Attrs { [("pk".to_string(), V::S(s.into()))].into() };
    let (a, b) = (pk("a"), pk("b"));
    let a_at_x = with_email(item_v("a", 3), "x@x");
    let b_at_x = with_email(item_v("b", 4), "x@x");
    let b_at_y = with_email(item_v("b", 5), "y@x");
    let mut held = t.item(&with_email(item_v("b", 2), "x@x")).unwrap();
    held.insert(TOKEN_ATTR.into(), V::S("t1".into()));
    let read = |key, current| Read { key, current };
    // The claimant maps here: its current item.
    let op = settle(
        &t,
        &key,
        read(&a, Some(&a_at_x)),
        Some((read(&b, Some(&b_at_y)), &held)),
    )
    .unwrap();
    assert_eq!(op, WriteOp::Put(Cow::Owned(t.item(&a_at_x).unwrap())));
    // It moved on, the occupant is here: the occupant's current item.
    let op = settle(
        &t,
        &key,
        read(&a, None),
        Some((read(&b, Some(&b_at_x)), &held)),
    )
    .unwrap();
    assert_eq!(op, WriteOp::Put(Cow::Owned(t.item(&b_at_x).unwrap())));
    // Neither maps here (or the occupant is unknown): nothing.
    let op = settle(
        &t,
        &key,
        read(&a, None),
        Some((read(&b, Some(&b_at_y)), &held)),
    )
    .unwrap();
    assert_eq!(op, WriteOp::Delete(key.clone()));
    assert_eq!(
        settle(&t, &key, read(&a, None), None).unwrap(),
        WriteOp::Delete(key.clone())
    );
    // The occupant's source item is gone: its item is kept as it is (its
    // delete is on its way, or the TTL policy keeps it), unmarked.
    let op = settle(&t, &key, read(&a, None), Some((read(&b, None), &held))).unwrap();
    let mut kept = held.clone();
    kept.remove(TOKEN_ATTR);
    assert_eq!(op, WriteOp::Put(Cow::Owned(kept)));
    // A current item the transform cannot map does not map here.
    let no_email = item_v("b", 6);
    let op = settle(
        &t,
        &key,
        read(&a, None),
        Some((read(&b, Some(&no_email)), &held)),
    )
    .unwrap();
    assert_eq!(op, WriteOp::Delete(key));
}

/// A custom transform that changes the source key in the target item
/// cannot tell owners apart: its writes are refused, never made blind.
#[test]
fn a_target_item_that_does_not_carry_its_owner_is_refused() {
    #[derive(Debug)]
    struct Blind;
    impl Transform for Blind {
        fn item(&self, source: &Attrs) -> Result<Attrs, TransformError> {
            let mut out = source.clone();
            out.insert("pk".into(), V::S("changed".into()));
            Ok(out)
        }
        fn key_sources(&self) -> std::collections::BTreeSet<String> {
            ["email".to_string()].into()
        }
        fn target_key_names(&self) -> Vec<String> {
            vec!["email".into()]
        }
        fn key_only(&self, image: &Attrs) -> Result<Attrs, TransformError> {
            let v = image
                .get("email")
                .ok_or_else(|| TransformError::Missing("email".into()))?;
            Ok([("email".to_string(), v.clone())].into())
        }
    }
    let mut e = ev("a", Op::Insert, 5, 1);
    e.new_image = Some(with_email(item_v("a", 1), "x@x"));
    let batch = [(2, vec![e])];
    let p = plan_with(
        &batch,
        0,
        TtlPolicy::Replicate,
        5,
        Some(&Blind),
        Mode::Normal,
        &Fetched::new(),
    );
    assert!(p.writes.is_empty());
    assert!(matches!(
        p.refused[0],
        (2, Refusal::Transform(TransformError::NoOwner(_)))
    ));
}
