use super::*;
use crate::envelope::{decode, encode_event, header, into_string, FOOTER, VERSION};
use crate::event::{from_stream_record, Op};
use crate::item::AttributeValue as V;
use proptest::prelude::*;
use serde_json::{json, Value as Json};

/// What serde_dynamo (the applier's reader, and aws_lambda_events') makes
/// of an image.
fn dynamo(text: &str) -> Result<Attrs, serde_json::Error> {
    serde_json::from_str(text)
}

fn raw(text: &str) -> Result<RawImage<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

/// A JSON tree in (and around) DynamoDB JSON's grammar: type tags, a
/// foreign key, every JSON kind, base64 that decodes and that does not.
fn near_dynamo_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(json!("AAE=")),
        Just(json!("not base64!")),
        Just(json!("1.5")),
        Just(json!("")),
        Just(json!(7)),
        Just(json!(true)),
        Just(json!(null)),
    ];
    leaf.prop_recursive(5, 40, 4, |inner| {
        let tag = prop_oneof![
            Just("S"),
            Just("N"),
            Just("B"),
            Just("BOOL"),
            Just("NULL"),
            Just("M"),
            Just("L"),
            Just("SS"),
            Just("NS"),
            Just("BS"),
            Just("x"),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Json::Array),
            prop::collection::vec((tag, inner), 0..3).prop_map(|kv| {
                Json::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// A valid item of every type.
fn item() -> impl Strategy<Value = Attrs> {
    let scalar = prop_oneof![
        any::<String>().prop_map(V::S),
        any::<i64>().prop_map(|n| V::N(n.to_string())),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(V::B),
        any::<bool>().prop_map(V::Bool),
        Just(V::Null(true)),
        prop::collection::vec("[a-z\u{FFFE}\u{FFFF}]{1,4}", 1..3).prop_map(V::Ss),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..4), 1..3).prop_map(V::Bs),
    ];
    let value = scalar.prop_recursive(3, 20, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(V::L),
            prop::collection::hash_map("[a-z]{1,3}", inner, 0..3).prop_map(V::M),
        ]
    });
    prop::collection::hash_map("[a-zA-Z_\u{e9}]{1,6}", value, 0..6)
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

/// Texts serde_dynamo refuses, at the grammar's edges: no tag, two tags,
/// a tag's value of the wrong kind, bad base64, an unknown tag, not an
/// object, not closed.
const REFUSED_EDGES: [&str; 11] = [
    r#"{"a":{}}"#,
    r#"{"a":{"S":"x","N":"1"}}"#,
    r#"{"a":{"S":1}}"#,
    r#"{"a":{"N":null}}"#,
    r#"{"a":{"B":"@@"}}"#,
    r#"{"a":{"BS":["AAE", "AAE="]}}"#,
    r#"{"a":{"X":"1"}}"#,
    r#"{"a":{"L":[{"S":"x"},{"Q":1}]}}"#,
    r#"[]"#,
    r#""x""#,
    r#"{"a":{"S":"x"}"#,
];

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

/// `{"a": {"M": {"a": … {"S":"x"}}}}` with `levels` maps in all.
fn nested(levels: u32) -> String {
    let mut v = json!({"S": "x"});
    for _ in 0..levels {
        v = json!({"M": {"a": v}});
    }
    json!({ "a": v }).to_string()
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

/// Bytes that move text in and out of the grammar: structure, whitespace,
/// escapes, tag letters, literals' letters, base64's alphabet and padding.
const MUTATION_BYTES: &[u8] = b"{}[]:,\" \t\n\r\\/u0aSNBLMOUTtrufalsen=+\x00\x01\x0b\x0c\x1f\x7f";

/// One edit of a text: insert, remove or replace one character.
#[derive(Debug, Clone)]
enum Edit {
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Replace(prop::sample::Index, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop::sample::select(MUTATION_BYTES);
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Remove),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        match *e {
            Edit::Insert(i, b) => chars.insert(i.index(chars.len() + 1), char::from(b)),
            Edit::Remove(i) if !chars.is_empty() => {
                chars.remove(i.index(chars.len()));
            }
            Edit::Replace(i, b) if !chars.is_empty() => {
                let at = i.index(chars.len());
                chars[at] = char::from(b);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
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

/// `{"a": …}` with `levels` lists (`L`), or maps and lists in turn, in all.
fn nested_lists(levels: u32, mixed: bool) -> String {
    let mut v = json!({"S": "x"});
    for i in 0..levels {
        v = if mixed && i % 2 == 1 {
            json!({"M": {"a": v}})
        } else {
            json!({"L": [v]})
        };
    }
    json!({ "a": v }).to_string()
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
    for len in [1usize, 7, 8, 9, 16, 17, 40] {
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
            }
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
