use super::*;
use crate::envelope::{decode, encode_event, header, into_string, FOOTER, VERSION};
use crate::event::{from_stream_record, Op};
use crate::item::AttributeValue as V;
use proptest::prelude::*;
use serde_json::{json, Value as Json};

use crate::testgen::{apply, edit, item, near_dynamo_json, nested, nested_lists, REFUSED_EDGES};

/// What serde_dynamo (the applier's reader, and aws_lambda_events') makes
/// of an image.
fn dynamo(text: &str) -> Result<Attrs, serde_json::Error> {
    serde_json::from_str(text)
}

fn raw(text: &str) -> Result<RawImage<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

proptest! {
    /// The module's invariant: the check accepts exactly what serde_dynamo
    /// accepts, so a record the forwarder copies is one the applier reads.
    #[test]
    fn the_image_check_is_serde_dynamos_grammar(image in near_dynamo_json()) {
        let text = image.to_string();
        prop_assert_eq!(raw(&text).is_ok(), dynamo(&text).is_ok(), "{}", text);
    }

    /// A copied image reads back as the image, every type, through the
    /// envelope (which escapes what SQS refuses on the way).
    #[test]
    fn copied_images_read_back_as_the_item(new in item(), old in item()) {
        let keys: Attrs = [("pk".to_string(), V::S("k".into()))].into();
        let (new_text, old_text) = (serde_json::to_string(&new).unwrap(), serde_json::to_string(&old).unwrap());
        let event = ChangeEvent {
            event_id: "e".into(),
            seq: "1".into(),
            time_ms: 1_000,
            op: Op::Modify,
            ttl: false,
            refetch: false,
            keys: keys.clone(),
            new_image: Some(raw(&new_text).unwrap()),
            old_image: Some(raw(&old_text).unwrap()),
        };
        let mut body = header(VERSION, "T");
        body.extend(encode_event(&event));
        body.extend_from_slice(FOOTER);
        let body = into_string(VERSION, body);
        prop_assert!(!body.contains(['\u{FFFE}', '\u{FFFF}']), "an SQS-refused code point in the body");
        let back = decode(&body).unwrap().ev.remove(0);
        prop_assert_eq!(back.new_image.unwrap_or_default(), new);
        prop_assert_eq!(back.old_image.unwrap_or_default(), old);
        prop_assert_eq!(back.keys, keys);
    }
}

#[test]
fn grammar_edges_agree_with_serde_dynamo() {
    let accepted = [
        r#"{}"#,
        r#"{"a":{"\u0053":"escaped tag"}}"#,
        " { \"a\" : { \"M\" : { } } } ",
        r#"{"a":{"L":[]},"b":{"SS":[]},"c":{"BS":["AAE=", ""]}}"#,
        r#"{"a":{"S":"x"},"a":{"N":"1"}}"#,
        r#"{"a":{"NULL":false}}"#,
    ];
    for text in accepted.into_iter().chain(REFUSED_EDGES) {
        assert_eq!(raw(text).is_ok(), dynamo(text).is_ok(), "{text}");
    }
    assert!(raw(r#"{"a":{"S":"x"}}"#).is_ok());
}

#[test]
fn images_nest_as_deep_as_dynamodb_allows_and_the_applier_reads_them() {
    let deepest = nested(MAX_NESTING);
    let image = raw(&deepest).unwrap();
    let keys: Attrs = [("pk".to_string(), V::S("k".into()))].into();
    let event = ChangeEvent {
        event_id: "e".into(),
        seq: "1".into(),
        time_ms: 1_000,
        op: Op::Insert,
        ttl: false,
        refetch: false,
        keys,
        new_image: Some(image),
        old_image: Some(image),
    };
    let mut body = header(VERSION, "T");
    body.extend(encode_event(&event));
    body.extend_from_slice(FOOTER);
    let back = decode(into_string(VERSION, body)).unwrap().ev.remove(0);
    assert_eq!(back.new_image.unwrap(), dynamo(&deepest).unwrap());
    // One level more is refused, by name: serde_dynamo alone would read it
    // (and deeper, near serde_json's limit, where an applier reading it
    // inside an envelope would not).
    let err = raw(&nested(MAX_NESTING + 1)).unwrap_err().to_string();
    assert!(err.contains("not DynamoDB JSON"), "{err}");
    assert!(dynamo(&nested(MAX_NESTING + 1)).is_ok());
    let mut list = json!({"S": "x"});
    for _ in 0..=MAX_NESTING {
        list = json!({ "L": [list] });
    }
    assert!(raw(&json!({ "a": list }).to_string()).is_err());
}

#[test]
fn a_refused_image_names_no_value() {
    let err = raw(r#"{"name":{"BOOL":"secret-value-42"}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not DynamoDB JSON"), "{err}");
    assert!(!err.contains("secret-value-42"), "{err}");
}

fn record(dynamodb: Json) -> Json {
    json!({
        "eventID": "e1",
        "eventName": "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/T/stream/x",
        "dynamodb": dynamodb,
    })
}

/// Both readings of one record, the images parsed for comparison.
fn both(
    rec: &Json,
) -> (
    Result<ChangeEvent, RecordError>,
    Result<ChangeEvent, RecordError>,
) {
    let text = rec.to_string();
    let mine: StreamRecord<'_> = serde_json::from_str(&text).unwrap();
    let theirs: aws_lambda_events::event::dynamodb::EventRecord =
        serde_json::from_str(&text).unwrap();
    let parsed = from_raw_record(mine).map(|e| e.map_images(|i| i.to_attrs()));
    (parsed, from_stream_record(theirs))
}

#[test]
fn records_read_as_aws_lambda_events_reads_them() {
    let keys = json!({"pk": {"S": "a"}});
    let image = json!({"pk": {"S": "a"}, "n": {"N": "1"}});
    let base = json!({
        "ApproximateCreationDateTime": 1_700_000_000,
        "Keys": keys,
        "NewImage": image,
        "OldImage": image,
        "SequenceNumber": "100",
        "SizeBytes": 10,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    });
    let mut cases = vec![base.clone()];
    let with = |k: &str, v: Json| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = base.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    cases.push(with(
        "ApproximateCreationDateTime",
        json!(1_700_000_000.999),
    ));
    cases.push(with("ApproximateCreationDateTime", json!(0)));
    cases.push(without("ApproximateCreationDateTime"));
    cases.push(without("SequenceNumber"));
    cases.push(with("Keys", json!({})));
    cases.push(with("Keys", json!(null)));
    cases.push(with("NewImage", json!({})));
    cases.push(with("NewImage", json!(null)));
    cases.push(without("NewImage"));
    cases.push(without("OldImage"));
    for dynamodb in cases {
        for name in ["INSERT", "MODIFY", "REMOVE", "SOMETHING_NEW"] {
            let mut rec = record(dynamodb.clone());
            rec["eventName"] = json!(name);
            let (mine, theirs) = both(&rec);
            assert_eq!(mine, theirs, "{rec}");
        }
    }
    // TTL deletes are told apart the same way.
    let mut rec = record(base);
    rec["eventName"] = json!("REMOVE");
    rec["userIdentity"] = json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"});
    let (mine, theirs) = both(&rec);
    assert!(mine.as_ref().unwrap().ttl);
    assert_eq!(mine, theirs);
}

#[test]
fn a_whole_batch_with_a_bad_image_is_refused_by_both_readers() {
    let rec = record(json!({
        "ApproximateCreationDateTime": 1,
        "Keys": {"pk": {"S": "a"}},
        "NewImage": {"pk": {"Q": "a"}},
        "SequenceNumber": "1",
        "SizeBytes": 1,
    }));
    let text = json!({ "Records": [rec] }).to_string();
    assert!(serde_json::from_str::<StreamEvent<'_>>(&text).is_err());
    assert!(serde_json::from_str::<aws_lambda_events::event::dynamodb::Event>(&text).is_err());
}

/// The fast path's invariant: it answers only what the serde check would
/// answer, with the same count; otherwise it is not sure (`None`).
fn agrees(text: &str) -> Result<(), TestCaseError> {
    if let Some(n) = super::fast::count(text) {
        let serde = check_with_serde(text);
        prop_assert!(
            matches!(serde, Ok(m) if m == n),
            "fast path accepted {text:?} with {n} attributes, serde check: {serde:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Valid items, compact and spread with whitespace, and then edited a
    /// few characters at a time: wherever the fast path answers, it gives
    /// the serde check's answer. (Without the fast path's own checks, such
    /// as the one-tag rule or the nesting limit, edits find a text it
    /// would accept and serde refuses.)
    #[test]
    fn the_fast_image_check_answers_only_as_the_serde_check(
        image in item(),
        pretty in any::<bool>(),
        edits in prop::collection::vec(edit(), 0..4),
    ) {
        let text = if pretty {
            serde_json::to_string_pretty(&image).unwrap()
        } else {
            serde_json::to_string(&image).unwrap()
        };
        // Unedited, it is answered fast unless it has a `\u` escape (which
        // serde_json writes for control characters).
        if !text.contains("\\u") {
            prop_assert_eq!(super::fast::count(&text), Some(image.len()), "{}", text);
        }
        agrees(&apply(&text, &edits))?;
    }

    #[test]
    fn the_fast_image_check_agrees_near_the_grammar(
        image in near_dynamo_json(),
        edits in prop::collection::vec(edit(), 0..3),
    ) {
        let text = image.to_string();
        agrees(&text)?;
        agrees(&apply(&text, &edits))?;
    }
}

#[test]
fn the_fast_image_check_leaves_what_it_is_not_sure_of_to_serde() {
    let fast = super::fast::count;
    // Answered fast, as serde answers.
    for text in [
        "{}",
        " {\t\"a\" :\n{ \"M\" : { } } }\r\n",
        r#"{"a":{"L":[]},"b":{"SS":[]},"c":{"BS":["AAE=", ""]}}"#,
        r#"{"a":{"S":"x"},"a":{"N":"1"}}"#,
        r#"{"a":{"NULL":false},"b":{"BOOL":true}}"#,
        r#"{"q\"\\\/\b\f\n\r\t":{"S":"it's \"quoted\" \\ /"}}"#,
        "{\"é\":{\"S\":\"naïve 🦀\"}}",
        &nested(MAX_NESTING),
        &json!({"b": {"B": "AAEC".repeat(300)}}).to_string(),
    ] {
        let n = check_with_serde(text).unwrap();
        assert_eq!(fast(text), Some(n), "{text}");
    }
    // Left to serde: it accepts these, or refuses them with its own error.
    for text in [
        r#"{"a":{"\u0053":"escaped tag"}}"#,
        r#"{"a":{"S":"\u00e9"}}"#,
        r#"{"\ud83e\udd80":{"S":"x"}}"#,
        r#"{"a":{"S":"\ud800"}}"#,
        r#"{"a":{"B":"QUF\u0042"}}"#,
        "{\"a\":{\"S\":\"\x01\"}}",
        &nested(MAX_NESTING + 1),
        r#"{"a":{"BOOL":tru}}"#,
        r#"{"a":{"BOOL":truex}}"#,
        r#"{"a":{"L":[{"S":"x"},]}}"#,
        r#"{"a":{"S":"x"},}"#,
        r#"{"a":{"S":"x"}} x"#,
        r#"{"a":{"S":"x"#,
        "",
    ]
    .into_iter()
    .chain(REFUSED_EDGES)
    {
        assert_eq!(fast(text), None, "{text}");
    }
    assert!(check(r#"{"a":{"\u0053":"escaped tag"}}"#).is_ok());
    assert!(check(r#"{"a":{"S":"\ud800"}}"#).is_err());
}

#[test]
fn the_fast_image_check_keeps_dynamodbs_nesting_limit_for_lists_too() {
    for mixed in [false, true] {
        let deepest = nested_lists(MAX_NESTING, mixed);
        assert_eq!(super::fast::count(&deepest), Some(1), "{deepest}");
        assert_eq!(check_with_serde(&deepest).unwrap(), 1);
        let deeper = nested_lists(MAX_NESTING + 1, mixed);
        assert_eq!(super::fast::count(&deeper), None, "{deeper}");
        assert!(check_with_serde(&deeper).is_err());
    }
}

#[test]
fn the_fast_image_checks_string_scan_stops_at_every_byte_that_matters() {
    // Each byte that ends a string's plain run (and DEL, which does not),
    // at every offset of the eight-byte loop and its tail, in strings of
    // several lengths.
    let mut special: Vec<u8> = (0u8..0x20).collect();
    special.extend([b'"', b'\\', 0x7f]);
    for len in [1usize, 7, 8, 9, 15, 16, 17, 23, 24, 25, 40] {
        for at in 0..len {
            for &b in &special {
                let mut value = vec![b'x'; len];
                value[at] = b;
                let text = format!(
                    "{{\"a\":{{\"S\":\"{}\"}}}}",
                    String::from_utf8(value).unwrap()
                );
                let fast = super::fast::count(&text);
                if let Some(n) = fast {
                    assert_eq!(check_with_serde(&text).ok(), Some(n), "{text:?}");
                }
                // A raw control character, or a quote that ends the string
                // early, is never answered fast.
                if b < 0x20 || b == b'"' {
                    assert_eq!(fast, None, "{text:?}");
                }
                // Nor a plain string whose end the scan overshoots or
                // stops short of: DEL, and an escape it must step over.
                if b == 0x7f {
                    assert_eq!(fast, Some(1), "{text:?}");
                }
            }
        }
    }
}

#[test]
fn the_fast_image_checks_string_scan_stops_at_the_first_of_several_in_a_word() {
    // Escapes and the closing quote close together, at every offset of
    // the eight-byte word: the scan stops at the first, every time.
    for pad in 0..17 {
        for tail in [r#"\"\\""#, r#"\\\"x""#, r#"\n\t\/""#, r#"a\"b\"c""#] {
            let text = format!("{{\"a\":{{\"S\":\"{}{tail}}}}}", "x".repeat(pad));
            assert_eq!(check_with_serde(&text).ok(), Some(1), "{text}");
            assert_eq!(super::fast::count(&text), Some(1), "{text}");
        }
    }
}

#[test]
fn the_fast_image_check_decodes_base64_as_serde_does_at_its_buffers_edge() {
    for len in [508usize, 512, 516] {
        let valid = "A".repeat(len);
        let mut bad_last = valid.clone();
        bad_last.replace_range(len - 1.., "!");
        let mut bad_pad = "A".repeat(len - 2);
        bad_pad.push_str("=A");
        let mut short_pad = "A".repeat(len - 1);
        short_pad.push('=');
        for value in [valid, bad_last, bad_pad, short_pad] {
            for text in [
                json!({"b": {"B": value}}).to_string(),
                json!({"b": {"BS": [value]}}).to_string(),
            ] {
                let serde = check_with_serde(&text).ok();
                match super::fast::count(&text) {
                    Some(n) => assert_eq!(serde, Some(n), "{text}"),
                    None => assert_eq!(serde, None, "{text}"),
                }
            }
        }
    }
}
