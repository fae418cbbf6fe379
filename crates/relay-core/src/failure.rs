//! The stream failure queue: Lambda's records of stream batches the
//! forwarder's trigger gave up on (retries spent, or records older than the
//! trigger's maximum age). A record names a shard, a sequence range and when
//! its stream records arrived, never an item; their changes are not in the
//! queue, so nothing replays them.
//!
//! **Invariant:** a failure record is cleared only when the target is known
//! to hold every change it stands for: each of its stream records arrived
//! before the whole current seed's cutoff (a seed holds every change before
//! its cutoff: the applier's skip rule relies on the same). A record whose
//! time cannot be read is never cleared.
//!
//! Not taken: a clean full verify as cover. A change older than the lost
//! one, still queued when the verify read its item, is applied after it and
//! moves the item back, and a later `replay` to a point before the lost
//! change restores a table without it; the record is all that says so.

use chrono::DateTime;
use serde_json::Value;

use crate::control::ControlState;

/// One message of the stream failure queue, as far as it could be read.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FailureRecord {
    /// Why Lambda gave up ("RetryAttemptsExhausted", "RecordAgeExceeded").
    pub condition: Option<String>,
    pub shard_id: Option<String>,
    pub start_sequence: Option<String>,
    pub end_sequence: Option<String>,
    pub batch_size: Option<u64>,
    /// When the batch's first and last stream records arrived.
    pub first_record_ms: Option<i64>,
    pub last_record_ms: Option<i64>,
    /// When Lambda wrote the failure record.
    pub recorded_ms: Option<i64>,
}

fn time_ms(v: Option<&Value>) -> Option<i64> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn text(v: Option<&Value>) -> Option<String> {
    v?.as_str().map(str::to_string)
}

impl FailureRecord {
    /// Reads Lambda's invocation record for a DynamoDB stream batch
    /// (`requestContext.condition`, `timestamp`, `DDBStreamBatchInfo`).
    /// Anything missing stays `None`; a body that is not a JSON object is
    /// an error.
    pub fn parse(body: &str) -> Result<Self, String> {
        let v: Value =
            serde_json::from_str(body).map_err(|e| format!("not a failure record: {e}"))?;
        if !v.is_object() {
            return Err("not a failure record: not a JSON object".into());
        }
        let info = v.get("DDBStreamBatchInfo");
        let field = |k: &str| info.and_then(|i| i.get(k));
        Ok(FailureRecord {
            condition: text(v.get("requestContext").and_then(|c| c.get("condition"))),
            shard_id: text(field("shardId")),
            start_sequence: text(field("startSequenceNumber")),
            end_sequence: text(field("endSequenceNumber")),
            batch_size: field("batchSize").and_then(Value::as_u64),
            first_record_ms: time_ms(field("approximateArrivalOfFirstRecord")),
            last_record_ms: time_ms(field("approximateArrivalOfLastRecord")),
            recorded_ms: time_ms(v.get("timestamp")),
        })
    }

    /// The latest its newest stream record can have arrived: that record's
    /// time, else when the failure was recorded, else when SQS received the
    /// message (`sent_ms`); each is later than the one before.
    pub fn newest_change_by_ms(&self, sent_ms: Option<i64>) -> Option<i64> {
        self.last_record_ms.or(self.recorded_ms).or(sent_ms)
    }
}

/// The time before which the target holds every change of the source, and
/// every later seed will: the seed's cutoff, and while paused not past the
/// frontier. A re-seed runs paused with a cutoff at or after the frontier
/// (the later of what was consumed and the pause): under the current pause
/// that may be before the cutoff, so a replay between them would restore a
/// table without a cleared change; not paused, any later pause is after
/// now, after every record. The caller has checked that the seed is whole
/// (no re-seed pending, no copy running); `None`: nothing is known.
pub fn covered_before(c: &ControlState) -> Option<i64> {
    match (c.cutoff_ms, c.paused_at_ms.and(c.frontier())) {
        (Some(cutoff), Some(frontier)) => Some(cutoff.min(frontier)),
        (cutoff, _) => cutoff,
    }
}

/// Whether a failure whose newest change came by `newest_ms` is covered:
/// before the cutoff, as the applier skips an event
/// ([`crate::apply::applies`]).
pub fn is_covered(newest_ms: Option<i64>, before: Option<i64>) -> bool {
    matches!((newest_ms, before), (Some(n), Some(b)) if !crate::apply::applies(n, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{
        "requestContext": {"requestId": "r", "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:f",
                           "condition": "RecordAgeExceeded", "approximateInvokeCount": 1},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-11-29T10:00:05.000Z",
        "DDBStreamBatchInfo": {
            "shardId": "shardId-000001", "startSequenceNumber": "100", "endSequenceNumber": "250",
            "approximateArrivalOfFirstRecord": "2026-11-29T09:59:00Z",
            "approximateArrivalOfLastRecord": "2026-11-29T10:00:00Z",
            "batchSize": 7, "streamArn": "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/x"
        }
    }"#;

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn lambdas_failure_record_is_read() {
        let r = FailureRecord::parse(RECORD).unwrap();
        assert_eq!(r.condition.as_deref(), Some("RecordAgeExceeded"));
        assert_eq!(r.shard_id.as_deref(), Some("shardId-000001"));
        assert_eq!(r.start_sequence.as_deref(), Some("100"));
        assert_eq!(r.end_sequence.as_deref(), Some("250"));
        assert_eq!(r.batch_size, Some(7));
        assert_eq!(r.first_record_ms, Some(ms("2026-11-29T09:59:00Z")));
        assert_eq!(r.last_record_ms, Some(ms("2026-11-29T10:00:00Z")));
        assert_eq!(r.recorded_ms, Some(ms("2026-11-29T10:00:05Z")));
        assert_eq!(r.newest_change_by_ms(Some(0)), r.last_record_ms);
        assert!(FailureRecord::parse("[1]").is_err());
        assert!(FailureRecord::parse("not json").is_err());
    }

    #[test]
    fn the_newest_change_falls_back_to_later_times_and_never_to_none() {
        let r = FailureRecord::parse(r#"{"timestamp": "2026-11-29T10:00:05Z"}"#).unwrap();
        assert_eq!(
            r.newest_change_by_ms(Some(1)),
            Some(ms("2026-11-29T10:00:05Z"))
        );
        let r = FailureRecord::parse("{}").unwrap();
        assert_eq!(r.newest_change_by_ms(Some(42)), Some(42));
        assert_eq!(r.newest_change_by_ms(None), None);
        assert!(
            !is_covered(None, Some(i64::MAX)),
            "an unknown time is never covered"
        );
    }

    #[test]
    fn a_failure_is_covered_by_the_cutoff_only() {
        let mut c = ControlState {
            cutoff_ms: Some(1_000_000),
            ..Default::default()
        };
        assert_eq!(covered_before(&c), Some(1_000_000));
        assert!(is_covered(Some(999_999), covered_before(&c)));
        assert!(!is_covered(Some(1_000_000), covered_before(&c)));
        // A clean verify covers nothing: a queued older change can land
        // after it read the item.
        c.verify_ms = Some(5_000_000);
        c.last_verify = Some("clean".into());
        assert_eq!(covered_before(&c), Some(1_000_000));
        // While paused, not past the frontier: a replay may re-seed at any
        // point from it on (helper-51 #2). Not paused, the cutoff: a later
        // pause is after every record (helper-52 #1).
        c.consumed_ms = Some(900_000);
        assert_eq!(covered_before(&c), Some(1_000_000));
        c.paused_at_ms = Some(950_000);
        assert_eq!(covered_before(&c), Some(950_000));
        c.paused_at_ms = Some(800_000);
        assert_eq!(covered_before(&c), Some(900_000));
        c.consumed_ms = Some(2_000_000);
        assert_eq!(covered_before(&c), Some(1_000_000));
        // Never seeded: nothing is covered.
        assert_eq!(covered_before(&ControlState::default()), None);
    }
}
