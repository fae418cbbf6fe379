use super::*;
use crate::testgen::{apply, edit, item, near_dynamo_json};
use proptest::prelude::*;
use serde_json::{json, Value as Json};
use std::cell::Cell;

thread_local! {
    /// Images `read` handed to the whole check (its fast pass was not sure).
    pub(super) static WHOLE_CHECKS: Cell<usize> = const { Cell::new(0) };
}

/// How many images reading `text` handed to the whole check.
fn whole_checks(text: &str) -> usize {
    WHOLE_CHECKS.with(|n| n.set(0));
    drop(read(text));
    WHOLE_CHECKS.with(Cell::get)
}

/// A batch's records as values that compare (a `HashMap`'s `Debug` order
/// is its hasher's), images by their text and emptiness.
type Seen = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<(String, String)>,
    i64,
    Attrs,
    Option<(String, bool)>,
    Option<(String, bool)>,
    Option<String>,
);

fn seen(e: &StreamEvent<'_>) -> Vec<Seen> {
    let image = |i: &Option<RawImage<'_>>| i.map(|i| (i.get().to_string(), i.empty));
    e.records
        .iter()
        .map(|r| {
            (
                r.event_id.clone(),
                r.event_name.to_string(),
                r.event_source_arn.as_deref().map(str::to_string),
                r.table_name.as_deref().map(str::to_string),
                r.user_identity
                    .as_ref()
                    .map(|u| (u.type_.clone(), u.principal_id.clone())),
                r.change.time_ms,
                r.change.keys.clone(),
                image(&r.change.new_image),
                image(&r.change.old_image),
                r.change.sequence_number.clone(),
            )
        })
        .collect()
}

/// The module's invariant for one text: where `read` answers, serde_json
/// reads the same batch.
fn agrees(text: &str) -> Result<bool, TestCaseError> {
    let Some(mine) = read(text) else {
        return Ok(false);
    };
    let theirs = serde_json::from_str::<StreamEvent<'_>>(text);
    prop_assert!(
        theirs.is_ok(),
        "read accepted a batch serde_json refuses ({theirs:?}): {text:?}"
    );
    prop_assert_eq!(seen(&mine), seen(&theirs.unwrap()), "{}", text);
    Ok(true)
}

/// An object written field by field (names may repeat, and may be
/// escaped: `\u0065` for a leading `e`), compact or spread out.
fn object(fields: &[(String, Json)], escape: Option<usize>, pretty: bool) -> String {
    let value = |v: &Json| {
        if pretty {
            serde_json::to_string_pretty(v).unwrap()
        } else {
            v.to_string()
        }
    };
    let (sep, colon) = if pretty {
        (",\r\n\t ", " :\t")
    } else {
        (",", ":")
    };
    let body: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, (name, v))| {
            let name = match escape {
                Some(e) if e == i => format!("\\u00{:02x}{}", name.as_bytes()[0], &name[1..]),
                _ => name.clone(),
            };
            format!("\"{name}\"{colon}{}", value(v))
        })
        .collect();
    if pretty {
        format!("{{\n  {}\n}}", body.join(sep))
    } else {
        format!("{{{}}}", body.join(sep))
    }
}

fn image() -> impl Strategy<Value = Json> {
    prop_oneof![
        6 => item().prop_map(|i| serde_json::to_value(i).unwrap()),
        1 => near_dynamo_json(),
        1 => Just(json!(null)),
        1 => Just(json!({})),
    ]
}

/// Fields as a record or its `dynamodb` part: each present or not,
/// in any order, one maybe twice, one name maybe escaped.
fn fields(
    each: Vec<BoxedStrategy<(String, Json)>>,
) -> impl Strategy<Value = (Vec<(String, Json)>, Option<usize>)> {
    let n = each.len();
    (
        each,
        prop::collection::vec(any::<u8>(), n),
        prop::option::weighted(0.1, 0..n),
        prop::option::weighted(0.05, 0..n),
    )
        .prop_flat_map(|(all, keep, twice, escape)| {
            let mut chosen: Vec<(String, Json)> = all
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k > 25)
                .map(|(f, _)| f.clone())
                .collect();
            if let Some(t) = twice {
                chosen.push(all[t].clone());
            }
            let escape = escape.filter(|e| *e < chosen.len());
            (Just(chosen).prop_shuffle(), Just(escape))
        })
}

fn named(
    name: &'static str,
    v: impl Strategy<Value = Json> + 'static,
) -> BoxedStrategy<(String, Json)> {
    v.prop_map(move |v| (name.to_string(), v)).boxed()
}

fn change() -> impl Strategy<Value = String> {
    let time = prop::sample::select(vec![
        json!(1_700_000_000),
        json!(1_700_000_000.999),
        json!(1.7e9),
        json!(-3),
        json!(0),
        json!(1e300),
        json!("1700000000"),
        json!(null),
    ]);
    let keys = prop_oneof![
        3 => item().prop_map(|i| serde_json::to_value(i).unwrap()),
        1 => near_dynamo_json(),
        1 => Just(json!(null)),
    ];
    let seq = prop::sample::select(vec![json!("4210000000000000001"), json!(null), json!(12)]);
    let each = vec![
        named("ApproximateCreationDateTime", time),
        named("Keys", keys),
        named("NewImage", image()),
        named("OldImage", image()),
        named("SequenceNumber", seq),
        named(
            "SizeBytes",
            prop::sample::select(vec![json!(120), json!(-0.5e-3)]),
        ),
        named("StreamViewType", Just(json!("NEW_AND_OLD_IMAGES"))),
        named("x", near_dynamo_json()),
    ];
    (fields(each), any::<bool>()).prop_map(|((f, e), pretty)| object(&f, e, pretty))
}

fn record() -> impl Strategy<Value = String> {
    let text = |v: Vec<Json>| prop::sample::select(v);
    let each = vec![
        named(
            "eventID",
            text(vec![json!("c4ca4238a0b9"), json!(5), json!(null)]),
        ),
        named(
            "eventName",
            text(vec![
                json!("INSERT"),
                json!("MODIFY"),
                json!("REMOVE"),
                json!("A\"B"),
            ]),
        ),
        named(
            "eventSourceARN",
            text(vec![
                json!("arn:aws:dynamodb:us-east-1:1:table/T/stream/x"),
                json!(null),
                json!(7),
            ]),
        ),
        named(
            "tableName",
            text(vec![json!("T"), json!("T\\u"), json!(null)]),
        ),
        named(
            "userIdentity",
            text(vec![
                json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"}),
                json!({"type": "Service", "x": [1, {"y": null}]}),
                json!(null),
                json!("Service"),
            ]),
        ),
        named("awsRegion", Just(json!("us-east-1"))),
        named(
            "eventVersion",
            text(vec![json!("1.1"), json!(1.1), json!([])]),
        ),
    ];
    (fields(each), change(), any::<bool>(), any::<bool>()).prop_map(
        |((f, escape), change, pretty, dynamodb)| {
            let text = object(&f, escape, pretty);
            if !dynamodb {
                return text;
            }
            // The `dynamodb` part, written in as text (it is one already).
            let at = if text.len() > 2 { text.len() - 1 } else { 1 };
            let comma = if text.len() > 2 { "," } else { "" };
            format!("{}{comma}\"dynamodb\":{change}{}", &text[..at], &text[at..])
        },
    )
}

fn batch() -> impl Strategy<Value = String> {
    (prop::collection::vec(record(), 0..4), 0..8u8).prop_map(|(records, extra)| match extra {
        0 => format!("{{\"Records\":[{}],\"Records\":[]}}", records.join(",")),
        1 => format!(
            "{{\"x\":{{}},\"Records\": [ {} ] }}\n",
            records.join(" ,\n")
        ),
        2 => format!("{{\"Records\":[{}]}} x", records.join(",")),
        3 => format!("[[{}]]", records.join(",")),
        _ => format!("{{\"Records\":[{}]}}", records.join(",")),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Batches of records with fields missing, twice, escaped, of the
    /// wrong kind, in any order: wherever `read` answers, serde_json reads
    /// the same batch (`the_generated_batches_are_mostly_read_in_one_pass`
    /// shows it answers for most of them).
    #[test]
    fn read_answers_only_as_serde_json_reads(text in batch()) {
        agrees(&text)?;
    }

    /// The same batches edited a few characters at a time.
    #[test]
    fn read_answers_only_as_serde_json_reads_edited_batches(
        text in batch(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        agrees(&apply(&text, &edits))?;
    }
}

/// A batch as DynamoDB sends it (three records, every field).
fn plain_batch() -> String {
    let rec = |i: u32, name: &str, time: Json| {
        json!({
            "eventID": format!("e{i}"),
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": time,
                "Keys": {"pk": {"S": format!("k{i}")}, "sk": {"N": "1"}},
                "NewImage": {"pk": {"S": format!("k{i}")}, "sk": {"N": "1"}, "b": {"B": "AAE="},
                    "l": {"L": [{"M": {"x": {"NULL": true}}}, {"BS": ["AA=="]}]}, "s": {"S": "caf\u{e9} \"q\""}},
                "OldImage": {},
                "SequenceNumber": format!("{}", 4_200_000_000_000_000_000u64 + u64::from(i)),
                "SizeBytes": 120,
                "StreamViewType": "NEW_AND_OLD_IMAGES"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/T/stream/x",
            "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
        })
    };
    json!({"Records": [
        rec(1, "INSERT", json!(1_700_000_000)),
        rec(2, "MODIFY", json!(1.7e9)),
        rec(3, "REMOVE", json!(1_700_000_000.5)),
    ]})
    .to_string()
}

/// Where the fast reader is meant to answer, it does: DynamoDB's own
/// batches, compact and spread out.
#[test]
fn a_plain_batch_is_read_in_one_pass() {
    let text = plain_batch();
    assert!(agrees(&text).unwrap(), "not read: {text}");
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Json>(&text).unwrap()).unwrap();
    assert!(agrees(&pretty).unwrap(), "not read: {pretty}");
    // Every image read once, by the fast pass.
    assert_eq!(whole_checks(&text), 0);
    assert_eq!(whole_checks(&pretty), 0);
    let e = read(&text).unwrap();
    assert_eq!(e.records.len(), 3);
    assert!(e.records[0].change.old_image.unwrap().empty);
    assert!(matches!(e.records[0].event_name, Cow::Borrowed("INSERT")));
    assert_eq!(e.records[1].change.time_ms, 1_700_000_000_000);
}

/// An image the check's fast path is not sure of (a `\u` escape, a
/// number where a string goes) is found by `skip` and given to the whole
/// check: accepted as serde_json accepts it, or the batch is left to it.
#[test]
fn an_image_the_fast_check_is_not_sure_of_goes_to_the_whole_check() {
    let text = plain_batch().replace("caf\u{e9}", "caf\\u00e9");
    assert!(text.contains("\\u00e9"));
    assert!(agrees(&text).unwrap());
    assert_eq!(whole_checks(&text), 3);
    // As deep as DynamoDB allows, and one level more (refused).
    for levels in [MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1] {
        let image = crate::testgen::nested(levels).replace(r#""x""#, r#""\u00e9""#);
        let text = plain_batch().replacen(r#""OldImage":{}"#, &format!(r#""OldImage":{image}"#), 1);
        assert_ne!(text, plain_batch());
        let ok = levels <= MAX_NESTING;
        assert_eq!(
            serde_json::from_str::<StreamEvent<'_>>(&text).is_ok(),
            ok,
            "{levels}"
        );
        assert_eq!(agrees(&text).unwrap(), ok, "{levels}");
        if ok {
            assert_eq!(whole_checks(&text), 1, "{levels}");
        }
    }
    // The deepest image the check accepts: a set's array in an attribute
    // at DynamoDB's last level (one container deeper than `nested`'s).
    let image = crate::testgen::nested(MAX_NESTING).replace(r#"{"S":"x"}"#, r#"{"SS":["\u00e9"]}"#);
    let text = plain_batch().replacen(r#""OldImage":{}"#, &format!(r#""OldImage":{image}"#), 1);
    assert!(agrees(&text).unwrap());
    assert_eq!(whole_checks(&text), 1);
    // An image that is not one (a number where a binary's string goes):
    // the whole check refuses it, and so the batch goes to serde_json.
    let bad = plain_batch().replacen(r#""b":{"B":"AAE="}"#, r#""b":{"B":1}"#, 1);
    assert_ne!(bad, plain_batch());
    assert!(whole_checks(&bad) >= 1);
    assert!(read(&bad).is_none());
    assert!(serde_json::from_str::<StreamEvent<'_>>(&bad).is_err());
}

/// serde_json stops at 128 levels from the top for what it builds (not
/// for what it ignores); `skip` is not sure past [`SKIP_NESTING`] below a
/// field, so a value read again from its own text, where the count starts
/// at 0, is never one serde_json refuses for its depth in the batch.
#[test]
fn values_nested_deeper_than_skip_goes_are_left_to_serde_json() {
    let with = |levels: usize| {
        let deep = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        plain_batch().replace(
            r#""awsRegion":"us-east-1""#,
            &format!(r#""awsRegion":{deep}"#),
        )
    };
    let limit = SKIP_NESTING as usize;
    assert!(agrees(&with(limit)).unwrap());
    assert!(read(&with(limit + 1)).is_none());
    assert!(serde_json::from_str::<StreamEvent<'_>>(&with(200)).is_ok());
    // Keys (read again from their own text), each level two containers
    // and two more for the item and the innermost value: as deep as `skip`
    // goes, then one level past it; and deep enough that serde_json
    // refuses them in the batch (4 levels down) but not alone.
    let with_keys = |levels: u32| {
        let keys = crate::testgen::nested(levels);
        let text = plain_batch().replacen(
            r#""Keys":{"pk":{"S":"k1"},"sk":{"N":"1"}}"#,
            &format!(r#""Keys":{keys}"#),
            1,
        );
        assert_ne!(text, plain_batch());
        (keys, text)
    };
    let deepest = (SKIP_NESTING - 2) / 2;
    assert!(agrees(&with_keys(deepest).1).unwrap());
    let (_, text) = with_keys(deepest + 1);
    assert!(read(&text).is_none());
    assert!(serde_json::from_str::<StreamEvent<'_>>(&text).is_ok());
    let (keys, text) = with_keys(62);
    assert!(serde_json::from_str::<Attrs>(&keys).is_ok());
    assert!(serde_json::from_str::<StreamEvent<'_>>(&text).is_err());
    assert!(read(&text).is_none());
}

/// `skip`'s numbers are JSON's: what serde_json refuses, it is not sure of.
#[test]
fn skipped_numbers_are_jsons_numbers() {
    for (n, ok) in [
        ("0", true),
        ("-0", true),
        ("120", true),
        ("-0.5e-3", true),
        ("1E+2", true),
        ("1e400", true),
        ("01", false),
        ("1.", false),
        (".5", false),
        ("-", false),
        ("+1", false),
        ("1e", false),
        ("1e+", false),
        ("0x1", false),
        ("1.5.2", false),
        ("--1", false),
        ("Infinity", false),
        ("NaN", false),
    ] {
        let text = plain_batch().replace(r#""SizeBytes":120"#, &format!(r#""SizeBytes":{n}"#));
        assert_eq!(
            serde_json::from_str::<StreamEvent<'_>>(&text).is_ok(),
            ok,
            "{n}"
        );
        assert_eq!(agrees(&text).unwrap(), ok, "{n}");
    }
}

/// Fields the derived reader refuses twice, and names it reads through
/// escapes, are left to it.
#[test]
fn a_field_twice_or_an_escaped_name_is_left_to_serde_json() {
    let twice = plain_batch().replacen(
        r#""eventName":"INSERT""#,
        r#""eventName":"INSERT","eventName":"MODIFY""#,
        1,
    );
    assert!(read(&twice).is_none());
    assert!(serde_json::from_str::<StreamEvent<'_>>(&twice).is_err());
    // Escaped, a name is still the field's (an optional one would
    // otherwise be skipped as unknown, and its value lost).
    for name in [
        "eventName",
        "eventSourceARN",
        "userIdentity",
        "NewImage",
        "Keys",
    ] {
        let escaped = plain_batch().replacen(
            &format!("\"{name}\""),
            &format!("\"\\u{:04x}{}\"", name.as_bytes()[0], &name[1..]),
            1,
        );
        assert_ne!(escaped, plain_batch());
        assert!(read(&escaped).is_none(), "{name}");
        assert!(
            serde_json::from_str::<StreamEvent<'_>>(&escaped).is_ok(),
            "{name}"
        );
    }
    // An unknown field twice is nothing to either reader.
    let unknown = plain_batch().replacen(
        r#""awsRegion":"us-east-1""#,
        r#""awsRegion":1,"awsRegion":[]"#,
        1,
    );
    assert!(agrees(&unknown).unwrap());
}

/// An image is written onto the queue exactly as it came, through
/// serde_json's raw fragment (`RAW_FRAGMENT`): a serde_json that named it
/// otherwise would write an object in its place.
#[test]
fn an_image_is_written_as_it_came() {
    let text = r#"{ "pk" : {"S":"a\"b\u00e9"},"n":{"N":"1"} }"#;
    let image = RawImage::new(text).unwrap();
    assert_eq!(serde_json::to_string(&image).unwrap(), text);
    let wrapped = serde_json::to_string(&json!({"a": 1}).as_object().map(|_| [image])).unwrap();
    assert_eq!(wrapped, format!("[{text}]"));
}

/// The property tests are not empty: of the generated batches serde_json
/// reads, `read` reads a good share (the rest hold what it leaves to
/// serde_json: escaped names, `\u` escapes in unknown fields' keys, …).
#[test]
fn the_generated_batches_are_mostly_read_in_one_pass() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut valid, mut read_too) = (0, 0);
    for _ in 0..400 {
        let text = batch().new_tree(&mut runner).unwrap().current();
        if serde_json::from_str::<StreamEvent<'_>>(&text).is_ok() {
            valid += 1;
            read_too += usize::from(agrees(&text).unwrap());
        }
    }
    eprintln!("{read_too} of {valid} valid batches read in one pass");
    assert!(valid >= 40, "{valid}");
    assert!(read_too * 10 >= valid * 6, "{read_too} of {valid}");
}

/// `skip`'s strings are serde_json's skipped strings: any four hex digits
/// after `\u`, no other escape, no control character.
#[test]
fn skipped_strings_are_serde_jsons_skipped_strings() {
    for (s, ok) in [
        (r#""a\"b\\c\/d\be\ff\ng\rh\ti""#, true),
        (r#""\u00e9\uD800\uDFFF\uFFFF\uabCD""#, true),
        (r#""\x""#, false),
        (r#""\u12G4""#, false),
        (r#""\u12""#, false),
        (r#""\'""#, false),
        ("\"a\tb\"", false),
        ("\"a\u{1}b\"", false),
    ] {
        for at in [
            r#""awsRegion":"us-east-1""#,
            r#""StreamViewType":"NEW_AND_OLD_IMAGES""#,
        ] {
            let name = &at[..at.find(':').unwrap()];
            let text = plain_batch().replace(at, &format!("{name}:{s}"));
            assert_ne!(text, plain_batch());
            assert_eq!(
                serde_json::from_str::<StreamEvent<'_>>(&text).is_ok(),
                ok,
                "{s}"
            );
            assert_eq!(agrees(&text).unwrap(), ok, "{s}");
            // As a skipped object's key, too.
            let text = plain_batch().replace(at, &format!("{name}:{{{s}:1}}"));
            assert_eq!(
                serde_json::from_str::<StreamEvent<'_>>(&text).is_ok(),
                ok,
                "{s}"
            );
            assert_eq!(agrees(&text).unwrap(), ok, "{s}");
        }
    }
}
