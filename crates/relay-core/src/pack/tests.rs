use super::*;
use crate::envelope::decode;
use crate::event::Op;
use crate::item::{AttributeValue as V, Attrs};

fn ev(i: usize, pk: &str, payload: usize) -> ChangeEvent {
    let keys: Attrs = [("pk".to_string(), V::S(pk.into()))].into();
    let mut image = keys.clone();
    image.insert("blob".into(), V::S("x".repeat(payload)));
    ChangeEvent {
        event_id: format!("e{i}"),
        seq: format!("{:020}", i),
        time_ms: 0,
        op: Op::Modify,
        ttl: false,
        refetch: false,
        keys,
        new_image: Some(image.clone()),
        old_image: Some(image),
    }
}

fn cfg(buckets: u32, cap: usize) -> PackConfig {
    PackConfig {
        buckets,
        max_message_bytes: cap,
        forward_old_image: true,
        old_key_sources: BTreeSet::new(),
        envelope_version: envelope::VERSION,
    }
}

#[test]
fn one_bucket_packs_in_order_under_the_cap() {
    let events: Vec<_> = (0..50)
        .map(|i| (i, ev(i, &format!("k{}", i % 7), 900)))
        .collect();
    let packed = pack("T", &events, &cfg(1, MIN_MESSAGE_BYTES), 1).unwrap();
    assert_eq!(packed.groups.len(), 1);
    let msgs = &packed.groups[0];
    assert!(msgs.len() > 1 && msgs.len() < 10, "{} messages", msgs.len());
    let mut ids = Vec::new();
    for m in msgs {
        assert!(m.body.len() <= MIN_MESSAGE_BYTES);
        let env = decode(&m.body).unwrap();
        assert_eq!(m.first_record, env.ev[0].seq.parse::<usize>().unwrap());
        // The id built as the message grew is the one of its events.
        assert_eq!(
            m.dedup_id,
            crate::group::dedup_id(1, env.ev.iter().map(|e| e.event_id.as_str()))
        );
        assert_eq!(m.events, env.ev.len());
        ids.extend(env.ev.into_iter().map(|e| e.event_id));
    }
    let want: Vec<_> = (0..50).map(|i| format!("e{i}")).collect();
    assert_eq!(ids, want);
    assert_eq!(packed.stats.events, 50);
    assert_eq!(packed.stats.messages, msgs.len() as u64);
}

#[test]
fn same_key_same_group() {
    let events: Vec<_> = (0..40)
        .map(|i| (i, ev(i, &format!("k{}", i % 5), 10)))
        .collect();
    let packed = pack("T", &events, &cfg(16, 256 * 1024), 1).unwrap();
    let mut seen: HashMap<String, String> = HashMap::new();
    for g in &packed.groups {
        for m in g {
            for e in decode(&m.body).unwrap().ev {
                let pk = format!("{:?}", e.keys["pk"]);
                let prev = seen.insert(pk, m.group_id.clone());
                assert!(prev.is_none_or(|p| p == m.group_id));
            }
        }
    }
}

#[test]
fn oversized_events_drop_old_image_then_become_refetch_markers() {
    let cap = MIN_MESSAGE_BYTES;
    let events = vec![
        (0, ev(0, "a", cap / 2)), // fits only without its old image
        (1, ev(1, "b", cap)),     // fits only as keys
    ];
    let packed = pack("T", &events, &cfg(1, cap), 1).unwrap();
    let all: Vec<ChangeEvent> = packed.groups[0]
        .iter()
        .flat_map(|m| decode(&m.body).unwrap().ev)
        .collect();
    assert_eq!(all.len(), 2, "nothing dropped");
    assert!(all[0].old_image.is_none() && all[0].new_image.is_some() && !all[0].refetch);
    assert!(all[1].refetch && all[1].new_image.is_none() && all[1].old_image.is_none());
    assert_eq!(all[1].keys, ev(1, "b", 0).keys);
    assert_eq!(packed.stats.refetch_markers, 1);
    assert_eq!(packed.stats.old_images_dropped, 2);
}

#[test]
fn what_a_key_transform_needs_from_the_old_image_always_travels() {
    let cap = MIN_MESSAGE_BYTES;
    let mut c = cfg(1, cap);
    c.old_key_sources = ["email".to_string()].into();
    let with_email = |mut e: ChangeEvent| {
        if let Some(o) = e.old_image.as_mut() {
            o.insert("email".into(), V::S("old@x".into()));
        }
        e
    };
    let events = vec![
        (0, with_email(ev(0, "a", cap / 2))), // fits only without its old image
        (1, with_email(ev(1, "b", cap))),     // fits only as a marker
    ];
    let packed = pack("T", &events, &c, 1).unwrap();
    let all: Vec<ChangeEvent> = packed.groups[0]
        .iter()
        .flat_map(|m| decode(&m.body).unwrap().ev)
        .collect();
    let projection: Attrs = [("email".to_string(), V::S("old@x".into()))].into();
    assert!(all[0].new_image.is_some() && !all[0].refetch);
    assert_eq!(all[0].old_image.as_ref(), Some(&projection));
    assert!(all[1].refetch && all[1].new_image.is_none());
    assert_eq!(all[1].old_image.as_ref(), Some(&projection));
    // Even when old images are not forwarded at all.
    c.forward_old_image = false;
    let packed = pack("T", &events[..1], &c, 1).unwrap();
    let e = &decode(&packed.groups[0][0].body).unwrap().ev[0];
    assert_eq!(e.old_image.as_ref(), Some(&projection));
}

#[test]
fn stream_images_are_copied_and_shrunk_like_parsed_ones() {
    // The forwarder packs the stream's JSON (`RawImage`): the same
    // bodies as parsed images give, when whole, shrunk or a marker.
    fn raw(text: &str) -> RawImage<'_> {
        serde_json::from_str(text).unwrap()
    }
    let cap = MIN_MESSAGE_BYTES;
    let mut c = cfg(1, cap);
    c.old_key_sources = ["email".to_string()].into();
    let mut parsed = vec![
        (0, ev(0, "a", 10)),
        (1, ev(1, "b", cap / 2)), // fits only without its old image
        (2, ev(2, "c", cap)),     // fits only as a marker
    ];
    for (_, e) in &mut parsed[1..] {
        if let Some(o) = e.old_image.as_mut() {
            o.insert("email".into(), V::S("old@x".into()));
        }
    }
    // The images as text, which the copied events borrow.
    let texts: Vec<ChangeEvent<String>> = parsed
        .iter()
        .map(|(_, e)| e.clone().map_images(|a| serde_json::to_string(&a).unwrap()))
        .collect();
    let copied: Vec<(usize, ChangeEvent<RawImage<'_>>)> = parsed
        .iter()
        .zip(&texts)
        .map(|((i, _), t)| {
            let text = |x: &String| -> &str {
                [&t.new_image, &t.old_image]
                    .into_iter()
                    .flatten()
                    .find(|y| *y == x)
                    .unwrap()
            };
            (*i, t.clone().map_images(|x| raw(text(&x))))
        })
        .collect();
    let read = |p: Packed| -> Vec<ChangeEvent> {
        p.groups[0]
            .iter()
            .flat_map(|m| decode(&m.body).unwrap().ev)
            .collect()
    };
    let a = pack("T", &parsed, &c, 1).unwrap();
    let b = pack("T", &copied, &c, 1).unwrap();
    assert_eq!(a.stats, b.stats);
    let (a, b) = (read(a), read(b));
    assert_eq!(a, b);
    assert!(b[0].old_image.is_some() && !b[0].refetch);
    assert!(b[2].refetch && b[2].old_image.as_ref().unwrap().contains_key("email"));
}

#[test]
fn cap_too_small_for_keys_is_an_error_not_a_drop() {
    let err = pack("T", &[(3, ev(3, &"k".repeat(500), 1))], &cfg(1, 200), 1).unwrap_err();
    assert_eq!(err.record, 3);
    assert!(err.to_string().contains("MAX_MESSAGE_BYTES"));
}

#[test]
fn old_images_are_not_forwarded_when_disabled() {
    let mut c = cfg(1, 256 * 1024);
    c.forward_old_image = false;
    let packed = pack("T", &[(0, ev(0, "a", 10))], &c, 1).unwrap();
    let e = &decode(&packed.groups[0][0].body).unwrap().ev[0];
    assert!(e.old_image.is_none() && e.new_image.is_some());
}

/// The packer as it was before events were encoded in place: each event
/// into a buffer, then copied into its message, ids kept in a list. The
/// packer must give the same messages, byte for byte, and the same stats.
fn packed_by_copying<I: Image>(
    src_table: &str,
    events: &[(usize, ChangeEvent<I>)],
    cfg: &PackConfig,
    invocation: u64,
) -> Result<Packed, PackError> {
    struct Open {
        body: Vec<u8>,
        ids: Vec<String>,
        first_record: usize,
    }
    let close = |b: u32, mut m: Open, stats: &mut PackStats| {
        m.body.extend_from_slice(envelope::FOOTER);
        stats.messages += 1;
        stats.bytes += m.body.len() as u64;
        OutMessage {
            group_id: crate::group::group_id(b),
            dedup_id: crate::group::dedup_id(invocation, m.ids.iter().map(String::as_str)),
            events: m.ids.len(),
            first_record: m.first_record,
            body: envelope::into_string(cfg.envelope_version, m.body),
        }
    };
    let header = envelope::header(cfg.envelope_version, src_table);
    let frame = header.len() + envelope::FOOTER.len();
    let room = cfg.max_message_bytes.saturating_sub(frame);
    let mut order = Vec::new();
    let mut groups: HashMap<u32, (Vec<OutMessage>, Option<Open>)> = HashMap::new();
    let mut stats = PackStats::default();
    let mut encoded = Vec::new();
    for (record, event) in events {
        let refetch = encode_within(event, room, cfg, &mut stats, &mut encoded);
        if encoded.len() > room {
            return Err(PackError {
                record: *record,
                cap: cfg.max_message_bytes,
                needed: encoded.len() + frame,
            });
        }
        stats.refetch_markers += u64::from(refetch);
        stats.events += 1;
        let b = bucket(src_table, &CanonicalKey::of(&event.keys), cfg.buckets);
        let (done, open) = groups.entry(b).or_insert_with(|| {
            order.push(b);
            (Vec::new(), None)
        });
        if open.as_ref().is_some_and(|cur| {
            cur.body.len() + envelope::SEPARATOR.len() + encoded.len() + envelope::FOOTER.len()
                > cfg.max_message_bytes
        }) {
            done.push(close(b, open.take().unwrap(), &mut stats));
        }
        match open {
            Some(cur) => {
                cur.body.extend_from_slice(envelope::SEPARATOR);
                cur.body.extend_from_slice(&encoded);
                cur.ids.push(event.event_id.clone());
            }
            None => {
                let mut body = header.clone();
                body.extend_from_slice(&encoded);
                *open = Some(Open {
                    body,
                    ids: vec![event.event_id.clone()],
                    first_record: *record,
                });
            }
        }
    }
    let mut out = Vec::new();
    for b in order {
        let (mut done, open) = groups.remove(&b).unwrap();
        if let Some(last) = open {
            done.push(close(b, last, &mut stats));
        }
        out.push(done);
    }
    Ok(Packed { groups: out, stats })
}

fn assert_same(a: Result<Packed, PackError>, b: Result<Packed, PackError>) {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.groups, b.groups);
            assert_eq!(a.stats, b.stats);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("in place {:?}, by copying {:?}", a.is_ok(), b.is_ok()),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Events of every size against the cap (whole, without old image,
    /// refetch markers, keys too big for any message), in few groups, so
    /// messages fill, close and open mid-batch: encoded in place, the
    /// messages are the ones encoding each event apart and copying made.
    #[test]
    fn events_encoded_in_place_pack_as_when_copied(
        spec in proptest::collection::vec(
            (proptest::prop_oneof![100 => 0usize..5, 1 => proptest::strategy::Just(5usize)], proptest::prop_oneof![0usize..600, 0usize..9_000], proptest::bool::ANY, 0u8..4),
            0..60,
        ),
        buckets in 1u32..4,
        cap in proptest::prop_oneof![
            proptest::strategy::Just(MIN_MESSAGE_BYTES),
            MIN_MESSAGE_BYTES..MIN_MESSAGE_BYTES * 3,
        ],
        forward_old_image in proptest::bool::ANY,
        key_sources in proptest::bool::ANY,
        version in 1u32..=2,
    ) {
        let events: Vec<_> = spec
            .iter()
            .enumerate()
            .map(|(i, &(k, payload, old, kind))| {
                // Key 5 is too big for any message, even as a marker.
                let pk = if k == 5 { "k".repeat(MIN_MESSAGE_BYTES) } else { format!("k{k}") };
                let mut e = ev(i, &pk, payload);
                if !old {
                    e.old_image = None;
                }
                match kind {
                    1 => (e.op, e.new_image) = (Op::Remove, None),
                    2 => e.refetch = true,
                    // Text the encoder escapes or exchanges: lengths change.
                    _ => {
                        let text = "'\"\u{FFFE}\u{FFFF}\\x".repeat(payload / 8 + 1);
                        if let Some(n) = e.new_image.as_mut() {
                            n.insert("blob".into(), V::S(text));
                        }
                    }
                }
                (i * 2, e)
            })
            .collect();
        let mut c = cfg(buckets, cap);
        c.forward_old_image = forward_old_image;
        c.envelope_version = version;
        if key_sources {
            c.old_key_sources = ["blob".to_string()].into();
        }
        assert_same(pack("T", &events, &c, 7), packed_by_copying("T", &events, &c, 7));
    }
}

#[test]
fn an_event_that_ends_a_message_at_the_cap_stays_and_one_byte_more_moves() {
    // Two events of one key, the second (no old image: a byte of payload
    // is a byte of event) sized to end the message at every length from
    // a few bytes under the cap to a few over, in both versions.
    for version in [1, 2] {
        let mut c = cfg(1, MIN_MESSAGE_BYTES);
        c.envelope_version = version;
        let first = ev(0, "k", 100);
        let frame = envelope::header(version, "T").len() + envelope::FOOTER.len();
        let used = frame + envelope::encode_event(&first).len() + envelope::SEPARATOR.len();
        let sized = |payload: usize| {
            let mut e = ev(1, "k", payload);
            e.old_image = None;
            e
        };
        let base = envelope::encode_event(&sized(0)).len();
        let fit = MIN_MESSAGE_BYTES - used - base;
        let mut seen = Vec::new();
        for payload in fit - 3..=fit + 3 {
            let second = sized(payload);
            let total = used + envelope::encode_event(&second).len();
            seen.push(total);
            let events = [(0, first.clone()), (1, second)];
            let packed = pack("T", &events, &c, 1).unwrap();
            let messages = &packed.groups[0];
            if total <= MIN_MESSAGE_BYTES {
                assert_eq!(messages.len(), 1, "v{version}: {total} bytes");
                assert_eq!(messages[0].body.len(), total);
            } else {
                assert_eq!(messages.len(), 2, "v{version}: {total} bytes");
            }
            assert!(messages.iter().all(|m| m.body.len() <= MIN_MESSAGE_BYTES));
            assert_same(Ok(packed), packed_by_copying("T", &events, &c, 1));
        }
        for edge in [
            MIN_MESSAGE_BYTES - 1,
            MIN_MESSAGE_BYTES,
            MIN_MESSAGE_BYTES + 1,
        ] {
            assert!(seen.contains(&edge), "v{version}: {seen:?}");
        }
    }
}
