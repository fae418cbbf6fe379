//! One deterministic test per finding of the adversarial review of the
//! no-lost-writes work (issue 9), on the simulation harness: the real
//! `ddb-relay` commands on the fakes. Each fails without its fix. Then what
//! `finish` leaves the operator.
#![allow(clippy::unwrap_used)]

mod sim;

use std::time::Duration;

use ddb_relay::args::Method;
use ddb_relay::commands::{dlq, finish, pause, scan, seed, verify};
use ddb_relay::ctx::When;
use ddb_relay::report::Report;
use relay_aws::fake::events::sqs_event;
use relay_aws::fake::DbFault;
use relay_aws::operator::Tables;
use relay_aws::AwsError;
use relay_core::apply::{is_tombstone, tombstone};
use relay_core::control::{ControlState, Mode};
use relay_core::item::CanonicalKey;
use sim::{copy, seed_by_backup, seed_by_scan, source_item, source_key, Config, Shape, Sim};

fn seed_args(method: Method, at: Option<When>) -> seed::SeedArgs {
    seed::SeedArgs {
        method,
        at,
        bucket: None,
        prefix: String::new(),
        dry_run: false,
    }
}

async fn set_control(sim: &Sim, change: impl FnOnce(ControlState) -> ControlState) {
    let read = sim.ctx.control().await.unwrap();
    sim.ctx
        .write_control(&read, change(read.clone()))
        .await
        .unwrap();
}

async fn converged(sim: &Sim) {
    assert!(
        sim.drain(Duration::from_secs(300)).await,
        "{}",
        sim.report()
    );
    let (wrong, extra, marked) = sim.divergence();
    assert!(
        wrong.is_empty() && extra.is_empty() && marked.is_empty(),
        "{}",
        sim.report()
    );
}

/// F2: without `--at`, PITR restores at the latest restorable time, minutes
/// before now: a re-seed checks that point, not "now", against the frontier.
#[test]
fn a_pitr_seed_checks_the_point_the_restore_really_uses() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 31)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.start_pollers();
        seed_by_backup(&sim).await;
        sim.db.put("source", source_item(1, 2, 20, 0));
        converged(&sim).await;
        pause::pause(&sim.ctx, false).await.unwrap();
        sim.aws.delete_table("target").await.unwrap();
        // Now is past the frontier + margin: "now" would be a valid point.
        tokio::time::sleep(Duration::from_secs(
            sim.cfg.margin_s.unsigned_abs() * 3 + 60,
        ))
        .await;
        // PITR reaches only to 10 minutes ago: before what was consumed.
        sim.aws.set_pitr_lag(600_000);
        let err = seed::seed(&sim.ctx, &seed_args(Method::Pitr, None))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("earliest"), "{err}");
        assert!(
            sim.aws.describe("target").await.unwrap().is_none(),
            "a refused seed restores nothing"
        );
        sim.stop_pollers();
    });
}

/// F3: a replay or restart interrupted between clearing the cutoff and its
/// new seed leaves the old target in place; a plain seed or scan copy must
/// not set a cutoff on it.
#[test]
fn an_interrupted_replay_is_finished_only_by_re_running_it() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 32)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_backup(&sim).await;
        set_control(&sim, |c| ControlState {
            seed_method: Some("pitr-pending".into()),
            cutoff_ms: None,
            ..c
        })
        .await;
        let err = seed::seed(&sim.ctx, &seed_args(Method::Backup, None))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("interrupted"), "{err}");
        let err = scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("interrupted"), "{err}");
        let after = sim.ctx.control().await.unwrap();
        assert_eq!(after.cutoff_ms, None, "no cutoff on the old target");
    });
}

/// F6: a scan copy that crashed after switching back to normal mode but
/// before its sweep finished leaves tombstones; re-running it sweeps them.
#[test]
fn an_interrupted_sweep_is_finished_on_re_run() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 33)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.create_target();
        // A tombstone the applier wrote during the copy (item 2 deleted).
        sim.db.put("target", tombstone(&source_key(2)));
        sim.db.set_faults(|call| {
            (call.table == "target" && call.op == "DeleteItem").then(|| {
                DbFault::Error(AwsError::permanent(
                    "DeleteItem",
                    "AccessDeniedException",
                    "injected: the sweep dies",
                ))
            })
        });
        assert!(scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .is_err());
        assert_eq!(sim.ctx.control().await.unwrap().mode, Mode::Normal);
        sim.db.set_faults(|_| None);
        let done = scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap();
        assert_eq!(done.tombstones_deleted, 1, "{done:?}");
        assert!(!sim.db.items("target").values().any(is_tombstone));
    });
}

/// F7: repairs during a scan copy would write in normal-mode terms while
/// the copy and the sweep work with tombstones: they wait for the copy.
#[test]
fn repairs_wait_for_a_running_scan_copy() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 34)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_scan(&sim).await;
        set_control(&sim, |c| ControlState {
            mode: Mode::Tombstone,
            ..c
        })
        .await;
        let wrong = source_item(1, 9, 20, 0);
        sim.db.put("target", wrong.clone());
        let err = verify::verify(&sim.ctx, 100.0, true, 0, copy())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("scan copy is running"), "{err}");
        let err = dlq::repair(&sim.ctx, 10, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("scan copy is running"), "{err}");
        let key = CanonicalKey::of(&source_key(1));
        assert_eq!(sim.db.items("target")[&key], wrong, "nothing written");
    });
}

/// F8: a fence with the trigger still Enabled fails every batch back to the
/// queue until its messages reach the DLQ: a pause whose trigger cannot be
/// disabled takes the fence back.
#[test]
fn a_pause_whose_trigger_cannot_be_disabled_is_taken_back() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 35)).await;
        seed_by_backup(&sim).await;
        sim.aws.fail_mapping_updates(Some(AwsError::permanent(
            "UpdateEventSourceMapping",
            "AccessDeniedException",
            "not allowed",
        )));
        let err = pause::pause(&sim.ctx, false).await.unwrap_err();
        assert!(format!("{err:#}").contains("taken back"), "{err:#}");
        assert_eq!(sim.ctx.control().await.unwrap().paused_at_ms, None);
        assert!(sim.aws.trigger_enabled(sim::APPLIER));
    });
}

/// F5: `finish` with changes in the DLQ is not a green light: it exits 3
/// (NOT READY) so a script does not switch the application.
#[test]
fn finish_is_not_ready_while_the_dlq_holds_changes() {
    sim::run(async {
        let mut cfg = Config::quiet(Shape::Identity, 36);
        cfg.max_receive = 2;
        let sim = Sim::new(cfg).await;
        seed_by_scan(&sim).await;
        let fwd = sim.ctx.forwarder_trigger().await.unwrap();
        sim.ctx
            .set_trigger(&fwd.uuid, true, "forwarder")
            .await
            .unwrap();
        *sim.poison.lock().unwrap() = Some(CanonicalKey::of(&source_key(1)));
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.forward_pending().await;
        for _ in 0..10 {
            let msgs = sim.fifo.receive(10);
            if msgs.is_empty() {
                break;
            }
            let out = sim.apply(sqs_event(&msgs)).await;
            let failed = out
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect();
            sim.fifo.complete(&msgs, &failed);
        }
        assert!(!sim.fifo.dlq().is_empty());
        tokio::time::sleep(Duration::from_secs(200)).await;
        let done = finish::finish(&sim.ctx, 3, 300, None, false).await.unwrap();
        assert!(done.dlq_depth > 0);
        assert_eq!(done.exit_code(), ddb_relay::report::EXIT_NO_GO);
        assert!(done.text().contains("NOT READY"), "{}", done.text());
    });
}

/// `finish --report F` writes the JSON report and, beside it, a picture of
/// the migration (lag, changes applied, backlog) from the metrics.
#[test]
fn finish_report_has_a_picture_of_the_migration() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 37)).await;
        sim.start_pollers();
        seed_by_backup(&sim).await;
        for v in 1..=20 {
            sim.db.put("source", source_item((v % 5) as u8, v, 20, 0));
            tokio::time::sleep(Duration::from_secs(7)).await;
        }
        converged(&sim).await;
        tokio::time::sleep(Duration::from_secs(200)).await;
        let dir = std::env::temp_dir().join(format!("ddb-relay-review-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("finish.json");
        let done = finish::finish(&sim.ctx, 3, 300, Some(&path), false)
            .await
            .unwrap();
        let svg = std::fs::read_to_string(path.with_extension("svg")).unwrap();
        assert_eq!(
            done.picture.as_deref(),
            Some(path.with_extension("svg").to_str().unwrap())
        );
        for panel in ["replication lag", "changes applied", "queue backlog"] {
            assert!(svg.contains(panel), "{panel}");
        }
        assert!(svg.contains("<polyline"), "the applied series is drawn");
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("\"picture\""));
        std::fs::remove_dir_all(&dir).unwrap();
        sim.stop_pollers();
    });
}
