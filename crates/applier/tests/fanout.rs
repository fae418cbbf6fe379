//! Any table size (issue 10): a copy fanned out over workers (`--fan-out`)
//! on the simulation harness: the CLI's `seed`, the real worker handler on
//! the work queue, the real forwarder and applier beside them, and faults
//! on the worker side (short invocations, tasks delivered twice, killed
//! invocations).
#![allow(clippy::unwrap_used)]

mod sim;

use ddb_relay::args::CopyArgs;
use ddb_relay::commands::{load, pause, scan, verify_fanout};
use relay_aws::operator::Queues;
use relay_core::item::{AttributeValue as V, Attrs};
use sim::{copy, fabricate_export, Config, Shape, Sim, WORK_DLQ_URL};

fn item(i: u32) -> Attrs {
    [
        ("pk".to_string(), V::S(format!("item-{i}"))),
        ("v".to_string(), V::N("1".into())),
        ("email".to_string(), V::S(format!("{i}@example.com"))),
    ]
    .into()
}

fn key(i: u32) -> Attrs {
    [("pk".to_string(), V::S(format!("item-{i}")))].into()
}

fn fanned(segments: i32) -> CopyArgs {
    CopyArgs {
        segments,
        fan_out: true,
        ..copy()
    }
}

/// Writes that go on while the copy runs: moves (a new email, so a new
/// target key), deletes and new items.
async fn live_writes(sim: &Sim, from: u32) {
    for round in 0..10u32 {
        let i = from + round * 7;
        let mut moved = item(i);
        moved.insert("email".into(), V::S(format!("moved-{i}@example.com")));
        sim.db.put("source", moved);
        sim.db.delete("source", &key(i + 3), false);
        sim.db.put("source", item(10_000 + i));
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
}

/// The scan path on workers, under live writes and worker faults, through
/// a uuidv5(email) key: the target ends equal to the source, no tombstone
/// is left, and every source item was counted exactly once.
#[test]
fn a_fanned_out_scan_copy_under_live_writes_and_worker_faults_converges() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::KeyByEmail, 61)).await;
        for i in 0..400 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim.start_workers(3, true).await;
        sim.create_target();
        let (r, ()) = tokio::join!(scan::seed_scan(&sim.ctx, fanned(5), false, false), async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            live_writes(&sim, 0).await;
        });
        let r = r.unwrap();
        assert_eq!(r.method, "scan");
        sim.assert_converged().await;
        let control = sim.ctx.control().await.unwrap();
        assert_eq!(control.mode, relay_core::control::Mode::Normal);
        // The checkpoints are gone; no task is left waiting.
        assert!(sim.db.items("control").len() == 1, "only the control item");
        sim.stop_pollers();
    });
}

/// Without live writes every item is read exactly once, whatever the
/// workers do: counts come from the parts' checkpoints, which a task run
/// twice or killed midway moves at most once per page.
#[test]
fn fanned_out_counts_are_exact_under_duplicates_and_kills() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 62)).await;
        for i in 0..300 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim.start_workers(3, true).await;
        sim.create_target();
        let r = scan::seed_scan(&sim.ctx, fanned(4), false, false)
            .await
            .unwrap();
        assert_eq!(r.copied + r.skipped_existing, 300, "{r:?}");
        assert!(r.copied <= 300, "{r:?}");
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// The export path on workers: one task per data file, loaded through the
/// transform, under live writes after the export.
#[test]
fn a_fanned_out_export_load_under_live_writes_converges() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::KeyByEmail, 63)).await;
        for i in 0..300 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim.start_workers(2, true).await;
        let at = sim.now_ms();
        let snapshot: Vec<Attrs> = sim.db.items("source").into_values().collect();
        let uri = fabricate_export(&sim, "0002-fan", &snapshot, at, 5);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        live_writes(&sim, 100).await;
        sim.create_target();
        let args = load::LoadArgs {
            from_export: Some(uri),
            bucket: None,
            prefix: String::new(),
            at: None,
        };
        let r = load::seed_export_load(&sim.ctx, &args, fanned(4), false)
            .await
            .unwrap();
        assert_eq!(r.method, "export");
        assert_eq!(r.copied + r.skipped_existing, 300, "{r:?}");
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// A task that reaches the work dead-letter queue stops `seed` with an
/// error naming the queue and the worker's log group; the copy stays resumable and the same command
/// finishes it.
#[test]
fn a_dead_lettered_task_stops_the_seed_which_then_resumes() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 64)).await;
        for i in 0..50 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim.create_target();
        // No workers yet: the tasks wait; a task dead-letters meanwhile
        // (once they are sent: the seed counts the DLQ before it sends).
        let (r, ()) = tokio::join!(scan::seed_scan(&sim.ctx, fanned(2), false, false), async {
            let mut queued = false;
            for _ in 0..600 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                queued = sim.aws.queue_attrs(sim::WORK_URL).await.unwrap().visible > 0;
                if queued {
                    break;
                }
            }
            assert!(queued, "the seed sent its tasks");
            sim.aws
                .send_message(WORK_DLQ_URL, r#"{"v":9}"#)
                .await
                .unwrap();
        });
        let err = format!("{:#}", r.unwrap_err());
        assert!(err.contains("work dead-letter queue"), "{err}");
        assert!(err.contains("run the same command again"), "{err}");
        // The logs are in the template's log group, not /aws/lambda/<fn>.
        assert!(err.contains("log group /ddb-relay/sim/worker"), "{err}");
        let status = ddb_relay::commands::status::status(&sim.ctx, 60)
            .await
            .unwrap();
        let p = status.copy_progress.unwrap();
        assert_eq!((p.parts.as_str(), p.done, p.total), ("segments", 0, 2));
        assert_eq!(p.expected, Some(50));
        sim.start_workers(2, false).await;
        let r = scan::seed_scan(&sim.ctx, fanned(2), false, false)
            .await
            .unwrap();
        assert!(r.resumed, "{r:?}");
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// A worker given a task of another seed, or out of its phase, does
/// nothing; a task of an unknown version fails with a clear error.
#[test]
fn stale_and_unknown_tasks_change_nothing() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 65)).await;
        for i in 0..20 {
            sim.db.put("source", item(i));
        }
        sim.create_target();
        let stale = relay_core::work::Task::new(
            1,
            relay_core::work::Job::Scan {
                segment: 0,
                segments: 1,
            },
        );
        let out = ddb_relay::worker::run_task(&sim.ctx, &stale, None)
            .await
            .unwrap();
        assert!(
            matches!(out, ddb_relay::worker::Outcome::Dropped(_)),
            "{out:?}"
        );
        assert!(sim.db.items("target").is_empty());
        // The task's seed, but out of its phase (audit helper-69 #8): a
        // copy task once the copy is in normal mode, a sweep task while it
        // is still in tombstone mode.
        use relay_aws::operator::Tables;
        let seed_ms = sim.now_ms();
        let mut cp = ddb_relay::commands::copy::checkpoint_key(&sim.ctx);
        cp.insert("seed_ms".into(), V::N(seed_ms.to_string()));
        sim.aws
            .put_item(
                &sim.ctx.stack.control_table,
                &cp,
                &relay_aws::operator::Cond::Always,
            )
            .await
            .unwrap();
        sim.db.put("target", relay_core::apply::tombstone(&key(0)));
        let before = sim.db.items("target");
        for (mode, job) in [
            (
                relay_core::control::Mode::Normal,
                relay_core::work::Job::Scan {
                    segment: 0,
                    segments: 1,
                },
            ),
            (
                relay_core::control::Mode::Tombstone,
                relay_core::work::Job::Sweep {
                    segment: 0,
                    segments: 1,
                },
            ),
        ] {
            let read = sim.ctx.control().await.unwrap();
            sim.ctx
                .write_control(
                    &read,
                    relay_core::control::ControlState {
                        seed_method: Some("scan".into()),
                        seed_ms: Some(seed_ms),
                        cutoff_ms: Some(seed_ms - 120_000),
                        mode,
                        ..read.clone()
                    },
                )
                .await
                .unwrap();
            let task = relay_core::work::Task::new(seed_ms, job);
            let out = ddb_relay::worker::run_task(&sim.ctx, &task, None)
                .await
                .unwrap();
            assert_eq!(
                out,
                ddb_relay::worker::Outcome::Dropped("the control item is not in the task's phase"),
                "{mode:?}"
            );
            assert_eq!(sim.db.items("target"), before, "{mode:?}");
        }
        let err = relay_core::work::Task::parse(r#"{"v":9,"seed_ms":1}"#).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
    });
}

/// A task lost before any worker ran it (a message deleted by a run that
/// then died) is sent again once the work queue stays empty with its part
/// open, and the copy completes (audit helper-69 #3).
#[test]
fn a_lost_task_is_sent_again_when_the_work_queue_is_idle() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 67)).await;
        for i in 0..40 {
            sim.db.put("source", item(i));
        }
        sim.create_target();
        let lose_one = async {
            let msg = loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if let Some(m) = sim.aws.receive(sim::WORK_URL, 1, 60).await.unwrap().pop() {
                    break m;
                }
            };
            sim.aws
                .delete_message(sim::WORK_URL, &msg.receipt)
                .await
                .unwrap();
            sim.start_workers(2, false).await;
        };
        let seed = tokio::time::timeout(
            std::time::Duration::from_secs(900),
            scan::seed_scan(&sim.ctx, fanned(2), false, false),
        );
        let (r, ()) = tokio::join!(seed, lose_one);
        let done = r.expect("the lost task was never sent again").unwrap();
        assert_eq!(done.copied, 40, "{done:?}");
        assert_eq!(sim.db.items("target"), sim.db.items("source"));
    });
}

/// A task delivered twice and run at the same time does the work once:
/// the first run to move the part's checkpoint goes on, the other stops
/// at its first page (its puts find the keys taken).
#[test]
fn a_task_run_twice_at_once_copies_each_page_once() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 66)).await;
        for i in 0..60 {
            sim.db.put("source", item(i));
        }
        sim.create_target();
        let (r, puts) = tokio::join!(scan::seed_scan(&sim.ctx, fanned(1), false, false), async {
            let msg = loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if let Some(m) = sim.aws.receive(sim::WORK_URL, 1, 60).await.unwrap().pop() {
                    break m;
                }
            };
            let task = relay_core::work::Task::parse(&msg.body).unwrap();
            let before = sim.db.calls("PutItem");
            let (a, b) = tokio::join!(
                ddb_relay::worker::run_task(&sim.ctx, &task, None),
                ddb_relay::worker::run_task(&sim.ctx, &task, None)
            );
            let outcomes = [a.unwrap(), b.unwrap()];
            assert!(
                outcomes.contains(&ddb_relay::worker::Outcome::Done),
                "{outcomes:?}"
            );
            sim.aws
                .delete_message(sim::WORK_URL, &msg.receipt)
                .await
                .unwrap();
            let puts = sim.db.calls("PutItem") - before;
            // The sweep that follows, and the stream.
            sim.start_workers(1, false).await;
            sim.start_pollers();
            puts
        });
        let r = r.unwrap();
        assert_eq!((r.copied, r.skipped_existing), (60, 0), "{r:?}");
        // 60 items in pages of 3: the losing run put at most one page.
        assert!(puts <= 63, "{puts} puts for 60 items");
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// A run of a copy whose checkpoint was forgotten under it (a restart)
/// stops at its next save and never writes the checkpoint back: every save
/// is conditional on the checkpoint's seed.
#[test]
fn a_run_of_a_replaced_copy_never_writes_its_checkpoint_back() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 67)).await;
        for i in 0..60 {
            sim.db.put("source", item(i));
        }
        sim.create_target();
        let ckey = ddb_relay::commands::copy::checkpoint_key(&sim.ctx);
        let mut c = ckey.clone();
        c.insert("seed_ms".into(), V::N("7".into()));
        sim.db.put("control", c);
        let t = relay_core::transform::Identity {
            key_names: vec!["pk".into()],
        };
        let copier =
            ddb_relay::commands::copy::Copier::new(&t, 0, 0, indicatif::ProgressBar::hidden());
        let keys = vec!["pk".to_string()];
        let (ran, ()) = tokio::join!(
            ddb_relay::commands::parts::copy_segment(
                &sim.ctx,
                &copier,
                (&ckey, 7),
                (0, 1),
                &keys,
                None
            ),
            async {
                // After the run read its part, before its first save.
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                ddb_relay::commands::copy::forget_checkpoints(&sim.ctx)
                    .await
                    .unwrap();
            }
        );
        assert_eq!(ran.unwrap(), ddb_relay::commands::parts::Ran::Lost);
        assert!(
            sim.db
                .items("control")
                .values()
                .all(|c| !c.contains_key("seg_0")),
            "the checkpoint came back: {:?}",
            sim.db.items("control")
        );
    });
}

/// When every part is done the seed waits one worker timeout before normal
/// mode: a run delivered twice may still be putting its chunk.
#[test]
fn normal_mode_waits_until_no_worker_can_still_write() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 68)).await;
        for i in 0..30 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim.start_workers(2, false).await;
        sim.create_target();
        let began = tokio::time::Instant::now();
        scan::seed_scan(&sim.ctx, fanned(2), false, false)
            .await
            .unwrap();
        assert!(
            began.elapsed() >= std::time::Duration::from_secs(sim::WORKER_TIMEOUT_S),
            "{:?}",
            began.elapsed()
        );
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// `--dry-run` with `--fan-out` names the workers and writes nothing.
#[test]
fn a_fanned_out_dry_run_names_the_workers_and_changes_nothing() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 69)).await;
        sim.db.put("source", item(1));
        sim.create_target();
        let before = sim.db.items("control");
        let r = scan::seed_scan(&sim.ctx, fanned(4), true, false)
            .await
            .unwrap();
        // The JSON names the target (`name@region/account` when elsewhere).
        assert_eq!(r.target_table, "target");
        let plan = r.plan.unwrap();
        assert!(
            plan.contains("on the copy workers (sim-worker, one task per segment)"),
            "{plan}"
        );
        assert_eq!(sim.db.items("control"), before);
        let (visible, _) = {
            let q = sim.aws.queue_attrs(sim::WORK_URL).await.unwrap();
            (q.visible, q.in_flight)
        };
        assert_eq!(visible, 0, "no task sent");
    });
}

/// helper-62 #2, helper-65 #2: a worker of an earlier release (its
/// `WORKER_JOBS` names no task version 3) would copy the old way: a
/// fanned-out copy, or a scan restart fanned out, is refused before it
/// changes anything (control item, triggers, target) or sends a task,
/// naming the redeploy.
#[test]
fn a_fanned_out_copy_on_an_older_worker_is_refused_before_anything_changes() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 71)).await;
        sim.db.put("source", item(1));
        sim.start_pollers();
        sim::seed_by_scan(&sim).await;
        sim.stop_pollers();
        pause::pause(&sim.ctx, false).await.unwrap();
        sim.aws
            .set_env("sim-worker", "WORKER_JOBS", "scan file sweep verify");
        let before = (
            sim.db.items("control"),
            sim.db.items("target"),
            sim.aws.trigger_enabled(sim::APPLIER),
        );
        let unchanged = |what: &str| {
            let now = (
                sim.db.items("control"),
                sim.db.items("target"),
                sim.aws.trigger_enabled(sim::APPLIER),
            );
            assert_eq!(now, before, "{what} changed something");
        };
        for dry_run in [true, false] {
            let restart = scan::restart_scan(&sim.ctx, fanned(4), false, dry_run);
            let err = tokio::time::timeout(std::time::Duration::from_secs(600), restart)
                .await
                .expect("refused at once, not waiting on the workers")
                .unwrap_err()
                .to_string();
            assert!(err.contains("reads tasks up to version 1"), "{err}");
            assert!(err.contains("redeploy the stack"), "{err}");
            unchanged("restart");
        }
        let err = scan::seed_scan(&sim.ctx, fanned(4), true, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("reads tasks up to version 1"), "{err}");
        unchanged("seed --dry-run");
        let err = verify_fanout::verify(&sim.ctx, 100.0, true, 0, 4)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("reads tasks up to version 1"), "{err}");
        unchanged("verify --fan-out --repair");
        let q = sim.aws.queue_attrs(sim::WORK_URL).await.unwrap();
        assert_eq!((q.visible, q.in_flight), (0, 0), "no task sent");
        // A plain verify's tasks (version 1) still run on it.
        sim.start_workers(2, false).await;
        let v = verify_fanout::verify(&sim.ctx, 100.0, false, 0, 2)
            .await
            .unwrap();
        assert!(v.clean, "{v:?}");
    });
}

/// An interrupted fanned-out copy (the command stopped, its workers going
/// on) replaced by `pause` + `restart --method scan` (in process) under
/// live writes: the restart forgets the old copy, waits until none of its
/// runs can still write (the worker's timeout after it forgot the copy),
/// then clears and copies again; the target converges.
#[test]
fn a_restart_replaces_an_interrupted_fanned_out_copy_under_live_writes() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::KeyByEmail, 70)).await;
        for i in 0..200 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim.start_workers(2, true).await;
        sim.create_target();
        // The command is stopped (Ctrl-C) while the workers copy: once a
        // first item is in the target.
        let copying = async {
            for _ in 0..60_000 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                if !sim.db.items("target").is_empty() {
                    return;
                }
            }
            panic!("no item was copied within 60 s");
        };
        tokio::select! {
            _ = scan::seed_scan(&sim.ctx, fanned(4), false, false) => panic!("the copy ended before it was stopped"),
            () = copying => {}
        }
        live_writes(&sim, 0).await;
        ddb_relay::commands::pause::pause(&sim.ctx, false)
            .await
            .unwrap();
        // When the restart first retires the copy's checkpoint (seen by a
        // reader of the control table every millisecond) and first deletes
        // from the target (the applier is paused and the copy's runs only
        // put).
        type First = std::sync::Arc<std::sync::Mutex<Option<i64>>>;
        let first: First = Default::default();
        let (seen, clock) = (first.clone(), sim.clock.clone());
        sim.db.set_faults(move |call| {
            if (call.table, call.op) == ("target", "DeleteItem") {
                seen.lock().unwrap().get_or_insert(clock.now_ms());
            }
            None
        });
        let ckey = ddb_relay::commands::copy::checkpoint_key(&sim.ctx);
        let retired = async {
            for _ in 0..600_000 {
                let c = ddb_relay::commands::copy::read_checkpoint(&sim.ctx, &ckey).await;
                if c.unwrap().is_some_and(|c| c.contains_key("retired")) {
                    return Some(sim.now_ms());
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            None
        };
        let (restart, forgot) =
            tokio::join!(scan::restart_scan(&sim.ctx, copy(), false, false), retired);
        restart.unwrap();
        sim.db.clear_faults();
        let forgot = forgot.expect("the restart retired the copy");
        let cleared = first
            .lock()
            .unwrap()
            .expect("the restart cleared the target");
        // Retired first (a run still going can no longer save), then a
        // whole worker run's time before the first delete.
        // (`forgot` is seen up to the reader's millisecond late.)
        let fence = (sim::WORKER_TIMEOUT_S as i64 + 5) * 1000;
        assert!(
            cleared >= forgot + fence - 1,
            "cleared {} ms after the copy was forgotten, before a worker run could end",
            cleared - forgot
        );
        live_writes(&sim, 50).await;
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// Plants 3 missing, 2 different and 2 extra items (their source items
/// are gone) in a converged target behind a uuidv5(email) key.
fn diverge(sim: &Sim) {
    use relay_core::transform::Transform;
    let t = sim.transform.as_ref().unwrap();
    for i in [7, 150, 299] {
        sim.db
            .delete("target", &t.key_only(&item(i)).unwrap(), false);
    }
    for i in [10, 20] {
        let mut wrong = t.item(&item(i)).unwrap();
        wrong.insert("v".into(), V::N("99".into()));
        sim.db.put("target", wrong);
    }
    for i in [5000, 5001] {
        sim.db.put("target", t.item(&item(i)).unwrap());
    }
}

/// `verify --fan-out`: the workers compare the tables by lookups, segment
/// by segment, under duplicated, killed and short worker runs; the merged
/// report finds every planted difference with exact counts (a part's pages
/// are counted once however often its task runs), and `--repair` on the
/// workers makes the target equal again.
#[test]
fn a_fanned_out_verify_finds_every_difference_under_worker_faults_and_repairs() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::KeyByEmail, 71)).await;
        for i in 0..300 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim::seed_by_scan(&sim).await;
        sim.assert_converged().await;
        diverge(&sim);
        sim.start_workers(3, true).await;
        let v = verify_fanout::verify(&sim.ctx, 100.0, false, 0, 4)
            .await
            .unwrap();
        assert_eq!((v.missing, v.changed, v.extra), (3, 2, 2), "{v:?}");
        assert_eq!((v.source_items, v.compared), (300, 300), "{v:?}");
        assert_eq!(v.fanned_out, Some(8));
        assert!(!v.clean && v.remaining == 7 && v.examples.missing.len() == 3);
        let v = verify_fanout::verify(&sim.ctx, 100.0, true, 0, 4)
            .await
            .unwrap();
        assert!(v.clean && v.repaired == 7, "{v:?}");
        sim.assert_converged().await;
        let v = verify_fanout::verify(&sim.ctx, 100.0, false, 0, 3)
            .await
            .unwrap();
        assert!(v.clean && v.recorded, "{v:?}");
        assert_eq!(
            sim.ctx.control().await.unwrap().last_verify.as_deref(),
            Some("clean")
        );
        sim.stop_pollers();
    });
}

/// Live writes while the workers compare are lag, not divergence: what
/// differs on the first pass agrees when re-read, and the verdict is
/// clean.
#[test]
fn a_fanned_out_verify_under_live_writes_is_clean() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::KeyByEmail, 72)).await;
        for i in 0..300 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim::seed_by_scan(&sim).await;
        sim.assert_converged().await;
        sim.start_workers(2, false).await;
        // The applier's writes land 300 ms late, so the target lags.
        sim.db.set_latency(|call| match (call.table, call.op) {
            ("target", "BatchWriteItem") => std::time::Duration::from_millis(300),
            _ => std::time::Duration::ZERO,
        });
        // Writes go on for as long as the verify runs (at most 40 s).
        let done = std::cell::Cell::new(false);
        let verify = async {
            let v = verify_fanout::verify(&sim.ctx, 100.0, false, 1, 4).await;
            done.set(true);
            v
        };
        let writes = async {
            for k in 0..100 {
                if done.get() {
                    break;
                }
                live_writes(&sim, k * 70).await;
            }
        };
        let (v, ()) = tokio::join!(verify, writes);
        let v = v.unwrap();
        assert!(v.clean, "{v:?}");
        assert!(v.lag_resolved > 0, "the live writes were seen: {v:?}");
        sim.stop_pollers();
    });
}

/// A task of an earlier verify run, delivered late, writes nothing a later
/// run reads, and a task of a finished run does nothing at all.
#[test]
fn a_task_of_an_earlier_verify_changes_nothing() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 73)).await;
        for i in 0..50 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim::seed_by_scan(&sim).await;
        sim.start_workers(1, false).await;
        verify_fanout::verify(&sim.ctx, 100.0, false, 0, 2)
            .await
            .unwrap();
        sim.stop_pollers();
        let control = || {
            let mut all: Vec<Attrs> = sim.db.items("control").into_values().collect();
            all.sort_by_key(|i| format!("{:?}", i.get(relay_core::control::ATTR_MIGRATION)));
            all
        };
        let run = |c: &[Attrs]| -> i64 {
            let key = verify_fanout::verify_key(&sim.ctx);
            let marker = c
                .iter()
                .find(|i| {
                    i.get(relay_core::control::ATTR_MIGRATION)
                        == key.get(relay_core::control::ATTR_MIGRATION)
                })
                .unwrap();
            match marker.get("run_ms") {
                Some(V::N(n)) => n.parse().unwrap(),
                _ => panic!("no run"),
            }
        };
        let before = control();
        // The finished run's parts are gone; only the run item is left.
        assert_eq!(
            before.len(),
            2,
            "the control item and the run item: {before:?}"
        );
        let run_ms = run(&before);
        let task = |run_ms| {
            relay_core::work::Task::new(
                0,
                relay_core::work::Job::Verify {
                    run_ms,
                    side: relay_core::work::Side::Source,
                    segment: 0,
                    segments: 2,
                    sample_bp: 10_000,
                    repair: false,
                    recheck_wait_s: 0,
                    kept_ttl: None,
                },
            )
        };
        // A task of the finished run, delivered late: dropped.
        let out = ddb_relay::worker::run_task(&sim.ctx, &task(run_ms), None)
            .await
            .unwrap();
        assert!(
            matches!(out, ddb_relay::worker::Outcome::Dropped(_)),
            "{out:?}"
        );
        // A newer run starts: a task of the old one is dropped too.
        let key = verify_fanout::verify_key(&sim.ctx);
        let mut newer = key.clone();
        newer.insert("run_ms".into(), V::N((run_ms + 1000).to_string()));
        newer.insert("segments".into(), V::N("2".into()));
        sim.db.put("control", newer);
        let before = control();
        let out = ddb_relay::worker::run_task(&sim.ctx, &task(run_ms), None)
            .await
            .unwrap();
        assert!(
            matches!(out, ddb_relay::worker::Outcome::Dropped(_)),
            "{out:?}"
        );
        assert_eq!(control(), before);
        // The newer run's own task runs and writes its own part only.
        let out = ddb_relay::worker::run_task(&sim.ctx, &task(run_ms + 1000), None)
            .await
            .unwrap();
        assert_eq!(out, ddb_relay::worker::Outcome::Done);
        assert_eq!(control().len(), before.len() + 1);
    });
}

/// A key that passed from one item to another while the target lagged:
/// item 3 took item 9's old email (so its target key), item 9 moved on.
/// The forward pass sees the key's new owner, the reverse pass its old one;
/// `--repair` on the workers leaves the target equal to the source, and the
/// re-check accepts the key's new owner (the verify is clean, not left with
/// the old owner's "extra").
#[test]
fn a_key_that_passed_to_another_item_is_repaired_clean_on_the_workers() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::KeyByEmail, 74)).await;
        for i in 0..60 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim::seed_by_scan(&sim).await;
        sim.assert_converged().await;
        // The applier is paused: the target keeps the old state.
        ddb_relay::commands::pause::pause(&sim.ctx, false)
            .await
            .unwrap();
        let mut nine = item(9);
        nine.insert("email".into(), V::S("moved-9@example.com".into()));
        sim.db.put("source", nine);
        let mut three = item(3);
        three.insert("email".into(), V::S("9@example.com".into()));
        sim.db.put("source", three);
        sim.start_workers(2, false).await;
        let v = verify_fanout::verify(&sim.ctx, 100.0, false, 0, 2)
            .await
            .unwrap();
        assert!(!v.clean && v.missing >= 1, "{v:?}");
        let v = verify_fanout::verify(&sim.ctx, 100.0, true, 0, 2)
            .await
            .unwrap();
        assert!(v.clean && v.remaining == 0, "{v:?}");
        let again = ddb_relay::commands::verify::verify(
            &sim.ctx,
            100.0,
            false,
            0,
            sim::copy(),
            &Default::default(),
        )
        .await
        .unwrap();
        assert!(again.clean, "{again:?}");
        sim.stop_pollers();
    });
}

/// A verify run that is short of time stops after one chunk, mid-page, and
/// saves there (a scan resumes after any key of its segment); the runs that
/// follow go on from that key, and the counts over all runs are exact.
#[test]
fn a_verify_part_short_of_time_stops_mid_page_and_counts_exactly() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 75)).await;
        for i in 0..700 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim::seed_by_scan(&sim).await;
        sim.stop_pollers();
        for i in 0..700 {
            sim.db.delete("target", &key(i), false);
        }
        sim.aws.set_page_size(1000);
        let (run_ms, task) = one_segment_verify(&sim);
        let state = || part_state(&sim, run_ms);
        // Less time than settling takes: one chunk (100 items), then a save.
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        let out = ddb_relay::worker::run_task(&sim.ctx, &task, Some(until))
            .await
            .unwrap();
        assert_eq!(out, ddb_relay::worker::Outcome::Continue);
        let first = state();
        assert_eq!(first.n.source_items, 100, "{first:?}");
        assert!(matches!(first.pos, relay_core::work::Pos::After(_)));
        let mut runs = 1;
        while !state().done() && runs < 20 {
            let until = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
            ddb_relay::worker::run_task(&sim.ctx, &task, Some(until))
                .await
                .unwrap();
            runs += 1;
        }
        let last = state();
        assert!(last.done(), "{last:?}");
        assert_eq!(runs, 7);
        assert_eq!(
            (last.n.source_items, last.n.missing),
            (700, 700),
            "{last:?}"
        );
    });
}

/// A chunk whose differences could not be settled before the deadline is
/// left to the next run (read again from where it starts), not half done:
/// the run saves the clean chunks before it, and nothing is counted twice.
#[test]
fn a_chunk_with_differences_that_cannot_settle_in_time_is_left_to_the_next_run() {
    sim::run(async {
        use relay_aws::operator::Tables;
        let sim = Sim::new(Config::quiet(Shape::Identity, 76)).await;
        for i in 0..700 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        sim::seed_by_scan(&sim).await;
        sim.stop_pollers();
        sim.aws.set_page_size(1000);
        // In scan order: the first 300 items are in the target, the rest
        // are missing.
        let (order, _) = sim
            .aws
            .scan_page("source", 0, 1, None, false)
            .await
            .unwrap();
        for i in &order[300..] {
            sim.db.delete(
                "target",
                &relay_core::diff::key_of(i, &["pk".to_string()]).unwrap(),
                false,
            );
        }
        let (run_ms, task) = one_segment_verify(&sim);
        let state = || part_state(&sim, run_ms);
        // Reads take no time here: only settling does.
        sim.db.set_latency(|_| std::time::Duration::ZERO);
        // Time to save, not to settle differences (2 s with no wait).
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
        let out = ddb_relay::worker::run_task(&sim.ctx, &task, Some(until))
            .await
            .unwrap();
        assert_eq!(out, ddb_relay::worker::Outcome::Continue);
        let first = state();
        assert_eq!(
            (first.n.source_items, first.n.missing),
            (300, 0),
            "{first:?}"
        );
        let mut runs = 1;
        while !state().done() && runs < 20 {
            ddb_relay::worker::run_task(&sim.ctx, &task, None)
                .await
                .unwrap();
            runs += 1;
        }
        let last = state();
        assert_eq!(
            (last.n.source_items, last.n.missing),
            (700, 400),
            "{last:?}"
        );
    });
}

/// A verify run of one segment started by hand (its run item written), and
/// the task of its source part.
fn one_segment_verify(sim: &Sim) -> (i64, relay_core::work::Task) {
    let run_ms = sim.now_ms();
    let mut marker = verify_fanout::verify_key(&sim.ctx);
    marker.insert("run_ms".into(), V::N(run_ms.to_string()));
    marker.insert("segments".into(), V::N("1".into()));
    sim.db.put("control", marker);
    let task = relay_core::work::Task::new(
        0,
        relay_core::work::Job::Verify {
            run_ms,
            side: relay_core::work::Side::Source,
            segment: 0,
            segments: 1,
            sample_bp: 10_000,
            repair: false,
            recheck_wait_s: 0,
            kept_ttl: None,
        },
    );
    (run_ms, task)
}

/// The saved state of that run's source part.
fn part_state(sim: &Sim, run_ms: i64) -> relay_core::work::VerifyState {
    let k = verify_fanout::part_key(&sim.ctx, run_ms, "vsrc_0");
    let item = sim
        .db
        .items("control")
        .remove(&relay_core::item::CanonicalKey::of(&k))
        .unwrap();
    relay_core::work::VerifyState::read(item.get("state")).unwrap()
}
