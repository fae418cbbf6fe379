use super::*;

fn healthy() -> Status {
    Status {
        applier_trigger: "Enabled".into(),
        forwarder_trigger: "Enabled".into(),
        forwarder_on_current_stream: Some(true),
        mode: "normal".into(),
        cutoff_ms: Some(1),
        replication_lag_ms: Some(800.0),
        forwarder_iterator_age_ms: Some(300.0),
        errors: Some(0.0),
        window_s: 300,
        last_verify: Some("clean".into()),
        last_verify_age_s: Some(600),
        verdict_lifetime_s: verdict_lifetime_s(14 * 86_400, 14 * 86_400),
        ..Status::default()
    }
}

const T: CutoverThresholds = CutoverThresholds {
    max_lag_ms: 5_000.0,
    max_backlog: 0,
    waive_verify: false,
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
    s.forwarder_trigger = "Disabled".into();
    s.forwarder_iterator_age_ms = Some(3_600_000.0);
    s.mode = "tombstone".into();
    s.unknown = vec!["AWS/Lambda Throttles: AccessDenied".into()];
    s.forwarder_last_result = Some("PROBLEM: Function call failed".into());
    let d = cutover(&s, &T);
    assert!(!d.go);
    assert_eq!(d.reasons.len(), 12, "{:#?}", d.reasons);
}

#[test]
fn a_disabled_or_lagging_forwarder_is_no_go() {
    let mut s = healthy();
    s.forwarder_trigger = "Disabled".into();
    assert!(!cutover(&s, &T).go);
    let mut s = healthy();
    s.forwarder_iterator_age_ms = Some(3_600_000.0);
    assert!(!cutover(&s, &T).go);
    let mut s = healthy();
    s.forwarder_on_current_stream = Some(false);
    assert!(!cutover(&s, &T).go);
    let mut s = healthy();
    s.forwarder_on_current_stream = None;
    assert!(!cutover(&s, &T).go, "unknown stream: NO-GO");
    let mut s = healthy();
    s.forwarder_last_result = Some("PROBLEM: Function call failed".into());
    assert!(!cutover(&s, &T).go, "a trigger reporting a problem: NO-GO");
    let mut s = healthy();
    s.forwarder_iterator_age_ms = None;
    assert!(cutover(&s, &T).go, "an idle stream is caught up");
}

#[test]
fn an_unfinished_copy_or_sweep_is_no_go() {
    let mut s = healthy();
    s.copy_progress = Some(CopyProgress::default());
    let d = cutover(&s, &T);
    assert!(!d.go);
    assert!(d
        .checks
        .iter()
        .any(|c| c.name == "copy" && c.status == CheckStatus::Fail));
    // With the verify waived too.
    let waived = CutoverThresholds {
        waive_verify: true,
        ..T
    };
    assert!(!cutover(&s, &waived).go);
    // A retire interrupted (the restart's own pending state refuses too).
    let mut s = healthy();
    s.retire_interrupted = true;
    let d = cutover(&s, &waived);
    assert!(!d.go);
    assert!(d
        .checks
        .iter()
        .any(|c| c.name == "copy" && c.detail.contains("re-run")));
}

/// helper-63 #4: after `finish`, cutover is NO-GO and never advises
/// `resume` (it would reopen the migration).
#[test]
fn a_finished_migration_is_no_go_without_advice_to_resume() {
    let mut s = healthy();
    s.finished_ms = Some(1);
    s.paused_at_ms = Some(1);
    s.applier_trigger = "Disabled".into();
    s.forwarder_trigger = "Disabled".into();
    let d = cutover(&s, &T);
    assert!(!d.go);
    assert!(d.checks.iter().any(|c| c.name == "finished"));
    for c in &d.checks {
        assert!(
            !c.detail.contains("`ddb-relay resume`)"),
            "{}: {}",
            c.name,
            c.detail
        );
    }
    for r in &d.reasons {
        assert!(!r.contains("(`ddb-relay resume`)"), "{r}");
    }
}

#[test]
fn unknown_is_not_zero() {
    let mut s = healthy();
    s.unknown = vec!["DdbRelay FailedMessages: ThrottlingException".into()];
    let d = cutover(&s, &T);
    assert!(!d.go);
    assert!(
        d.reasons[0].contains("unknown is not zero"),
        "{:?}",
        d.reasons
    );
}

#[test]
fn no_clean_verify_since_the_seed_is_no_go_unless_waived() {
    let mut s = healthy();
    s.last_verify = None;
    assert!(!cutover(&s, &T).go);
    let d = cutover(
        &s,
        &CutoverThresholds {
            waive_verify: true,
            ..T
        },
    );
    assert!(d.go);
    assert!(d
        .checks
        .iter()
        .any(|c| c.status == CheckStatus::Warn && c.detail.contains("waived")));
}

#[test]
fn a_clean_verdict_counts_only_while_no_failed_change_since_can_have_expired() {
    let fails = |s: &Status| {
        let d = cutover(s, &T);
        assert!(!d.go, "{:?}", d.checks);
        d.checks
            .iter()
            .find(|c| c.name == "verify")
            .map(|c| c.detail.clone())
            .unwrap()
    };
    // Just inside the shorter retention (a 4-day DLQ here), less an hour.
    let mut s = healthy();
    s.verdict_lifetime_s = verdict_lifetime_s(4 * 86_400, 14 * 86_400);
    assert_eq!(s.verdict_lifetime_s, 4 * 86_400 - 3600);
    s.last_verify_age_s = Some(4 * 86_400 - 3601);
    assert!(cutover(&s, &T).go);
    s.last_verify_age_s = Some(4 * 86_400 - 3600);
    let d = fails(&s);
    assert!(
        d.contains("3 d 23 h ago") && d.contains("verify` again"),
        "{d}"
    );
    // The stream failure queue's retention counts too.
    let mut s = healthy();
    s.verdict_lifetime_s = verdict_lifetime_s(14 * 86_400, 86_400);
    s.last_verify_age_s = Some(86_400);
    fails(&s);
    // A verdict whose time is unknown (an older item) does not count.
    let mut s = healthy();
    s.last_verify_age_s = None;
    assert!(fails(&s).contains("not recorded"));
    // --no-verify waives it, and says why it was needed.
    let d = cutover(
        &s,
        &CutoverThresholds {
            waive_verify: true,
            ..T
        },
    );
    assert!(d.go);
    assert!(d
        .checks
        .iter()
        .any(|c| c.status == CheckStatus::Warn && c.detail.contains("not recorded")));
}

#[test]
fn a_paused_applier_is_no_go_whatever_its_trigger_says() {
    let mut s = healthy();
    s.paused_at_ms = Some(5);
    assert!(!cutover(&s, &T).go);
}

#[test]
fn unknown_lag_is_go_only_with_an_empty_queue() {
    let mut s = healthy();
    s.replication_lag_ms = None;
    assert!(cutover(&s, &T).go);
    s.queue_in_flight = 1;
    assert!(!cutover(&s, &T).go);
}

fn bounds(frontier: Option<i64>) -> ReplayBounds {
    ReplayBounds {
        frontier_ms: frontier,
        paused: true,
        margin_ms: 120_000,
        now_ms: 2_000_000,
        latest_ms: 2_000_000,
        retention_s: 1_209_600,
        cleared_ms: None,
    }
}

#[test]
fn a_replay_point_must_hold_every_cleared_stream_failure() {
    // Nothing consumed, paused: only the cleared record's change bounds T.
    let mut b = bounds(None);
    b.cleared_ms = Some(1_500_400);
    // The seed at T holds the change when it is before T - margin, in
    // whole seconds: 1_500_400 < 1_501_000 <= T - 120 s.
    let first = 1_621_000;
    assert_eq!(b.earliest_ms(), first);
    assert!(validate_replay_point(first, &b).is_ok());
    let err = validate_replay_point(first - 1, &b).unwrap_err();
    assert!(
        matches!(err, ReplayError::BeforeCleared { earliest_ms, cleared_ms: 1_500_400, .. } if earliest_ms == first),
        "{err}"
    );
    assert!(err.to_string().contains("stream failure record"), "{err}");
    // A later frontier still wins.
    b.frontier_ms = Some(1_600_000);
    assert_eq!(b.earliest_ms(), 1_720_000);
    assert!(matches!(
        validate_replay_point(1_700_000, &b),
        Err(ReplayError::TooEarly { .. })
    ));
}

#[test]
fn replay_points_keep_the_margin_and_name_the_earliest() {
    let mut b = bounds(Some(1_000_000));
    b.paused = false;
    assert_eq!(
        validate_replay_point(1_500_000, &b),
        Err(ReplayError::NotPaused)
    );
    let b = bounds(Some(1_000_000));
    let err = validate_replay_point(1_100_000, &b).expect_err("too early");
    assert!(
        err.to_string().contains("earliest valid T is 1120000"),
        "{err}"
    );
    assert!(validate_replay_point(1_120_000, &b).is_ok());
    assert!(matches!(
        validate_replay_point(2_100_000, &b),
        Err(ReplayError::InFuture { .. })
    ));
    // Nothing consumed and never paused before: only retention bounds it.
    assert!(validate_replay_point(1_000, &bounds(None)).is_ok());
}

#[test]
fn the_queue_retention_bounds_replay_points() {
    let mut b = bounds(None);
    b.now_ms = 2_000_000_000;
    b.latest_ms = b.now_ms;
    b.retention_s = 3600;
    let err = validate_replay_point(b.now_ms - 3_600_000, &b).unwrap_err();
    assert!(matches!(err, ReplayError::BeyondRetention { .. }), "{err}");
    assert!(validate_replay_point(b.earliest_ms(), &b).is_ok());
    // Changes after T must outlive the re-seed in the queue: a point
    // that leaves them less than a quarter of the retention (here 15
    // minutes) is refused.
    let inside = b.now_ms - 3_600_000 + 2 * b.margin_ms + 15 * 60_000;
    assert_eq!(b.earliest_ms(), inside);
    let err = validate_replay_point(inside - 1, &b).unwrap_err();
    assert!(matches!(err, ReplayError::BeyondRetention { .. }), "{err}");
    // At the template's 14 days, a day.
    b.retention_s = 1_209_600;
    assert_eq!(
        b.earliest_ms(),
        b.now_ms - 13 * 86_400_000 + 2 * b.margin_ms
    );
}

#[test]
fn resume_refuses_when_the_changes_it_needs_may_expire() {
    let mut b = bounds(None);
    b.now_ms = 2_000_000_000_000;
    b.latest_ms = b.now_ms;
    b.retention_s = 1_209_600;
    // 14 days, less a day to drain: 13 days.
    let floor = b.now_ms - 13 * 86_400_000;
    // A first seed's cutoff, nothing consumed.
    assert!(b.check_resume(floor).is_ok());
    let err = b.check_resume(floor - 1).unwrap_err();
    assert_eq!(err.needed_ms, floor - 1);
    assert_eq!(err.floor_ms, floor);
    // A pause: what was consumed (or the pause) counts, not the old cutoff.
    b.frontier_ms = Some(floor);
    assert!(b.check_resume(floor - 86_400_000).is_ok());
    b.frontier_ms = Some(floor - 1);
    assert!(b.check_resume(floor - 86_400_000).is_err());
    // A re-seed left paused: its cutoff is after the frontier, and counts.
    assert!(b.check_resume(floor).is_ok());
    // A short retention keeps a quarter of it.
    b.retention_s = 3600;
    b.frontier_ms = None;
    let floor = b.now_ms - 45 * 60_000;
    assert!(b.check_resume(floor).is_ok());
    assert!(b.check_resume(floor - 1).is_err());
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

#[test]
fn a_stream_replaced_after_the_seed_needs_a_verify_begun_after_it() {
    let replaced = Status {
        seed_ms: Some(1_000_000),
        stream_replaced_ms: Some(2_000_000),
        verify_ms: Some(1_500_000),
        ..healthy()
    };
    no_go_whatever_is_waived(&replaced, "source stream");
    assert!(verdict(&replaced).is_err());
    // A verify of unknown start counts as before it.
    assert!(verdict(&Status {
        verify_ms: None,
        ..replaced.clone()
    })
    .is_err());
    let verified = Status {
        verify_ms: Some(2_000_001),
        ..replaced
    };
    assert!(verdict(&verified).is_ok());
    let d = cutover(&verified, &T);
    assert!(d.go, "{:?}", d.reasons);
}

#[test]
fn a_replaced_target_is_no_go_whatever_is_waived() {
    let replaced = Status {
        target_replaced: true,
        ..healthy()
    };
    no_go_whatever_is_waived(&replaced, "target:");
    assert!(verdict(&replaced).is_err());
}

/// `status` is NO-GO for a reason starting with `reason`, with the verify
/// waived or not.
fn no_go_whatever_is_waived(status: &Status, reason: &str) {
    for waive in [false, true] {
        let d = cutover(
            status,
            &CutoverThresholds {
                waive_verify: waive,
                ..T
            },
        );
        assert!(
            !d.go && d.reasons.iter().any(|r| r.starts_with(reason)),
            "{waive}: {:?}",
            d.reasons
        );
    }
}

#[test]
fn with_a_forwarder_from_latest_only_a_reseed_closes_a_replaced_stream() {
    let latest = Status {
        seed_ms: Some(1_000_000),
        stream_replaced_ms: Some(2_000_000),
        verify_ms: Some(2_500_000),
        forwarder_from_latest: true,
        ..healthy()
    };
    no_go_whatever_is_waived(&latest, "source stream");
    assert!(verdict(&latest).is_err());
    // A clean verify begun after the new stream, too old to count: the
    // stream is covered, and only the verify check (waivable) fails.
    let old = Status {
        forwarder_from_latest: false,
        last_verify_age_s: Some(20 * 86_400),
        ..latest
    };
    let waived = cutover(
        &old,
        &CutoverThresholds {
            waive_verify: true,
            ..T
        },
    );
    assert!(waived.go, "{:?}", waived.reasons);
}
