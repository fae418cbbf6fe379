//! Builders of AWS-shaped Lambda events, for tests.

use aws_lambda_events::event::sqs::SqsEvent;
use relay_core::item::Attrs;
use relay_core::stream::StreamEvent;
use serde_json::{json, Value};

use super::QueuedMessage;

/// One stream record to build.
#[derive(Clone, Debug)]
pub struct Record {
    pub event_id: String,
    /// `INSERT`, `MODIFY` or `REMOVE`.
    pub event_name: String,
    pub seq: String,
    /// Seconds since the epoch.
    pub time_s: i64,
    pub keys: Attrs,
    pub new_image: Option<Attrs>,
    pub old_image: Option<Attrs>,
    pub ttl: bool,
}

/// The stream ARN used by [`stream_event`].
pub fn stream_arn(table: &str) -> String {
    format!("arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-11-01T00:00:00.000")
}

/// A DynamoDB stream event as Lambda delivers it (JSON text); read it as
/// the forwarder reads it with [`StreamBatch::event`].
pub fn stream_event(table: &str, records: &[Record]) -> StreamBatch {
    StreamBatch(stream_event_value(table, records).to_string())
}

/// A stream batch's text, which the forwarder's reading borrows from.
#[derive(Debug, Clone)]
pub struct StreamBatch(pub String);

impl StreamBatch {
    /// The batch read as the forwarder reads it (its images borrowed).
    pub fn event(&self) -> StreamEvent<'_> {
        serde_json::from_str(&self.0)
            .unwrap_or_else(|e| panic!("test stream event does not parse: {e}"))
    }
}

/// [`stream_event`] as JSON, before it is parsed.
pub fn stream_event_value(table: &str, records: &[Record]) -> Value {
    let arn = stream_arn(table);
    let recs: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut dynamodb = json!({
                "ApproximateCreationDateTime": r.time_s,
                "Keys": r.keys,
                "SequenceNumber": r.seq,
                "SizeBytes": 100,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            });
            if let Some(n) = &r.new_image {
                dynamodb["NewImage"] = json!(n);
            }
            if let Some(o) = &r.old_image {
                dynamodb["OldImage"] = json!(o);
            }
            let mut rec = json!({
                "eventID": r.event_id,
                "eventName": r.event_name,
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": dynamodb,
                "eventSourceARN": arn,
            });
            if r.ttl {
                rec["userIdentity"] =
                    json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"});
            }
            rec
        })
        .collect();
    json!({ "Records": recs })
}

/// An SQS FIFO event as Lambda delivers it.
pub fn sqs_event(messages: &[QueuedMessage]) -> SqsEvent {
    serde_json::from_value(sqs_event_value(messages))
        .unwrap_or_else(|e| panic!("test SQS event does not parse: {e}"))
}

/// [`sqs_event`] as JSON, before it is parsed (what the runtime hands over).
pub fn sqs_event_value(messages: &[QueuedMessage]) -> Value {
    let recs: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id,
                "receiptHandle": format!("rh-{}", m.message_id),
                "body": m.body,
                "attributes": {
                    "ApproximateReceiveCount": m.receive_count.to_string(),
                    "SentTimestamp": "1793750400000",
                    "SequenceNumber": format!("{:020}", m.sequence),
                    "MessageGroupId": m.group_id,
                    "SenderId": "AROAEXAMPLE:forwarder",
                    "MessageDeduplicationId": m.dedup_id,
                    "ApproximateFirstReceiveTimestamp": "1793750400001"
                },
                "messageAttributes": {},
                "md5OfBody": "00000000000000000000000000000000",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:relay.fifo",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": recs })
}
