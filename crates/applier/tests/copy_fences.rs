//! The fences around a copy seed that another command replaces (helper-56):
//! a restart that waited while another operator lifted the pause, a retire
//! of a fanned-out copy interrupted during its wait, a sweep or a switch to
//! normal mode left behind by a replaced copy, and a stopped copy resumed
//! after its queued changes may have expired. Each on the simulation
//! harness, with the CLI's own commands.
#![allow(clippy::unwrap_used)]

mod sim;

use std::time::Duration;

use ddb_relay::args::Method;
use ddb_relay::commands::copy::{
    checkpoint_key, forget_checkpoint_of, read_checkpoint, still_the_copy, sweep_tombstones,
};
use ddb_relay::commands::lease::Lease;
use ddb_relay::commands::{pause, replay, scan};
use ddb_relay::repair::{repair, Fence};
use relay_aws::operator::{Cond, Tables};
use relay_core::apply::{is_tombstone, tombstone, PLACEHOLDER_ATTR};
use relay_core::control::Mode;
use relay_core::item::{AttributeValue as V, Attrs};
use relay_core::transform::Identity;
use sim::{copy, seed_by_scan, source_item, source_key, Config, Shape, Sim};

/// A simulation with one item, seeded by backup and converged.
async fn seeded_by_backup(seed: u64) -> Sim {
    let sim = Sim::new(Config::quiet(Shape::Identity, seed)).await;
    sim.db.put("source", source_item(1, 1, 20, 0));
    sim.start_pollers();
    sim::seed_by_backup(&sim).await;
    sim.assert_converged().await;
    sim
}

/// Writes a copy checkpoint of `seed_ms` (with `more` attributes).
async fn checkpoint_of(sim: &Sim, seed_ms: i64, more: &[(&str, V)]) -> Attrs {
    let mut cp = checkpoint_key(&sim.ctx);
    cp.insert("seed_ms".into(), V::N(seed_ms.to_string()));
    for (k, v) in more {
        cp.insert((*k).into(), v.clone());
    }
    sim.aws
        .put_item(&sim.ctx.stack.control_table, &cp, &Cond::Always)
        .await
        .unwrap();
    cp
}

/// A copy checkpoint of the current seed, as an unfinished sweep leaves it.
async fn unfinished_sweep(sim: &Sim) -> Attrs {
    let c = sim.ctx.control().await.unwrap();
    checkpoint_of(sim, c.seed_ms.unwrap(), &[]).await
}

/// A simulation with a copy checkpoint (its key and seed) and a run's
/// lease on it.
async fn leased(seed: u64) -> (Sim, Attrs, i64, Lease) {
    let sim = Sim::new(Config::quiet(Shape::Identity, seed)).await;
    let seed_ms = sim.now_ms();
    checkpoint_of(&sim, seed_ms, &[]).await;
    let ckey = checkpoint_key(&sim.ctx);
    let lease = Lease::take(&sim.ctx, &ckey, seed_ms).await.unwrap();
    (sim, ckey, seed_ms, lease)
}

/// A copy seed of three items stopped by an error (its puts refused),
/// left in tombstone mode; with the pollers started before it.
async fn stopped_copy(seed: u64, pollers: bool) -> Sim {
    use relay_aws::fake::DbFault;
    use relay_aws::AwsError;
    let sim = Sim::new(Config::quiet(Shape::Identity, seed)).await;
    for i in 1..=3 {
        sim.db.put("source", source_item(i, 1, 20, 0));
    }
    if pollers {
        sim.start_pollers();
    }
    sim.create_target();
    sim.db.set_faults(|call| {
        (call.table == "target" && call.op == "PutItem").then(|| {
            DbFault::Error(AwsError::permanent(
                "PutItem",
                "ValidationException",
                "refused",
            ))
        })
    });
    scan::seed_scan(&sim.ctx, copy(), false, false)
        .await
        .unwrap_err();
    sim.db.clear_faults();
    sim
}

/// D3: `restart --method scan` waits for the earliest point and for the
/// pause's invocations; another operator's `resume` meanwhile must stop it
/// before it clears the target under a running applier.
#[test]
fn a_scan_restart_whose_pause_was_lifted_while_it_waited_clears_nothing() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 101)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.start_pollers();
        seed_by_scan(&sim).await;
        sim.assert_converged().await;
        let unswept = unfinished_sweep(&sim).await;
        pause::pause(&sim.ctx, false).await.unwrap();
        let other = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            pause::resume(&sim.ctx, false).await.unwrap();
        };
        let (restart, ()) = tokio::join!(scan::restart_scan(&sim.ctx, copy(), false, false), other);
        let err = restart.unwrap_err().to_string();
        assert!(err.contains("not paused"), "{err}");
        // Refused before the copy was retired (helper-58 #1): its
        // unfinished sweep still shows.
        let left = read_checkpoint(&sim.ctx, &checkpoint_key(&sim.ctx))
            .await
            .unwrap();
        assert_eq!(left, Some(unswept));
        let c = sim.ctx.control().await.unwrap();
        assert_eq!(c.seed_method.as_deref(), Some("scan"), "{c:?}");
        assert_eq!(sim.db.items("target").len(), 1, "nothing cleared");
        sim.assert_converged().await;
    });
}

/// helper-57 #1: the same for `restart --method backup` (and `replay`):
/// a `resume` while it waits for the pause's invocations must stop it
/// before it drops the target (the applier consumed changes after its
/// point meanwhile, which the queue no longer holds).
#[test]
fn a_backup_restart_whose_pause_was_lifted_while_it_waited_drops_nothing() {
    sim::run(async {
        let sim = seeded_by_backup(109).await;
        let unswept = unfinished_sweep(&sim).await;
        let paused = pause::pause(&sim.ctx, false).await.unwrap();
        let stopped_by = paused.stopped_by_ms.unwrap();
        // After the restart's own check of the earliest point, before the
        // pause's invocations have ended.
        let at = stopped_by - 4_000;
        assert!(at > paused.paused_at_ms.unwrap() + sim.ctx.stack.margin_ms);
        let other = async {
            tokio::time::sleep(Duration::from_millis((at - sim.now_ms()) as u64)).await;
            pause::resume(&sim.ctx, false).await.unwrap();
        };
        let (restart, ()) = tokio::join!(replay::replay(&sim.ctx, None, false, false), other);
        let err = restart.unwrap_err().to_string();
        assert!(err.contains("not paused"), "{err}");
        let c = sim.ctx.control().await.unwrap();
        assert_eq!(c.seed_method.as_deref(), Some("backup"), "{c:?}");
        assert!(
            sim.aws.describe("target").await.unwrap().is_some(),
            "not dropped"
        );
        let left = read_checkpoint(&sim.ctx, &checkpoint_key(&sim.ctx))
            .await
            .unwrap();
        assert_eq!(left, Some(unswept), "the copy was not retired");
        sim.db.put("source", source_item(1, 2, 20, 0));
        sim.assert_converged().await;
    });
}

/// D2: the retire of a fanned-out copy waits out the workers' timeout; a
/// re-run after that wait was interrupted (Ctrl-C) waits again.
#[test]
fn an_interrupted_retire_of_a_fanned_out_copy_waits_again() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 103)).await;
        let ckey = checkpoint_key(&sim.ctx);
        checkpoint_of(&sim, sim.now_ms(), &[("fanned_out", V::Bool(true))]).await;
        let interrupted =
            tokio::time::timeout(Duration::from_secs(5), scan::retire_copy(&sim.ctx)).await;
        assert!(interrupted.is_err(), "the retire waits for the workers");
        let left = read_checkpoint(&sim.ctx, &ckey).await.unwrap().unwrap();
        assert!(left.contains_key("fanned_out"), "{left:?}");
        assert!(!left.contains_key("seed_ms"), "the old runs' saves fail");
        // `status` names it (helper-58 #3).
        let st = ddb_relay::commands::status::status(&sim.ctx, 60)
            .await
            .unwrap();
        assert!(st.retire_interrupted);
        let text = ddb_relay::commands::status::status_text(&st);
        assert!(text.contains("Re-run it"), "{text}");
        // A re-run of `seed` does not take the marker for its own copy: it
        // names the way out (helper-57 #3).
        sim.create_target();
        let err = scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("Re-run it"), "{err}");
        let began = sim.now_ms();
        scan::retire_copy(&sim.ctx).await.unwrap();
        assert!(sim.now_ms() - began >= 5_000, "waited again");
        assert!(read_checkpoint(&sim.ctx, &ckey).await.unwrap().is_none());
    });
}

/// D1: a copy's sweep, switch to normal mode and checkpoint cleanup act
/// only while the control item still names that copy: a run left behind
/// by a restart must not delete the new copy's tombstones (an item deleted
/// during the new copy would come back) nor its checkpoint.
#[test]
fn a_sweep_left_behind_by_a_replaced_copy_deletes_no_tombstone() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 107)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.start_pollers();
        seed_by_scan(&sim).await;
        sim.assert_converged().await;
        sim.stop_pollers();
        let c = sim.ctx.control().await.unwrap();
        let seed_ms = c.seed_ms.unwrap();
        sim.db.put("target", tombstone(&source_key(2)));
        let keys = vec!["pk".to_string()];
        let old = seed_ms - 60_000;
        let err = sweep_tombstones(&sim.ctx, &keys, 2, old)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("was replaced"), "{err}");
        let err = still_the_copy(&sim.ctx, old, Mode::Tombstone)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("writes nothing more"), "{err}");
        // A restart's pending state keeps the seed's time and normal mode
        // (helper-57 #2): the sweep stops under it too.
        let pending = relay_core::control::ControlState {
            seed_method: Some("scan-pending".into()),
            cutoff_ms: None,
            ..c.clone()
        };
        let pending = sim.ctx.write_control(&c, pending).await.unwrap();
        let err = sweep_tombstones(&sim.ctx, &keys, 2, seed_ms)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("was replaced"), "{err}");
        let c = sim.ctx.write_control(&pending, c.clone()).await.unwrap();
        assert_eq!(c.seed_ms, Some(seed_ms));
        assert_eq!(
            sim.db
                .items("target")
                .values()
                .filter(|i| is_tombstone(i))
                .count(),
            1
        );
        let ckey = checkpoint_key(&sim.ctx);
        checkpoint_of(&sim, seed_ms, &[]).await;
        forget_checkpoint_of(&sim.ctx, old).await.unwrap();
        assert!(read_checkpoint(&sim.ctx, &ckey).await.unwrap().is_some());
        // The copy the control item names sweeps.
        assert_eq!(
            sweep_tombstones(&sim.ctx, &keys, 2, seed_ms).await.unwrap(),
            1
        );
        forget_checkpoint_of(&sim.ctx, seed_ms).await.unwrap();
        assert!(read_checkpoint(&sim.ctx, &ckey).await.unwrap().is_none());
    });
}

/// D5: re-running `seed` to continue a stopped copy lifts the pause, as
/// `resume` does, and is refused as `resume` would be when the changes the
/// target still needs may expire from the queue first.
#[test]
fn a_stopped_copy_continued_after_a_pause_as_long_as_the_retention_is_refused() {
    sim::run(async {
        let sim = stopped_copy(113, true).await;
        assert_eq!(sim.ctx.control().await.unwrap().mode, Mode::Tombstone);
        pause::pause(&sim.ctx, false).await.unwrap();
        sim.stop_pollers();
        tokio::time::sleep(Duration::from_secs(14 * 86_400)).await;
        let err = scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("expire"), "{err}");
        assert!(!sim.aws.trigger_enabled(sim::APPLIER), "still paused");
    });
}

/// helper-59 D1: a re-seed records itself, then waits out the old copy's
/// workers; if another operator wrote the control item meanwhile (a second
/// re-seed that finished, its applier running), it drops nothing.
#[test]
fn a_reseed_overtaken_while_it_waited_for_the_old_copys_workers_drops_nothing() {
    sim::run(async {
        let sim = seeded_by_backup(127).await;
        let mut cp = unfinished_sweep(&sim).await;
        cp.insert("fanned_out".into(), V::Bool(true));
        sim.aws
            .put_item(&sim.ctx.stack.control_table, &cp, &Cond::Always)
            .await
            .unwrap();
        let paused = pause::pause(&sim.ctx, false).await.unwrap();
        // Inside the retire's wait (a worker's timeout after the pause's
        // invocations ended and the restart recorded itself).
        let at = paused.stopped_by_ms.unwrap() + 10_000;
        let other = async {
            tokio::time::sleep(Duration::from_millis((at - sim.now_ms()) as u64)).await;
            let read = sim.ctx.control().await.unwrap();
            assert!(read.seed_method.as_deref().unwrap().ends_with("-pending"));
            let moved = relay_core::control::ControlState {
                last_verify: Some("another operator".into()),
                ..read.clone()
            };
            sim.ctx.write_control(&read, moved).await.unwrap();
        };
        let (restart, ()) = tokio::join!(replay::replay(&sim.ctx, None, false, false), other);
        let err = restart.unwrap_err().to_string();
        assert!(err.contains("another operator changed"), "{err}");
        assert!(
            sim.aws.describe("target").await.unwrap().is_some(),
            "not dropped"
        );
    });
}

/// helper-56 D1 / helper-59 D2: a copy run in a CLI has a put in flight
/// when another operator's restart replaces the copy. The restart waits the
/// run's lease out before it clears the target, and the run abandons its
/// write once its lease cannot be renewed: its older image never lands
/// after the clear, where the new copy (puts only where absent) would skip
/// the key and the applier would skip the change as before the new cutoff.
#[test]
fn a_copy_run_in_flight_when_a_restart_replaces_it_lands_nothing_after_the_clear() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 131)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.start_pollers();
        sim.create_target();
        // Every copy put takes 30 s: the first copy's put of version 1 is
        // in flight across the restart's clear, and the new copy's put of
        // version 2 comes after it.
        sim.db.set_latency(|call| {
            if call.table == "target" && call.op == "PutItem" {
                Duration::from_secs(30)
            } else {
                Duration::ZERO
            }
        });
        let first = scan::seed_scan(&sim.ctx, copy(), false, false);
        let other = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            sim.db.put("source", source_item(1, 2, 20, 0));
            tokio::time::sleep(Duration::from_secs(1)).await;
            pause::pause(&sim.ctx, false).await.unwrap();
            scan::restart_scan(&sim.ctx, copy(), false, false).await
        };
        let (first, restart) = tokio::join!(first, other);
        assert_eq!(restart.unwrap().copied, 1);
        sim.db.set_latency(|_| Duration::ZERO);
        sim.assert_converged().await;
        let err = first.unwrap_err().to_string();
        assert!(err.contains("writes nothing more"), "{err}");
    });
}

/// The retire of a copy waits until every lease its runs recorded has
/// passed, and no run can renew its lease once the retire began.
#[test]
fn a_retire_waits_out_every_lease_and_no_run_renews_after_it() {
    sim::run(async {
        let (sim, ckey, seed_ms, lease) = leased(137).await;
        let began = sim.now_ms();
        let stays = async {
            // The run keeps working (and renewing) while the retire waits.
            lease
                .hold(&sim.ctx, async {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    Ok(())
                })
                .await
        };
        let (retired, held) = tokio::join!(scan::retire_copy(&sim.ctx), stays);
        retired.unwrap();
        let waited = sim.now_ms() - began;
        assert!(
            waited >= relay_core::lease::LEASE_MS + relay_core::lease::SLACK_MS,
            "{waited}"
        );
        let err = held.unwrap_err().to_string();
        assert!(err.contains("writes nothing more"), "{err}");
        assert!(read_checkpoint(&sim.ctx, &ckey).await.unwrap().is_none());
        assert!(Lease::take(&sim.ctx, &ckey, seed_ms).await.is_err());
    });
}

/// A run whose lease lapsed (a suspended machine, a control table that did
/// not answer) starts no write, and abandons the one in flight when its
/// lease lapses: the waiter's figure holds for it.
#[test]
fn a_run_whose_lease_lapsed_starts_no_write_and_abandons_the_one_in_flight() {
    sim::run(async {
        let (sim, _, _, lease) = leased(139).await;
        let usable = relay_core::lease::LEASE_MS - relay_core::lease::MARGIN_MS;
        let began = sim.now_ms();
        let slow = lease
            .write(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
            .await;
        assert!(slow.unwrap_err().to_string().contains("lapsed"));
        // (Less what the real wall clock moved meanwhile, to the ms.)
        let waited = sim.now_ms() - began;
        assert!(
            (usable - 100..=usable).contains(&waited),
            "abandoned when it lapsed: {waited}"
        );
        let late = lease.write(async { Ok(()) }).await;
        assert!(late.unwrap_err().to_string().contains("lapsed"));
    });
}

/// A copy's switch to normal mode (and its sweep) waits while another run
/// of the same copy (a second terminal) still holds its lease: that run's
/// puts must land while the copy's tombstones still stand.
#[test]
fn a_copy_switches_to_normal_mode_only_after_its_other_runs_stopped() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 149)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.start_pollers();
        sim.create_target();
        let ckey = checkpoint_key(&sim.ctx);
        let seed = scan::seed_scan(&sim.ctx, copy(), false, false);
        let other = async {
            // Joins once the copy recorded its checkpoint.
            let lease = loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let c = read_checkpoint(&sim.ctx, &ckey).await.unwrap();
                if let Some(V::N(s)) = c.as_ref().and_then(|c| c.get("seed_ms")) {
                    break Lease::take(&sim.ctx, &ckey, s.parse().unwrap())
                        .await
                        .unwrap();
                }
            };
            lease
                .hold(&sim.ctx, async {
                    tokio::time::sleep(Duration::from_secs(100)).await;
                    Ok(())
                })
                .await
                .unwrap();
            assert_eq!(sim.ctx.control().await.unwrap().mode, Mode::Tombstone);
            lease.release(&sim.ctx).await.unwrap();
        };
        let (seed, ()) = tokio::join!(seed, other);
        seed.unwrap();
        assert_eq!(sim.ctx.control().await.unwrap().mode, Mode::Normal);
        sim.assert_converged().await;
    });
}

/// A lease that lapsed (here: its renewal answered only after the run's
/// window closed) is not brought back by a later renewal: after a machine
/// slept, AWS's time as the process carries it is behind, and a lease
/// recorded from it would end before the run's new window.
#[test]
fn a_lapsed_lease_is_not_renewed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    sim::run(async {
        let (sim, _, _, lease) = leased(163).await;
        // The first renewal takes 50 s to answer.
        let once = Arc::new(AtomicBool::new(true));
        sim.db.set_latency(move |call| {
            if call.op == "UpdateItem" && once.swap(false, Ordering::SeqCst) {
                Duration::from_secs(50)
            } else {
                Duration::ZERO
            }
        });
        let held = lease
            .hold(&sim.ctx, async {
                tokio::time::sleep(Duration::from_secs(300)).await;
                Ok(())
            })
            .await;
        let err = held.unwrap_err().to_string();
        assert!(err.contains("lapsed"), "{err}");
        assert!(lease.left().is_zero());
    });
}

/// A write longer than one lease window (a throttled put backing off) goes
/// on while the run renews its lease: each renewal moves the lapse on.
#[test]
fn a_long_write_under_a_renewed_lease_is_not_abandoned() {
    sim::run(async {
        let (sim, _, _, lease) = leased(173).await;
        let lease = &lease;
        let work = async {
            lease
                .write(async {
                    tokio::time::sleep(Duration::from_secs(50)).await;
                    Ok(())
                })
                .await
        };
        lease.hold(&sim.ctx, work).await.unwrap();
        assert!(!lease.left().is_zero());
    });
}

/// A repair's placeholder put is in flight when another operator's restart
/// clears the target, and the repair dies before it can take the
/// placeholder back; with `gone`, the source item is deleted meanwhile (its
/// delete is older than the new cutoff). Returns the restart's copy count.
async fn placeholder_across_a_restart(seed: u64, gone: bool) -> (Sim, u64) {
    let sim = Sim::new(Config::quiet(Shape::Identity, seed)).await;
    sim.db.put("source", source_item(1, 1, 20, 0));
    sim.start_pollers();
    seed_by_scan(&sim).await;
    sim.assert_converged().await;
    // A difference verify would repair: the target lost the item.
    sim.db.delete("target", &source_key(1), false);
    // Every target put takes 30 s (the placeholder lands after the
    // restart's clear, the new copy's put after the placeholder), and
    // every control read 1 s (the repair dies in its fence check).
    sim.db.set_latency(|call| match (call.table, call.op) {
        ("target", "PutItem") => Duration::from_secs(30),
        ("control", "GetItem") => Duration::from_secs(1),
        _ => Duration::ZERO,
    });
    let fence = Fence::of(&sim.ctx.control().await.unwrap());
    let t = Identity {
        key_names: vec!["pk".into()],
    };
    let began = sim.now_ms();
    let key = source_key(1);
    let repair = repair(&sim.ctx, &t, &fence, &key, &[]);
    let dies = tokio::time::timeout(Duration::from_millis(30_500), repair);
    let other = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if gone {
            sim.db.delete("source", &source_key(1), false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        pause::pause(&sim.ctx, false).await.unwrap();
        scan::restart_scan(&sim.ctx, copy(), false, false).await
    };
    // The clear ran before the placeholder landed: it is there, over an
    // empty key, while the new copy's put is still in flight.
    let probe = async {
        tokio::time::sleep(Duration::from_millis(30_200)).await;
        let held = sim.db.items("target");
        assert_eq!(held.len(), 1, "only the placeholder: {held:?}");
        assert!(held.values().all(|i| i.contains_key(PLACEHOLDER_ATTR)));
    };
    let (died, restart, ()) = tokio::join!(dies, other, probe);
    assert!(died.is_err(), "the repair was stopped in flight");
    assert!(sim.now_ms() - began > 30_500);
    let copied = restart.unwrap().copied;
    sim.db.set_latency(|_| Duration::ZERO);
    (sim, copied)
}

/// helper-56 D4: the new copy replaces a placeholder a repair overtaken by a
/// restart left, as it would an absent key: a copy that skipped it would
/// leave the key empty but for the placeholder, and the applier skips the
/// item's changes as older than the new cutoff.
#[test]
fn a_repair_placeholder_landing_after_a_restarts_clear_does_not_keep_the_key_from_the_copy() {
    sim::run(async {
        let (sim, copied) = placeholder_across_a_restart(139, false).await;
        assert_eq!(copied, 1, "the placeholder was replaced");
        sim.assert_converged().await;
    });
}

/// helper-62 #1: when the item the placeholder stood for is gone, no copy
/// put replaces it; the copy's sweep deletes it with the tombstones.
#[test]
fn a_repair_placeholder_for_an_item_gone_since_is_swept_with_the_tombstones() {
    sim::run(async {
        let (sim, copied) = placeholder_across_a_restart(149, true).await;
        assert_eq!(copied, 0);
        sim.assert_converged().await;
    });
}

/// helper-57 #6c: a scan restart that finds no target names the way out
/// the stack has. A restore cannot seed a transform stack, so there it
/// names only the IaC's table; on a plain stack, an interrupted restore's
/// re-run too.
#[test]
fn a_scan_restart_without_a_target_names_the_way_out_the_stack_has() {
    for (shape, seed, restore) in [(Shape::Rename, 141, false), (Shape::Identity, 143, true)] {
        sim::run(async {
            let sim = Sim::new(Config::quiet(shape, seed)).await;
            sim.db.put("source", source_item(1, 1, 20, 0));
            sim.start_pollers();
            seed_by_scan(&sim).await;
            sim.assert_converged().await;
            pause::pause(&sim.ctx, false).await.unwrap();
            // What an interrupted `restart --method backup` leaves.
            let read = sim.ctx.control().await.unwrap();
            let pending = relay_core::control::ControlState {
                seed_method: Some("backup-pending".into()),
                cutoff_ms: None,
                ..read.clone()
            };
            sim.ctx.write_control(&read, pending).await.unwrap();
            sim.aws.delete_table("target").await.unwrap();
            let err = scan::restart_scan(&sim.ctx, copy(), false, false)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("create it with your IaC"), "{err}");
            assert!(err.contains("interrupted backup-pending"), "{err}");
            assert_eq!(err.contains("restart --method backup"), restore, "{err}");
        });
    }
}

/// The model test's case (a `replay` killed after its restore, before its
/// cutoff): a copy seed over that target is refused, since it would keep
/// the restored (older) items and the applier would skip their changes.
#[test]
fn a_copy_seed_over_a_target_an_interrupted_restore_filled_is_refused() {
    sim::run(async {
        let sim = seeded_by_backup(223).await;
        let read = sim.ctx.control().await.unwrap();
        let restored = relay_core::control::ControlState {
            seed_method: Some("pitr".into()),
            cutoff_ms: None,
            ..read.clone()
        };
        sim.ctx.write_control(&read, restored).await.unwrap();
        let before = sim.db.items("target");
        let err = scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("an interrupted pitr seed or replay"), "{err}");
        assert!(err.contains("replay --from T"), "{err}");
        assert_eq!(sim.db.items("target"), before);
    });
}

/// A copy seed into a target that holds items no seed of the migration
/// wrote (no cutoff) is refused before anything changes, dry run too: the
/// copy puts only where a key is absent, so it would keep them over the
/// source's. Each record names its way out: anyone's items (empty the
/// target), a restore's (re-run it), an import's (finish its seed). An
/// empty target (the IaC's, after a failed restore) is copied into.
#[test]
fn a_copy_seed_into_a_target_holding_items_no_seed_wrote_is_refused() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 224)).await;
        sim.db.put("source", source_item(1, 2, 20, 0));
        sim.create_target();
        sim.db.put("target", source_item(1, 1, 20, 0));
        let stale = sim.db.items("target");
        for (method, says) in [
            (None, "already holds items"),
            (Some("backup"), "an interrupted backup seed"),
            (
                Some("export"),
                "finish it with `ddb-relay seed --method export`",
            ),
        ] {
            let read = sim.ctx.control().await.unwrap();
            let read = sim
                .ctx
                .write_control(
                    &read,
                    relay_core::control::ControlState {
                        seed_method: method.map(String::from),
                        seed_ms: method.map(|_| sim.now_ms()),
                        ..read.clone()
                    },
                )
                .await
                .unwrap();
            for dry_run in [true, false] {
                let err = scan::seed_scan(&sim.ctx, copy(), dry_run, false)
                    .await
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(says), "{method:?}: {err}");
            }
            // An export load is refused before its export (the fake takes
            // none: it would fail as unsupported).
            let load = ddb_relay::commands::load::LoadArgs {
                from_export: None,
                bucket: Some("exports".into()),
                prefix: "p".into(),
                at: None,
            };
            let err = ddb_relay::commands::load::seed_export_load(&sim.ctx, &load, copy(), false)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{method:?}: {err}");
            // And preflight says so.
            let pre = ddb_relay::commands::preflight::preflight(
                &sim.ctx,
                ddb_relay::args::Method::Scan,
                false,
                None,
            )
            .await
            .unwrap();
            let target = pre
                .checks
                .iter()
                .find(|c| c.name == "target table")
                .unwrap();
            assert!(
                target.status == relay_core::decide::CheckStatus::Fail
                    && target.detail.contains(says),
                "{target:?}"
            );
            assert_eq!(sim.db.items("target"), stale);
            assert_eq!(sim.ctx.control().await.unwrap(), read);
            assert!(!sim.aws.trigger_enabled(sim::APPLIER));
        }
        // A failed restore's record over an empty target: copied into.
        let read = sim.ctx.control().await.unwrap();
        sim.ctx
            .write_control(
                &read,
                relay_core::control::ControlState {
                    seed_method: Some("pitr".into()),
                    ..read.clone()
                },
            )
            .await
            .unwrap();
        sim.db.delete("target", &source_key(1), false);
        scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap();
        assert_eq!(sim.db.items("target"), sim.db.items("source"));
    });
}

/// helper-68 #1: a restore seed sets its cutoff only on the record it
/// wrote: not over another operator's copy seed recorded since, and a
/// re-run asking for another method than the recorded one is refused.
#[test]
fn a_restore_seed_sets_its_cutoff_only_on_its_own_record() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 226)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.create_target();
        let read = sim.ctx.control().await.unwrap();
        let pitr_ms = sim.now_ms() - 60_000;
        let copy_ms = sim.now_ms();
        // What another operator may have recorded since this pitr seed's
        // record: a copy seed; a pitr re-seed at another point; this seed
        // with another cutoff, or in tombstone mode (each guard alone).
        let mine = relay_core::control::ControlState {
            seed_method: Some("pitr".into()),
            seed_ms: Some(pitr_ms),
            cutoff_ms: None,
            mode: Mode::Normal,
            ..read.clone()
        };
        let mut theirs = read;
        for other in [
            relay_core::control::ControlState {
                seed_method: Some("scan".into()),
                seed_ms: Some(copy_ms),
                cutoff_ms: Some(copy_ms - 120_000),
                mode: Mode::Tombstone,
                ..mine.clone()
            },
            relay_core::control::ControlState {
                seed_ms: Some(copy_ms),
                ..mine.clone()
            },
            relay_core::control::ControlState {
                cutoff_ms: Some(copy_ms - 120_000),
                ..mine.clone()
            },
            relay_core::control::ControlState {
                mode: Mode::Tombstone,
                ..mine.clone()
            },
        ] {
            let other = relay_core::control::ControlState {
                version: theirs.version,
                ..other
            };
            theirs = sim.ctx.write_control(&theirs, other).await.unwrap();
            let err = ddb_relay::commands::seed::set_cutoff_when_active(&sim.ctx, pitr_ms, "pitr")
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("not this pitr seed"), "{theirs:?}: {err}");
            assert_eq!(sim.ctx.control().await.unwrap(), theirs);
        }
        // A recorded pitr seed with its table: `seed --method backup` does
        // not take it over.
        let pitr = sim
            .ctx
            .write_control(
                &theirs,
                relay_core::control::ControlState {
                    seed_method: Some("pitr".into()),
                    seed_ms: Some(pitr_ms),
                    cutoff_ms: None,
                    mode: Mode::Normal,
                    ..theirs.clone()
                },
            )
            .await
            .unwrap();
        let args = sim::seed_args(ddb_relay::args::Method::Backup, None);
        let err = ddb_relay::commands::seed::seed(&sim.ctx, &args)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("seed --method pitr"), "{err}");
        assert_eq!(sim.ctx.control().await.unwrap(), pitr);
    });
}

/// A restore seed (`method`) that fails: the restore call itself
/// (`stop_after_restore` false) or, once the restore returned, the wait for
/// the restored table (as if the command were stopped there).
async fn failed_seed(sim: &Sim, method: Method, stop_after_restore: bool) -> String {
    fault_restores(sim, method, stop_after_restore);
    let err = restore_seed(sim, method).await.unwrap_err().to_string();
    sim.db.clear_faults();
    err
}

/// The faults of [`failed_seed`], for any command that restores.
fn fault_restores(sim: &Sim, method: Method, stop_after_restore: bool) {
    use relay_aws::fake::DbFault;
    use relay_aws::AwsError;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let after_restore = Arc::new(AtomicU32::new(0));
    let restore = match method {
        Method::Pitr => "RestoreTableToPointInTime",
        _ => "RestoreTableFromBackup",
    };
    sim.db.set_faults(move |call| {
        let fail = |op| {
            Some(DbFault::Error(AwsError::permanent(
                op,
                "InternalServerError",
                "down",
            )))
        };
        match (call.op, call.table, stop_after_restore) {
            (op, _, false) if op == restore => fail(restore),
            (op, _, true) if op == restore => {
                after_restore.store(1, Ordering::SeqCst);
                None
            }
            // The second look at the table after the restore fails (the
            // wait for ACTIVE, after the restore was recorded).
            ("DescribeTable", "target", true) if after_restore.load(Ordering::SeqCst) > 0 => {
                (after_restore.fetch_add(1, Ordering::SeqCst) > 1)
                    .then(|| fail("DescribeTable"))
                    .flatten()
            }
            _ => None,
        }
    });
}

/// A simulation whose source holds three items written ten minutes ago
/// (a backup holds them whatever its fuzz).
async fn three_old_items(seed: u64) -> Sim {
    let sim = Sim::new(Config::quiet(Shape::Identity, seed)).await;
    for i in 1..=3 {
        sim.db.put("source", source_item(i, 1, 20, 0));
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    sim
}

/// The record of `table` as the restore of the seed `read` names.
fn bound(
    method: &str,
    read: &relay_core::control::ControlState,
    table: &relay_aws::operator::TableInfo,
) -> String {
    format!(
        "{method}@{}={}",
        read.seed_ms.unwrap(),
        table.id.as_deref().unwrap()
    )
}

/// What `preflight` for `method` says of the target table.
async fn target_check(sim: &Sim, method: Method) -> relay_core::decide::Check {
    let pre = ddb_relay::commands::preflight::preflight(&sim.ctx, method, false, None)
        .await
        .unwrap();
    pre.checks
        .into_iter()
        .find(|c| c.name == "target table")
        .unwrap()
}

/// A backup seed's refusal `err` says `says`, `preflight` fails the target
/// with it, and nothing changed: the control item is `before`, the target
/// empty.
async fn refused_and_unchanged(
    sim: &Sim,
    err: &str,
    says: &str,
    before: &relay_core::control::ControlState,
) {
    assert!(err.contains(says), "{err}");
    let pre = target_check(sim, Method::Backup).await;
    assert!(
        pre.status == relay_core::decide::CheckStatus::Fail && pre.detail.contains(says),
        "{pre:?}"
    );
    assert_eq!(&sim.ctx.control().await.unwrap(), before);
    assert!(sim.db.items("target").is_empty());
}

async fn restore_seed(
    sim: &Sim,
    method: Method,
) -> anyhow::Result<ddb_relay::commands::seed::SeedReport> {
    let args = sim::seed_args(method, None);
    ddb_relay::commands::seed::seed(&sim.ctx, &args).await
}

/// helper-68 #1 (i): a restore seed sets its cutoff only on the table its
/// restore created. A failed restore, then an empty target the IaC
/// created: re-running the seed is refused (the cutoff would make every
/// source item that does not change again missing for good), as is a
/// restored target deleted and created again. Deleting the target and
/// seeding again works; a seed stopped after its restore resumes; a
/// restored table with no record (an earlier release's seed) is taken when
/// DynamoDB says it was restored.
#[test]
fn a_restore_seed_resumed_over_a_table_its_restore_did_not_create_is_refused() {
    sim::run(async {
        // A failed restore, then the IaC's empty table.
        let sim = three_old_items(227).await;
        let err = failed_seed(&sim, Method::Backup, false).await;
        assert!(err.contains("RestoreTableFromBackup"), "{err}");
        let failed = sim.ctx.control().await.unwrap();
        assert!(failed.seed_ms.is_some() && failed.seed_table.is_none());
        sim.create_target();
        let err = restore_seed(&sim, Method::Backup)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("delete target"), "{err}");
        assert!(err.contains("`ddb-relay seed --method backup`"), "{err}");
        let says = "is not known to be the backup seed's restore";
        refused_and_unchanged(&sim, &err, says, &failed).await;
        // Its way out: delete the target, seed again.
        sim.aws.delete_table("target").await.unwrap();
        restore_seed(&sim, Method::Backup).await.unwrap();
        let seeded = sim.ctx.control().await.unwrap();
        assert!(seeded.cutoff_ms.is_some());
        assert_eq!(sim.db.items("target"), sim.db.items("source"));

        // A seed stopped after its restore: the restore recorded its table.
        let sim = three_old_items(228).await;
        let err = failed_seed(&sim, Method::Backup, true).await;
        assert!(err.contains("DescribeTable"), "{err}");
        let stopped = sim.ctx.control().await.unwrap();
        let restored = sim.aws.describe("target").await.unwrap().unwrap();
        assert!(stopped.cutoff_ms.is_none());
        assert_eq!(
            stopped.seed_table,
            Some(bound("backup", &stopped, &restored))
        );
        // The table deleted and created again (empty) under the record.
        sim.aws.delete_table("target").await.unwrap();
        sim.create_target();
        let err = restore_seed(&sim, Method::Backup)
            .await
            .unwrap_err()
            .to_string();
        let says = "is not the table the backup seed's restore created";
        refused_and_unchanged(&sim, &err, says, &stopped).await;
        // Once this seed's cutoff is set (by an earlier release, say), only
        // a recorded table tells another table apart: with it, a re-run is
        // refused; without it, it is not.
        let seed_ms = stopped.seed_ms.unwrap();
        let cutoff = relay_core::control::cutoff_for_seed(seed_ms, sim.ctx.stack.margin_ms);
        let with_cutoff = relay_core::control::ControlState {
            cutoff_ms: Some(cutoff),
            ..stopped.clone()
        };
        let read = sim.ctx.write_control(&stopped, with_cutoff).await.unwrap();
        let err = ddb_relay::commands::seed::set_cutoff_when_active(&sim.ctx, seed_ms, "backup")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not the table"), "{err}");
        let unrecorded = relay_core::control::ControlState {
            seed_table: None,
            ..read.clone()
        };
        sim.ctx.write_control(&read, unrecorded).await.unwrap();
        ddb_relay::commands::seed::set_cutoff_when_active(&sim.ctx, seed_ms, "backup")
            .await
            .unwrap();

        // The same stop, the restored table kept: the re-run resumes it.
        // With no record of it (an earlier release's seed), or a record of
        // another seed's table (an earlier release's re-seed leaves it), a
        // table DynamoDB says was restored is taken. Both restores record
        // their table, bound to their seed, also when the restore's answer
        // does not carry it (DescribeTable's then).
        for (method, forget, no_answer) in [
            (Method::Backup, None, false),
            (Method::Backup, None, true),
            (Method::Backup, Some(None), false),
            (Method::Backup, Some(Some("backup@1=fake-table-1")), false),
            (Method::Pitr, None, false),
            (Method::Pitr, None, true),
            (Method::Pitr, Some(None), false),
        ] {
            let sim = three_old_items(229).await;
            sim.aws.answer_restores_without_table(no_answer);
            failed_seed(&sim, method, true).await;
            let stopped = sim.ctx.control().await.unwrap();
            let restored = sim.aws.describe("target").await.unwrap().unwrap();
            assert_eq!(
                stopped.seed_table,
                Some(bound(method.as_str(), &stopped, &restored)),
                "{method:?}"
            );
            if let Some(other) = forget {
                let next = relay_core::control::ControlState {
                    seed_table: other.map(String::from),
                    ..stopped.clone()
                };
                sim.ctx.write_control(&stopped, next).await.unwrap();
            }
            let pre = target_check(&sim, method).await;
            assert!(
                pre.status == relay_core::decide::CheckStatus::Pass
                    && pre.detail.contains("created by the recorded"),
                "{pre:?}"
            );
            let r = restore_seed(&sim, method).await.unwrap();
            assert!(r.cutoff_ms.is_some(), "{method:?} {forget:?} {no_answer}");
            assert_eq!(sim.db.items("target"), sim.db.items("source"));
        }
    });
}

/// The same for a replay (a re-seed: its way out is the replay at its
/// point): stopped after its restore, the target deleted and created
/// again, the replay run again is refused; once the target is deleted it
/// runs and converges.
#[test]
fn a_replay_resumed_over_a_table_its_restore_did_not_create_is_refused() {
    use ddb_relay::ctx::When;
    sim::run(async {
        let sim = seeded_by_backup(232).await;
        let paused = pause::pause(&sim.ctx, false).await.unwrap();
        let t = paused.earliest_replay_ms;
        sim.ctx
            .wait_until(t + 1_500, "past the earliest point")
            .await
            .unwrap();
        fault_restores(&sim, Method::Pitr, true);
        let err = format!(
            "{:#}",
            replay::replay(&sim.ctx, Some(When::At(t)), false, false)
                .await
                .unwrap_err()
        );
        sim.db.clear_faults();
        assert!(err.contains("DescribeTable"), "{err}");
        let stopped = sim.ctx.control().await.unwrap();
        assert!(stopped.seed_table.is_some() && stopped.cutoff_ms.is_none());
        sim.aws.delete_table("target").await.unwrap();
        sim.create_target();
        let err = format!(
            "{:#}",
            replay::replay(&sim.ctx, Some(When::At(t)), false, false)
                .await
                .unwrap_err()
        );
        assert!(
            err.contains("is not the table the pitr seed's restore created"),
            "{err}"
        );
        assert!(err.contains("ddb-relay replay --from"), "{err}");
        assert_eq!(sim.ctx.control().await.unwrap(), stopped);
        assert!(sim.db.items("target").is_empty());
        sim.aws.delete_table("target").await.unwrap();
        replay::replay(&sim.ctx, Some(When::At(t)), false, false)
            .await
            .unwrap();
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// A control item write between a restore seed's record and its restore's
/// end (another command's) does not lose which table the restore created:
/// the record is written on the item read again while it still names this
/// seed.
#[test]
fn a_restores_table_is_recorded_over_another_commands_write() {
    sim::run(async {
        let sim = three_old_items(233).await;
        sim.db.set_latency(|call| {
            if call.op == "RestoreTableFromBackup" {
                Duration::from_secs(5)
            } else {
                Duration::ZERO
            }
        });
        let other = async {
            for _ in 0..6_000 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let c = sim.ctx.control().await.unwrap();
                if c.seed_ms.is_some() {
                    let next = relay_core::control::ControlState {
                        updated_ms: Some(sim.now_ms()),
                        ..c.clone()
                    };
                    sim.ctx.write_control(&c, next).await.unwrap();
                    return;
                }
            }
            panic!("the seed never recorded itself");
        };
        let (seeded, ()) = tokio::join!(restore_seed(&sim, Method::Backup), other);
        let seeded = seeded.unwrap();
        assert!(seeded.cutoff_ms.is_some());
        let c = sim.ctx.control().await.unwrap();
        let restored = sim.aws.describe("target").await.unwrap().unwrap();
        assert_eq!(c.seed_table, Some(bound("backup", &c, &restored)));
    });
}

/// helper-77 #6: a stopped copy is not continued into a target deleted and
/// created again since it began (it would fill a table missing what the
/// copy wrote before).
#[test]
fn a_stopped_copy_is_not_continued_into_a_replaced_target() {
    sim::run(async {
        let sim = stopped_copy(240, false).await;
        let stopped = sim.ctx.control().await.unwrap();
        assert_eq!(stopped.mode, Mode::Tombstone);
        assert!(stopped.seed_table.is_some());
        sim.aws.delete_table("target").await.unwrap();
        sim.create_target();
        let err = scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not the table the seed wrote"), "{err}");
        assert_eq!(sim.ctx.control().await.unwrap(), stopped);
        assert!(sim.db.items("target").is_empty());
    });
}
