//! A realistic workload as Lambda hands it over (JSON text), and canned
//! answers to the AWS calls the handlers make: shared by the handler
//! benchmark (`crates/applier/benches/handlers.rs`) and the cold-start
//! bench (`crates/e2e/src/bin/coldstart.rs`), so both measure the same
//! events.

use relay_core::config::{ApplierConfig, ForwarderConfig};
use serde_json::{json, Value};

use super::QueuedMessage;

/// Distinct keys in [`stream_json`].
pub const KEYS: u64 = 10_000;
/// Start of the synthetic stream, in epoch seconds.
pub const T0_S: i64 = 1_793_750_400;
/// The migration id of [`CONTROL_ITEM`].
pub const MIGRATION: &str = "bench";

/// A ~1 KB item of every DynamoDB type, as stream JSON.
pub fn image(k: u64, version: usize) -> Value {
    json!({
        "pk": {"S": format!("customer#{k:08}")},
        "sk": {"N": (k % 97).to_string()},
        "version": {"N": version.to_string()},
        "status": {"S": "active"},
        "active": {"BOOL": true},
        "deleted_at": {"NULL": true},
        "price": {"N": "1234.5678"},
        "blob": {"B": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
        "tags": {"SS": ["a", "b", "c"]},
        "scores": {"NS": ["1", "2.5", "-3"]},
        "bins": {"BS": ["AQI=", "AwQ="]},
        "address": {"M": {
            "street": {"S": "1 Infinite Loop"},
            "zip": {"N": "95014"},
            "geo": {"L": [{"N": "37.33"}, {"N": "-122.03"}]}
        }},
        "history": {"L": [{"S": "created"}, {"S": "paid"}, {"N": "3"}, {"BOOL": false}]},
        "payload": {"S": "x".repeat(560)},
    })
}

/// A DynamoDB stream event of `n` changes over [`KEYS`] keys (10% INSERT,
/// 80% MODIFY, 10% REMOVE, NEW_AND_OLD_IMAGES, ~2.4 KB a record) as Lambda
/// delivers it, as JSON text.
pub fn stream_json(n: usize, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    let arn = super::events::stream_arn("Orders");
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let k = rng.u64(0..KEYS);
            let keys =
                json!({"pk": {"S": format!("customer#{k:08}")}, "sk": {"N": (k % 97).to_string()}});
            let (name, new, old) = match i % 10 {
                0 => ("INSERT", Some(image(k, i)), None),
                9 => ("REMOVE", None, Some(image(k, i - 1))),
                _ => ("MODIFY", Some(image(k, i)), Some(image(k, i - 1))),
            };
            let mut d = json!({
                "ApproximateCreationDateTime": T0_S + (i as i64) / 100,
                "Keys": keys,
                "SequenceNumber": format!("{:021}", 1_000_000 + i),
                "SizeBytes": 2048,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            });
            if let Some(n) = new {
                d["NewImage"] = n;
            }
            if let Some(o) = old {
                d["OldImage"] = o;
            }
            json!({
                "eventID": format!("{i:032x}"),
                "eventName": name,
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": d,
                "eventSourceARN": arn,
            })
        })
        .collect();
    json!({ "Records": records }).to_string()
}

/// An SQS FIFO event of `(body, group)` messages, as Lambda delivers it,
/// as JSON text.
pub fn sqs_json(messages: &[(String, String)]) -> String {
    let queued: Vec<QueuedMessage> = messages
        .iter()
        .enumerate()
        .map(|(i, (body, group))| QueuedMessage {
            message_id: format!("m-{i}"),
            group_id: group.clone(),
            dedup_id: format!("d-{i}"),
            body: body.clone(),
            receive_count: 1,
            sequence: i as u64,
        })
        .collect();
    super::events::sqs_event_value(&queued).to_string()
}

fn config_env(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
}

/// The forwarder's configuration for this workload (migration
/// [`MIGRATION`]), metrics as `metrics_mode` (`METRICS_MODE`: emf, off, …).
pub fn forwarder_config(metrics_mode: &str) -> ForwarderConfig {
    ForwarderConfig::from_env(&config_env(vec![
        (
            "QUEUE_URL",
            "https://sqs.us-east-1.amazonaws.com/1/relay.fifo".into(),
        ),
        ("MIGRATION_ID", MIGRATION.into()),
        ("METRICS_MODE", metrics_mode.into()),
    ]))
    .unwrap_or_else(|e| panic!("workload forwarder config: {e}"))
}

/// The applier's configuration for this workload: source `Orders`, target
/// `OrdersV2`, no transform, metrics as `metrics_mode`.
pub fn applier_config(metrics_mode: &str) -> ApplierConfig {
    ApplierConfig::from_env(&config_env(vec![
        ("TARGET_TABLE", "OrdersV2".into()),
        ("SOURCE_TABLE", "Orders".into()),
        ("CONTROL_TABLE", "control".into()),
        ("MIGRATION_ID", MIGRATION.into()),
        ("METRICS_MODE", metrics_mode.into()),
    ]))
    .unwrap_or_else(|e| panic!("workload applier config: {e}"))
}

/// The control item of migration [`MIGRATION`] as a GetItem answer:
/// version 1, cutoff 0 (nothing is skipped), not paused.
pub const CONTROL_ITEM: &str =
    r#"{"Item":{"migration":{"S":"bench"},"cutoff_ms":{"N":"0"},"version":{"N":"1"}}}"#;

/// The body of a successful answer to the AWS JSON-protocol call named by
/// `target` (its `X-Amz-Target`) with request body `body`, or `None` for a
/// call the handlers do not make. SendMessageBatch accepts every entry: it
/// echoes each `"Id":"…"` of the request (the message bodies are JSON
/// strings inside it, their quotes escaped, so they never match);
/// BatchWriteItem leaves nothing unprocessed; GetItem returns
/// [`CONTROL_ITEM`]; UpdateItem, PutItem and DeleteItem succeed.
pub fn canned_answer(target: &str, body: &str) -> Option<String> {
    Some(match target {
        "AmazonSQS.SendMessageBatch" => {
            let mut out = String::from(r#"{"Successful":["#);
            for (n, (at, _)) in body.match_indices(r#""Id":""#).enumerate() {
                let rest = &body[at + 6..];
                let id = &rest[..rest.find('"').unwrap_or(0)];
                if n > 0 {
                    out.push(',');
                }
                out.push_str(r#"{"Id":""#);
                out.push_str(id);
                out.push_str(r#"","MessageId":"00000000-0000-0000-0000-000000000000","MD5OfMessageBody":"d41d8cd98f00b204e9800998ecf8427e","SequenceNumber":"1"}"#);
            }
            out.push_str(r#"],"Failed":[]}"#);
            out
        }
        "DynamoDB_20120810.GetItem" => CONTROL_ITEM.to_string(),
        "DynamoDB_20120810.BatchWriteItem" => r#"{"UnprocessedItems":{}}"#.to_string(),
        "DynamoDB_20120810.UpdateItem"
        | "DynamoDB_20120810.PutItem"
        | "DynamoDB_20120810.DeleteItem" => "{}".to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_batch_answer_echoes_every_entry_id_and_nothing_from_the_bodies() {
        let body = json!({
            "QueueUrl": "q",
            "Entries": [
                {"Id": "0", "MessageBody": "{\"Id\":\"x\"}", "MessageGroupId": "g"},
                {"Id": "1", "MessageBody": "b", "MessageGroupId": "g"},
            ]
        })
        .to_string();
        let a: Value =
            serde_json::from_str(&canned_answer("AmazonSQS.SendMessageBatch", &body).unwrap())
                .unwrap();
        let ids: Vec<&str> = a["Successful"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["0", "1"]);
        assert!(canned_answer("DynamoDB_20120810.Scan", "{}").is_none());
    }

    #[test]
    fn workload_events_parse_as_lambda_events() {
        let s: aws_lambda_events::event::dynamodb::Event =
            serde_json::from_str(&stream_json(20, 1)).unwrap();
        assert_eq!(s.records.len(), 20);
        let text = stream_json(20, 1);
        let f: relay_core::stream::StreamEvent<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!(f.records.len(), 20);
        // The benchmarks' batches take the forwarder's one-pass reader
        // (BENCHMARKS.md's figures are of that path), and it reads them
        // as serde_json does.
        let big = stream_json(500, 7);
        let one_pass = relay_core::stream::read(&big).expect("read in one pass");
        let serde: relay_core::stream::StreamEvent<'_> = serde_json::from_str(&big).unwrap();
        assert_eq!(one_pass.records.len(), serde.records.len());
        for (a, b) in one_pass.records.iter().zip(&serde.records) {
            assert_eq!(a.event_id, b.event_id);
            assert_eq!(a.event_name, b.event_name);
            assert_eq!(a.event_source_arn, b.event_source_arn);
            assert_eq!(a.table_name, b.table_name);
            assert_eq!(
                format!("{:?}", a.user_identity),
                format!("{:?}", b.user_identity)
            );
            assert_eq!(a.change.time_ms, b.change.time_ms);
            assert_eq!(a.change.keys, b.change.keys);
            assert_eq!(a.change.sequence_number, b.change.sequence_number);
            // Text and emptiness (no map in an image's `Debug`).
            assert_eq!(
                format!("{:?}", a.change.new_image),
                format!("{:?}", b.change.new_image)
            );
            assert_eq!(
                format!("{:?}", a.change.old_image),
                format!("{:?}", b.change.old_image)
            );
        }
        let q: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_str(&sqs_json(&[("b".into(), "g".into())])).unwrap();
        assert_eq!(q.records[0].body.as_deref(), Some("b"));
    }
}
