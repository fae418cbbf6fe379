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

/// Delivers one invocation's metrics as configured. A metrics failure is
/// logged, never returned: it must not fail the batch.
pub async fn emit_metrics(
    cfg: &MetricsConfig,
    record: &MetricRecord,
    publisher: &impl MetricsPublisher,
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
        if let Err(e) = publisher
            .publish(&cfg.namespace, &cfg.migration, record)
            .await
        {
            tracing::warn!(error = %e, "PutMetricData failed; metrics for this invocation are missing");
        }
    }
}

/// JSON logs on stdout, at `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else info.
/// Log lines carry ids, counts and error codes, never item contents.
pub fn init_tracing() {
    let level = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_ascii_lowercase()))
        .unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_target(false)
        .with_current_span(false)
        .without_time()
        .init();
}
