use super::*;
use crate::event::Op;
use crate::item::{AttributeValue as V, Attrs};

fn ev(id: &str, text: &str) -> ChangeEvent {
    let keys: Attrs = [("pk".to_string(), V::S(id.into()))].into();
    let mut image = keys.clone();
    image.insert("text".into(), V::S(text.into()));
    ChangeEvent {
        event_id: id.into(),
        seq: "100".into(),
        time_ms: 1_700_000_000_000,
        op: Op::Insert,
        ttl: false,
        refetch: false,
        keys,
        new_image: Some(image),
        old_image: None,
    }
}

/// `json` in version 2's form.
fn exchanged(json: &str) -> String {
    let mut b = json.as_bytes().to_vec();
    exchange_quotes(&mut b);
    String::from_utf8(b).unwrap()
}

#[test]
fn unknown_version_is_a_clear_error() {
    for body in [
        r#"{"v":3,"src":"t","ev":[]}"#.to_string(),
        exchanged(r#"{"v":3,"src":"t","ev":[]}"#),
    ] {
        let err = decode(&body).unwrap_err();
        assert_eq!(
            err,
            EnvelopeError::UnsupportedVersion {
                found: 3,
                supported: 2
            }
        );
        assert!(err.to_string().contains("version 3 is not supported"));
        assert!(err.to_string().contains("reads versions 1 to 2"));
    }
    assert_eq!(
        decode(r#"{"src":"t","ev":[]}"#).unwrap_err(),
        EnvelopeError::MissingVersion
    );
    assert!(matches!(
        decode("not json").unwrap_err(),
        EnvelopeError::NotJson(_)
    ));
}

#[test]
fn the_fast_path_prefix_is_what_this_build_writes_and_never_hides_a_version() {
    // The prefix is version 2's: a new VERSION must change it.
    assert_eq!(VERSION, 2);
    assert!(header(VERSION, "t").starts_with(V2_PREFIX.as_bytes()));
    let body = encode("t", &[ev("a", "x")]);
    assert!(
        body.starts_with("{'v':2,'src':'t','ev':[{'id':'a'"),
        "{body}"
    );
    assert!(!body.contains('"'));
    let back = decode(&body).unwrap();
    assert_eq!((back.v, back.ev), (2, vec![ev("a", "x")]));
    // A second "v" after the prefix is malformed, never read as v1 or v2.
    for bad in [
        r#"{"v":1,"v":2,"src":"t","ev":[]}"#.to_string(),
        exchanged(r#"{"v":2,"v":1,"src":"t","ev":[]}"#),
    ] {
        assert!(matches!(
            decode(&bad).unwrap_err(),
            EnvelopeError::Malformed { .. }
        ));
    }
    // Other spellings of versions 1 and 2 and other versions take the probe.
    assert!(decode(r#"{ "v": 1, "src":"t","ev":[]}"#).is_ok());
    assert!(decode(exchanged(r#"{"src":"t", "v": 2, "ev":[]}"#)).is_ok());
    assert!(matches!(
        decode(r#"{"v":10,"src":"t","ev":[]}"#).unwrap_err(),
        EnvelopeError::UnsupportedVersion { found: 10, .. }
    ));
}

#[test]
fn decoding_without_old_images_reads_everything_else_the_same() {
    let mut modify = ev("b", "y");
    modify.op = Op::Modify;
    modify.old_image = Some(ev("b", "old").new_image.unwrap());
    let mut ttl = ev("c", "z");
    (ttl.op, ttl.ttl, ttl.new_image) = (Op::Remove, true, None);
    ttl.old_image = Some(ttl.keys.clone());
    let mut refetch = ev("d", "w");
    (refetch.refetch, refetch.new_image) = (true, None);
    let body = encode("src", &[ev("a", "x"), modify, ttl, refetch]);
    let mut want = decode(&body).unwrap();
    assert!(want.ev.iter().any(|e| e.old_image.is_some()));
    for e in &mut want.ev {
        e.old_image = None;
    }
    assert_eq!(decode_without_old_images(&body).unwrap(), want);
    // A malformed `o` alone is not checked (the reader does not use it).
    let bad_o = r#"{"v":1,"src":"t","ev":[{"id":"a","sq":"1","t":1,"op":"MODIFY","k":{"pk":{"S":"a"}},"n":{"pk":{"S":"a"}},"o":42}]}"#;
    assert!(decode(bad_o).is_err());
    assert_eq!(
        decode_without_old_images(bad_o).unwrap().ev[0].old_image,
        None
    );
    // Every other error is decode's.
    for bad in [
        r#"{"v":2,"src":"t","ev":[]}"#,
        r#"{"src":"t","ev":[]}"#,
        "not json",
        r#"{"v":1,"v":2,"src":"t","ev":[]}"#,
        r#"{"v":1,"src":"t","ev":[{"id":"secret","sq":5}]}"#,
    ] {
        assert_eq!(
            decode_without_old_images(bad).unwrap_err(),
            decode(bad).unwrap_err(),
            "{bad}"
        );
    }
}

#[test]
fn malformed_errors_do_not_quote_customer_data() {
    let body = r#"{"v":1,"src":"t","ev":[{"id":"secret-value-123","sq":5}]}"#;
    let err = decode(body).unwrap_err().to_string();
    assert!(err.contains("malformed"), "{err}");
    assert!(!err.contains("secret-value-123"), "{err}");
}

#[test]
fn sqs_refused_code_points_are_escaped_and_round_trip() {
    let text = "a\u{FFFF}b\u{FFFE}\u{0}\u{1F}\u{7F}😀";
    let body = encode("t", &[ev("k", text)]);
    assert!(!body.contains('\u{FFFF}') && !body.contains('\u{FFFE}'));
    assert!(body.contains("\\uFFFF"));
    assert!(body.chars().all(|c| c == '\t'
        || c == '\n'
        || c == '\r'
        || ('\u{20}'..='\u{D7FF}').contains(&c)
        || ('\u{E000}'..='\u{FFFD}').contains(&c)
        || c >= '\u{10000}'));
    let back = decode(&body).unwrap();
    assert_eq!(back.ev[0], ev("k", text));
}

#[test]
fn views_encode_exactly_like_events() {
    let mut e = ev("k", "x");
    e.old_image = Some(e.keys.clone());
    e.ttl = true;
    assert_eq!(encode_view(&EventView::of(&e)), encode_event(&e));
    e.refetch = true;
    e.new_image = None;
    assert_eq!(encode_view(&EventView::of(&e)), encode_event(&e));
}

#[test]
fn version_1_bodies_still_decode_and_each_version_has_one_form() {
    // A version 1 body (what a forwarder of an earlier release queued)
    // decodes to the same events as this build's version 2 body.
    let events = [ev("a", "it's \"x\""), ev("b", "y")];
    let v2 = encode("t", &events);
    let v1 = exchanged(&v2).replacen(r#"{"v":2,"#, r#"{"v":1,"#, 1);
    assert!(v1.starts_with(V1_PREFIX));
    assert_eq!(v1, encode_as(1, "t", &events));
    // Customer quotes: `'` travels as `"`, an escaped `"` as `\'`.
    assert!(v2.contains(r#"'S':'it"s \'x\''"#), "{v2}");
    let (a, b) = (decode(&v1).unwrap(), decode(&v2).unwrap());
    assert_eq!((a.v, b.v), (1, 2));
    assert_eq!((&a.src, &a.ev), (&b.src, &b.ev));
    assert_eq!(a.ev, events);
    assert_eq!(decode_without_old_images(&v1).unwrap().ev, events);
    // Version 2 in plain JSON, or version 1 exchanged, is malformed:
    // a reader never guesses which form a body meant.
    for (bad, version) in [
        (exchanged(&v2), 2),
        (exchanged(&v1), 1),
        (r#"{ "v": 2, "src":"t","ev":[]}"#.to_string(), 2),
    ] {
        let err = decode(&bad).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::Malformed { version: v, .. } if v == version),
            "{err:?}"
        );
        assert_eq!(decode_without_old_images(&bad).unwrap_err(), err);
    }
}

#[test]
fn exchanging_quotes_is_its_own_inverse_and_keeps_everything_else() {
    let all: Vec<u8> = (0..=255).collect();
    let mut b = all.clone();
    exchange_quotes(&mut b);
    for (x, y) in all.iter().zip(&b) {
        let want = match x {
            b'"' => b'\'',
            b'\'' => b'"',
            x => *x,
        };
        assert_eq!(*y, want);
    }
    exchange_quotes(&mut b);
    assert_eq!(b, all);
}

#[test]
fn framed_encoding_equals_whole_encoding() {
    let events = [ev("a", "x"), ev("b", "it's")];
    for version in [1, 2] {
        let mut framed = header(version, "src\"table");
        framed.extend(encode_event(&events[0]));
        framed.extend_from_slice(SEPARATOR);
        framed.extend(encode_event(&events[1]));
        framed.extend_from_slice(FOOTER);
        let len = framed.len();
        let framed = into_string(version, framed);
        assert_eq!(framed.len(), len, "the packer's size is the body's");
        assert_eq!(framed, encode_as(version, "src\"table", &events));
        let back = decode(&framed).unwrap();
        assert_eq!((back.v, back.ev), (version, events.to_vec()));
    }
}

proptest::proptest! {
    /// `decode` reads items with `json::Item`: every event is what the
    /// derived reader (`ChangeEvent`'s, serde_dynamo's items) makes of the
    /// same body, images of every type, in both versions.
    #[test]
    fn decode_reads_what_the_derived_reader_reads(
        keys in crate::testgen::item(),
        new in proptest::option::of(crate::testgen::item()),
        old in proptest::option::of(crate::testgen::item()),
    ) {
        let mut e = ev("a", "x");
        (e.keys, e.new_image, e.old_image) = (keys, new, old);
        let v1 = encode_as(1, "src", &[e.clone(), ev("b", "y")]);
        let derived: Envelope = serde_json::from_str(&v1).unwrap();
        proptest::prop_assert_eq!(&decode(&v1).unwrap(), &derived);
        proptest::prop_assert_eq!(decode(encode("src", &[e.clone(), ev("b", "y")])).unwrap().ev, derived.ev.clone());
        proptest::prop_assert_eq!(&derived.ev[0], &e);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

    /// Bodies edited a few characters at a time (structure, escapes, tags,
    /// literals): `decode` refuses what the derived reader refuses and
    /// reads the rest as it does; the lean reader reads whatever `decode`
    /// reads, without old images.
    #[test]
    fn edited_bodies_read_as_the_derived_reader_reads_them(
        keys in crate::testgen::item(),
        new in proptest::option::of(crate::testgen::item()),
        old in proptest::option::of(crate::testgen::item()),
        edits in proptest::collection::vec(crate::testgen::edit(), 0..4),
    ) {
        let mut e = ev("a", "x");
        (e.keys, e.new_image, e.old_image) = (keys, new, old);
        let body = crate::testgen::apply(&encode_as(1, "src", &[ev("b", "y"), e]), &edits);
        let derived = serde_json::from_str::<Envelope>(&body);
        let ours = decode(body.as_str());
        // The derived reader knows no versions: compared where the edits
        // left the version as written (the version rules have their own
        // tests above).
        let as_written = body.starts_with(V1_PREFIX);
        match (&derived, &ours) {
            _ if !as_written => {}
            (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            _ => proptest::prop_assert!(false, "derived {:?}, decode {:?}: {}", derived.is_ok(), ours.is_ok(), body),
        }
        if let Ok(mut want) = ours {
            for e in &mut want.ev {
                e.old_image = None;
            }
            proptest::prop_assert_eq!(decode_without_old_images(body.as_str()).unwrap(), want);
        }
    }
}

#[test]
fn an_event_is_appended_within_a_limit_or_not_at_all_past_it() {
    let e = ev("a", "it's \"quoted\" \u{FFFE}\u{FFFF} \\");
    let whole = encode_event(&e);
    for prefix in [0usize, 1, 7] {
        for limit in (0..prefix + whole.len() + 3).chain([usize::MAX]) {
            let mut out = vec![b'x'; prefix];
            let fits = append_event_within(&mut out, &e, limit);
            assert!(out.len() <= limit.max(prefix), "{} > {limit}", out.len());
            assert_eq!(fits, prefix + whole.len() <= limit, "limit {limit}");
            // What was there is left as it was.
            assert!(out[..prefix].iter().all(|&b| b == b'x'));
            if fits {
                assert_eq!(out[prefix..], whole[..]);
            }
        }
    }
}
