//! Metrics the fake functions publish and the operator reads back.

use std::sync::{Arc, Mutex};

use relay_core::metrics::MetricRecord;

use super::{lock, Clock};
use crate::operator::{MetricQuery, Series, Stat};
use crate::{AwsError, MetricsPublisher};

/// One datapoint: (time ms, namespace, name, dimensions, value).
type Datum = (i64, String, String, Vec<(String, String)>, f64);

/// Metrics published by the fake functions, readable by the operator.
#[derive(Clone, Default)]
pub struct FakeMetrics {
    data: Arc<Mutex<Vec<Datum>>>,
    clock: Clock,
}

impl std::fmt::Debug for FakeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMetrics").finish_non_exhaustive()
    }
}

impl FakeMetrics {
    pub fn new(clock: Clock) -> Self {
        FakeMetrics {
            data: Arc::default(),
            clock,
        }
    }

    pub fn record(&self, namespace: &str, name: &str, dims: &[(&str, &str)], value: f64) {
        lock(&self.data).push((
            self.clock.now_ms(),
            namespace.into(),
            name.into(),
            dims.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        ));
    }

    pub(crate) fn query(&self, q: &MetricQuery, since_ms: i64, until_ms: i64) -> Series {
        let data = lock(&self.data);
        let mut buckets: std::collections::BTreeMap<i64, f64> = Default::default();
        // Dimensions match as sets (CloudWatch ignores their order),
        // compared without copying: this runs for every datum of every
        // query of every status refresh.
        let same_dims = |have: &[(String, String)]| {
            have.len() == q.dims.len()
                && have.iter().all(|d| q.dims.contains(d))
                && q.dims.iter().all(|d| have.contains(d))
        };
        for (t, ns, name, dims, v) in data.iter() {
            if *t < since_ms
                || *t > until_ms
                || *ns != q.namespace
                || *name != q.name
                || !same_dims(dims)
            {
                continue;
            }
            let b = buckets
                .entry(t.div_euclid(60_000) * 60_000)
                .or_insert(match q.stat {
                    Stat::Sum => 0.0,
                    Stat::Maximum => f64::MIN,
                });
            *b = match q.stat {
                Stat::Sum => *b + v,
                Stat::Maximum => b.max(*v),
            };
        }
        buckets.into_iter().collect()
    }
}

impl MetricsPublisher for FakeMetrics {
    async fn publish(
        &self,
        namespace: &str,
        migration: &str,
        record: &MetricRecord,
    ) -> Result<(), AwsError> {
        for (name, value, _) in &record.values {
            self.record(
                namespace,
                name,
                &[("Migration", migration), ("Function", record.function)],
                *value,
            );
        }
        Ok(())
    }
}
