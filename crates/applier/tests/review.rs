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
use relay_core::decide::CheckStatus;
use relay_core::item::{AttributeValue as V, CanonicalKey};
use relay_core::transform::Transform;
use sim::{
    copy, seed_args, seed_by_backup, seed_by_scan, source_item, source_key, Config, Shape, Sim,
};

/// A stream ARN's label for a stream created at `ms`.
fn stream_label(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3f")
        .to_string()
}

async fn set_control(sim: &Sim, change: impl FnOnce(ControlState) -> ControlState) {
    let read = sim.ctx.control().await.unwrap();
    sim.ctx
        .write_control(&read, change(read.clone()))
        .await
        .unwrap();
}

/// The message group of source item `i` among 64.
fn group64(i: u8) -> String {
    relay_core::group::group_id(relay_core::group::bucket(
        "source",
        &CanonicalKey::of(&source_key(i)),
        64,
    ))
}

/// Two source items whose changes travel in different message groups.
fn two_groups() -> (u8, u8) {
    (0, (1u8..60).find(|i| group64(*i) != group64(0)).unwrap())
}

/// Source item `i` at version `v` with the email `email@example.com`.
fn with_email(i: u8, v: usize, email: &str) -> relay_core::item::Attrs {
    let mut item = source_item(i, v, 20, 0);
    item.insert("email".into(), V::S(format!("{email}@example.com")));
    item
}

/// A key-by-email simulation over 64 message groups: the two items of
/// [`two_groups`] at `emails` (`name@example.com`), seeded by scan, the
/// forwarder on (the inserts not yet forwarded).
async fn contested(seed: u64, emails: (&str, &str)) -> Sim {
    let mut cfg = Config::quiet(Shape::KeyByEmail, seed);
    cfg.buckets = 64;
    let sim = Sim::new(cfg).await;
    let (a, b) = two_groups();
    sim.db.put("source", with_email(a, 1, emails.0));
    sim.db.put("source", with_email(b, 1, emails.1));
    seed_by_scan(&sim).await;
    let fwd = sim.ctx.forwarder_trigger().await.unwrap();
    sim.ctx
        .set_trigger(&fwd.uuid, true, "forwarder")
        .await
        .unwrap();
    sim
}

/// Forwards and applies what is pending (the inserts, before the cutoff).
async fn apply_inserts(sim: &Sim) {
    sim.forward_pending().await;
    let early = sim.fifo.receive(10);
    sim.apply(sqs_event(&early)).await;
    sim.fifo.complete(&early, &Default::default());
}

/// Forwards what is pending and takes it off the queue, not applied: the
/// messages of source item `i`'s group only.
async fn take(sim: &Sim, i: u8) -> Vec<relay_aws::fake::QueuedMessage> {
    sim.forward_pending().await;
    let msgs = sim.fifo.receive(10);
    assert!(msgs.iter().all(|m| m.group_id == group64(i)));
    msgs
}

/// F1: under a key derived from a non-key attribute, a
/// target key passes from one source item to another (A gives up email x,
/// then B takes it). Their groups are applied in either order; applied B
/// first, A's delete of x must not remove B's item there.
#[test]
fn a_key_that_passes_to_another_item_is_not_deleted_by_its_old_owner() {
    sim::run(async {
        let sim = contested(21, ("x", "y")).await;
        let (a, b) = two_groups();
        let with = |i: u8, v: usize, email: &str| {
            let mut item = source_item(i, v, 20, 0);
            item.insert("email".into(), V::S(email.into()));
            item
        };
        apply_inserts(&sim).await;
        // A leaves x; A's messages are taken, not yet applied.
        sim.db.put("source", with(a, 2, "z@example.com"));
        let a_msgs = take(&sim, a).await;
        // Then B takes x; B's group is applied first.
        sim.db.put("source", with(b, 2, "x@example.com"));
        sim.forward_pending().await;
        let b_msgs = sim.fifo.receive(10);
        assert!(!b_msgs.is_empty() && b_msgs.iter().all(|m| m.group_id == group64(b)));
        for msgs in [b_msgs, a_msgs] {
            let out = sim.apply(sqs_event(&msgs)).await;
            assert!(out.batch_item_failures.is_empty());
            sim.fifo.complete(&msgs, &Default::default());
        }
        let t = sim.transform.as_ref().unwrap();
        let at = |email: &str| {
            let key = t.key_only(&with(a, 0, email)).unwrap();
            sim.db.items("target").get(&CanonicalKey::of(&key)).cloned()
        };
        let x = at("x@example.com").expect("B's item at x survives A's delete");
        assert_eq!(x["pk"], source_key(b)["pk"]);
        assert_eq!(at("z@example.com").unwrap()["pk"], source_key(a)["pk"]);
        assert!(at("y@example.com").is_none());
        sim.assert_converged().await;
    });
}

/// F1, puts: two items' writes to one target key travel in
/// different message groups, so either can land first. A stale put never
/// replaces the item that holds the key now, and a current one replaces a
/// stale one: the source, read fresh, settles the key.
#[test]
fn a_contested_key_is_settled_by_the_source_in_either_order() {
    sim::run(async {
        let sim = contested(22, ("w", "x")).await;
        let (a, b) = two_groups();
        let with = with_email;
        let apply = |msgs: Vec<relay_aws::fake::QueuedMessage>| {
            let sim = &sim;
            async move {
                assert!(!msgs.is_empty());
                let out = sim.apply(sqs_event(&msgs)).await;
                assert!(out.batch_item_failures.is_empty());
                sim.fifo.complete(&msgs, &Default::default());
            }
        };
        sim.forward_pending().await; // the inserts: before the cutoff
        let early = sim.fifo.receive(10);
        apply(early).await;

        // 1. B leaves x (held back); A takes x and lands first, over B's
        //    stale item: A's put must win, and B's late delete spare it.
        sim.db.put("source", with(b, 2, "y"));
        let b_leaves = take(&sim, b).await;
        sim.db.put("source", with(a, 2, "x"));
        let a_takes = take(&sim, a).await;
        apply(a_takes).await;
        apply(b_leaves).await;
        sim.assert_converged().await;

        // 2. A leaves x again (its first put held back), B takes x back and
        //    lands first: A's stale put must not replace B's item.
        sim.db.put("source", with(a, 3, "z"));
        sim.db.put("source", with(a, 4, "x"));
        let a_first = take(&sim, a).await; // A's move to z, then back to x...
        sim.db.put("source", with(a, 5, "v"));
        sim.db.put("source", with(b, 3, "x"));
        sim.forward_pending().await;
        let b_takes = sim.fifo.receive(10);
        assert!(b_takes.iter().all(|m| m.group_id == group64(b)));
        apply(b_takes).await;
        apply(a_first).await;
        while sim.fifo.depth() > 0 {
            let msgs = sim.fifo.receive(10);
            apply(msgs).await;
        }
        sim.assert_converged().await;
        let stats = sim.stats();
        assert!(!stats.is_empty());
    });
}

/// helper-55 #3: a settling of a contested key that fails after it marked
/// the item there (here the source reads are refused) takes its mark back:
/// the other item keeps nothing of this one's attempt.
#[test]
fn a_settling_that_fails_after_its_mark_takes_the_mark_back() {
    sim::run(async {
        let sim = contested(23, ("w", "x")).await;
        let (a, b) = two_groups();
        let with = with_email;
        apply_inserts(&sim).await;
        // B leaves x (held back); A takes x, over B's stale item there.
        sim.db.put("source", with(b, 2, "y"));
        sim.forward_pending().await;
        let _b_leaves = sim.fifo.receive(10);
        sim.db.put("source", with(a, 2, "x"));
        let a_takes = take(&sim, a).await;
        sim.db.set_faults(|call| {
            (call.table == "source" && call.op == "GetItem").then(|| {
                DbFault::Error(AwsError::permanent(
                    "GetItem",
                    "ValidationException",
                    "refused",
                ))
            })
        });
        let out = sim.apply(sqs_event(&a_takes)).await;
        sim.db.clear_faults();
        assert!(!out.batch_item_failures.is_empty(), "the settling failed");
        let t = sim.transform.as_ref().unwrap();
        let x = t.key_only(&with(a, 0, "x")).unwrap();
        let there = sim.db.items("target")[&CanonicalKey::of(&x)].clone();
        assert_eq!(there["pk"], source_key(b)["pk"], "B's item is still there");
        assert!(
            !there.contains_key(relay_core::apply::TOKEN_ATTR),
            "the mark was taken back: {there:?}"
        );
    });
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
        sim.assert_converged().await;
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
        sim.db.set_faults(|call| {
            (call.table == "target" && call.op == "DeleteItem").then(|| {
                DbFault::Error(AwsError::permanent(
                    "DeleteItem",
                    "AccessDeniedException",
                    "injected: the sweep dies",
                ))
            })
        });
        // A tombstone the applier writes during the copy (item 2 deleted):
        // the copy's first put takes 5 s, the tombstone lands at 1 s.
        let mut first = true;
        sim.db.set_latency(move |call| {
            if call.table == "target" && call.op == "PutItem" && std::mem::take(&mut first) {
                std::time::Duration::from_secs(5)
            } else {
                std::time::Duration::ZERO
            }
        });
        let applier = async {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            assert_eq!(sim.ctx.control().await.unwrap().mode, Mode::Tombstone);
            sim.db.put("target", tombstone(&source_key(2)));
        };
        let (r, ()) = tokio::join!(scan::seed_scan(&sim.ctx, copy(), false, false), applier);
        let err = format!("{:#}", r.unwrap_err());
        assert!(err.contains("DeleteItem on target"), "{err}");
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
        let err = verify::verify(&sim.ctx, 100.0, true, 0, copy(), &Default::default())
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
        // A dry run decides nothing: exit 0 (helper-63 #8).
        let plan = finish::finish(&sim.ctx, 3, 300, None, true).await.unwrap();
        assert_eq!(
            (plan.dry_run, plan.exit_code()),
            (true, 0),
            "{}",
            plan.text()
        );
        let done = finish::finish(&sim.ctx, 3, 300, None, false).await.unwrap();
        assert!(done.dlq_depth > 0);
        assert_eq!(done.exit_code(), ddb_relay::report::EXIT_NO_GO);
        assert!(done.text().contains("NOT READY"), "{}", done.text());
    });
}

/// DESIGN.md's promise on a poison's followers: a later message of the
/// poison's group, queued before the poison's first receive, is received
/// and reported failed with it on every delivery, so it reaches the DLQ
/// with it whatever maxReceiveCount is; once the cause clears, `dlq repair`
/// repairs both items (nothing lost), and the DLQ is empty.
#[test]
fn a_poisons_follower_reaches_the_dlq_with_it_and_dlq_repair_brings_both_back() {
    for max_receive in [2, 5] {
        sim::run(async move {
            let mut cfg = Config::quiet(Shape::Identity, 38);
            cfg.max_receive = max_receive;
            // One group: every message follows the poison's.
            cfg.buckets = 1;
            let sim = Sim::new(cfg).await;
            seed_by_scan(&sim).await;
            *sim.poison.lock().unwrap() = Some(CanonicalKey::of(&source_key(1)));
            // Two messages of the one group (two forwarder invocations),
            // both queued before the first receive.
            sim.db.put("source", source_item(1, 1, 20, 0));
            sim.forward_pending().await;
            sim.db.put("source", source_item(2, 1, 20, 0));
            sim.forward_pending().await;
            assert_eq!(sim.fifo.depth(), 2, "two messages");
            let mut deliveries = 0;
            for _ in 0..2 * max_receive {
                let msgs = sim.fifo.receive(10);
                if msgs.is_empty() {
                    break;
                }
                deliveries += 1;
                assert_eq!(msgs.len(), 2, "both received on every delivery");
                let out = sim.apply(sqs_event(&msgs)).await;
                let failed: std::collections::HashSet<String> = out
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect();
                assert_eq!(failed.len(), 2, "the follower fails with the poison");
                sim.fifo.complete(&msgs, &failed);
            }
            assert_eq!(deliveries, max_receive, "max_receive {max_receive}");
            assert_eq!(sim.fifo.dlq().len(), 2, "both dead-lettered together");
            assert_eq!(sim.fifo.depth(), 0);
            *sim.poison.lock().unwrap() = None;
            let r = dlq::repair(&sim.ctx, 100, false).await.unwrap();
            assert_eq!(r.left, 0, "{:?}", r.results);
            assert!(sim.fifo.dlq().is_empty());
            sim.assert_converged().await;
            assert_eq!(sim.db.items("target").len(), 2);
        });
    }
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
        sim.assert_converged().await;
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

/// Issue 14 (review M4): after `finish` the target is the application's
/// table. `restart` (both methods) and `replay` would drop it or clear
/// it, losing the application's writes since, even with deletion
/// protection off: they are refused, and nothing changes. `status` shows
/// the finish; `resume` reopens the migration (and re-seeds are allowed
/// again, after a pause).
#[test]
fn after_finish_restart_and_replay_are_refused_until_resume_reopens() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 39)).await;
        sim.start_pollers();
        seed_by_backup(&sim).await;
        for v in 1..=5 {
            sim.db.put("source", source_item(v as u8, v, 20, 0));
            tokio::time::sleep(Duration::from_secs(7)).await;
        }
        sim.assert_converged().await;
        tokio::time::sleep(Duration::from_secs(200)).await;
        finish::finish(&sim.ctx, 3, 300, None, false).await.unwrap();
        sim.stop_pollers();
        let before = sim.ctx.control().await.unwrap();
        assert!(before.finished_ms.is_some());
        let st = ddb_relay::commands::status::status(&sim.ctx, 300)
            .await
            .unwrap();
        assert_eq!(st.finished_ms, before.finished_ms);
        assert!(ddb_relay::commands::status::status_text(&st).contains("finished   at"));
        // The application writes to the target after the switch.
        sim.db.put("target", source_item(9, 1, 20, 0));
        let items = sim.db.items("target");
        assert!(!sim.aws.is_protected("target"));
        let run = |cmd: &'static str| {
            let argv = ["ddb-relay", "--stack", "s"]
                .into_iter()
                .chain(cmd.split(' '));
            let cli = <ddb_relay::args::Cli as clap::Parser>::try_parse_from(argv).unwrap();
            ddb_relay::commands::run(&sim.ctx, cli.command)
        };
        for cmd in ["restart", "restart --method scan", "replay --from now"] {
            let err = run(cmd).await.expect_err(cmd).to_string();
            assert!(err.contains("was finished at"), "{cmd}: {err}");
        }
        // A repair copies the source's state over the target: the
        // application's item 9 would be deleted as "extra". Refused unless
        // the operator says the application was not switched.
        for cmd in ["verify --repair", "dlq repair"] {
            let err = run(cmd).await.expect_err(cmd).to_string();
            assert!(
                err.contains(&format!("`{cmd} --after-finish`")),
                "{cmd}: {err}"
            );
        }
        assert_eq!(sim.ctx.control().await.unwrap(), before, "nothing changed");
        assert_eq!(
            sim.db.items("target"),
            items,
            "the application's write stays"
        );
        // Without a repair, or with the operator's word, they run.
        for cmd in [
            "verify",
            "dlq repair --dry-run",
            "dlq repair --after-finish",
        ] {
            run(cmd).await.expect(cmd);
        }
        assert_eq!(
            sim.db.items("target"),
            items,
            "nothing to repair in the DLQ"
        );
        run("verify --repair --after-finish").await.unwrap();
        assert_eq!(
            sim.db.items("target").len(),
            items.len() - 1,
            "item 9 repaired away"
        );
        // `resume` reopens: the mark is gone, and a pause then allows a
        // re-seed again.
        run("resume").await.unwrap();
        let reopened = sim.ctx.control().await.unwrap();
        assert_eq!(reopened.finished_ms, None);
        assert_eq!(reopened.paused_at_ms, None);
        run("pause").await.unwrap();
        let err = run("restart --dry-run").await.map(|_| ()).err();
        assert!(
            err.as_ref()
                .is_none_or(|e| !e.to_string().contains("was finished")),
            "{err:?}"
        );
    });
}

/// F1 follow-up: a repair that fails after marking (the source read after
/// the mark is refused) takes its mark back: no token is left in the
/// target item for verify to trip over.
#[test]
fn a_repair_that_fails_after_marking_takes_its_mark_back() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 38)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_scan(&sim).await;
        let wrong = source_item(1, 9, 20, 0);
        sim.db.put("target", wrong.clone());
        let marked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let m = marked.clone();
        sim.db.set_faults(move |call| {
            use std::sync::atomic::Ordering::SeqCst;
            if call.table == "target" && call.op == "UpdateItem" {
                m.store(true, SeqCst);
            }
            (m.load(SeqCst) && call.table == "source" && call.op == "GetItem").then(|| {
                DbFault::Error(AwsError::permanent(
                    "GetItem",
                    "AccessDeniedException",
                    "injected: the read after the mark fails",
                ))
            })
        });
        let v = verify::verify(&sim.ctx, 100.0, true, 0, copy(), &Default::default()).await;
        sim.db.set_faults(|_| None);
        assert!(marked.load(std::sync::atomic::Ordering::SeqCst), "{v:?}");
        let key = CanonicalKey::of(&source_key(1));
        let target = sim.db.items("target");
        assert!(
            !target[&key].contains_key(ddb_relay::repair::REPAIR_TOKEN_ATTR),
            "{:?}",
            target[&key]
        );
        assert_eq!(target[&key], wrong, "nothing else written");
    });
}

/// Export-load review follow-up, the same rule for restores: a first seed
/// at a point whose later changes the queue may not hold (older than the
/// stream's 24 hours) is refused before anything is written.
#[test]
fn a_first_seed_at_a_point_the_queue_cannot_follow_is_refused() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 39)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        let before = sim.ctx.control().await.unwrap();
        let at = When::At(sim.now_ms() - 25 * 3600 * 1000);
        let err = seed::seed(&sim.ctx, &seed_args(Method::Pitr, Some(at)))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("24 hours"), "{err}");
        assert_eq!(sim.ctx.control().await.unwrap(), before);
        assert!(!sim.db.exists("target"));
    });
}

/// With the forwarder starting at LATEST, a chosen point may predate the
/// first change it queued: `--at` is refused (restores and export loads),
/// and so is an export this command did not take; nothing is written.
#[test]
fn a_chosen_point_is_refused_when_the_forwarder_starts_at_latest() {
    sim::run(async {
        let mut sim = Sim::new(Config::quiet(Shape::Identity, 40)).await;
        sim.ctx.stack.starting_position = Some("LATEST".into());
        sim.db.put("source", source_item(1, 1, 20, 0));
        let before = sim.ctx.control().await.unwrap();
        let at = When::At(sim.now_ms() - 60_000);
        let err = seed::seed(&sim.ctx, &seed_args(Method::Pitr, Some(at)))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("LATEST"), "{err}");
        sim.create_target();
        let items: Vec<_> = sim.db.items("source").into_values().collect();
        let uri = sim::fabricate_export(&sim, "latest", &items, sim.now_ms(), 1);
        let err = ddb_relay::commands::load::seed_export_load(
            &sim.ctx,
            &ddb_relay::commands::load::LoadArgs {
                from_export: Some(uri),
                bucket: None,
                prefix: String::new(),
                at: None,
            },
            copy(),
            false,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("LATEST"), "{err}");
        assert_eq!(sim.ctx.control().await.unwrap(), before);
    });
}

/// Issue 11: a target in another account refuses the seeds the AWS API
/// cannot run there (seed, restart, replay and preflight), and a target
/// "elsewhere" that turns out to be the source itself (a role of the stack's
/// own account) is refused before any command runs.
#[test]
fn seeds_that_cannot_reach_a_target_elsewhere_and_a_target_that_is_the_source_are_refused() {
    sim::run(async {
        let mut sim = Sim::new(Config::quiet(Shape::Identity, 31)).await;
        sim.ctx.stack.target = relay_core::place::TargetPlace {
            region: None,
            role_arn: Some("arn:aws:iam::222222222222:role/ddb-relay-target".into()),
            external_id: Some("x-1".into()),
        };
        let before = sim.ctx.control().await.unwrap();
        for cmd in [
            "seed --method backup",
            "seed --method pitr",
            "restart",
            "replay --from now",
        ] {
            let argv = ["ddb-relay", "--stack", "s"]
                .into_iter()
                .chain(cmd.split(' '));
            let cli = <ddb_relay::args::Cli as clap::Parser>::try_parse_from(argv).unwrap();
            let err = ddb_relay::commands::run(&sim.ctx, cli.command)
                .await
                .expect_err(cmd)
                .to_string();
            assert!(
                err.contains("cannot reach") && err.contains("another account"),
                "{cmd}: {err}"
            );
        }
        assert_eq!(
            sim.ctx.control().await.unwrap(),
            before,
            "a refused command changes nothing"
        );
        let pre = ddb_relay::commands::preflight::preflight(&sim.ctx, Method::Backup, false, None)
            .await
            .unwrap();
        assert_ne!(pre.exit_code(), 0);
        assert!(serde_json::to_string(&pre)
            .unwrap()
            .contains("target place"));
        let pre = ddb_relay::commands::preflight::preflight(&sim.ctx, Method::Scan, false, None)
            .await
            .unwrap();
        assert!(serde_json::to_string(&pre)
            .unwrap()
            .contains("a scan seed reaches it"));

        // Through its role, the "target" reaches the source table itself.
        ddb_relay::ctx::check_target_is_not_source(&sim.ctx.aws, &sim.ctx.stack)
            .await
            .unwrap();
        sim.ctx.stack.target_table = sim.ctx.stack.source_table.clone();
        let err = ddb_relay::ctx::check_target_is_not_source(&sim.ctx.aws, &sim.ctx.stack)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is the source table itself"), "{err}");
    });
}

/// Issue 14: `preflight` warns while the owning stack's next deploy could
/// delete the source; `protect --dry-run` changes nothing, `protect` clears
/// the warning; once the target is protected, `restart` and `replay` are
/// refused before they touch anything, and the target survives with its
/// items.
#[test]
fn the_source_is_protected_before_seeding_and_restart_cannot_delete_a_protected_target() {
    use relay_aws::operator::Iac;
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 35)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        let owner = relay_core::iac::Owner {
            stack: "app".into(),
            logical_id: "Orders".into(),
            deletion_policy: Some("Retain".into()),
            update_replace_policy: None,
            root_stack: None,
            resource_type: relay_core::iac::TABLE_TYPE.into(),
        };
        sim.aws.set_owner("source", owner, "Resources: {}");
        let check = |r: &ddb_relay::commands::preflight::PreflightReport| {
            r.checks
                .iter()
                .find(|c| c.name == "source protection")
                .cloned()
                .expect("a source protection check")
        };
        let pre = ddb_relay::commands::preflight::preflight(&sim.ctx, Method::Backup, false, None)
            .await
            .unwrap();
        let c = check(&pre);
        assert_eq!(c.status, relay_core::decide::CheckStatus::Warn, "{c:?}");
        assert!(c.detail.contains("stack app as Orders"), "{}", c.detail);
        assert_eq!(pre.exit_code(), 0, "a warning, not a blocker");

        let dry = ddb_relay::commands::protect::protect(&sim.ctx, false, true)
            .await
            .unwrap();
        assert!(!dry.now && !sim.aws.is_protected("source"));
        let done = ddb_relay::commands::protect::protect(&sim.ctx, false, false)
            .await
            .unwrap();
        assert!(!done.was && done.now && sim.aws.is_protected("source"));
        assert_eq!(done.owner.as_ref().map(|o| o.stack.as_str()), Some("app"));
        let pre = ddb_relay::commands::preflight::preflight(&sim.ctx, Method::Backup, false, None)
            .await
            .unwrap();
        assert_eq!(check(&pre).status, relay_core::decide::CheckStatus::Pass);

        seed_by_backup(&sim).await;
        ddb_relay::commands::protect::protect(&sim.ctx, true, false)
            .await
            .unwrap();
        assert!(
            sim.aws
                .table_spec("target")
                .await
                .unwrap()
                .unwrap()
                .deletion_protection
        );
        pause::pause(&sim.ctx, false).await.unwrap();
        let before = sim.ctx.control().await.unwrap();
        let items = sim.db.items("target");
        for cmd in ["restart", "restart --method scan", "replay --from now"] {
            let argv = ["ddb-relay", "--stack", "s"]
                .into_iter()
                .chain(cmd.split(' '));
            let cli = <ddb_relay::args::Cli as clap::Parser>::try_parse_from(argv).unwrap();
            let err = ddb_relay::commands::run(&sim.ctx, cli.command)
                .await
                .expect_err(cmd)
                .to_string();
            assert!(err.contains("deletion protection on"), "{cmd}: {err}");
        }
        assert_eq!(
            sim.ctx.control().await.unwrap(),
            before,
            "refused: nothing changed"
        );
        assert_eq!(sim.db.items("target"), items, "the target keeps every item");
        // And the fake itself refuses to drop it, as DynamoDB does.
        assert!(sim.aws.delete_table("target").await.is_err());
    });
}

/// Review (helper-37): a re-seed drops or clears the target only once no
/// applier invocation that started before the pause can still write
/// (`stopped_by_ms`, the trigger's timeout after the pause), not as soon as
/// the margin allows: restart by backup, restart by scan, and replay.
#[test]
fn a_reseed_waits_for_the_invocations_in_flight_at_the_pause() {
    use ddb_relay::commands::replay;
    use std::sync::{Arc, Mutex};
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 41)).await;
        for i in 0..20 {
            sim.db.put("source", source_item(i, 1, 20, 0));
        }
        sim.start_pollers();
        seed_by_scan(&sim).await;
        sim.assert_converged().await;
        let target = sim.ctx.stack.target_table.clone();
        // When the target is first dropped or has items deleted.
        let first = Arc::new(Mutex::new(None::<i64>));
        let (seen, clock, t) = (first.clone(), sim.clock.clone(), target.clone());
        sim.db.set_faults(move |call| {
            let destroys = matches!(call.op, "DeleteTable" | "DeleteItem")
                || call.writes.iter().any(|w| w.kind() == "delete");
            if call.table == t && destroys {
                seen.lock().unwrap().get_or_insert(clock.now_ms());
            }
            None
        });
        let margin = sim.cfg.margin_s * 1000;
        for restart in ["backup", "scan", "replay"] {
            let paused = pause::pause(&sim.ctx, false).await.unwrap();
            let stopped_by = paused.stopped_by_ms.unwrap();
            let p = paused.paused_at_ms.unwrap();
            assert!(
                stopped_by > p + margin + 2_000,
                "the test needs the timeout to outlast the margin"
            );
            *first.lock().unwrap() = None;
            match restart {
                "backup" => {
                    replay::replay(&sim.ctx, None, false, false).await.unwrap();
                }
                "scan" => {
                    scan::restart_scan(&sim.ctx, copy(), false, false)
                        .await
                        .unwrap();
                }
                _ => {
                    // A point the margin allows, long before the stop time.
                    let t = p + margin + 1_000;
                    sim.ctx.wait_until(t + 1_000, "past T").await.unwrap();
                    replay::replay(&sim.ctx, Some(When::At(t)), false, false)
                        .await
                        .unwrap();
                }
            };
            let at = first
                .lock()
                .unwrap()
                .unwrap_or_else(|| panic!("{restart}: the target was not re-seeded"));
            assert!(
                at >= stopped_by,
                "{restart}: the target was destroyed at {at}, before {stopped_by}"
            );
            sim.assert_converged().await;
        }
        sim.stop_pollers();
    });
}

/// Review (helper-37): the sweep deletes a tombstone only while it is
/// still one. The applier re-puts the item between the sweep's read of the
/// page and its delete: the live item stays.
#[test]
fn the_sweep_never_deletes_an_item_re_put_after_it_read_the_tombstone() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 42)).await;
        sim.create_target();
        sim.db.put("target", tombstone(&source_key(2)));
        sim.db.put("target", source_item(3, 1, 20, 0));
        // The delete waits a second once it is sent; the re-put lands then.
        let sent = Arc::new(AtomicBool::new(false));
        slow_calls(&sim, ("target", "DeleteItem"), &sent);
        let db = sim.db.clone();
        let reput = tokio::task::spawn_local(async move {
            for _ in 0..1_000 {
                if sent.load(Ordering::SeqCst) {
                    db.put("target", source_item(2, 2, 20, 0));
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        });
        // The sweep of the copy the control item names.
        let read = sim.ctx.control().await.unwrap();
        let copy_seed = relay_core::control::ControlState {
            seed_method: Some("scan".into()),
            seed_ms: Some(1),
            cutoff_ms: Some(1),
            ..read.clone()
        };
        sim.ctx.write_control(&read, copy_seed).await.unwrap();
        // Its checkpoint, where the sweep records its lease.
        let mut cp = ddb_relay::commands::copy::checkpoint_key(&sim.ctx);
        cp.insert("seed_ms".into(), V::N("1".into()));
        let cond = relay_aws::operator::Cond::Always;
        let control = &sim.ctx.stack.control_table;
        sim.aws.put_item(control, &cp, &cond).await.unwrap();
        let deleted = ddb_relay::commands::copy::sweep_tombstones(&sim.ctx, &["pk".into()], 2, 1)
            .await
            .unwrap();
        assert!(reput.await.unwrap(), "the sweep sent a delete");
        assert_eq!(deleted, 0, "the delete's condition failed");
        let target = sim.db.items("target");
        assert_eq!(target.len(), 2, "{target:?}");
        assert!(!target.values().any(is_tombstone));
    });
}

/// Review (helper-37): a verify's verdict is about the seed it compared. A
/// re-seed that lands while the verify runs makes its verdict unrecorded:
/// `cutover` asks for a verify of the new seed.
/// Every scan of the source takes a second, and `reading` turns true when
/// one starts (a verify is reading the source then).
fn slow_source_scan(sim: &Sim, reading: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
    slow_calls(sim, ("source", "Scan"), reading);
}

/// Every `op` on `table` takes a second, and `seen` turns true when one is
/// sent.
fn slow_calls(
    sim: &Sim,
    (table, op): (&'static str, &'static str),
    seen: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    seen.store(false, Ordering::SeqCst);
    let flag = seen.clone();
    sim.db.set_latency(move |call| {
        if call.table == table && call.op == op {
            flag.store(true, Ordering::SeqCst);
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        }
    });
}

/// Waits until a scan of the source started ([`slow_source_scan`]).
async fn scan_started(reading: &std::sync::atomic::AtomicBool) {
    while !reading.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_verdict_taken_across_a_reseed_is_not_recorded() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 43)).await;
        for i in 0..10 {
            sim.db.put("source", source_item(i, 1, 20, 0));
        }
        sim.start_pollers();
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        // The control item as a re-seed leaves it, written while the
        // verify reads the source.
        let reading = Arc::new(AtomicBool::new(false));
        slow_source_scan(&sim, &reading);
        let ctx = &sim.ctx;
        let reseed = async {
            for _ in 0..1_000 {
                if reading.load(Ordering::SeqCst) {
                    let read = ctx.control().await.unwrap();
                    let next = ControlState {
                        seed_method: Some("scan".into()),
                        seed_ms: Some(read.seed_ms.unwrap() + 1),
                        last_verify: None,
                        ..read.clone()
                    };
                    ctx.write_control(&read, next).await.unwrap();
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        };
        let spill = Default::default();
        let (v, reseeded) =
            tokio::join!(verify::verify(ctx, 100.0, false, 0, copy(), &spill), reseed);
        let v = v.unwrap();
        assert!(reseeded, "the re-seed landed during the verify");
        assert_eq!(v.exit_code(), 0, "the tables agree: {}", v.text());
        assert!(!v.recorded, "a verdict about the old seed was recorded");
        assert_eq!(sim.ctx.control().await.unwrap().last_verify, None);
        // Verified again, the new seed's verdict is recorded.
        sim.db.set_latency(|_| Duration::ZERO);
        let v = verify::verify(&sim.ctx, 100.0, false, 0, copy(), &Default::default())
            .await
            .unwrap();
        assert!(v.recorded);
        assert_eq!(
            sim.ctx.control().await.unwrap().last_verify.as_deref(),
            Some("clean")
        );
        // helper-49 #2: a re-seed at the same point (a replay to the same T)
        // leaves the seed's fields as they were; the control item's version
        // moved all the same, and the verdict is not recorded.
        slow_source_scan(&sim, &reading);
        let same_point = async {
            scan_started(&reading).await;
            let read = ctx.control().await.unwrap();
            ctx.write_control(&read, read.without_verdict())
                .await
                .unwrap();
        };
        let (v, ()) = tokio::join!(
            verify::verify(ctx, 100.0, false, 0, copy(), &spill),
            same_point
        );
        assert!(!v.unwrap().recorded, "recorded across a same-point re-seed");
        assert_eq!(sim.ctx.control().await.unwrap().last_verify, None);
        // A verify that began while a scan copy fills the target (tombstone
        // mode) is not recorded either.
        sim.db.set_latency(|_| Duration::ZERO);
        let read = sim.ctx.control().await.unwrap();
        let copying = ControlState {
            mode: relay_core::control::Mode::Tombstone,
            ..read.clone()
        };
        let written = sim.ctx.write_control(&read, copying).await.unwrap();
        let v = verify::verify(&sim.ctx, 100.0, false, 0, copy(), &Default::default())
            .await
            .unwrap();
        assert!(!v.recorded, "recorded during a copy: {}", v.text());
        sim.ctx.write_control(&written, read).await.unwrap();
        // helper-51 #1: differences are recorded although the control item
        // moved while the verify ran, else an older "clean" stays in force.
        let v = verify::verify(&sim.ctx, 100.0, false, 0, copy(), &Default::default())
            .await
            .unwrap();
        assert!(v.recorded && v.clean);
        sim.db.delete("target", &source_key(3), false);
        slow_source_scan(&sim, &reading);
        let touch = async {
            scan_started(&reading).await;
            let read = ctx.control().await.unwrap();
            ctx.write_control(&read, read.clone()).await.unwrap();
        };
        let (v, ()) = tokio::join!(verify::verify(ctx, 100.0, false, 0, copy(), &spill), touch);
        let v = v.unwrap();
        assert!(!v.clean && v.recorded, "{}", v.text());
        let last = sim.ctx.control().await.unwrap().last_verify.unwrap();
        assert!(last.contains("difference"), "{last}");
        // helper-52 #4: a sample's differences replace an older clean
        // verdict too (a sample is never recorded as clean).
        sim.db.set_latency(|_| Duration::ZERO);
        for i in 0..10 {
            sim.db.put("source", source_item(i, 1, 20, 0));
        }
        sim.assert_converged().await;
        let v = verify::verify(&sim.ctx, 100.0, false, 0, copy(), &Default::default())
            .await
            .unwrap();
        assert!(v.recorded && v.clean);
        for i in 0..10 {
            sim.db.delete("target", &source_key(i), false);
        }
        let v = verify::verify(&sim.ctx, 50.0, false, 0, copy(), &Default::default())
            .await
            .unwrap();
        assert!(!v.clean && v.recorded, "{}", v.text());
        let last = sim.ctx.control().await.unwrap().last_verify.unwrap();
        assert!(last.contains("50% sample"), "{last}");
        // helper-52 #3: differences are not recorded once a re-seed began
        // (they are about a table that is gone).
        slow_source_scan(&sim, &reading);
        let pending = async {
            scan_started(&reading).await;
            let read = ctx.control().await.unwrap();
            let next = ControlState {
                seed_method: Some("backup-pending".into()),
                ..read.without_verdict()
            };
            ctx.write_control(&read, next).await.unwrap();
        };
        let (v, ()) = tokio::join!(
            verify::verify(ctx, 100.0, false, 0, copy(), &spill),
            pending
        );
        assert!(!v.unwrap().recorded, "recorded across a re-seed's start");
        assert_eq!(sim.ctx.control().await.unwrap().last_verify, None);
        sim.stop_pollers();
    });
}

/// Review (helper-37): a seed point before the source's stream existed is
/// refused, an export's and a chosen `--at` alike: the changes between the
/// point and the stream's creation were never streamed. (Within the
/// stream's 24 hours, so only the creation time refuses it.)
#[test]
fn a_seed_point_from_before_the_stream_existed_is_refused() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 44)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        let now = sim.now_ms();
        let created = now - 10 * 60_000;
        sim.aws.set_stream_label("source", &stream_label(created));
        let before = sim.ctx.control().await.unwrap();
        let items: Vec<_> = sim.db.items("source").into_values().collect();
        let load = |uri: String| async {
            ddb_relay::commands::load::seed_export_load(
                &sim.ctx,
                &ddb_relay::commands::load::LoadArgs {
                    from_export: Some(uri),
                    bucket: None,
                    prefix: String::new(),
                    at: None,
                },
                copy(),
                false,
            )
            .await
        };
        let at = When::At(created - 60_000);
        let err = seed::seed(&sim.ctx, &seed_args(Method::Pitr, Some(at)))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("before the source's stream was created"),
            "{err}"
        );
        assert!(!sim.db.exists("target"), "no restore started");
        // The default points: PITR's latest restorable time (here 11
        // minutes back, before the stream), and an export's now (here
        // before a stream label 5 s ahead: this clock is behind AWS's).
        sim.aws.set_pitr_lag(11 * 60_000);
        let err = seed::seed(&sim.ctx, &seed_args(Method::Pitr, None))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("before the source's stream was created"),
            "{err}"
        );
        sim.aws.set_pitr_lag(0);
        sim.aws
            .set_stream_label("source", &stream_label(now + 5_000));
        let mut export = seed_args(Method::Export, None);
        export.bucket = Some("exports".into());
        let err = seed::seed(&sim.ctx, &export).await.unwrap_err().to_string();
        assert!(
            err.contains("before the source's stream was created"),
            "{err}"
        );
        assert!(!sim.db.exists("target"), "no restore or import started");
        assert_eq!(sim.ctx.control().await.unwrap(), before, "nothing written");
        sim.aws.set_stream_label("source", &stream_label(created));
        sim.create_target();
        let early = sim::fabricate_export(&sim, "early", &items, created - 60_000, 1);
        let err = load(early).await.unwrap_err().to_string();
        assert!(
            err.contains("before the source's stream was created"),
            "{err}"
        );
        assert_eq!(sim.ctx.control().await.unwrap(), before, "nothing written");
        assert!(sim.db.items("target").is_empty());
        // An export holds every change before its time: one a ms before the
        // stream is refused, one at its creation loads.
        // Its preflight (`--from-export`) says so, and asks nothing of the
        // source's PITR, which loading an existing export does not need.
        let ctx = &sim.ctx;
        let preflight = |uri: String| async move {
            let pre =
                ddb_relay::commands::preflight::preflight(ctx, Method::Export, false, Some(&uri))
                    .await
                    .unwrap();
            assert!(pre.checks.iter().all(|c| c.name != "source PITR"));
            let c = pre.checks.into_iter().find(|c| c.name == "export").unwrap();
            (c.status, c.detail)
        };
        let (status, detail) =
            preflight(sim::fabricate_export(&sim, "e2", &items, created - 1, 1)).await;
        assert_eq!(status, CheckStatus::Fail, "{detail}");
        assert!(
            detail.contains("before the source's stream was created"),
            "{detail}"
        );
        let margin = sim.ctx.stack.margin_ms;
        let (status, detail) = preflight(sim::fabricate_export(
            &sim,
            "e3",
            &items,
            created + margin,
            1,
        ))
        .await;
        assert_eq!(status, CheckStatus::Pass, "{detail}");
        let close = sim::fabricate_export(&sim, "close", &items, created - 1, 1);
        let err = load(close).await.unwrap_err().to_string();
        assert!(
            err.contains("before the source's stream was created"),
            "{err}"
        );
        assert_eq!(sim.ctx.control().await.unwrap(), before, "nothing written");
        let late = sim::fabricate_export(&sim, "late", &items, created, 1);
        load(late).await.unwrap();
    });
}

/// A backup seed right after the stream was created waits until the
/// stream is a backup's fuzziness old (a backup may lack the writes of the
/// minute before its time, which only the stream can then bring); the
/// seeds that hold every change before their point (scan, PITR, export) do
/// not wait.
#[test]
fn a_backup_seed_right_after_the_stream_was_created_waits_out_a_backups_minute() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 45)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        let created = sim.now_ms() - 2_000;
        sim.aws.set_stream_label("source", &stream_label(created));
        // A dry run says it would wait, and does not.
        let before = sim.now_ms();
        let mut dry = seed_args(Method::Backup, None);
        dry.dry_run = true;
        let plan = seed::seed(&sim.ctx, &dry).await.unwrap().plan.unwrap();
        assert!(plan.starts_with("wait until"), "{plan}");
        assert!(sim.now_ms() - before < 1_000, "a dry run waited");
        let r = seed::seed(&sim.ctx, &seed_args(Method::Backup, None))
            .await
            .unwrap();
        let seed_ms = r.seed_ms.unwrap();
        assert!(
            seed_ms >= created + ddb_relay::commands::copy::BACKUP_FUZZ_MS,
            "a backup {} ms after the stream was created",
            seed_ms - created
        );
        assert_eq!(sim.db.items("target").len(), 1);
        // A label that is not a time (another emulator's): the stream is
        // counted as created when the seed read it, so the backup waits a
        // minute from then.
        let sim = Sim::new(Config::quiet(Shape::Identity, 48)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.aws.set_stream_label("source", "latest");
        let before = sim.now_ms();
        let r = seed::seed(&sim.ctx, &seed_args(Method::Backup, None))
            .await
            .unwrap();
        assert!(
            r.seed_ms.unwrap() >= before + ddb_relay::commands::copy::BACKUP_FUZZ_MS,
            "a backup {} ms after an unreadable stream label was read",
            r.seed_ms.unwrap() - before
        );
        assert_eq!(sim.db.items("target").len(), 1);
        // A scan copy at the same moment starts at once.
        let sim = Sim::new(Config::quiet(Shape::Identity, 46)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        let created = sim.now_ms() - 2_000;
        sim.aws.set_stream_label("source", &stream_label(created));
        sim.create_target();
        let r = ddb_relay::commands::scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap();
        assert!(r.seed_ms - created < 10_000, "the copy did not wait");
        // A scan that would start before the stream (a clock behind AWS's)
        // is refused, and writes nothing.
        let sim = Sim::new(Config::quiet(Shape::Identity, 47)).await;
        sim.aws
            .set_stream_label("source", &stream_label(sim.now_ms() + 5_000));
        sim.create_target();
        let before = sim.ctx.control().await.unwrap();
        let err = ddb_relay::commands::scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("before the source's stream was created"),
            "{err}"
        );
        assert_eq!(sim.ctx.control().await.unwrap(), before, "nothing written");
    });
}

/// A pause that did not finish (interrupted after its fence, before it
/// recorded when the applier's invocations stop) cannot be waited out: a
/// restart (backup or scan) and a replay are refused, and destroy nothing.
/// Pausing again finishes it, and the restart then runs.
#[test]
fn a_reseed_after_an_unfinished_pause_is_refused_and_destroys_nothing() {
    use ddb_relay::commands::replay;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 48)).await;
        for i in 0..10 {
            sim.db.put("source", source_item(i, 1, 20, 0));
        }
        sim.start_pollers();
        seed_by_scan(&sim).await;
        sim.assert_converged().await;
        let destroyed = Arc::new(AtomicBool::new(false));
        let (seen, t) = (destroyed.clone(), sim.ctx.stack.target_table.clone());
        sim.db.set_faults(move |call| {
            let destroys = matches!(call.op, "DeleteTable" | "DeleteItem")
                || call.writes.iter().any(|w| w.kind() == "delete");
            if call.table == t && destroys {
                seen.store(true, Ordering::SeqCst);
            }
            None
        });
        pause::pause(&sim.ctx, false).await.unwrap();
        set_control(&sim, |c| ControlState {
            stopped_by_ms: None,
            ..c
        })
        .await;
        let margin = sim.cfg.margin_s * 1000;
        let p = sim.ctx.control().await.unwrap().paused_at_ms.unwrap();
        sim.ctx
            .wait_until(p + margin + 2_000, "past a valid point")
            .await
            .unwrap();
        let items = sim.db.items("target");
        for restart in ["backup", "scan", "replay"] {
            let err = match restart {
                "backup" => replay::replay(&sim.ctx, None, false, false)
                    .await
                    .map(|_| ()),
                "scan" => scan::restart_scan(&sim.ctx, copy(), false, false)
                    .await
                    .map(|_| ()),
                _ => replay::replay(&sim.ctx, Some(When::At(p + margin + 1_000)), false, false)
                    .await
                    .map(|_| ()),
            }
            .unwrap_err()
            .to_string();
            assert!(err.contains("the pause did not finish"), "{restart}: {err}");
            assert!(
                !destroyed.load(Ordering::SeqCst),
                "{restart} destroyed the target"
            );
            assert_eq!(sim.db.items("target"), items, "{restart}");
        }
        pause::pause(&sim.ctx, false).await.unwrap();
        assert!(sim.ctx.control().await.unwrap().stopped_by_ms.is_some());
        scan::restart_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap();
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// Every re-seed clears the last verify's verdict: it was about the old
/// target (a restart by scan, one by backup and a replay). And `finish`
/// refuses while the forwarder reads a stream the source no longer has
/// (the stream was replaced), changing nothing.
#[test]
fn a_reseed_clears_the_verdict_and_finish_refuses_a_replaced_stream() {
    use ddb_relay::commands::replay;
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 49)).await;
        for i in 0..10 {
            sim.db.put("source", source_item(i, 1, 20, 0));
        }
        sim.start_pollers();
        seed_by_scan(&sim).await;
        sim.assert_converged().await;
        let margin = sim.cfg.margin_s * 1000;
        for restart in ["scan", "backup", "replay", "seed"] {
            let v = verify::verify(&sim.ctx, 100.0, false, 0, copy(), &Default::default())
                .await
                .unwrap();
            assert!(v.recorded, "{restart}: {}", v.text());
            assert_eq!(
                sim.ctx.control().await.unwrap().last_verify.as_deref(),
                Some("clean")
            );
            let p = pause::pause(&sim.ctx, false).await.unwrap();
            match restart {
                "scan" => {
                    scan::restart_scan(&sim.ctx, copy(), false, false)
                        .await
                        .unwrap();
                }
                "backup" => {
                    replay::replay(&sim.ctx, None, false, false).await.unwrap();
                }
                // The target deleted by hand and seeded again (audit
                // helper-69 #1): the seed's own record clears the verdict.
                "seed" => {
                    let target = sim.ctx.stack.target_table.clone();
                    sim.aws.delete_table(&target).await.unwrap();
                    sim.ctx.wait_table_gone(&target).await.unwrap();
                    let t = p.paused_at_ms.unwrap() + margin + 120_000;
                    sim.ctx
                        .wait_until(t, "past the earliest point")
                        .await
                        .unwrap();
                    let args = seed_args(Method::Backup, None);
                    ddb_relay::commands::seed::seed(&sim.ctx, &args)
                        .await
                        .unwrap();
                    assert_eq!(sim.ctx.control().await.unwrap().last_verify, None);
                    pause::resume(&sim.ctx, false).await.unwrap();
                }
                _ => {
                    let t = p.paused_at_ms.unwrap() + margin + 1_000;
                    sim.ctx.wait_until(t + 1_000, "past T").await.unwrap();
                    replay::replay(&sim.ctx, Some(When::At(t)), false, false)
                        .await
                        .unwrap();
                }
            }
            assert_eq!(
                sim.ctx.control().await.unwrap().last_verify,
                None,
                "{restart} kept a verdict about the old target"
            );
            sim.assert_converged().await;
        }
        // The source's stream replaced under the stack.
        sim.aws
            .set_stream_label("source", "2026-11-04T01:00:00.000");
        let err = finish::finish(&sim.ctx, 3, 30, None, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not read the source's current stream"),
            "{err}"
        );
        assert!(sim.aws.trigger_enabled(sim::APPLIER) && sim.aws.trigger_enabled(sim::FORWARDER));
        sim.stop_pollers();
    });
}

/// `dlq repair` whose reads of the source fail (no permission): every
/// message stays in the DLQ, visible again at once (released, not held by
/// the run), each reported failed with the reason, and the run's exit is
/// not 0. Re-run once the cause clears, it repairs them all.
#[test]
fn a_dlq_repair_that_cannot_read_the_source_leaves_every_message_in_the_dlq() {
    sim::run(async {
        let mut cfg = Config::quiet(Shape::Identity, 50);
        cfg.max_receive = 2;
        cfg.buckets = 1;
        let sim = Sim::new(cfg).await;
        seed_by_scan(&sim).await;
        *sim.poison.lock().unwrap() = Some(CanonicalKey::of(&source_key(1)));
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.forward_pending().await;
        sim.db.put("source", source_item(2, 1, 20, 0));
        sim.forward_pending().await;
        sim.apply_by_hand(4).await;
        assert_eq!(sim.fifo.dlq().len(), 2, "both dead-lettered");
        *sim.poison.lock().unwrap() = None;
        sim.deny_after("source", "GetItem", 0);
        let r = dlq::repair(&sim.ctx, 100, false).await.unwrap();
        assert_eq!((r.repaired, r.left), (0, 2), "{:?}", r.results);
        assert_ne!(r.exit_code(), 0);
        assert!(
            r.results
                .iter()
                .all(|x| x.status == "failed"
                    && x.reason.as_deref().unwrap_or("").contains("GetItem"))
        );
        assert_eq!(sim.fifo.dlq_counts(), (2, 0), "visible again, not held");
        sim.db.clear_faults();
        let r = dlq::repair(&sim.ctx, 100, false).await.unwrap();
        assert_eq!((r.repaired, r.left), (2, 0), "{:?}", r.results);
        assert!(sim.fifo.dlq().is_empty());
        sim.assert_converged().await;
    });
}

/// A simulation under `TtlDeletes=skip` (TTL on the source's `expires`),
/// and AWS's time in seconds.
async fn ttl_skip(shape: Shape, seed: u64) -> (Sim, i64) {
    let sim = Sim::new(Config {
        ttl_skip: true,
        ..Config::quiet(shape, seed)
    })
    .await;
    let now_s = sim.now_ms() / 1000;
    (sim, now_s)
}

/// Item `i` (with `email`) that expires at `s` (epoch seconds).
fn expiring(i: u8, email: u32, s: i64) -> relay_core::item::Attrs {
    let mut it = source_item(i, 1, 20, email);
    it.insert("expires".into(), V::N(s.to_string()));
    it
}

/// A full verify in this process and one on the workers (`fanned`): what
/// each found as (clean, extra, ttl_kept).
async fn verify_ttl(sim: &Sim, repair: bool, fanned: bool) -> Vec<(bool, u64, u64)> {
    use ddb_relay::commands::verify_fanout;
    let mut found = Vec::new();
    let v = verify::verify(&sim.ctx, 100.0, repair, 0, copy(), &Default::default())
        .await
        .unwrap();
    found.push((v.clean, v.extra, v.ttl_kept));
    if fanned {
        let v = verify_fanout::verify(&sim.ctx, 100.0, repair, 0, 2)
            .await
            .unwrap();
        found.push((v.clean, v.extra, v.ttl_kept));
    }
    found
}

/// helper-55 #1: under `TtlDeletes=skip` the target keeps what the source's
/// TTL deletes. `verify` expects those items (no source item, TTL passed),
/// in this process and on the workers, and `--repair` leaves them; an extra
/// item whose TTL has not passed, or that has none, is still a difference.
#[test]
fn under_ttl_skip_verify_expects_the_items_the_sources_ttl_deleted() {
    sim::run(async {
        let (sim, now_s) = ttl_skip(Shape::Identity, 151).await;
        sim.db.put("source", expiring(1, 0, now_s - 10));
        sim.db.put("source", expiring(2, 0, now_s + 86_400));
        sim.db.put("source", source_item(3, 1, 20, 0));
        sim.start_pollers();
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        // DynamoDB's TTL process deletes item 1 from the source.
        sim.db.delete("source", &source_key(1), true);
        assert!(sim.drain(Duration::from_secs(300)).await);
        assert_eq!(sim.db.items("target").len(), 3, "the target keeps it");
        sim.start_workers(2, false).await;
        for repair in [false, true] {
            let found = verify_ttl(&sim, repair, true).await;
            assert_eq!(found, [(true, 0, 1); 2], "repair {repair}");
        }
        assert_eq!(sim.db.items("target").len(), 3, "no repair deleted it");
        // Extra items the source's TTL did not delete are differences.
        sim.db.put("target", expiring(8, 0, now_s + 86_400));
        sim.db.put("target", source_item(9, 1, 20, 0));
        assert_eq!(verify_ttl(&sim, false, true).await, [(false, 2, 1); 2]);
        sim.stop_pollers();
    });
}

/// The same under a key-changing transform: a target item left at a key
/// its source item (still there) moved away from is a difference, expired
/// TTL or not; only an item no source item exists for is kept.
#[test]
fn under_ttl_skip_an_item_left_behind_by_a_key_change_is_still_extra() {
    sim::run(async {
        let (sim, now_s) = ttl_skip(Shape::KeyByEmail, 157).await;
        sim.db.put("source", expiring(1, 0, now_s - 10));
        sim.start_pollers();
        seed_by_scan(&sim).await;
        sim.assert_converged().await;
        let old = sim.db.items("target").into_values().next().unwrap();
        sim.db.put("source", expiring(1, 1, now_s - 10));
        sim.assert_converged().await;
        // The applier's delete of the old key, lost.
        sim.db.put("target", old);
        assert_eq!(verify_ttl(&sim, false, false).await, [(false, 1, 0)]);
        sim.stop_pollers();
    });
}

/// An expired target item is kept on purpose only when its source is known
/// and gone: with no candidate source item (a transform that drops the
/// source key names none) it cannot be told from an item left at a key its
/// living source moved away from, and it is a difference.
#[test]
fn under_ttl_skip_only_an_item_whose_known_source_is_gone_is_kept() {
    use ddb_relay::repair::{agrees, Agreement};
    sim::run(async {
        let (sim, now_s) = ttl_skip(Shape::Identity, 167).await;
        sim.create_target();
        sim.db.put("target", expiring(4, 0, now_s - 10));
        let loaded = ddb_relay::transform::load(&sim.ctx).await.unwrap();
        let t = loaded.transform.as_ref();
        let key = source_key(4);
        let ttl = Some("expires");
        let known = std::slice::from_ref(&key);
        let a = agrees(&sim.ctx, t, (known, &[], ttl), &key).await.unwrap();
        assert_eq!(a, Agreement::KeptByTtl);
        let a = agrees(&sim.ctx, t, (&[], &[], ttl), &key).await.unwrap();
        assert_eq!(a, Agreement::Differs);
        let a = agrees(&sim.ctx, t, (known, &[], None), &key).await.unwrap();
        assert_eq!(a, Agreement::Differs, "replicate: not kept");
    });
}
