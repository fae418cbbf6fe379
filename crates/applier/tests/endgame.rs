//! The end of a migration under a second operator (helper-63): `pause` and
//! `resume` racing each other, `finish` taking back what it did, a `finish`
//! run again, and `cutover` on a finished migration. Each on the simulation
//! harness, with the CLI's own commands.
#![allow(clippy::unwrap_used)]

mod sim;

use std::time::Duration;

use ddb_relay::commands::{finish, pause, verify};
use ddb_relay::report::Report;
use sim::{copy, source_item, Config, Shape, Sim};

/// A simulation with one item, seeded by backup, converged, then paused.
async fn paused(seed: u64) -> Sim {
    let sim = Sim::new(Config::quiet(Shape::Identity, seed)).await;
    sim.db.put("source", source_item(1, 1, 20, 0));
    sim.start_pollers();
    sim::seed_by_backup(&sim).await;
    sim.assert_converged().await;
    pause::pause(&sim.ctx, false).await.unwrap();
    assert!(!sim.aws.trigger_enabled(sim::APPLIER));
    sim
}

/// A trigger update the caller may not make.
fn denied() -> relay_aws::AwsError {
    relay_aws::AwsError::permanent(
        "UpdateEventSourceMapping",
        "AccessDeniedException",
        "not allowed",
    )
}

/// Whatever the order, a paused migration's applier trigger is Disabled
/// (else every batch fails into the DLQ).
async fn assert_paused_means_disabled(sim: &Sim) {
    let c = sim.ctx.control().await.unwrap();
    assert!(
        c.paused_at_ms.is_none() || !sim.aws.trigger_enabled(sim::APPLIER),
        "paused with the applier trigger Enabled: {c:?}"
    );
}

/// Two operators' commands: `pause` (`true`) or `resume` (`false`).
async fn op(sim: &Sim, pausing: bool) -> anyhow::Result<()> {
    if pausing {
        pause::pause(&sim.ctx, false).await.map(|_| ())
    } else {
        pause::resume(&sim.ctx, false).await.map(|_| ())
    }
}

/// Operator A's command at once and operator B's `after` ms later; their
/// results (A's, B's).
async fn race(sim: &Sim, a: bool, b: bool, after: u64) -> (anyhow::Result<()>, anyhow::Result<()>) {
    let later = async {
        tokio::time::sleep(Duration::from_millis(after)).await;
        op(sim, b).await
    };
    tokio::join!(op(sim, a), later)
}

/// helper-63 #1: operator B's `pause` reads the trigger (Disabled) before
/// operator A's `resume` enables it, and writes its pause after A lifted the
/// old one: B must disable the trigger whatever it read.
#[test]
fn a_pause_that_read_the_trigger_before_a_resume_enabled_it_still_disables_it() {
    sim::run(async {
        let sim = paused(151).await;
        // The first trigger read (A's) is quick, later ones (B's) answer
        // after 3 s; enabling takes 2 s.
        let mut reads = 0;
        sim.aws.set_mapping_latency(move |call| match call {
            None => {
                reads += 1;
                Duration::from_secs(if reads == 1 { 0 } else { 3 })
            }
            Some(true) => Duration::from_secs(2),
            Some(false) => Duration::ZERO,
        });
        let (a, b) = race(&sim, false, true, 1_000).await;
        a.unwrap();
        b.unwrap();
        assert!(sim.ctx.control().await.unwrap().paused_at_ms.is_some());
        assert_paused_means_disabled(&sim).await;
    });
}

/// helper-63 #5: operator A's `resume` lifts the pause, and its enable of
/// the trigger lands after operator B paused again: A reads the control
/// item after its enable and disables the trigger again.
#[test]
fn a_resume_whose_enable_lands_after_another_pause_disables_it_again() {
    sim::run(async {
        let sim = paused(157).await;
        sim.aws.set_mapping_latency(|call| match call {
            Some(true) => Duration::from_secs(2),
            _ => Duration::ZERO,
        });
        let (a, b) = race(&sim, false, true, 1_000).await;
        b.unwrap();
        let err = format!("{:#}", a.unwrap_err());
        assert!(err.contains("disabled again"), "{err}");
        assert_paused_means_disabled(&sim).await;
    });
}

/// helper-63 #6: a pause whose trigger cannot be disabled, and whose
/// take-back fails too, says so and names the way out.
#[test]
fn a_pause_that_cannot_take_itself_back_says_so() {
    sim::run(async {
        let sim = paused(163).await;
        pause::resume(&sim.ctx, false).await.unwrap();
        sim.stop_pollers();
        sim.aws.fail_mapping_updates(Some(denied()));
        sim.deny_after("control", "UpdateItem(control)", 1);
        let err = format!("{:#}", pause::pause(&sim.ctx, false).await.unwrap_err());
        assert!(err.contains("could not be taken back"), "{err}");
        assert!(err.contains("`ddb-relay resume`"), "{err}");
    });
}

/// helper-66 #3: operator B's `pause` finds operator A's fence, but A's
/// trigger update fails and A takes its fence back: nobody resumed, so B
/// pauses again with its own fence instead of settling against the lifted
/// one as if someone had.
#[test]
fn a_pause_that_found_a_fence_taken_back_pauses_with_its_own() {
    sim::run(async {
        let sim = paused(181).await;
        pause::resume(&sim.ctx, false).await.unwrap();
        // Updates take 2 s: A's disable (sent at 0 s) fails, B's (at 1 s)
        // lands after the fault is gone (2.5 s).
        sim.aws.set_mapping_latency(|call| match call {
            Some(_) => Duration::from_secs(2),
            None => Duration::ZERO,
        });
        sim.aws.fail_mapping_updates(Some(denied()));
        let heal = async {
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            sim.aws.fail_mapping_updates(None);
        };
        let ((a, b), ()) = tokio::join!(race(&sim, true, true, 1_000), heal);
        let err = format!("{:#}", a.unwrap_err());
        assert!(err.contains("the pause was taken back"), "{err}");
        b.unwrap();
        let c = sim.ctx.control().await.unwrap();
        assert!(
            c.paused_at_ms.is_some() && c.taken_back_ms.is_some(),
            "{c:?}"
        );
        assert!(!sim.aws.trigger_enabled(sim::APPLIER));
    });
}

/// helper-70 #2: operator A's pause fails to disable the trigger and its
/// take-back lands after operator B's `pause` (which kept A's fence) has
/// settled, so B's `stopped_by_ms` write finds the item moved: B settles
/// again and, the fence being taken back, pauses with its own, instead of
/// failing with the migration running and its trigger Disabled.
#[test]
fn a_take_back_landing_after_a_pauses_settle_is_paused_over() {
    sim::run(async {
        let sim = paused(193).await;
        pause::resume(&sim.ctx, false).await.unwrap();
        // Control writes land 1 s after they are sent; trigger updates 2 s.
        sim.db.set_latency(|call| {
            if call.op == "UpdateItem(control)" {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            }
        });
        sim.aws.set_mapping_latency(|call| match call {
            Some(_) => Duration::from_secs(2),
            None => Duration::ZERO,
        });
        sim.aws.fail_mapping_updates(Some(denied()));
        // A: fence at 1 s, its disable fails at 3 s, its take-back lands at
        // 4 s. B (from 1.5 s): disable at 3.5 s, settle, then its write
        // lands at 4.5 s.
        let heal = async {
            tokio::time::sleep(Duration::from_millis(3_200)).await;
            sim.aws.fail_mapping_updates(None);
        };
        let ((a, b), ()) = tokio::join!(race(&sim, true, true, 1_500), heal);
        let err = format!("{:#}", a.unwrap_err());
        assert!(err.contains("the pause was taken back"), "{err}");
        b.unwrap();
        let c = sim.ctx.control().await.unwrap();
        assert!(
            c.paused_at_ms.is_some() && c.taken_back_ms.is_some(),
            "{c:?}"
        );
        assert!(!sim.aws.trigger_enabled(sim::APPLIER));
    });
}

/// A converged migration whose writes stopped, pollers off, 200 s on (the
/// functions' metrics settle), with a clean verify if `verified`.
async fn ready_to_finish(seed: u64, verified: bool) -> Sim {
    let sim = Sim::new(Config::quiet(Shape::Identity, seed)).await;
    sim.start_pollers();
    sim.db.put("source", source_item(1, 1, 20, 0));
    sim::seed_by_backup(&sim).await;
    sim.assert_converged().await;
    if verified {
        let v = verify::verify(&sim.ctx, 100.0, false, 1, copy(), &Default::default())
            .await
            .unwrap();
        assert!(v.clean && v.recorded);
    }
    sim.stop_pollers();
    tokio::time::sleep(Duration::from_secs(200)).await;
    sim
}

/// helper-63 #3, #7, #8: a `finish` that fails after both triggers are off
/// (here: its report cannot be written) runs again without an error and
/// changes nothing; its report gives the finish time the control item
/// holds, and says NOT VERIFIED until a clean verify.
#[test]
fn a_finish_that_failed_after_the_triggers_runs_again_for_its_report() {
    sim::run(async {
        let sim = ready_to_finish(167, false).await;
        let missing = std::path::Path::new("/nonexistent-ddb-relay-dir/report.json");
        let err = format!(
            "{:#}",
            finish::finish(&sim.ctx, 3, 300, Some(missing), false)
                .await
                .unwrap_err()
        );
        assert!(
            err.contains("run `ddb-relay finish --report F` again"),
            "{err}"
        );
        let c = sim.ctx.control().await.unwrap();
        let finished = c.finished_ms.unwrap();
        assert!(!sim.aws.trigger_enabled(sim::FORWARDER) && !sim.aws.trigger_enabled(sim::APPLIER));
        tokio::time::sleep(Duration::from_secs(60)).await;
        let again = finish::finish(&sim.ctx, 3, 300, None, false).await.unwrap();
        assert!(
            again.already && again.text().contains("by an earlier run"),
            "{}",
            again.text()
        );
        assert_eq!(again.finished_ms, finished);
        assert_eq!(again.triggers, "Disabled");
        assert!(!again.verified);
        assert!(again.text().contains("NOT VERIFIED"), "{}", again.text());
        assert_eq!(
            sim.ctx.control().await.unwrap().version,
            c.version,
            "changed nothing"
        );
        let v = verify::verify(&sim.ctx, 100.0, false, 1, copy(), &Default::default())
            .await
            .unwrap();
        assert!(v.clean && v.recorded, "{v:?}");
        let ready = finish::finish(&sim.ctx, 3, 300, None, false).await.unwrap();
        assert!(
            ready.verified && ready.text().contains("is ready"),
            "{}",
            ready.text()
        );
        assert_eq!(ready.exit_code(), 0);
    });
}

/// helper-63 #2: another operator pauses while `finish` waits for quiet,
/// and a trigger then cannot be disabled: the take-back restores the
/// triggers as they were after the wait, so the paused applier stays off.
#[test]
fn a_finish_taken_back_leaves_a_pause_made_while_it_waited_with_its_trigger_off() {
    sim::run(async {
        let sim = ready_to_finish(173, true).await;
        sim.aws
            .fail_mapping_updates_of(sim::FORWARDER, Some(denied()));
        let other = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            pause::pause(&sim.ctx, false).await.unwrap();
        };
        let (r, ()) = tokio::join!(finish::finish(&sim.ctx, 3, 300, None, false), other);
        let err = format!("{:#}", r.unwrap_err());
        assert!(err.contains("could not be disabled"), "{err}");
        let c = sim.ctx.control().await.unwrap();
        assert!(c.paused_at_ms.is_some() && c.finished_ms.is_none(), "{c:?}");
        assert_paused_means_disabled(&sim).await;
        assert!(sim.aws.trigger_enabled(sim::FORWARDER));
    });
}

/// helper-65 #1: operator B's `pause` of a paused migration is slow to
/// disable the trigger, and operator A's `resume` lifts the pause and
/// enables it meanwhile: B reads the control item after its disable and
/// enables the trigger again, so the resumed migration's applier runs.
#[test]
fn a_pause_whose_disable_lands_after_another_resume_enables_it_again() {
    sim::run(async {
        let sim = paused(179).await;
        let before = sim.ctx.control().await.unwrap().taken_back_ms;
        sim.aws.set_mapping_latency(|call| match call {
            Some(false) => Duration::from_secs(3),
            _ => Duration::ZERO,
        });
        let (b, a) = race(&sim, true, false, 500).await;
        a.unwrap();
        let err = format!("{:#}", b.unwrap_err());
        assert!(err.contains("the pause was lifted"), "{err}");
        let c = sim.ctx.control().await.unwrap();
        // No take-back was marked, so B does not pause again (helper-66 #3).
        assert!(c.paused_at_ms.is_none() && c.cutoff_ms.is_some());
        assert_eq!(c.taken_back_ms, before, "{c:?}");
        assert!(
            sim.aws.trigger_enabled(sim::APPLIER),
            "resumed, so applying"
        );
    });
}

/// helper-65 #5: `resume` cannot read the control item after enabling the
/// trigger: it disables the trigger again (the safe side) and says so.
#[test]
fn a_resume_that_cannot_read_after_its_enable_leaves_the_applier_off() {
    sim::run(async {
        let sim = paused(181).await;
        sim.stop_pollers();
        sim.deny_after("control", "GetItem", 1);
        let err = format!("{:#}", pause::resume(&sim.ctx, false).await.unwrap_err());
        assert!(
            err.contains("could not be read after the applier trigger was updated"),
            "{err}"
        );
        assert!(err.contains("run `ddb-relay resume` again"), "{err}");
        assert!(!sim.aws.trigger_enabled(sim::APPLIER));
    });
}

/// helper-66 #1: a correction is itself checked. Operator A's `pause` of a
/// paused migration is slow to disable; B's `resume` lifts the pause
/// meanwhile, so A enables the trigger again, slowly; B then pauses again,
/// and A's late enable lands after B's pause: A reads again after its
/// correction and disables.
#[test]
fn a_late_correction_is_corrected_again() {
    sim::run(async {
        let sim = paused(191).await;
        let (mut enables, mut disables) = (0, 0);
        sim.aws.set_mapping_latency(move |call| match call {
            Some(true) => {
                enables += 1;
                Duration::from_secs(if enables == 2 { 3 } else { 0 })
            }
            Some(false) => {
                disables += 1;
                Duration::from_secs(if disables == 1 { 3 } else { 0 })
            }
            None => Duration::ZERO,
        });
        let b = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            op(&sim, false).await.unwrap();
            tokio::time::sleep(Duration::from_millis(3_500)).await;
            op(&sim, true).await
        };
        let (_, b) = tokio::join!(op(&sim, true), b);
        b.unwrap();
        assert!(sim.ctx.control().await.unwrap().paused_at_ms.is_some());
        assert_paused_means_disabled(&sim).await;
    });
}

/// helper-66 #2: operator B's `resume` reopens the migration while
/// `finish` is disabling the triggers: finish reads the control item after
/// its disables, puts both triggers back as B's resume left them, and
/// stops; the reopened migration forwards and applies.
#[test]
fn a_finish_overtaken_by_a_resume_puts_the_triggers_back() {
    sim::run(async {
        let sim = ready_to_finish(193, true).await;
        sim.aws.set_mapping_latency(|call| match call {
            Some(false) => Duration::from_secs(3),
            _ => Duration::ZERO,
        });
        let b = async {
            wait_for_finish(&sim).await;
            op(&sim, false).await
        };
        let (a, b) = tokio::join!(finish::finish(&sim.ctx, 3, 300, None, false), b);
        b.unwrap();
        let err = format!("{:#}", a.unwrap_err());
        assert!(err.contains("another operator reopened"), "{err}");
        let c = sim.ctx.control().await.unwrap();
        assert!(c.finished_ms.is_none() && c.paused_at_ms.is_none(), "{c:?}");
        assert!(sim.aws.trigger_enabled(sim::FORWARDER), "forwarding");
        assert!(sim.aws.trigger_enabled(sim::APPLIER), "applying");
    });
}

/// helper-66 #6: a finished migration whose trigger was enabled by hand is
/// refused at once, naming `resume`, instead of waiting for a quiet its
/// paused applier can never give.
#[test]
fn finish_on_a_finished_migration_with_a_trigger_enabled_by_hand_names_resume() {
    sim::run(async {
        let sim = ready_to_finish(197, true).await;
        finish::finish(&sim.ctx, 3, 300, None, false).await.unwrap();
        let fwd = sim.ctx.forwarder_trigger().await.unwrap();
        sim.ctx
            .set_trigger(&fwd.uuid, true, "forwarder")
            .await
            .unwrap();
        let began = sim.now_ms();
        let err = finish::finish(&sim.ctx, 3, 300, None, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("run `ddb-relay resume`"), "{err}");
        assert!(sim.now_ms() - began < 60_000, "refused at once");
    });
}

/// helper-67 D1: `finish` puts the triggers back for a `resume` that
/// reopened the migration meanwhile, and operator C pauses while finish
/// enables the forwarder (slowly): finish settles the applier against the
/// control item as read after that, so C's pause keeps it off.
#[test]
fn a_finish_giving_the_triggers_back_keeps_a_pause_made_meanwhile() {
    sim::run(async {
        let sim = ready_to_finish(199, true).await;
        let (mut enables, mut disables) = (0, 0);
        sim.aws.set_mapping_latency(move |call| match call {
            Some(true) => {
                enables += 1;
                Duration::from_secs(if enables == 4 { 3 } else { 0 })
            }
            Some(false) => {
                disables += 1;
                Duration::from_secs(if disables <= 2 { 3 } else { 0 })
            }
            None => Duration::ZERO,
        });
        let others = async {
            let finished = wait_for_finish(&sim).await;
            op(&sim, false).await.unwrap();
            let at = finished + 7_000 - sim.now_ms();
            tokio::time::sleep(Duration::from_millis(at as u64)).await;
            op(&sim, true).await.unwrap();
        };
        let (a, ()) = tokio::join!(finish::finish(&sim.ctx, 3, 300, None, false), others);
        let err = format!("{:#}", a.unwrap_err());
        assert!(err.contains("another operator reopened"), "{err}");
        assert!(sim.ctx.control().await.unwrap().paused_at_ms.is_some());
        assert_paused_means_disabled(&sim).await;
    });
}

/// helper-67 D2: `resume` reopens the migration while `finish` stops the
/// triggers, and its control write is slow: finish reads the finish and
/// ends, then resume's write lands. Resume enables the forwarder once more
/// after its write, so the reopened migration forwards.
#[test]
fn a_resume_reopening_during_a_finish_keeps_its_forwarder() {
    sim::run(async {
        let sim = ready_to_finish(211, true).await;
        // Finish's first disable (the forwarder's) lands after resume's
        // enable of it.
        let mut disables = 0;
        sim.aws.set_mapping_latency(move |call| match call {
            Some(false) => {
                disables += 1;
                Duration::from_secs(if disables == 1 { 1 } else { 0 })
            }
            _ => Duration::ZERO,
        });
        let b = async {
            wait_for_finish(&sim).await;
            sim.db.set_latency(|call| {
                if call.table == "control" && call.op == "UpdateItem(control)" {
                    Duration::from_secs(2)
                } else {
                    Duration::ZERO
                }
            });
            op(&sim, false).await
        };
        let (a, b) = tokio::join!(finish::finish(&sim.ctx, 3, 300, None, false), b);
        a.unwrap();
        b.unwrap();
        let c = sim.ctx.control().await.unwrap();
        assert!(c.finished_ms.is_none(), "reopened: {c:?}");
        assert!(sim.aws.trigger_enabled(sim::FORWARDER), "forwarding");
    });
}

/// Polls until `finish` has written the finish; its time.
async fn wait_for_finish(sim: &Sim) -> i64 {
    for _ in 0..6_000 {
        if let Some(f) = sim.ctx.control().await.unwrap().finished_ms {
            return f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("finish never wrote the finish");
}

/// helper-70 #4: a `finish` whose applier trigger cannot be disabled takes
/// its pause and finish back while operator B's `pause` has kept its fence:
/// the control item is taken back before any trigger is enabled, so B's
/// pause (which then pauses with its own fence) is never left with its
/// applier trigger Enabled.
#[test]
fn a_finish_taken_back_under_a_pause_that_kept_its_fence_leaves_the_applier_off() {
    sim::run(async {
        let sim = ready_to_finish(191, true).await;
        // Every trigger update takes 2 s; the applier's fail until B's.
        sim.aws.set_mapping_latency(|call| match call {
            Some(_) => Duration::from_secs(2),
            None => Duration::ZERO,
        });
        sim.aws
            .fail_mapping_updates_of(sim::APPLIER, Some(denied()));
        let other = async {
            for _ in 0..6_000 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if sim.ctx.control().await.unwrap().finished_ms.is_some() {
                    break;
                }
            }
            // The finish's applier disable fails at +4 s; B's lands at +5 s.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let heal = async {
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                sim.aws.fail_mapping_updates(None);
            };
            let (p, ()) = tokio::join!(pause::pause(&sim.ctx, false), heal);
            p
        };
        let (f, p) = tokio::join!(finish::finish(&sim.ctx, 3, 300, None, false), other);
        let err = format!("{:#}", f.unwrap_err());
        assert!(err.contains("could not be disabled"), "{err}");
        p.unwrap();
        let c = sim.ctx.control().await.unwrap();
        assert!(c.paused_at_ms.is_some() && c.finished_ms.is_none(), "{c:?}");
        assert_paused_means_disabled(&sim).await;
        assert!(sim.aws.trigger_enabled(sim::FORWARDER));
    });
}

/// helper-71 #1: operator B's `pause` keeps `finish`'s fence and writes its
/// own time before the finish fails to stop the forwarder: the finish's
/// take-back finds the item moved, takes back the finish alone and keeps
/// B's pause (the forwarder running, the applier off), instead of leaving
/// the migration finished under a forwarder that runs.
#[test]
fn a_finish_taken_back_after_a_pause_kept_its_fence_keeps_the_pause() {
    sim::run(async {
        let sim = ready_to_finish(197, true).await;
        // The finish's forwarder disable (the first) fails after 5 s; B's
        // applier disable takes 1 s.
        let mut disables = 0;
        sim.aws.set_mapping_latency(move |call| match call {
            Some(false) => {
                disables += 1;
                Duration::from_secs(if disables == 1 { 5 } else { 1 })
            }
            _ => Duration::ZERO,
        });
        sim.aws
            .fail_mapping_updates_of(sim::FORWARDER, Some(denied()));
        let other = async {
            for _ in 0..6_000 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if sim.ctx.control().await.unwrap().finished_ms.is_some() {
                    break;
                }
            }
            pause::pause(&sim.ctx, false).await
        };
        let (f, p) = tokio::join!(finish::finish(&sim.ctx, 3, 300, None, false), other);
        let err = format!("{:#}", f.unwrap_err());
        assert!(err.contains("the pause kept"), "{err}");
        p.unwrap();
        let c = sim.ctx.control().await.unwrap();
        assert!(c.paused_at_ms.is_some() && c.finished_ms.is_none(), "{c:?}");
        assert_paused_means_disabled(&sim).await;
        assert!(sim.aws.trigger_enabled(sim::FORWARDER));
    });
}

/// helper-71 #2: a trigger enable in flight from before (an earlier
/// release's take-back enables before its control write) lands after the
/// pause settled and before its `stopped_by_ms` write: the pause settles
/// again after that write, so it never reports success with its trigger
/// Enabled.
#[test]
fn a_trigger_enable_landing_during_a_pauses_last_write_is_corrected() {
    sim::run(async {
        use relay_aws::operator::Triggers;
        let sim = paused(199).await;
        pause::resume(&sim.ctx, false).await.unwrap();
        // The pause's fence lands at 1 s and its last write at 2 s; the
        // stray enable at 1.5 s.
        sim.db.set_latency(|call| {
            if call.op == "UpdateItem(control)" {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            }
        });
        sim.aws.set_mapping_latency(|call| match call {
            Some(true) => Duration::from_millis(1_500),
            _ => Duration::ZERO,
        });
        let uuid = sim.ctx.applier_trigger().await.unwrap().uuid;
        let stray = async {
            sim.aws.set_mapping(&uuid, true).await.unwrap();
        };
        let (p, ()) = tokio::join!(pause::pause(&sim.ctx, false), stray);
        p.unwrap();
        assert!(sim.ctx.control().await.unwrap().paused_at_ms.is_some());
        assert_paused_means_disabled(&sim).await;
    });
}

/// helper-71 #3: operator B's `pause` keeps the pause it found; R resumes
/// (no take-back), then D's pause fails to disable the trigger and takes
/// its own fence back. Only the fence B kept counts: B lets R's resume
/// stand instead of pausing over it.
#[test]
fn a_pause_lets_a_resume_stand_when_another_fence_was_taken_back() {
    sim::run(async {
        let sim = paused(203).await;
        let kept = sim.ctx.control().await.unwrap().paused_at_ms;
        // B's disable (the first update) lands at 3 s; D's fails at 2 s.
        let mut disables = 0;
        sim.aws.set_mapping_latency(move |call| match call {
            Some(false) => {
                disables += 1;
                Duration::from_secs(if disables == 1 { 3 } else { 0 })
            }
            _ => Duration::ZERO,
        });
        let r = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            op(&sim, false).await
        };
        let d = async {
            tokio::time::sleep(Duration::from_millis(1_900)).await;
            sim.aws.fail_mapping_updates(Some(denied()));
            tokio::time::sleep(Duration::from_millis(100)).await;
            let d = op(&sim, true).await;
            sim.aws.fail_mapping_updates(None);
            d
        };
        let (b, r, d) = tokio::join!(op(&sim, true), r, d);
        r.unwrap();
        let d = format!("{:#}", d.unwrap_err());
        assert!(d.contains("the pause was taken back"), "{d}");
        let b = format!("{:#}", b.unwrap_err());
        assert!(b.contains("the pause was lifted"), "{b}");
        let c = sim.ctx.control().await.unwrap();
        assert!(
            c.paused_at_ms.is_none() && c.taken_back_ms.is_some() && c.taken_back_ms != kept,
            "{c:?}"
        );
        assert!(sim.aws.trigger_enabled(sim::APPLIER));
    });
}

/// A `pause` whose fence another operator lifted and a third paused again
/// before its last write keeps that pause (helper-70 #3).
#[test]
fn a_pause_that_finds_the_migration_paused_again_keeps_that_pause() {
    sim::run(async {
        let sim = paused(201).await;
        pause::resume(&sim.ctx, false).await.unwrap();
        // B's disable (the first update) lands at 3 s; the others at once.
        let mut disables = 0;
        sim.aws.set_mapping_latency(move |call| match call {
            Some(false) => {
                disables += 1;
                Duration::from_secs(if disables == 1 { 3 } else { 0 })
            }
            _ => Duration::ZERO,
        });
        let r = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            op(&sim, false).await
        };
        let c = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            op(&sim, true).await
        };
        let (b, r, c) = tokio::join!(op(&sim, true), r, c);
        r.unwrap();
        c.unwrap();
        b.unwrap();
        assert!(sim.ctx.control().await.unwrap().paused_at_ms.is_some());
        assert_paused_means_disabled(&sim).await;
        assert!(!sim.aws.trigger_enabled(sim::APPLIER));
    });
}

/// helper-71 #1's guard: `finish`'s forwarder disable takes effect but
/// reports failure, and its take-back of the pause and the finish fails
/// too (the control table refuses writes). The item still says finished,
/// so the forwarder is not enabled again under it, and the applier is off
/// as the item says; the error says what could not be taken back.
#[test]
fn a_finish_whose_take_back_failed_does_not_enable_the_forwarder_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    sim::run(async {
        let sim = ready_to_finish(231, true).await;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        sim.aws.set_mapping_latency(move |call| {
            if call == Some(false) {
                flag.store(true, Ordering::SeqCst);
            }
            Duration::ZERO
        });
        sim.aws
            .fail_mapping_updates_of(sim::FORWARDER, Some(denied()));
        sim.aws.land_failed_mapping_updates(true);
        sim.db.set_faults(move |call| {
            (stopping.load(Ordering::SeqCst) && call.op == "UpdateItem(control)").then(|| {
                relay_aws::fake::DbFault::Error(relay_aws::AwsError::permanent(
                    "UpdateItem",
                    "AccessDeniedException",
                    "not allowed",
                ))
            })
        });
        let err = format!(
            "{:#}",
            finish::finish(&sim.ctx, 3, 300, None, false)
                .await
                .unwrap_err()
        );
        sim.db.clear_faults();
        sim.aws.fail_mapping_updates(None);
        assert!(err.contains("could not be disabled"), "{err}");
        assert!(err.contains("could not be taken back"), "{err}");
        let c = sim.ctx.control().await.unwrap();
        assert!(c.finished_ms.is_some() && c.paused_at_ms.is_some(), "{c:?}");
        assert!(!sim.aws.trigger_enabled(sim::FORWARDER), "{err}");
        assert!(!sim.aws.trigger_enabled(sim::APPLIER), "{err}");
    });
}
