//! Glue both Lambda handlers share: the time budget and metrics delivery.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay_core::config::{MetricsConfig, MetricsMode};
use relay_core::metrics::MetricRecord;

use crate::MetricsPublisher;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where time comes from (epoch ms): the wall clock, or a virtual one that
/// follows tokio's (paused) clock in simulations. The operator's commands
/// and the fakes read it, so a simulated migration has one timeline.
#[derive(Clone)]
pub struct Clock(std::sync::Arc<dyn Fn() -> i64 + Send + Sync>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::wall()
    }
}

impl Clock {
    pub fn wall() -> Self {
        Clock(std::sync::Arc::new(now_ms))
    }

    /// `epoch_ms` plus the tokio time elapsed since this call: with a
    /// paused runtime, simulated time.
    pub fn virtual_from(epoch_ms: i64) -> Self {
        let start = tokio::time::Instant::now();
        Clock(std::sync::Arc::new(move || {
            epoch_ms + start.elapsed().as_millis() as i64
        }))
    }

    /// AWS's time once one of its responses said it ([`ServerTime`]),
    /// `local`'s before: every time the operator's commands compare or
    /// record (a scan copy's start, the pause, when in-flight invocations
    /// stop, a seed's point against the stream) is then on AWS's clock,
    /// the clock of the event times, backups and stream labels, whatever
    /// this machine's clock says or another operator's machine said.
    pub fn following(local: Clock, server: ServerTime) -> Self {
        Clock(std::sync::Arc::new(move || {
            server.now_ms().unwrap_or_else(|| local.now_ms())
        }))
    }

    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

/// AWS's clock as its responses tell it (the HTTP `Date` header, whole
/// seconds): a lower bound of AWS's time now, the newest and highest one
/// seen carried forward by the monotonic clock. Never ahead of AWS; behind
/// it by at most a second plus a response's latency.
#[derive(Clone, Debug, Default)]
pub struct ServerTime(std::sync::Arc<std::sync::Mutex<Option<(i64, tokio::time::Instant)>>>);

impl ServerTime {
    /// A response said AWS's time was `server_ms` (at least) when it was
    /// sent.
    pub fn observe(&self, server_ms: i64) {
        // The instant is read under the lock: read before it, a delayed
        // caller could store a later base at an earlier instant.
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        let best = match *seen {
            Some((ms, at)) => server_ms.max(ms + now.duration_since(at).as_millis() as i64),
            None => server_ms,
        };
        *seen = Some((best, now));
    }

    /// AWS's time now (a lower bound), once a response said it.
    pub fn now_ms(&self) -> Option<i64> {
        let seen = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.map(|(ms, at)| ms + at.elapsed().as_millis() as i64)
    }
}

/// Turns the Lambda context deadline (epoch ms) into a monotonic instant.
pub fn deadline_from_epoch_ms(deadline_ms: u64) -> tokio::time::Instant {
    let left = (deadline_ms as i64 - now_ms()).max(0) as u64;
    tokio::time::Instant::now() + Duration::from_millis(left)
}

/// Time left before `deadline`, less `reserve`.
pub fn remaining(deadline: tokio::time::Instant, reserve: Duration) -> Duration {
    deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .saturating_sub(reserve)
}

/// Runs one AWS call within the time left before `deadline` less `reserve`.
/// A call that would outlive it is abandoned and reported as a retryable
/// `Timeout`, so the handler answers before Lambda kills it (and the
/// unfinished work is retried, never assumed done).
pub async fn bounded<T>(
    deadline: tokio::time::Instant,
    reserve: Duration,
    operation: &'static str,
    call: impl std::future::Future<Output = Result<T, crate::AwsError>>,
) -> Result<T, crate::AwsError> {
    let left = remaining(deadline, reserve);
    if left.is_zero() {
        return Err(crate::AwsError::retryable(
            operation,
            "Timeout",
            "no time left in this invocation",
        ));
    }
    match tokio::time::timeout(left, call).await {
        Ok(r) => r,
        Err(_) => Err(crate::AwsError::retryable(
            operation,
            "Timeout",
            "the call did not finish within the invocation's remaining time",
        )),
    }
}

/// What `PutMetricData` leaves of the invocation: time to post the answer.
const METRICS_RESERVE: Duration = Duration::from_millis(250);

/// Delivers one invocation's metrics as configured. A metrics failure is
/// logged, never returned: it must not fail the batch. `PutMetricData`
/// is abandoned at `deadline` less a quarter second: the batch's work is
/// done, and an invocation Lambda times out would be retried whole.
pub async fn emit_metrics(
    cfg: &MetricsConfig,
    record: &MetricRecord,
    publisher: &impl MetricsPublisher,
    deadline: tokio::time::Instant,
) {
    if matches!(cfg.mode, MetricsMode::Emf | MetricsMode::Both) {
        #[allow(clippy::print_stdout)] // EMF is a line on stdout by definition.
        {
            println!(
                "{}",
                record.to_emf(&cfg.namespace, &cfg.migration, now_ms())
            );
        }
    }
    if matches!(cfg.mode, MetricsMode::PutMetricData | MetricsMode::Both) {
        let publish = publisher.publish(&cfg.namespace, &cfg.migration, record);
        if let Err(e) = bounded(deadline, METRICS_RESERVE, "PutMetricData", publish).await {
            tracing::warn!(error = %e, "PutMetricData failed; metrics for this invocation are missing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Clock, ServerTime};
    use std::time::Duration;

    /// A `PutMetricData` that never answers.
    struct Hung;

    impl crate::MetricsPublisher for Hung {
        async fn publish(
            &self,
            _: &str,
            _: &str,
            _: &relay_core::metrics::MetricRecord,
        ) -> Result<(), crate::AwsError> {
            std::future::pending().await
        }
    }

    /// The metrics call after a batch's work is bounded by the invocation's
    /// deadline: Lambda never times out an invocation whose work is done
    /// (it would retry the whole batch).
    #[tokio::test(start_paused = true)]
    async fn a_hung_put_metric_data_is_abandoned_before_the_deadline() {
        let cfg = relay_core::config::MetricsConfig {
            mode: relay_core::config::MetricsMode::PutMetricData,
            namespace: "DdbRelay".into(),
            migration: "m1".into(),
        };
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(3);
        let record = relay_core::metrics::MetricRecord::new("applier");
        // Bounded here too, so that a regression fails instead of hanging.
        let emitted = tokio::time::timeout(
            Duration::from_secs(10),
            super::emit_metrics(&cfg, &record, &Hung, deadline),
        )
        .await;
        assert!(emitted.is_ok(), "PutMetricData outlived the invocation");
        assert!(tokio::time::Instant::now() < deadline);
        assert!(start.elapsed() >= Duration::from_millis(2_700));
    }

    /// AWS's time is carried forward from the best `Date` seen, never
    /// moves back (a later response's `Date` is truncated to its second),
    /// and stands in for the local clock once known.
    #[tokio::test(start_paused = true)]
    async fn aws_time_is_carried_forward_never_back_and_replaces_the_local_clock() {
        let aws = ServerTime::default();
        let clock = Clock::following(Clock::virtual_from(5_000_000), aws.clone());
        assert_eq!(
            clock.now_ms(),
            5_000_000,
            "the local clock until AWS speaks"
        );
        aws.observe(1_000_000);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(clock.now_ms(), 1_000_900);
        // The same second again, 0.9 s later: not a step back.
        aws.observe(1_000_000);
        assert_eq!(aws.now_ms(), Some(1_000_900));
        aws.observe(1_002_000);
        assert_eq!(clock.now_ms(), 1_002_000);
    }
}
