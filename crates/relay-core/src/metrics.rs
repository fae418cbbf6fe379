//! One metrics record per invocation, as CloudWatch Embedded Metric Format.
//!
//! The same record can be sent with `PutMetricData` where EMF is not
//! extracted (local emulators); the adapter crate does that.

use serde_json::{json, Map, Value};

/// Metric names. Dashboards, alarms and `ddb-relay status` read these.
pub mod names {
    pub const FORWARDED: &str = "Forwarded";
    pub const MESSAGES_SENT: &str = "MessagesSent";
    pub const BYTES_SENT: &str = "BytesSent";
    pub const REFETCH_MARKERS: &str = "RefetchMarkers";
    pub const OLD_IMAGES_DROPPED: &str = "OldImagesDropped";
    pub const SEND_RETRIES: &str = "SendRetries";
    pub const SEND_FAILURES: &str = "SendFailures";
    pub const BAD_RECORDS: &str = "BadRecords";
    pub const APPLIED_PUTS: &str = "AppliedPuts";
    pub const APPLIED_DELETES: &str = "AppliedDeletes";
    pub const SKIPPED_BEFORE_CUTOFF: &str = "SkippedBeforeCutoff";
    pub const SKIPPED_TTL: &str = "SkippedTtl";
    pub const COALESCED: &str = "Coalesced";
    pub const REFETCHES: &str = "Refetches";
    pub const WRITE_RETRIES: &str = "WriteRetries";
    pub const FAILED_MESSAGES: &str = "FailedMessages";
    pub const UNDECODABLE_MESSAGES: &str = "UndecodableMessages";
    pub const CUTOFF_MISSING: &str = "CutoffMissing";
    /// Batches the applier planned again because an operator changed the
    /// control item while it was applying them (pause, mode switch, cutoff).
    pub const REPLANNED: &str = "Replanned";
    /// Batches not applied because the migration is paused.
    pub const PAUSED_BATCHES: &str = "PausedBatches";
    pub const REPLICATION_LAG_MS: &str = "ReplicationLag";
}

/// A CloudWatch unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// The metrics of one invocation of one function.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricRecord {
    /// `forwarder` or `applier`: the `Function` dimension.
    pub function: &'static str,
    pub values: Vec<(&'static str, f64, Unit)>,
}

impl MetricRecord {
    pub fn new(function: &'static str) -> Self {
        MetricRecord {
            function,
            values: Vec::new(),
        }
    }

    pub fn add(&mut self, name: &'static str, value: f64, unit: Unit) -> &mut Self {
        self.values.push((name, value, unit));
        self
    }

    pub fn count(&mut self, name: &'static str, value: u64) -> &mut Self {
        self.add(name, value as f64, Unit::Count)
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.values
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, v, _)| *v)
    }

    /// The EMF JSON line, with dimensions `Migration` and `Function`.
    pub fn to_emf(&self, namespace: &str, migration: &str, timestamp_ms: i64) -> String {
        let definitions: Vec<Value> = self
            .values
            .iter()
            .map(|(n, _, u)| json!({"Name": n, "Unit": u.as_str()}))
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [["Migration", "Function"]],
                    "Metrics": definitions,
                }]
            }),
        );
        root.insert("Migration".into(), json!(migration));
        root.insert("Function".into(), json!(self.function));
        for (n, v, _) in &self.values {
            root.insert((*n).into(), json!(v));
        }
        Value::Object(root).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_declares_every_value_it_carries() {
        let mut r = MetricRecord::new("applier");
        r.count(names::APPLIED_PUTS, 3)
            .add(names::REPLICATION_LAG_MS, 1500.0, Unit::Milliseconds);
        let v: Value = serde_json::from_str(&r.to_emf("DdbRelay", "m1", 42)).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 42);
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "DdbRelay");
        assert_eq!(cw["Dimensions"][0], json!(["Migration", "Function"]));
        for m in cw["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap();
            assert!(v[name].is_number(), "{name} declared but absent");
        }
        assert_eq!(v["AppliedPuts"], 3.0);
        assert_eq!(v["Function"], "applier");
        assert_eq!(v["Migration"], "m1");
    }
}
