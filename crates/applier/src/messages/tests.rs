use super::*;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// What the handler read before [`Messages`]: `SqsEvent`, then id, group
/// and body taken from it.
fn via_sqs_event(text: &str) -> Option<Messages> {
    serde_json::from_str::<SqsEvent>(text)
        .ok()
        .map(Messages::from)
}

fn direct(text: &str) -> Option<Messages> {
    serde_json::from_str::<Messages>(text).ok()
}

/// One message as Lambda writes it, every field present.
fn full(i: usize, body: &str, group: &str) -> Value {
    json!({
        "messageId": format!("id-{i}"),
        "receiptHandle": "AQEB…",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1700000000000",
            "SequenceNumber": format!("1880000000000000000{i}"),
            "MessageGroupId": group,
            "SenderId": "AIDA…",
            "MessageDeduplicationId": format!("d-{i}"),
            "ApproximateFirstReceiveTimestamp": "1700000000001"
        },
        "messageAttributes": {"k": {"stringValue": "v", "dataType": "String"}},
        "md5OfBody": "0f…",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q.fifo",
        "awsRegion": "us-east-1"
    })
}

#[test]
fn lambdas_event_reads_as_sqs_event_read_it() {
    let text = json!({"Records": [
        full(0, "{'v':2,'src':'T','ev':[]}", "g-1"),
        full(1, "b \"quoted\" \\ \n", "g-2"),
    ]})
    .to_string();
    let read = direct(&text).expect("read");
    assert_eq!(Some(&read), via_sqs_event(&text).as_ref());
    assert_eq!(read.records[1].id, "id-1");
    assert_eq!(read.records[1].group, "g-2");
    assert_eq!(read.records[1].body, "b \"quoted\" \\ \n");
}

#[test]
fn missing_and_null_fields_are_empty_as_before() {
    let text = json!({"Records": [
        {"messageId": null, "attributes": null, "body": null},
        {},
        {"messageId": "m", "attributes": {"SentTimestamp": "1"}},
    ]})
    .to_string();
    let read = direct(&text).expect("read");
    assert_eq!(Some(&read), via_sqs_event(&text).as_ref());
    assert!(read.records[..2]
        .iter()
        .all(|m| m.id.is_empty() && m.group.is_empty() && m.body.is_empty()));
    assert_eq!(read.records[2].id, "m");
}

/// A field of a generated message: absent, `null`, or a value.
fn field(value: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![Just(None), Just(Some(Value::Null)), value.prop_map(Some)]
}

fn text() -> impl Strategy<Value = Value> {
    "[ -~\u{e9}\u{1F600}\n\"\\\\']{0,12}".prop_map(Value::String)
}

prop_compose! {
    fn message()(
        id in field(text()),
        body in field(text()),
        group in field(text()),
        other in field(text()),
        attributes_null in any::<bool>(),
        extra in field(text()),
    ) -> Value {
        let mut m = Map::new();
        let put = |m: &mut Map<String, Value>, k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        put(&mut m, "messageId", id);
        put(&mut m, "body", body);
        put(&mut m, "eventSource", extra);
        let mut a = Map::new();
        put(&mut a, "MessageGroupId", group);
        put(&mut a, "SentTimestamp", other);
        m.insert(
            "attributes".into(),
            if attributes_null { Value::Null } else { Value::Object(a) },
        );
        Value::Object(m)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Wherever `SqsEvent` reads a text, [`Messages`] reads the same ids,
    /// groups and bodies from it.
    #[test]
    fn reads_what_sqs_event_reads(records in prop::collection::vec(message(), 0..6)) {
        let text = json!({"Records": records}).to_string();
        if let Some(before) = via_sqs_event(&text) {
            prop_assert_eq!(direct(&text), Some(before), "{}", text);
        }
    }
}
