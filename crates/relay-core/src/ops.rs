//! The operator's decisions, as pure functions: preflight checklists, the
//! replay-point rule, the status snapshot and the cutover GO/NO-GO.
//!
//! The CLI gathers facts from AWS and hands them here; everything that
//! decides lives here so it is tested without AWS.

use serde::Serialize;

/// One line of a checklist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

impl Check {
    pub fn pass(name: &str, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Pass,
            detail: detail.into(),
        }
    }
    pub fn warn(name: &str, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Warn,
            detail: detail.into(),
        }
    }
    pub fn fail(name: &str, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: CheckStatus::Fail,
            detail: detail.into(),
        }
    }
}

/// True when any check is a blocker.
pub fn has_blocker(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == CheckStatus::Fail)
}

/// Stream view types and what they allow.
pub fn stream_view_check(view: Option<&str>) -> Check {
    match view {
        Some("NEW_AND_OLD_IMAGES") => Check::pass(
            "source stream view",
            "NEW_AND_OLD_IMAGES: puts carry the new image, deletes their keys and old image",
        ),
        Some("NEW_IMAGE") => Check::pass(
            "source stream view",
            "NEW_IMAGE: enough for a copy without key derivation from old images",
        ),
        Some(v) => Check::fail(
            "source stream view",
            format!("{v} does not carry new images; set the stream view to NEW_AND_OLD_IMAGES (a new stream: redeploy the stack with its ARN)"),
        ),
        None => Check::fail(
            "source stream",
            "the source table has no stream; enable one with view NEW_AND_OLD_IMAGES, then redeploy the stack with its ARN",
        ),
    }
}

/// Visibility timeout against the applier timeout (AWS advises 6x).
pub fn visibility_check(visibility_s: u64, applier_timeout_s: u64) -> Check {
    let need = applier_timeout_s * 6;
    if visibility_s >= need {
        Check::pass(
            "queue visibility timeout",
            format!("{visibility_s} s >= 6 x applier timeout ({applier_timeout_s} s)"),
        )
    } else {
        Check::fail(
            "queue visibility timeout",
            format!("{visibility_s} s < 6 x applier timeout ({applier_timeout_s} s) = {need} s: messages may be delivered twice at once; redeploy with matching ApplierTimeoutSeconds"),
        )
    }
}

/// Why a replay point is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("the applier is not paused; run `ddb-relay pause` first (the queue keeps every change from the pause on)")]
    NotPaused,
    #[error("T={t_ms} is too early: the earliest valid T is {earliest_ms} (paused at {paused_at_ms} + margin {margin_ms} ms); changes before the pause were consumed and cannot be replayed")]
    TooEarly {
        t_ms: i64,
        earliest_ms: i64,
        paused_at_ms: i64,
        margin_ms: i64,
    },
    #[error("T={t_ms} is in the future (now {now_ms}); the latest valid T is {latest_ms}")]
    InFuture {
        t_ms: i64,
        now_ms: i64,
        latest_ms: i64,
    },
}

/// Validates a replay point T: `T - margin >= paused_at` and T not after
/// `latest_ms` (now, or PITR's LatestRestorableDateTime).
pub fn validate_replay_point(
    t_ms: i64,
    paused_at_ms: Option<i64>,
    margin_ms: i64,
    now_ms: i64,
    latest_ms: i64,
) -> Result<(), ReplayError> {
    let paused_at_ms = paused_at_ms.ok_or(ReplayError::NotPaused)?;
    let earliest_ms = crate::control::earliest_replay_point(paused_at_ms, margin_ms);
    if t_ms < earliest_ms {
        return Err(ReplayError::TooEarly {
            t_ms,
            earliest_ms,
            paused_at_ms,
            margin_ms,
        });
    }
    if t_ms > latest_ms.min(now_ms) {
        return Err(ReplayError::InFuture {
            t_ms,
            now_ms,
            latest_ms: latest_ms.min(now_ms),
        });
    }
    Ok(())
}

/// Everything `status` shows, as facts. `None` means "not available" (for
/// example a metric an emulator does not produce).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Status {
    pub stack: String,
    pub migration: String,
    pub source_table: String,
    pub target_table: String,
    pub forwarder_trigger: String,
    pub applier_trigger: String,
    pub cutoff_ms: Option<i64>,
    pub mode: String,
    pub paused_at_ms: Option<i64>,
    pub seed_method: Option<String>,
    pub seed_ms: Option<i64>,
    pub queue_visible: u64,
    pub queue_in_flight: u64,
    pub queue_oldest_age_s: Option<f64>,
    pub dlq_depth: u64,
    pub stream_failures: u64,
    pub forwarder_iterator_age_ms: Option<f64>,
    pub window_s: u64,
    pub forwarded_per_min: Option<f64>,
    pub applied_per_min: Option<f64>,
    pub skipped_per_min: Option<f64>,
    pub replication_lag_ms: Option<f64>,
    pub errors: Option<f64>,
    pub last_verify: Option<String>,
}

/// Thresholds for `cutover`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CutoverThresholds {
    pub max_lag_ms: f64,
    pub max_backlog: u64,
}

/// GO or NO-GO, with every reason.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub go: bool,
    pub reasons: Vec<String>,
    pub checks: Vec<Check>,
}

/// The cutover decision. Every condition is a check; GO needs all of them to
/// pass. Unknown lag is accepted only with an empty queue (nothing to lag).
pub fn cutover(status: &Status, t: &CutoverThresholds) -> Decision {
    let mut checks = Vec::new();
    checks.push(match status.cutoff_ms {
        Some(_) => Check::pass("cutoff", "set"),
        None => Check::fail("cutoff", "no cutoff: the target was never seeded"),
    });
    checks.push(if status.applier_trigger == "Enabled" {
        Check::pass("applier trigger", "Enabled")
    } else {
        Check::fail(
            "applier trigger",
            format!(
                "{}: changes are not being applied (`ddb-relay resume`)",
                status.applier_trigger
            ),
        )
    });
    let backlog = status.queue_visible + status.queue_in_flight;
    checks.push(if backlog <= t.max_backlog {
        Check::pass("backlog", format!("{backlog} messages"))
    } else {
        Check::fail(
            "backlog",
            format!("{backlog} messages > {} allowed", t.max_backlog),
        )
    });
    checks.push(match status.replication_lag_ms {
        Some(lag) if lag <= t.max_lag_ms => Check::pass("lag", format!("{:.1} s", lag / 1000.0)),
        Some(lag) => Check::fail(
            "lag",
            format!("{:.1} s > {:.1} s", lag / 1000.0, t.max_lag_ms / 1000.0),
        ),
        None if backlog == 0 => Check::pass("lag", "no recent applies and an empty queue"),
        None => Check::fail("lag", "unknown (no ReplicationLag metric) with a backlog"),
    });
    checks.push(if status.dlq_depth == 0 {
        Check::pass("DLQ", "empty")
    } else {
        Check::fail(
            "DLQ",
            format!(
                "{} messages: `ddb-relay dlq list`, then `ddb-relay dlq repair`",
                status.dlq_depth
            ),
        )
    });
    checks.push(if status.stream_failures == 0 {
        Check::pass("stream failures", "none")
    } else {
        Check::fail(
            "stream failures",
            format!(
                "{} batches the forwarder gave up on: verify and repair from the source",
                status.stream_failures
            ),
        )
    });
    checks.push(match status.errors {
        Some(e) if e > 0.0 => Check::fail(
            "errors",
            format!("{e:.0} in the last {} s", status.window_s),
        ),
        Some(_) => Check::pass("errors", format!("none in the last {} s", status.window_s)),
        None => Check::pass("errors", "no error metrics recorded"),
    });
    if let Some(v) = &status.last_verify {
        checks.push(if v == "clean" {
            Check::pass("last verify", "clean")
        } else {
            Check::fail("last verify", v.clone())
        });
    }
    let reasons = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect::<Vec<_>>();
    Decision {
        go: reasons.is_empty(),
        reasons,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Status {
        Status {
            applier_trigger: "Enabled".into(),
            cutoff_ms: Some(1),
            replication_lag_ms: Some(800.0),
            errors: Some(0.0),
            window_s: 300,
            ..Status::default()
        }
    }

    const T: CutoverThresholds = CutoverThresholds {
        max_lag_ms: 5_000.0,
        max_backlog: 0,
    };

    #[test]
    fn a_healthy_migration_is_go() {
        let d = cutover(&healthy(), &T);
        assert!(d.go, "{:?}", d.reasons);
    }

    #[test]
    fn every_unhealthy_fact_is_a_reason() {
        let mut s = healthy();
        s.cutoff_ms = None;
        s.applier_trigger = "Disabled".into();
        s.queue_visible = 3;
        s.replication_lag_ms = Some(60_000.0);
        s.dlq_depth = 1;
        s.stream_failures = 2;
        s.errors = Some(4.0);
        s.last_verify = Some("3 differences".into());
        let d = cutover(&s, &T);
        assert!(!d.go);
        assert_eq!(d.reasons.len(), 8, "{:#?}", d.reasons);
    }

    #[test]
    fn unknown_lag_is_go_only_with_an_empty_queue() {
        let mut s = healthy();
        s.replication_lag_ms = None;
        assert!(cutover(&s, &T).go);
        s.queue_in_flight = 1;
        assert!(!cutover(&s, &T).go);
    }

    #[test]
    fn replay_points_keep_the_margin_and_name_the_earliest() {
        let m = 120_000;
        assert_eq!(
            validate_replay_point(1_000_000, None, m, 2_000_000, 2_000_000),
            Err(ReplayError::NotPaused)
        );
        let err = validate_replay_point(1_100_000, Some(1_000_000), m, 2_000_000, 2_000_000)
            .expect_err("too early");
        assert!(
            err.to_string().contains("earliest valid T is 1120000"),
            "{err}"
        );
        assert!(validate_replay_point(1_120_000, Some(1_000_000), m, 2_000_000, 2_000_000).is_ok());
        assert!(matches!(
            validate_replay_point(2_100_000, Some(1_000_000), m, 2_000_000, 2_000_000),
            Err(ReplayError::InFuture { .. })
        ));
    }

    #[test]
    fn stream_views_without_new_images_are_blockers() {
        assert_eq!(
            stream_view_check(Some("NEW_AND_OLD_IMAGES")).status,
            CheckStatus::Pass
        );
        assert_eq!(
            stream_view_check(Some("KEYS_ONLY")).status,
            CheckStatus::Fail
        );
        assert_eq!(stream_view_check(None).status, CheckStatus::Fail);
        assert_eq!(visibility_check(359, 60).status, CheckStatus::Fail);
        assert_eq!(visibility_check(360, 60).status, CheckStatus::Pass);
    }
}
