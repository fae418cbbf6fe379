//! The operator's decisions, as pure functions: preflight checklists, the
//! replay-point rule, the status snapshot and the cutover GO/NO-GO.
//!
//! The CLI gathers facts from AWS and hands them here; everything that
//! decides lives here so it is tested without AWS. A fact that could not be
//! read is *unknown*, never zero: it is a NO-GO.

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
    #[error("T={t_ms} is too early: the earliest valid T is {earliest_ms} (the queue holds every change after {frontier_ms}, the later of the newest change the applier consumed and the pause, + margin {margin_ms} ms); changes before it were consumed and cannot be replayed")]
    TooEarly {
        t_ms: i64,
        earliest_ms: i64,
        frontier_ms: i64,
        margin_ms: i64,
    },
    #[error("T={t_ms} is too early: the earliest valid T is {earliest_ms}; the queue keeps messages for {retention_s} s and the re-seed needs time before the applier reads them again (a day, or a quarter of the retention if less), so older changes may be gone by then")]
    BeyondRetention {
        t_ms: i64,
        earliest_ms: i64,
        retention_s: i64,
    },
    #[error("T={t_ms} is too early: the earliest valid T is {earliest_ms}. A stream failure record was cleared because the seed then held its changes (the newest made by {cleared_ms}); they are in no queue, so a seed at T would lack them")]
    BeforeCleared {
        t_ms: i64,
        earliest_ms: i64,
        cleared_ms: i64,
    },
    #[error("T={t_ms} is in the future (now {now_ms}); the latest valid T is {latest_ms}")]
    InFuture {
        t_ms: i64,
        now_ms: i64,
        latest_ms: i64,
    },
}

/// What a replay point is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayBounds {
    /// The queue holds every change after this ([`crate::control::ControlState::frontier`]);
    /// `None`: nothing was ever consumed.
    pub frontier_ms: Option<i64>,
    /// The applier is paused (the control item's fence is set).
    pub paused: bool,
    pub margin_ms: i64,
    pub now_ms: i64,
    /// The latest restorable time (PITR's LatestRestorableDateTime, or now).
    pub latest_ms: i64,
    /// The queue's message retention.
    pub retention_s: i64,
    /// The newest change of a stream failure record cleared under an
    /// earlier seed ([`crate::control::ControlState::cleared_ms`]): in no
    /// queue, so a seed must hold it.
    pub cleared_ms: Option<i64>,
}

/// How long a re-seed may take (a restore or a copy) before the applier
/// reads the queue again: the changes after T must still be queued then.
pub const RESEED_ALLOWANCE_MS: i64 = 24 * 3_600_000;

/// Why `resume` refuses: the changes the target still needs from the queue
/// start so long ago that the oldest may expire before the applier reads
/// them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the target needs every change after {needed_ms} from the queue (the later of the cutoff and what the applier consumed or the pause), but the queue keeps messages for {retention_s} s and the applier needs time to drain them (a day, or a quarter of the retention if less): the oldest may expire first, and an expired change is lost. Re-seed instead (`ddb-relay restart --method backup`, or `replay --from now`)")]
pub struct ResumeTooLate {
    pub needed_ms: i64,
    pub floor_ms: i64,
    pub retention_s: i64,
}

impl ReplayBounds {
    /// Changes queued before this may expire before the applier reads them
    /// after a re-seed or a resume: the retention, less the time a re-seed
    /// or a backlog's drain may take ([`RESEED_ALLOWANCE_MS`], or a quarter
    /// of the retention if less).
    fn retention_floor(&self) -> i64 {
        let retention_ms = self.retention_s * 1000;
        self.now_ms - retention_ms + RESEED_ALLOWANCE_MS.min(retention_ms / 4)
    }

    /// Whether `resume` under a cutoff finds every change it still needs in
    /// the queue: those after the later of the cutoff and the frontier
    /// (what was consumed, or the pause) must be inside
    /// [`Self::retention_floor`]. A pause of about the retention, or a
    /// re-seed left paused that long, is refused.
    pub fn check_resume(&self, cutoff_ms: i64) -> Result<(), ResumeTooLate> {
        let needed_ms = self.frontier_ms.map_or(cutoff_ms, |f| f.max(cutoff_ms));
        let floor_ms = self.retention_floor();
        if needed_ms < floor_ms {
            return Err(ResumeTooLate {
                needed_ms,
                floor_ms,
                retention_s: self.retention_s,
            });
        }
        Ok(())
    }

    /// The earliest valid T: the frontier plus the margin, and far enough
    /// inside the queue's retention that the changes after it outlive the
    /// re-seed ([`RESEED_ALLOWANCE_MS`], or a quarter of the retention if
    /// less).
    /// Not before a change whose stream failure record was cleared
    /// ([`Self::cleared_ms`]).
    pub fn earliest_ms(&self) -> i64 {
        let retention_floor = self.retention_floor() + 2 * self.margin_ms;
        let queued = match self.frontier_ms {
            Some(f) => {
                crate::control::earliest_replay_point(f, self.margin_ms).max(retention_floor)
            }
            None => retention_floor,
        };
        queued.max(self.earliest_after_cleared().unwrap_or(i64::MIN))
    }

    fn earliest_after_cleared(&self) -> Option<i64> {
        self.cleared_ms
            .map(|c| crate::control::earliest_seed_after_cleared(c, self.margin_ms))
    }
}

/// Validates a replay point T: the applier is paused, `T - margin` is not
/// before the frontier (every change after T is still queued), the queue's
/// retention still covers it, and T is not after `latest_ms` or now.
pub fn validate_replay_point(t_ms: i64, b: &ReplayBounds) -> Result<(), ReplayError> {
    if !b.paused {
        return Err(ReplayError::NotPaused);
    }
    let earliest_ms = b.earliest_ms();
    if let (Some(cleared_ms), Some(floor)) = (b.cleared_ms, b.earliest_after_cleared()) {
        if t_ms < floor {
            return Err(ReplayError::BeforeCleared {
                t_ms,
                earliest_ms,
                cleared_ms,
            });
        }
    }
    if t_ms < earliest_ms {
        return Err(match b.frontier_ms {
            Some(frontier_ms)
                if crate::control::earliest_replay_point(frontier_ms, b.margin_ms)
                    >= earliest_ms =>
            {
                ReplayError::TooEarly {
                    t_ms,
                    earliest_ms,
                    frontier_ms,
                    margin_ms: b.margin_ms,
                }
            }
            _ => ReplayError::BeyondRetention {
                t_ms,
                earliest_ms,
                retention_s: b.retention_s,
            },
        });
    }
    let latest_ms = b.latest_ms.min(b.now_ms);
    if t_ms > latest_ms {
        return Err(ReplayError::InFuture {
            t_ms,
            now_ms: b.now_ms,
            latest_ms,
        });
    }
    Ok(())
}

/// Everything `status` shows, as facts. `None` means "no datapoint" (for
/// example no recent applies); a fact that could not be read is listed in
/// `unknown` instead, and `cutover` treats it as a NO-GO.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Status {
    pub stack: String,
    pub migration: String,
    pub source_table: String,
    pub target_table: String,
    pub forwarder_trigger: String,
    /// Whether the forwarder's trigger reads the source's current stream
    /// (false when the source's stream is off; `None`: unknown).
    pub forwarder_on_current_stream: Option<bool>,
    /// Lambda's last processing result for the forwarder's trigger.
    pub forwarder_last_result: Option<String>,
    pub applier_trigger: String,
    pub cutoff_ms: Option<i64>,
    pub mode: String,
    pub paused_at_ms: Option<i64>,
    /// The newest change the applier consumed.
    pub consumed_ms: Option<i64>,
    pub seed_method: Option<String>,
    pub seed_ms: Option<i64>,
    pub queue_visible: u64,
    pub queue_in_flight: u64,
    pub queue_oldest_age_s: Option<f64>,
    pub dlq_depth: u64,
    pub stream_failures: u64,
    /// How far the forwarder is behind the stream: the newest datapoint of
    /// its IteratorAge or its own lag metric (`None`: no recent batch).
    pub forwarder_iterator_age_ms: Option<f64>,
    pub window_s: u64,
    pub forwarded_per_min: Option<f64>,
    pub applied_per_min: Option<f64>,
    pub skipped_per_min: Option<f64>,
    /// Replication lag of the most recent applies (`None`: no recent applies).
    pub replication_lag_ms: Option<f64>,
    /// Failures in the window (send failures, bad records, failed and
    /// undecodable messages, missing cutoff, Lambda errors and throttles).
    pub errors: Option<f64>,
    pub last_verify: Option<String>,
    /// How long ago the verify of `last_verify` began (`None`: unknown).
    pub last_verify_age_s: Option<i64>,
    /// When the verify of `last_verify` began (`None`: unknown).
    pub verify_ms: Option<i64>,
    /// When the source's current stream was created, when that is after
    /// the seed's point (less a backup's minute, which only the stream
    /// holds): the stream was replaced since, and the changes made while
    /// it was (and those the old stream had not yet forwarded) may be in
    /// no queue. `None`: not after it, no seed, or the time is unknown.
    pub stream_replaced_ms: Option<i64>,
    /// The forwarder starts at `LATEST` (StreamStartingPosition): on a
    /// replaced stream it saw nothing before its redeploy, so no verify
    /// can tell when that was; only a re-seed closes the gap.
    pub forwarder_from_latest: bool,
    /// The target is not the table the seed recorded (deleted and created
    /// again since, or gone): it lacks what the seed wrote.
    pub target_replaced: bool,
    /// How long a clean verdict counts ([`verdict_lifetime_s`]).
    pub verdict_lifetime_s: i64,
    /// When `finish` ran (`None`: not finished, or reopened by `resume`).
    pub finished_ms: Option<i64>,
    /// A copy seed's checkpoints (`None`: no copy seed is running).
    pub copy_progress: Option<CopyProgress>,
    /// A restart or replay was interrupted while it retired the copy seed
    /// (its checkpoint is a retired marker): re-run it.
    pub retire_interrupted: bool,
    /// Facts that could not be read, with the reason.
    pub unknown: Vec<String>,
}

/// How far a copy seed is: scan segments or export files done of all,
/// items copied, the rate since the copy started and the time left.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CopyProgress {
    /// "segments" (scan copy), "files" (export load) or "sweep segments"
    /// (the tombstone sweep after a fanned-out copy).
    pub parts: String,
    pub done: u64,
    pub total: u64,
    /// Items read so far (copied or found already there).
    pub items: u64,
    /// The source's item count (DescribeTable's estimate, or the export's).
    pub expected: Option<u64>,
    pub items_per_s: Option<f64>,
    /// Seconds left at that rate.
    pub eta_s: Option<f64>,
}

/// Thresholds for `cutover`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CutoverThresholds {
    pub max_lag_ms: f64,
    pub max_backlog: u64,
    /// Accept the cutover without a clean verify since the last seed (the
    /// decision says so).
    pub waive_verify: bool,
}

/// GO or NO-GO, with every reason.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub go: bool,
    pub reasons: Vec<String>,
    pub checks: Vec<Check>,
}

/// The cutover decision. Every condition is a check; GO needs all of them to
/// pass. Anything unknown is a NO-GO.
/// How long a clean full verify counts for `cutover`: a change made after
/// the verify began and then given up on sits in the DLQ or the stream
/// failure queue (`status` shows them, and `cutover` is NO-GO) until it
/// expires: its retention counts from when it was first queued, which is
/// after the verify began. So while the verdict is younger than the shorter
/// retention (less an hour for clocks), no such change can have left unseen.
/// Purging either queue by hand is outside this rule.
pub fn verdict_lifetime_s(dlq_retention_s: i64, stream_failure_retention_s: i64) -> i64 {
    dlq_retention_s.min(stream_failure_retention_s) - 3600
}

/// "3 d 4 h", "2 h 5 min", "40 s".
pub fn duration_text(s: i64) -> String {
    let s = s.max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

pub fn cutover(status: &Status, t: &CutoverThresholds) -> Decision {
    let mut checks = Vec::new();
    checks.push(match status.cutoff_ms {
        Some(_) => Check::pass("cutoff", "set"),
        None => Check::fail("cutoff", "no cutoff: the target was never seeded"),
    });
    // A finished migration's triggers are off by design: no advice to
    // `resume`, which would reopen it (and let `restart` drop a target the
    // application may already write; helper-63 #4).
    if status.finished_ms.is_some() {
        checks.push(Check::fail(
            "finished",
            "the migration was finished: cutover checks a running migration; `ddb-relay finish` reports whether the target is ready (run again while both triggers are off, it changes nothing). Reopen with `ddb-relay resume` only to re-seed before the application switched",
        ));
    }
    let finished = status.finished_ms.is_some();
    checks.push(
        match (status.applier_trigger.as_str(), status.paused_at_ms) {
            (_, _) if finished => Check::fail("applier", "off since finish"),
            ("Enabled", None) => Check::pass("applier", "Enabled"),
            (_, Some(_)) => Check::fail(
                "applier",
                "paused: changes are not being applied (`ddb-relay resume`)",
            ),
            (state, None) => Check::fail(
                "applier",
                format!("trigger {state}: changes are not being applied (`ddb-relay resume`)"),
            ),
        },
    );
    if status.mode != "normal" {
        checks.push(Check::fail(
            "mode",
            format!("{}: a scan copy is still running", status.mode),
        ));
    }
    if status.copy_progress.is_some() {
        checks.push(Check::fail(
            "copy",
            "a copy seed or its tombstone sweep has not finished (re-run `ddb-relay seed` to finish it)",
        ));
    }
    if status.retire_interrupted {
        checks.push(Check::fail(
            "copy",
            "a restart or replay was interrupted while it retired the copy seed: re-run it",
        ));
    }
    checks.push(
        match (
            status.forwarder_trigger.as_str(),
            status.forwarder_on_current_stream,
        ) {
            (_, _) if finished => Check::fail("forwarder", "off since finish"),
            (_, Some(false)) => Check::fail(
                "forwarder",
                "its trigger reads an old stream of the source: changes are not forwarded; redeploy the stack with the current stream's ARN, then verify (changes around the switch may be in no queue) or re-seed",
            ),
            ("Enabled", None) => Check::fail(
                "forwarder",
                "unknown whether its trigger reads the source's current stream (the source table could not be described)",
            ),
            ("Enabled", Some(true)) => match status.forwarder_last_result.as_deref() {
                Some(r) if r.starts_with("PROBLEM") => Check::fail(
                    "forwarder",
                    format!("its trigger reports {r}: stream batches are failing"),
                ),
                _ => Check::pass("forwarder", "Enabled"),
            },
            (state, _) => Check::fail(
                "forwarder",
                format!("trigger {state}: source changes are not forwarded"),
            ),
        },
    );
    checks.push(match status.forwarder_iterator_age_ms {
        Some(age) if age > t.max_lag_ms => Check::fail(
            "forwarder lag",
            format!(
                "{:.1} s behind the stream > {:.1} s",
                age / 1000.0,
                t.max_lag_ms / 1000.0
            ),
        ),
        Some(age) => Check::pass("forwarder lag", format!("{:.1} s", age / 1000.0)),
        None => Check::pass("forwarder lag", "no recent stream batch (caught up)"),
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
        None => Check::fail("lag", "no recent applies with a backlog"),
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
                "{} stream batches the forwarder gave up on, their changes in no queue and not in the target: re-seed (`ddb-relay pause`, `ddb-relay restart`), then `ddb-relay dlq stream-failures --clear` deletes the records the new seed covers",
                status.stream_failures
            ),
        )
    });
    checks.push(match status.errors {
        Some(e) if e > 0.0 => Check::fail(
            "errors",
            format!("{e:.0} in the last {} s", status.window_s),
        ),
        _ => Check::pass("errors", format!("none in the last {} s", status.window_s)),
    });
    for u in &status.unknown {
        checks.push(Check::fail("unknown", format!("{u} (unknown is not zero)")));
    }
    if status.target_replaced {
        checks.push(Check::fail(
            "target",
            "the target table is not the one the seed wrote (deleted and created again since, by the IaC or by hand): it lacks what the seed wrote; re-seed (`ddb-relay pause`, then `ddb-relay restart`)",
        ));
    }
    if let Some(replaced) = status.stream_replaced_ms {
        // Not waivable: a known gap, which only a verify begun after it
        // (or a re-seed) closes.
        checks.push(match verify_after_stream(status, replaced) {
            Ok(()) => Check::pass(
                "source stream",
                "replaced after the seed, and a clean verify began after that",
            ),
            Err(why) => Check::fail(
                "source stream",
                format!(
                    "the source's stream was replaced after the seed (the current one was created after the seed's point, less a backup's minute): changes made while it was replaced, and any the old stream had not forwarded, may be in no queue; {why}"
                ),
            ),
        });
    }
    checks.push(match (verdict(status), t.waive_verify) {
        (Ok(d), _) => Check::pass("verify", d),
        (Err(d), true) => Check::warn("verify", format!("waived by --no-verify: {d}")),
        (Err(d), false) => Check::fail("verify", format!("{d} (or waive with --no-verify)")),
    });
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

mod verdict;
pub use verdict::{verdict, verify_after_stream};

#[cfg(test)]
mod tests;
