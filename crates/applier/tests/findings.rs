//! One deterministic test per lost-write path of issue 9, each on the
//! simulation harness (`sim`): the real forwarder, applier and `ddb-relay`
//! commands on the fakes, with the interleaving that broke forced by
//! latency hooks. Each fails without its fix.
#![allow(clippy::unwrap_used)]

mod sim;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ddb_relay::commands::{cutover, dlq, finish, pause, replay, scan, status, verify};
use ddb_relay::ctx::When;
use ddb_relay::report::Report;
use relay_aws::fake::events::sqs_event;
use relay_aws::fake::{DbFault, FakeFifo};
use relay_aws::operator::Tables;
use relay_aws::{AwsError, Write};
use relay_core::apply::{is_tombstone, TOMBSTONE_ATTR};
use relay_core::control::Mode;
use relay_core::decide::{CheckStatus, CutoverThresholds};
use relay_core::item::{AttributeValue as V, CanonicalKey};
use relay_core::transform::Transform;
use sim::{copy, seed_by_backup, seed_by_scan, source_item, source_key, Config, Shape, Sim};

/// Writes item `i` (version `v`) every `every` until `until` (simulated).
fn keep_writing(sim: &Sim, items: u8, every: Duration, until: Duration) {
    let db = sim.db.clone();
    tokio::task::spawn_local(async move {
        let start = tokio::time::Instant::now();
        let mut v = 0;
        while start.elapsed() < until {
            v += 1;
            let i = (v % usize::from(items)) as u8;
            db.put("source", source_item(i, v, 20, 0));
            tokio::time::sleep(every).await;
        }
    });
}

/// Finding 1: pause at P0, restart by scan copy (the applier drains to P1),
/// pause again: a replay point between P0 + margin and P1 is refused, with
/// the earliest valid T; a valid one converges.
#[test]
fn a_replay_point_before_what_a_scan_restart_consumed_is_refused() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 11)).await;
        sim.start_pollers();
        keep_writing(
            &sim,
            5,
            Duration::from_millis(300),
            Duration::from_secs(120),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        seed_by_scan(&sim).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let ctx = &sim.ctx;
        let margin = sim.cfg.margin_s * 1000;
        let p0 = pause::pause(ctx, false)
            .await
            .unwrap()
            .paused_at_ms
            .unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        scan::restart_scan(ctx, copy(), false, false).await.unwrap();
        // The applier consumes the changes made since P0.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let second = pause::pause(ctx, false).await.unwrap();
        let p1 = second.paused_at_ms.unwrap();
        let earliest = second.earliest_replay_ms;
        assert!(
            second.consumed_ms.unwrap() > p0 + margin,
            "the restart consumed changes after P0"
        );
        assert!(earliest >= p1 + margin, "{earliest} < {p1} + margin");
        ctx.wait_until(earliest + 1_500, "past the earliest point")
            .await
            .unwrap();
        let before = ctx.control().await.unwrap();
        for t in [p0 + margin, p1 - 1_000] {
            let err = replay::replay(ctx, Some(When::At(t)), false, false)
                .await
                .expect_err("a point whose changes were consumed")
                .to_string();
            assert!(
                err.contains(&format!("earliest valid T is {earliest}")),
                "{err}"
            );
            let after = ctx.control().await.unwrap();
            assert_eq!(
                after.version, before.version,
                "a refused replay changed the control item"
            );
        }
        replay::replay(ctx, Some(When::At(earliest)), false, false)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(100)).await;
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// Finding 2: under a key derived from a non-key attribute (uuidv5 of
/// email), items too big to carry both images move and get deleted with
/// exactly one target item each; a REMOVE too big for its old image deletes.
#[test]
fn large_items_moving_under_a_key_transform_leave_exactly_one_target_item() {
    sim::run(async {
        let mut cfg = Config::quiet(Shape::KeyByEmail, 12);
        cfg.cap = 256 * 1024;
        cfg.forward_old_image = true;
        let sim = Sim::new(cfg).await;
        sim.start_pollers();
        seed_by_scan(&sim).await;
        let t = sim.transform.as_ref().unwrap();
        // 300 KB: not even the new image fits a message (a refetch marker);
        // 150 KB: the new image fits, the old one does not.
        for (i, pad) in [(1u8, 300 * 1024), (2, 150 * 1024)] {
            sim.db.put("source", source_item(i, 1, pad, 1));
            sim.assert_converged().await;
            sim.db.put("source", source_item(i, 2, pad, 2));
            sim.assert_converged().await;
            let target = sim.db.items("target");
            let old = CanonicalKey::of(&t.key_only(&source_item(i, 1, 0, 1)).unwrap());
            let new = CanonicalKey::of(&t.key_only(&source_item(i, 2, 0, 2)).unwrap());
            assert!(
                target.contains_key(&new) && !target.contains_key(&old),
                "item {i}"
            );
        }
        assert_eq!(
            sim.db.items("target").len(),
            2,
            "one target item per source item"
        );
        sim.db.delete("source", &source_key(1), false);
        sim.db.delete("source", &source_key(2), false);
        sim.assert_converged().await;
        assert!(sim.db.items("target").is_empty(), "large removes delete");
        let stats = sim.stats();
        assert!(
            !stats.contains("RefetchMarkers=0") && !stats.contains("OldImagesDropped=0"),
            "{stats}"
        );
        sim.stop_pollers();
    });
}

/// Finding 3: a change lands between verify's read of the source and its
/// repair write: the repair must not overwrite it; the target ends on the
/// newest source state and verify says clean only when they agree.
#[test]
fn a_repair_never_overwrites_a_change_applied_while_it_ran() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 13)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_scan(&sim).await;
        sim.db.put("source", source_item(1, 2, 20, 0));
        sim.assert_converged().await;
        // Divergence the repair must fix: a stale target item.
        sim.db.put("target", source_item(1, 1, 20, 0));
        // The repair's write is slow (the first one: the conditional put);
        // while it waits, the source changes and the applier applies it.
        let writing = Arc::new(AtomicBool::new(false));
        let flag = writing.clone();
        let delayed = Arc::new(AtomicUsize::new(0));
        let d = delayed.clone();
        sim.db.set_latency(move |call| {
            let operator_put =
                call.table == "target" && call.op == "PutItem" && call.writes.is_empty();
            if operator_put && d.fetch_add(1, Ordering::SeqCst) == 0 {
                flag.store(true, Ordering::SeqCst);
                return Duration::from_secs(3);
            }
            Duration::ZERO
        });
        let db = sim.db.clone();
        let flag = writing.clone();
        tokio::task::spawn_local(async move {
            while !flag.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            db.put("source", source_item(1, 3, 20, 0));
        });
        let r = verify::verify(&sim.ctx, 100.0, true, 1, copy(), &Default::default())
            .await
            .unwrap();
        assert!(sim.drain(Duration::from_secs(60)).await);
        let target = sim.db.items("target");
        assert_eq!(
            target.values().next().unwrap()["v"],
            V::N("3".into()),
            "the newest change won"
        );
        assert!(
            delayed.load(Ordering::SeqCst) >= 2,
            "the delayed write was refused and retried"
        );
        assert!(r.clean, "{r:?}");
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// Finding 3: `dlq repair` goes through the transform: under a rename it
/// writes the renamed item, under a key transform it writes the item at its
/// current target key and deletes the key it moved from.
#[test]
fn dlq_repair_writes_through_the_transform() {
    for shape in [Shape::Rename, Shape::KeyByEmail] {
        sim::run(async {
            let sim = Sim::new(Config::quiet(shape, 14)).await;
            sim.start_pollers();
            sim.db.put("source", source_item(1, 1, 20, 1));
            seed_by_scan(&sim).await;
            sim.assert_converged().await;
            // The target refuses the item's writes: its changes reach the DLQ.
            let t = sim.transform.as_ref().unwrap();
            let key = |v, e| CanonicalKey::of(&t.key_only(&source_item(1, v, 0, e)).unwrap());
            *sim.poison.lock().unwrap() = Some(key(2, 2));
            sim.db.put("source", source_item(1, 2, 20, 2));
            let start = tokio::time::Instant::now();
            while sim.fifo.dlq().is_empty() {
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "{}",
                    sim.report()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            *sim.poison.lock().unwrap() = None;
            let r = dlq::repair(&sim.ctx, 100, false).await.unwrap();
            assert_eq!((r.repaired, r.left), (1, 0), "{:?}", r.results);
            sim.assert_converged().await;
            let target = sim.db.items("target");
            assert_eq!(target.len(), 1, "{shape:?}");
            let item = &target[&key(2, 2)];
            if shape == Shape::Rename {
                assert!(item.contains_key("value") && !item.contains_key("v"));
            }
            sim.stop_pollers();
        });
    }
}

/// Finding 4: an applier invocation that read tombstone mode and writes its
/// tombstone after the copy switched to normal mode and swept: the commit
/// fence makes it write the batch again in normal mode, so no tombstone
/// survives, whatever the delay.
#[test]
fn a_late_tombstone_does_not_survive_the_sweep() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 15)).await;
        for i in 0..12 {
            sim.db.put("source", source_item(i, 1, 20, 0));
        }
        sim.start_pollers();
        let late = Arc::new(AtomicBool::new(false));
        let l = late.clone();
        sim.db.set_latency(move |call| {
            let tombstone = call
                .writes
                .iter()
                .any(|w| matches!(w, Write::Put(i) if is_tombstone(i)));
            match (call.table, call.op) {
                // The copy takes a few seconds...
                ("source", "Scan") => Duration::from_millis(800),
                // ...and the applier's tombstone write far longer.
                ("target", "BatchWriteItem") if tombstone && !l.swap(true, Ordering::SeqCst) => {
                    Duration::from_secs(8)
                }
                _ => Duration::ZERO,
            }
        });
        let db = sim.db.clone();
        let ctx_aws = sim.aws.clone();
        tokio::task::spawn_local(async move {
            // Delete an item once the copy is under way (tombstone mode).
            loop {
                let c = relay_aws::operator::Tables::control(&ctx_aws, "control", sim::STACK)
                    .await
                    .unwrap();
                if c.is_some_and(|c| c.mode == Mode::Tombstone) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            db.delete("source", &source_key(3), false);
        });
        sim.create_target();
        let r = scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap();
        assert!(!late.load(Ordering::SeqCst) || r.tombstones_deleted <= 1);
        sim.assert_converged().await;
        assert!(
            late.load(Ordering::SeqCst),
            "the tombstone write was delayed"
        );
        assert!(
            sim.db
                .items("target")
                .values()
                .all(|i| !i.contains_key(TOMBSTONE_ATTR)),
            "{}",
            sim.report()
        );
        assert!(
            !sim.stats().contains("Replanned=0"),
            "the fence made the applier plan again"
        );
        sim.stop_pollers();
    });
}

/// Finding 4, the other direction: an invocation applying a delete in
/// normal mode while the mode switches to tombstone mode writes a
/// tombstone before its messages are consumed (the copy cannot resurrect
/// the item).
#[test]
fn a_delete_that_straddles_the_switch_to_tombstone_mode_writes_a_tombstone() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 16)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.start_pollers();
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        let slow = Arc::new(AtomicBool::new(false));
        let s = slow.clone();
        sim.db.set_latency(move |call| {
            let delete = call.writes.iter().any(|w| matches!(w, Write::Delete(_)));
            if call.op == "BatchWriteItem" && delete && !s.swap(true, Ordering::SeqCst) {
                Duration::from_secs(5)
            } else {
                Duration::ZERO
            }
        });
        sim.db.delete("source", &source_key(1), false);
        // Wait until the applier is writing the delete, then switch modes.
        while !slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let read = sim.ctx.control().await.unwrap();
        sim.ctx
            .write_control(
                &read,
                relay_core::control::ControlState {
                    mode: Mode::Tombstone,
                    ..read.clone()
                },
            )
            .await
            .unwrap();
        assert!(sim.drain(Duration::from_secs(60)).await);
        let target = sim.db.items("target");
        assert_eq!(target.len(), 1, "{}", sim.report());
        assert!(
            target.values().all(is_tombstone),
            "the delete was redone as a tombstone"
        );
        sim.stop_pollers();
    });
}

fn go(d: &cutover::CutoverReport) -> bool {
    d.decision.go
}

async fn decide(sim: &Sim, waive: bool) -> cutover::CutoverReport {
    cutover::cutover(
        &sim.ctx,
        &CutoverThresholds {
            max_lag_ms: 5_000.0,
            max_backlog: 0,
            waive_verify: waive,
        },
        60,
    )
    .await
    .unwrap()
}

/// Finding 5: cutover is NO-GO when the forwarder is disabled or behind,
/// when anything is unknown, and without a clean verify since the last
/// seed (unless waived, which it says); lag comes from recent applies only.
#[test]
fn cutover_says_go_only_when_everything_is_known_and_in_sync() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 17)).await;
        sim.start_pollers();
        keep_writing(&sim, 4, Duration::from_millis(200), Duration::from_secs(10));
        seed_by_backup(&sim).await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        sim.assert_converged().await;
        tokio::time::sleep(Duration::from_secs(200)).await;
        let d = decide(&sim, false).await;
        assert!(!go(&d), "no verify yet");
        assert!(
            d.decision.reasons.iter().any(|r| r.contains("verify")),
            "{:?}",
            d.decision.reasons
        );
        let waived = decide(&sim, true).await;
        assert!(go(&waived), "{:?}", waived.decision.reasons);
        assert!(waived
            .decision
            .checks
            .iter()
            .any(|c| c.status == CheckStatus::Warn && c.detail.contains("waived")));
        assert!(
            verify::verify(&sim.ctx, 100.0, false, 1, copy(), &Default::default())
                .await
                .unwrap()
                .clean
        );
        assert!(go(&decide(&sim, false).await));

        // The forwarder disabled.
        let fwd = sim.ctx.forwarder_trigger().await.unwrap();
        sim.ctx
            .set_trigger(&fwd.uuid, false, "forwarder")
            .await
            .unwrap();
        let d = decide(&sim, false).await;
        assert!(
            !go(&d) && d.decision.reasons.iter().any(|r| r.contains("forwarder")),
            "{:?}",
            d.decision.reasons
        );
        sim.ctx
            .set_trigger(&fwd.uuid, true, "forwarder")
            .await
            .unwrap();
        // The forwarder an hour behind.
        sim.aws.metrics.record(
            "DdbRelay",
            "ReplicationLag",
            &[("Migration", sim::STACK), ("Function", "forwarder")],
            3_600_000.0,
        );
        let d = decide(&sim, false).await;
        assert!(
            !go(&d)
                && d.decision
                    .reasons
                    .iter()
                    .any(|r| r.contains("forwarder lag")),
            "{:?}",
            d.decision.reasons
        );
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert!(go(&decide(&sim, false).await));
        // Metrics that cannot be read are not zero.
        sim.aws.fail_metrics(Some(AwsError::retryable(
            "GetMetricData",
            "ThrottlingException",
            "slow down",
        )));
        let d = decide(&sim, false).await;
        assert!(
            !go(&d) && d.decision.reasons.iter().any(|r| r.contains("unknown")),
            "{:?}",
            d.decision.reasons
        );
        sim.aws.fail_metrics(None);
        // Lag: the newest datapoint, not the window's maximum.
        let dims = [("Migration", sim::STACK), ("Function", "applier")];
        sim.aws
            .metrics
            .record("DdbRelay", "ReplicationLag", &dims, 90_000.0);
        tokio::time::sleep(Duration::from_secs(61)).await;
        sim.aws
            .metrics
            .record("DdbRelay", "ReplicationLag", &dims, 400.0);
        let s = status::status(&sim.ctx, 300).await.unwrap();
        assert_eq!(s.replication_lag_ms, Some(400.0));
        assert!(go(&decide(&sim, false).await));
        // A new seed needs a new verify.
        pause::pause(&sim.ctx, false).await.unwrap();
        replay::replay(&sim.ctx, None, false, false).await.unwrap();
        sim.assert_converged().await;
        tokio::time::sleep(Duration::from_secs(200)).await;
        let d = decide(&sim, false).await;
        assert!(
            !go(&d) && d.decision.reasons.iter().any(|r| r.contains("verify")),
            "{:?}",
            d.decision.reasons
        );
        sim.stop_pollers();
    });
}

/// Finding 5: finish proves the drain: a metric it cannot read, a throttled
/// forwarder or a disabled one is not quiet.
#[test]
fn finish_does_not_take_unknown_or_throttled_for_quiet() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 18)).await;
        sim.start_pollers();
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        sim.aws.fail_metrics(Some(AwsError::retryable(
            "GetMetricData",
            "ThrottlingException",
            "slow down",
        )));
        let err = finish::finish(&sim.ctx, 3, 30, None, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics unknown"), "{err}");
        sim.aws.fail_metrics(None);
        let throttles = [("FunctionName", sim::FORWARDER)];
        let aws = sim.aws.clone();
        tokio::task::spawn_local(async move {
            for _ in 0..10 {
                aws.metrics
                    .record("AWS/Lambda", "Throttles", &throttles, 3.0);
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        });
        let err = finish::finish(&sim.ctx, 3, 20, None, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("throttled"), "{err}");
        // Each other way the forwarder is not quiet (audit helper-69 #5):
        // failing invocations or sends, behind the stream, a batch given up.
        // (Quiet here is the forwarder's timeout + 5 s: 100 s behind is more.)
        {
            use relay_aws::operator::Triggers;
            assert_eq!(
                sim.aws.function_timeout_s(sim::FORWARDER).await.unwrap(),
                60
            );
        }
        let migration = sim.ctx.stack.migration.clone();
        for (ns, name, by_function, value, says) in [
            ("AWS/Lambda", "Errors", true, 1.0, "failing"),
            ("DdbRelay", "SendFailures", false, 1.0, "failing"),
            (
                "AWS/Lambda",
                "IteratorAge",
                true,
                100_000.0,
                "behind the stream",
            ),
        ] {
            // The last case's metrics out of the window (quiet 65 s + a minute).
            tokio::time::sleep(Duration::from_secs(200)).await;
            let aws = sim.aws.clone();
            let m = migration.clone();
            let noise = tokio::task::spawn_local(async move {
                let dims = if by_function {
                    vec![("FunctionName", sim::FORWARDER)]
                } else {
                    vec![("Migration", m.as_str()), ("Function", "forwarder")]
                };
                for _ in 0..10 {
                    aws.metrics.record(ns, name, &dims, value);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            });
            let err = finish::finish(&sim.ctx, 3, 20, None, false)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{name}: {err}");
            noise.await.unwrap();
        }
        {
            use relay_aws::operator::Queues;
            let url = sim.ctx.stack.stream_failure_url.clone();
            sim.aws.send_message(&url, "{}").await.unwrap();
            let err = finish::finish(&sim.ctx, 3, 20, None, false)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("stream batches were given up"), "{err}");
            for m in sim.aws.receive(&url, 10, 60).await.unwrap() {
                sim.aws.delete_message(&url, &m.receipt).await.unwrap();
            }
        }
        assert!(sim.aws.trigger_enabled(sim::APPLIER));
        let fwd = sim.ctx.forwarder_trigger().await.unwrap();
        sim.ctx
            .set_trigger(&fwd.uuid, false, "forwarder")
            .await
            .unwrap();
        let err = finish::finish(&sim.ctx, 3, 20, None, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("forwarder trigger is Disabled"), "{err}");
        assert!(
            sim.aws.trigger_enabled(sim::APPLIER),
            "a refused finish changed nothing"
        );
        sim.ctx
            .set_trigger(&fwd.uuid, true, "forwarder")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(200)).await;
        let done = finish::finish(&sim.ctx, 3, 300, None, false).await.unwrap();
        assert!(
            done.quiet_s >= 65,
            "quiet outlasts a forwarder invocation: {}",
            done.quiet_s
        );
        assert_eq!(done.triggers, "Disabled");
        assert!(!sim.aws.trigger_enabled(sim::APPLIER) && !sim.aws.trigger_enabled(sim::FORWARDER));
        sim.stop_pollers();
    });
}

/// Finding 6: one poison message fails only its own group: the other
/// group's messages in the same batches are applied and deleted, and the
/// DLQ holds only the poisoned group's messages.
#[test]
fn a_poison_message_dead_letters_only_its_own_group() {
    sim::run(async {
        let mut cfg = Config::quiet(Shape::Identity, 19);
        cfg.buckets = 64;
        let sim = Sim::new(cfg).await;
        seed_by_scan(&sim).await;
        let group = |i: u8| {
            relay_core::group::group_id(relay_core::group::bucket(
                "source",
                &CanonicalKey::of(&source_key(i)),
                64,
            ))
        };
        let (a, b) = (0u8, (1u8..60).find(|i| group(*i) != group(0)).unwrap());
        *sim.poison.lock().unwrap() = Some(CanonicalKey::of(&source_key(a)));
        // A and B interleaved, each change in its own message.
        let fwd = sim.ctx.forwarder_trigger().await.unwrap();
        sim.ctx
            .set_trigger(&fwd.uuid, true, "forwarder")
            .await
            .unwrap();
        for v in 1..=4 {
            sim.db.put("source", source_item(a, v, 20, 0));
            sim.db.put("source", source_item(b, v, 20, 0));
            sim.forward_pending().await; // forward what is there, no applier
        }
        let fifo: &FakeFifo = &sim.fifo;
        let start = tokio::time::Instant::now();
        while fifo.depth() > 0 {
            assert!(start.elapsed() < Duration::from_secs(60));
            let msgs = fifo.receive(10);
            let out = sim.apply(sqs_event(&msgs)).await;
            let failed = out
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect();
            fifo.complete(&msgs, &failed);
        }
        let dlq = fifo.dlq();
        assert!(!dlq.is_empty());
        assert!(
            dlq.iter().all(|m| m.group_id == group(a)),
            "only A's messages are dead-lettered"
        );
        let target = sim.db.items("target");
        assert_eq!(
            target[&CanonicalKey::of(&source_key(b))]["v"],
            V::N("4".into()),
            "B was applied"
        );
    });
}

/// Finding 9: a call that hangs past the invocation's deadline is
/// abandoned in time and its messages fail (they are retried), instead of
/// Lambda killing the invocation mid-batch.
#[test]
fn a_hung_call_fails_its_messages_before_the_deadline() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 20)).await;
        seed_by_scan(&sim).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.forward_pending().await;
        sim.db.set_latency(|call| {
            if call.op == "BatchWriteItem" {
                Duration::from_secs(600)
            } else {
                Duration::ZERO
            }
        });
        let msgs = sim.fifo.receive(10);
        assert!(!msgs.is_empty());
        let start = tokio::time::Instant::now();
        let out = sim.apply(sqs_event(&msgs)).await;
        assert!(
            start.elapsed() < Duration::from_secs(sim::APPLIER_TIMEOUT_S),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(out.batch_item_failures.len(), msgs.len());
        let _ = DbFault::Unprocessed(vec![]);
    });
}

/// `finish` proves the drain: a change still in the queue (its applier not
/// running) keeps it waiting, however quiet the forwarder is, and when
/// its time runs out it says why and changes nothing: not finished, both
/// triggers still on. Once the queue drains it finishes.
#[test]
fn finish_waits_for_a_queued_change() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 19)).await;
        sim.start_pollers();
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        sim.stop_pollers();
        tokio::time::sleep(Duration::from_secs(1)).await;
        sim.db.put("source", source_item(4, 1, 20, 0));
        sim.forward_pending().await;
        assert_eq!(sim.fifo.depth(), 1, "one change queued");
        // Quiet forwarder, for longer than the quiet period.
        tokio::time::sleep(Duration::from_secs(200)).await;
        let err = finish::finish(&sim.ctx, 3, 120, None, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("messages queued"), "{err}");
        assert_eq!(sim.ctx.control().await.unwrap().finished_ms, None);
        assert!(sim.aws.trigger_enabled(sim::APPLIER));
        assert!(sim.aws.trigger_enabled(sim::FORWARDER));
        assert_eq!(sim.fifo.depth(), 1, "still queued");
        // Drained (one applier invocation), it finishes, with the change
        // in the target.
        let msgs = sim.fifo.receive(10);
        let out = sim.apply(sqs_event(&msgs)).await;
        assert!(out.batch_item_failures.is_empty());
        sim.fifo.complete(&msgs, &Default::default());
        assert_eq!(sim.fifo.depth(), 0);
        let done = finish::finish(&sim.ctx, 3, 300, None, false).await.unwrap();
        assert_eq!(done.exit_code(), 0, "{}", done.text());
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// `finish` reads the queue again once both triggers are off: a change
/// forwarded between its last quiet check and the forwarder's stop (a
/// write after writes stopped) waits in the queue under the pause, and the
/// report says NOT READY, never "ready".
#[test]
fn finish_reports_a_change_queued_while_it_stops_the_triggers() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 53)).await;
        sim.start_pollers();
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        sim.stop_pollers();
        tokio::time::sleep(Duration::from_secs(200)).await;
        // finish's control write (the pause) is slow; meanwhile a change
        // is written and forwarded.
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        sim.db.set_latency(move |call| {
            if call.table == "control"
                && call.op == "UpdateItem(control)"
                && !flag.swap(true, Ordering::SeqCst)
            {
                return Duration::from_secs(5);
            }
            Duration::ZERO
        });
        let late = async {
            while !stopping.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sim.db.put("source", source_item(4, 1, 20, 0));
            sim.forward_pending().await;
        };
        let (done, ()) = tokio::join!(finish::finish(&sim.ctx, 3, 300, None, false), late);
        let done = done.unwrap();
        assert_eq!(sim.fifo.depth(), 1, "the change waits in the queue");
        assert_eq!(done.queued, 1, "{}", done.text());
        assert_ne!(done.exit_code(), 0, "{}", done.text());
        assert!(done.text().contains("NOT READY"), "{}", done.text());
    });
}

/// `dlq repair` on a message whose only changes are inserts without images
/// (refetch markers of an item too big to travel) under a transform whose
/// key comes from a non-key attribute: the repair first asks the source
/// whether the item is gone. When that read fails, the message is reported
/// failed and released with the others (visible again at once), never held
/// by an aborted run; re-run once the cause clears, it is repaired.
#[test]
fn a_dlq_repair_whose_is_it_gone_read_fails_releases_the_message() {
    sim::run(async {
        let mut cfg = Config::quiet(Shape::KeyByEmail, 52);
        cfg.max_receive = 2;
        cfg.buckets = 1;
        let sim = Sim::new(cfg).await;
        seed_by_scan(&sim).await;
        let item = source_item(1, 1, 300_000, 0);
        let t = sim.transform.as_ref().unwrap();
        *sim.poison.lock().unwrap() = Some(CanonicalKey::of(&t.key(&item).unwrap()));
        // Too big for a message: it travels as a refetch marker.
        sim.db.put("source", item);
        sim.forward_pending().await;
        sim.apply_by_hand(4).await;
        let dead = sim.fifo.dlq();
        assert_eq!(dead.len(), 1, "dead-lettered");
        assert!(
            !dead[0].body.contains("300"),
            "a marker, not the image, travelled"
        );
        *sim.poison.lock().unwrap() = None;
        sim.deny_after("source", "GetItem", 0);
        let r = dlq::repair(&sim.ctx, 100, false).await.unwrap();
        assert_eq!((r.repaired, r.left), (0, 1), "{:?}", r.results);
        assert_ne!(r.exit_code(), 0);
        assert!(r.results[0]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("GetItem"));
        assert_eq!(sim.fifo.dlq_counts(), (1, 0), "visible again, not held");
        sim.db.clear_faults();
        let r = dlq::repair(&sim.ctx, 100, false).await.unwrap();
        assert_eq!((r.repaired, r.left), (1, 0), "{:?}", r.results);
        assert!(sim.fifo.dlq().is_empty());
        sim.assert_converged().await;
    });
}

/// helper-43 F1: `restart --method scan` that dies while clearing the
/// target (here a DeleteItem refused after three deletes) must not leave a
/// control item that looks like an ordinary pause: `resume` would apply
/// onto a half-cleared target and `cutover` would trust the last clean
/// verify. It records the restart first (no cutoff, no verdict), so
/// `resume` refuses; re-run, the restart finishes and nothing is lost.
#[test]
fn a_scan_restart_that_dies_while_clearing_cannot_be_resumed() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 80)).await;
        for i in 0..8 {
            sim.db.put("source", source_item(i, 1, 20, 0));
        }
        seed_by_scan(&sim).await;
        sim.start_pollers();
        assert!(sim.drain(Duration::from_secs(60)).await);
        let v = verify::verify(&sim.ctx, 100.0, false, 1, copy(), &Default::default())
            .await
            .unwrap();
        assert!(v.recorded);
        pause::pause(&sim.ctx, false).await.unwrap();
        sim.deny_after("target", "DeleteItem", 3);
        assert!(scan::restart_scan(&sim.ctx, copy(), false, false)
            .await
            .is_err());
        sim.db.clear_faults();
        assert!(sim.db.items("target").len() < 8, "half cleared");
        let c = sim.ctx.control().await.unwrap();
        assert_eq!(
            c.cutoff_ms, None,
            "nothing applies onto a half-cleared target"
        );
        assert_ne!(c.last_verify.as_deref(), Some("clean"));
        assert!(pause::resume(&sim.ctx, false).await.is_err());
        assert!(!decide(&sim, false).await.decision.go);
        scan::restart_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap();
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// helper-43 F3: a scan copy interrupted midway leaves tombstone mode; a
/// restart by backup then restores the whole table, so it is applied in
/// normal mode (a delete is a delete, not a tombstone no sweep will
/// remove) and the interrupted copy is forgotten.
#[test]
fn a_backup_restart_after_an_interrupted_copy_applies_in_normal_mode() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 81)).await;
        for i in 0..6 {
            sim.db.put("source", source_item(i, 1, 20, 0));
        }
        sim.create_target();
        sim.deny_after("target", "PutItem", 2);
        assert!(scan::seed_scan(&sim.ctx, copy(), false, false)
            .await
            .is_err());
        sim.db.clear_faults();
        assert_eq!(sim.ctx.control().await.unwrap().mode, Mode::Tombstone);
        let checkpoint = || async {
            use ddb_relay::commands::copy::{checkpoint_key, read_checkpoint};
            read_checkpoint(&sim.ctx, &checkpoint_key(&sim.ctx))
                .await
                .unwrap()
        };
        assert!(checkpoint().await.is_some(), "the interrupted copy's");
        sim.start_pollers();
        pause::pause(&sim.ctx, false).await.unwrap();
        replay::replay(&sim.ctx, None, false, false).await.unwrap();
        assert_eq!(sim.ctx.control().await.unwrap().mode, Mode::Normal);
        assert!(checkpoint().await.is_none(), "the copy was retired");
        sim.db.delete("source", &source_key(3), false);
        assert!(sim.drain(Duration::from_secs(120)).await);
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// The operator's machine's clock is 10 s ahead of AWS's (the margin is
/// 4 s). The commands take AWS's time from its responses, so the copy's
/// start, and its cutoff, are AWS's: the writes made right after it copied
/// are applied. On this machine's clock the cutoff would be 6 s
/// after the copy started, and those writes skipped.
#[test]
fn a_scan_copy_from_a_machine_whose_clock_is_ahead_loses_no_write() {
    sim::run(async {
        let mut cfg = Config::quiet(Shape::Identity, 82);
        cfg.operator_clock_ms = 10_000;
        let sim = Sim::new(cfg).await;
        for i in 0..6 {
            sim.db.put("source", source_item(i, 1, 20, 0));
        }
        sim.start_pollers();
        seed_by_scan(&sim).await;
        let c = sim.ctx.control().await.unwrap();
        assert!(
            c.seed_ms.unwrap() <= sim.now_ms(),
            "the copy's start is AWS's time, not 10 s ahead"
        );
        // Each item changes once, in the 6 s after the copy started.
        for i in 0..6 {
            sim.db.put("source", source_item(i, 2, 20, 0));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(sim.drain(Duration::from_secs(120)).await);
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// helper-42 finding 2: a restart by backup is taken at least a minute
/// after the newest change the applier consumed (a whole second: writes up
/// to 999 ms later), on AWS's clock, whatever the margin: a backup may lack
/// the minute before its time, and the queue no longer holds those changes.
#[test]
fn a_restart_by_backup_is_taken_a_minute_after_what_was_consumed() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 83)).await;
        sim.start_pollers();
        seed_by_backup(&sim).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        assert!(sim.drain(Duration::from_secs(60)).await);
        let consumed = sim.ctx.control().await.unwrap().consumed_ms.unwrap();
        pause::pause(&sim.ctx, false).await.unwrap();
        replay::replay(&sim.ctx, None, false, false).await.unwrap();
        let seed = sim.ctx.control().await.unwrap().seed_ms.unwrap();
        assert!(
            seed >= consumed + 1000 + ddb_relay::commands::copy::BACKUP_FUZZ_MS,
            "the backup {} ms after the newest consumed change's second",
            seed - consumed
        );
        assert!(sim.drain(Duration::from_secs(60)).await);
        sim.assert_converged().await;
        sim.stop_pollers();
    });
}

/// helper-44 #3: `restart --method scan` after a re-seed by backup that
/// dropped the target and stopped: it refuses (it clears a target, it
/// cannot create one) before recording anything, and says how to finish.
#[test]
fn a_scan_restart_over_a_dropped_target_changes_nothing() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 84)).await;
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.start_pollers();
        seed_by_backup(&sim).await;
        pause::pause(&sim.ctx, false).await.unwrap();
        sim.stop_pollers();
        let read = sim.ctx.control().await.unwrap();
        sim.ctx
            .write_control(
                &read,
                relay_core::control::ControlState {
                    cutoff_ms: None,
                    seed_method: Some("backup-pending".into()),
                    ..read.clone()
                },
            )
            .await
            .unwrap();
        relay_aws::operator::Tables::delete_table(&sim.aws, "target")
            .await
            .unwrap();
        let before = sim.ctx.control().await.unwrap();
        let err = scan::restart_scan(&sim.ctx, copy(), false, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("restart --method backup"), "{err}");
        assert_eq!(sim.ctx.control().await.unwrap(), before, "nothing recorded");
    });
}

/// helper-43 F2: a repair that read normal mode marks its item after a
/// scan copy switched to tombstone mode (a second operator's `restart
/// --method scan`, or fanned-out repairs still running) and the applier
/// wrote a tombstone there. A normal-mode delete would remove the tombstone
/// for real, and the copy's older put (only where the key is absent) would
/// then bring the deleted item back. The repair reads the control item
/// again after marking and writes nothing.
#[test]
fn a_repair_that_outlives_a_switch_to_tombstone_mode_writes_nothing() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 17)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        // An extra target item: verify --repair deletes it.
        sim.db.put("target", source_item(2, 1, 20, 0));
        // The repair's mark is slow; meanwhile the mode switches and the
        // applier writes a tombstone at the key (item 2 came back to the
        // source and went again during the copy).
        let marking = Arc::new(AtomicBool::new(false));
        let flag = marking.clone();
        sim.db.set_latency(move |call| {
            if call.table == "target"
                && call.op == "UpdateItem"
                && !flag.swap(true, Ordering::SeqCst)
            {
                return Duration::from_secs(3);
            }
            Duration::ZERO
        });
        let switch = async {
            while !marking.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let read = sim.ctx.control().await.unwrap();
            sim.ctx
                .write_control(
                    &read,
                    relay_core::control::ControlState {
                        mode: Mode::Tombstone,
                        ..read.clone()
                    },
                )
                .await
                .unwrap();
            sim.db
                .put("target", relay_core::apply::tombstone(&source_key(2)));
        };
        let opts = Default::default();
        let (r, ()) = tokio::join!(
            verify::verify(&sim.ctx, 100.0, true, 1, copy(), &opts),
            switch
        );
        let r = r.unwrap();
        assert!(marking.load(Ordering::SeqCst), "the repair marked the item");
        assert_eq!((r.repaired, r.remaining), (0, 1), "{r:?}");
        let target = sim.db.items("target");
        let at2 = target.get(&CanonicalKey::of(&source_key(2)));
        assert!(
            at2.is_some_and(is_tombstone),
            "the tombstone stays, so the copy cannot bring the item back: {at2:?}"
        );
        assert!(
            !at2.unwrap()
                .contains_key(ddb_relay::repair::REPAIR_TOKEN_ATTR),
            "the mark was taken back"
        );
        sim.stop_pollers();
    });
}

/// Stop 35 left this alone: a pause (or a re-seed left paused) about as
/// long as the queue's retention. The changes queued at its start may
/// expire before the applier drains them, and an expired change is lost
/// without a trace. `resume` refuses (dry run too), says to re-seed, and
/// changes nothing.
#[test]
fn a_resume_after_a_pause_as_long_as_the_queue_retention_is_refused() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 54)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        sim.stop_pollers();
        pause::pause(&sim.ctx, false).await.unwrap();
        let day = Duration::from_secs(86_400);
        // Twelve days in: the queue (14 days) still holds every change
        // with a day to drain them.
        tokio::time::sleep(12 * day).await;
        pause::resume(&sim.ctx, true).await.unwrap();
        tokio::time::sleep(day + Duration::from_secs(60)).await;
        for dry_run in [true, false] {
            let err = pause::resume(&sim.ctx, dry_run)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("Re-seed instead"), "{err}");
        }
        let c = sim.ctx.control().await.unwrap();
        assert!(c.paused_at_ms.is_some(), "still paused");
        assert!(!sim.aws.trigger_enabled(sim::APPLIER));
    });
}

/// `finish` stops the forwarder as well. `resume` reopening the migration
/// enables it again (nothing else would) and clears the verdict; more than
/// 22 hours after `finish` the trigger (records up to 23 hours old) may
/// not forward the source's changes since, so it reopens without resuming:
/// a re-seed.
#[test]
fn a_reopened_migration_gets_its_forwarder_back_and_a_day_later_a_reseed() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 55)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        assert!(
            verify::verify(&sim.ctx, 100.0, false, 1, copy(), &Default::default())
                .await
                .unwrap()
                .clean
        );
        sim.stop_pollers();
        tokio::time::sleep(Duration::from_secs(200)).await;
        let done = finish::finish(&sim.ctx, 3, 300, None, false).await.unwrap();
        assert_eq!(done.exit_code(), 0, "{}", done.text());
        assert!(!sim.aws.trigger_enabled(sim::FORWARDER));
        // Within the day: reopened and resumed, forwarder back, verdict gone.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let r = pause::resume(&sim.ctx, false).await.unwrap();
        assert!(r.reopened && !r.reseed_needed, "{}", r.text());
        assert!(sim.aws.trigger_enabled(sim::FORWARDER) && sim.aws.trigger_enabled(sim::APPLIER));
        let c = sim.ctx.control().await.unwrap();
        assert_eq!(
            (c.finished_ms, c.last_verify, c.paused_at_ms),
            (None, None, None)
        );
        // Finished again, and reopened a day later: forwarder back, still
        // paused, a re-seed asked for.
        tokio::time::sleep(Duration::from_secs(200)).await;
        let done = finish::finish(&sim.ctx, 3, 300, None, false).await.unwrap();
        assert_eq!(done.exit_code(), 0, "{}", done.text());
        tokio::time::sleep(Duration::from_secs(22 * 3600 + 60)).await;
        let dry = pause::resume(&sim.ctx, true).await.unwrap();
        assert!(dry.reseed_needed && !sim.aws.trigger_enabled(sim::FORWARDER));
        let r = pause::resume(&sim.ctx, false).await.unwrap();
        assert!(r.reopened && r.reseed_needed, "{}", r.text());
        assert_ne!(r.exit_code(), 0);
        assert!(sim.aws.trigger_enabled(sim::FORWARDER));
        assert!(!sim.aws.trigger_enabled(sim::APPLIER), "still paused");
        let c = sim.ctx.control().await.unwrap();
        assert!(c.finished_ms.is_none() && c.paused_at_ms.is_some());
    });
}

/// helper-46 #1: a quiet queue proves nothing about a target the applier
/// is not writing. `finish` refuses an interrupted re-seed, a scan copy in
/// tombstone mode, and a re-seed another operator starts while it waits;
/// each refusal changes nothing.
#[test]
fn finish_refuses_a_target_that_is_not_whole() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 56)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        sim.stop_pollers();
        tokio::time::sleep(Duration::from_secs(200)).await;
        let seeded = sim.ctx.control().await.unwrap();
        let set = |state: relay_core::control::ControlState| {
            let ctx = &sim.ctx;
            async move {
                let read = ctx.control().await.unwrap();
                ctx.write_control(
                    &read,
                    relay_core::control::ControlState {
                        version: read.version,
                        ..state
                    },
                )
                .await
                .unwrap();
            }
        };
        let unchanged = |why: &str| {
            assert!(
                sim.aws.trigger_enabled(sim::APPLIER) && sim.aws.trigger_enabled(sim::FORWARDER),
                "{why}"
            );
        };
        // An interrupted re-seed: no cutoff, `backup-pending`.
        set(relay_core::control::ControlState {
            cutoff_ms: None,
            seed_method: Some("backup-pending".into()),
            ..seeded.clone()
        })
        .await;
        let err = finish::finish(&sim.ctx, 3, 300, None, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("interrupted"), "{err}");
        unchanged("pending");
        // Never seeded: no cutoff.
        set(relay_core::control::ControlState {
            cutoff_ms: None,
            ..seeded.clone()
        })
        .await;
        let err = finish::finish(&sim.ctx, 3, 300, None, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("never seeded"), "{err}");
        unchanged("no cutoff");
        assert_eq!(sim.ctx.control().await.unwrap().finished_ms, None);
        // A scan copy still in tombstone mode.
        set(relay_core::control::ControlState {
            mode: Mode::Tombstone,
            ..seeded.clone()
        })
        .await;
        let err = finish::finish(&sim.ctx, 3, 300, None, true)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("tombstone mode"), "{err}");
        unchanged("tombstone");
        // A copy whose sweep did not finish (its checkpoint is still
        // there), and a retire of it interrupted (audit helper-69 #6).
        set(seeded.clone()).await;
        {
            use relay_aws::operator::{Cond, Tables};
            let table = &sim.ctx.stack.control_table;
            let mut cp = ddb_relay::commands::copy::checkpoint_key(&sim.ctx);
            cp.insert("seed_ms".into(), V::N(seeded.seed_ms.unwrap().to_string()));
            sim.aws.put_item(table, &cp, &Cond::Always).await.unwrap();
            let err = finish::finish(&sim.ctx, 3, 300, None, false)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("checkpoint is still there"), "{err}");
            unchanged("checkpoint");
            cp.insert("retired".into(), V::Bool(true));
            sim.aws.put_item(table, &cp, &Cond::Always).await.unwrap();
            let err = finish::finish(&sim.ctx, 3, 300, None, false)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("was interrupted while it waited"), "{err}");
            unchanged("retired");
            let key = ddb_relay::commands::copy::checkpoint_key(&sim.ctx);
            sim.aws
                .delete_item(table, &key, &Cond::Always)
                .await
                .unwrap();
            assert_eq!(sim.ctx.control().await.unwrap().finished_ms, None);
        }
        // Whole again; another operator's re-seed starts while finish waits.
        set(seeded.clone()).await;
        let other = async {
            tokio::time::sleep(Duration::from_secs(20)).await;
            set(relay_core::control::ControlState {
                cutoff_ms: None,
                seed_method: Some("scan-pending".into()),
                last_verify: None,
                ..seeded.clone()
            })
            .await;
        };
        let (r, ()) = tokio::join!(finish::finish(&sim.ctx, 3, 300, None, false), other);
        let err = r.unwrap_err().to_string();
        assert!(err.contains("moved while finish waited"), "{err}");
        unchanged("moved");
        let c = sim.ctx.control().await.unwrap();
        assert_eq!(
            (c.finished_ms, c.seed_method.as_deref()),
            (None, Some("scan-pending"))
        );
    });
}

/// helper-46 #9: `adopt` is a gate (`ddb-relay adopt && cdk deploy`): when
/// it cannot look up whether a stack already holds the target, importing it
/// could put the table in a second stack, so it exits 3, not 0.
#[test]
fn adopt_exits_3_when_it_cannot_tell_whether_a_stack_holds_the_target() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 57)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_backup(&sim).await;
        sim.stop_pollers();
        let args = ddb_relay::commands::adopt::AdoptArgs {
            logical_id: None,
            into_stack: None,
            write: None,
        };
        let known = ddb_relay::commands::adopt::adopt(&sim.ctx, &args)
            .await
            .unwrap();
        assert_eq!((known.exit_code(), &known.target_owner_error), (0, &None));
        sim.deny_after("target", "DescribeStackResources", 0);
        let unknown = ddb_relay::commands::adopt::adopt(&sim.ctx, &args)
            .await
            .unwrap();
        assert!(unknown.target_owner_error.is_some(), "{:?}", unknown.notes);
        assert_eq!(unknown.exit_code(), 3);
    });
}

/// helper-46 #8: a `finish` that cannot disable a trigger takes its pause
/// and its finish back: a pause left with the applier's trigger Enabled
/// would fail every later batch into the DLQ, and a refused command
/// changes nothing.
#[test]
fn a_finish_that_cannot_stop_the_triggers_takes_its_pause_back() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 58)).await;
        sim.start_pollers();
        seed_by_backup(&sim).await;
        sim.stop_pollers();
        tokio::time::sleep(Duration::from_secs(200)).await;
        let v = verify::verify(&sim.ctx, 100.0, false, 1, copy(), &Default::default())
            .await
            .unwrap();
        assert!(v.clean && v.recorded);
        // Only the applier's trigger refuses: the forwarder's was already
        // disabled when that fails, and must be enabled again.
        sim.aws.fail_mapping_updates_of(
            sim::APPLIER,
            Some(AwsError::permanent(
                "UpdateEventSourceMapping",
                "AccessDeniedException",
                "not authorized to perform lambda:UpdateEventSourceMapping",
            )),
        );
        let err = finish::finish(&sim.ctx, 3, 300, None, false)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("taken back"), "{err:#}");
        let c = sim.ctx.control().await.unwrap();
        assert_eq!((c.paused_at_ms, c.finished_ms), (None, None));
        // The verdict goes with it: verify again (helper-53 #2).
        assert_eq!((c.last_verify, c.verify_ms), (None, None));
        assert!(sim.aws.trigger_enabled(sim::APPLIER) && sim.aws.trigger_enabled(sim::FORWARDER));
        // Every trigger update refused (no lambda:UpdateEventSourceMapping):
        // nothing was disabled, and the pause and the finish are taken back.
        sim.aws.fail_mapping_updates(Some(AwsError::permanent(
            "UpdateEventSourceMapping",
            "AccessDeniedException",
            "not authorized to perform lambda:UpdateEventSourceMapping",
        )));
        let err = finish::finish(&sim.ctx, 3, 300, None, false)
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("the pause and the finish were taken back"),
            "{text}"
        );
        assert!(text.contains("forwarder trigger is Enabled"), "{text}");
        let c = sim.ctx.control().await.unwrap();
        assert_eq!((c.paused_at_ms, c.finished_ms), (None, None));
    });
}

/// helper-46 #4: with the stack's `MetricsMode` off the functions publish
/// no metrics, and every count `cutover` and `finish` read is missing, not
/// zero: cutover is NO-GO (unknown) and finish refuses before it changes
/// anything.
#[test]
fn metrics_turned_off_are_unknown_not_zero() {
    sim::run(async {
        let mut sim = Sim::new(Config::quiet(Shape::Identity, 59)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        assert!(
            verify::verify(&sim.ctx, 100.0, false, 1, copy(), &Default::default())
                .await
                .unwrap()
                .clean
        );
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(go(&decide(&sim, false).await), "GO with metrics on");
        sim.ctx.stack.metrics_mode = Some("off".into());
        let d = decide(&sim, false).await;
        assert!(!go(&d), "{:?}", d.decision.reasons);
        assert!(
            d.decision.reasons.iter().any(|r| r.contains("MetricsMode")),
            "{:?}",
            d.decision.reasons
        );
        let err = finish::finish(&sim.ctx, 3, 300, None, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("MetricsMode is off"), "{err}");
        assert!(sim.aws.trigger_enabled(sim::APPLIER) && sim.aws.trigger_enabled(sim::FORWARDER));
        sim.stop_pollers();
    });
}

/// helper-47 #2: a migration finished after a long pause (finish keeps the
/// pause's time) has queued changes that may expire; `resume` must still
/// reopen it, paused for a re-seed, since `restart` refuses while it is
/// finished: never a refusal that no command can get past.
#[test]
fn a_finished_migration_is_always_reopened_even_when_a_resume_would_be_refused() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 60)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        sim.stop_pollers();
        pause::pause(&sim.ctx, false).await.unwrap();
        tokio::time::sleep(Duration::from_secs(13 * 86_400 + 60)).await;
        let done = finish::finish(&sim.ctx, 3, 300, None, false).await.unwrap();
        assert_eq!(done.exit_code(), 0, "{}", done.text());
        let r = pause::resume(&sim.ctx, false).await.unwrap();
        assert!(r.reopened && r.reseed_needed, "{}", r.text());
        let c = sim.ctx.control().await.unwrap();
        assert!(c.finished_ms.is_none() && c.paused_at_ms.is_some());
        assert!(sim.aws.trigger_enabled(sim::FORWARDER) && !sim.aws.trigger_enabled(sim::APPLIER));
    });
}

/// helper-47 #1: while a re-seed is pending (a restart clearing the target,
/// `scan-pending`), a repair's placeholder behind the clear's scan would
/// survive it, and the copy (puts only where the key is absent) would keep
/// the repair's older item. Repairs refuse before the first seed and while
/// a re-seed is pending, and change nothing.
#[test]
fn repairs_wait_for_a_pending_reseed() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 61)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        sim.stop_pollers();
        // A difference a repair would fix: the item missing from the target.
        sim.db.delete("target", &source_key(1), false);
        let read = sim.ctx.control().await.unwrap();
        sim.ctx
            .write_control(
                &read,
                relay_core::control::ControlState {
                    cutoff_ms: None,
                    seed_method: Some("scan-pending".into()),
                    ..read.clone()
                },
            )
            .await
            .unwrap();
        let err = verify::verify(&sim.ctx, 100.0, true, 1, copy(), &Default::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("re-seed is pending"), "{err}");
        let err = dlq::repair(&sim.ctx, 10, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("re-seed is pending"), "{err}");
        // Before the first seed: no cutoff.
        let read = sim.ctx.control().await.unwrap();
        sim.ctx
            .write_control(
                &read,
                relay_core::control::ControlState {
                    seed_method: None,
                    ..read.clone()
                },
            )
            .await
            .unwrap();
        let err = verify::verify(&sim.ctx, 100.0, true, 1, copy(), &Default::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not seeded yet"), "{err}");
        assert!(sim.db.items("target").is_empty(), "nothing written");
    });
}

/// Lambda's record of a stream batch its trigger gave up on, whose newest
/// stream record arrived at `last_ms`.
fn failure_record(last_ms: i64) -> String {
    let t = ddb_relay::ctx::rfc3339;
    format!(
        r#"{{"version":"1.0","timestamp":"{}","requestContext":{{"condition":"RecordAgeExceeded","approximateInvokeCount":1}},"DDBStreamBatchInfo":{{"shardId":"shardId-1","startSequenceNumber":"100","endSequenceNumber":"200","batchSize":2,"approximateArrivalOfFirstRecord":"{}","approximateArrivalOfLastRecord":"{}"}}}}"#,
        t(last_ms + 5_000),
        t(last_ms - 1_000),
        t(last_ms)
    )
}

/// helper-48 #6: a batch the forwarder's trigger gave up on sits in the
/// stream failure queue, and `cutover` and `finish` wait on it; nothing
/// cleared it. `dlq stream-failures --clear` deletes a record only once the
/// whole seed's cutoff is after it: a re-seed covers it, a clean verify
/// does not (helper-49 #1), and nothing is covered while the target is not
/// whole.
#[test]
fn a_stream_failure_is_cleared_only_once_a_seed_covers_it() {
    use ddb_relay::commands::stream_failures::stream_failures;
    use relay_aws::operator::Queues;
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 67)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        let cutoff = sim.ctx.control().await.unwrap().cutoff_ms.unwrap();
        // A change the target never got: written to the source, its stream
        // batch given up on.
        sim.db.put("source", source_item(2, 1, 20, 0));
        sim.assert_converged().await;
        sim.stop_pollers();
        sim.db.delete("target", &source_key(2), false);
        let lost_ms = sim.now_ms();
        let url = sim.ctx.stack.stream_failure_url.clone();
        let depth = || async { sim.aws.queue_attrs(&url).await.unwrap().visible };
        sim.aws
            .send_message(&url, &failure_record(cutoff - 1_000))
            .await
            .unwrap();
        sim.aws
            .send_message(&url, &failure_record(lost_ms))
            .await
            .unwrap();

        // Listing deletes nothing; a dry run neither.
        let r = stream_failures(&sim.ctx, 100, false, false).await.unwrap();
        assert_eq!((r.count, r.covered, r.cleared), (2, 1, 0), "{}", r.text());
        let r = stream_failures(&sim.ctx, 100, true, true).await.unwrap();
        assert_eq!((r.cleared, r.left), (1, 1), "{}", r.text());
        assert_eq!(depth().await, 2);
        // The one before the cutoff goes; the lost change's stays.
        let r = stream_failures(&sim.ctx, 100, true, false).await.unwrap();
        assert_eq!(
            (r.cleared, r.left, r.exit_code()),
            (1, 1, 3),
            "{}",
            r.text()
        );
        assert!(r.text().contains("re-seed"), "{}", r.text());
        assert_eq!(depth().await, 1);
        // Records this run did not read keep it from exit 0 (`--max` 1:
        // the queue may hold more), and SQS's count shows them.
        let r = stream_failures(&sim.ctx, 1, true, false).await.unwrap();
        assert_eq!(
            (r.count, r.more, r.exit_code()),
            (1, true, 3),
            "{}",
            r.text()
        );
        assert_eq!(r.queue_depth, 1);

        // A clean verify (it repairs item 2) does not cover it.
        tokio::time::sleep(Duration::from_secs(600)).await;
        let v = verify::verify(&sim.ctx, 100.0, true, 1, copy(), &Default::default())
            .await
            .unwrap();
        assert!(v.clean && v.repaired == 1, "{v:?}");
        let s = status::status(&sim.ctx, 300).await.unwrap();
        assert!(s.last_verify_age_s.is_some(), "the verdict's time is kept");
        let r = stream_failures(&sim.ctx, 100, true, false).await.unwrap();
        assert_eq!((r.cleared, r.left), (0, 1), "{}", r.text());
        // Not while the target is not whole (an interrupted re-seed): a
        // clear refuses, a listing says why nothing is covered.
        let read = sim.ctx.control().await.unwrap();
        let pending = relay_core::control::ControlState {
            seed_method: Some("backup-pending".into()),
            cutoff_ms: Some(lost_ms + 60_000),
            ..read.clone()
        };
        let written = sim.ctx.write_control(&read, pending).await.unwrap();
        let err = stream_failures(&sim.ctx, 100, true, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("interrupted"), "{err}");
        let r = stream_failures(&sim.ctx, 100, false, false).await.unwrap();
        assert!(r.covered == 0 && r.not_whole.is_some(), "{}", r.text());
        sim.ctx.write_control(&written, read).await.unwrap();
        assert_eq!(depth().await, 1);
        // A re-seed taken after the lost change covers it. While paused,
        // only up to the frontier (the pause): a replay may still re-seed
        // at any point from it (helper-51 #2); resumed, up to the cutoff
        // (helper-52 #1: no write to the source is needed for that).
        sim.start_pollers();
        let paused = pause::pause(&sim.ctx, false).await.unwrap();
        let paused_at = paused.paused_at_ms.unwrap();
        sim.aws
            .send_message(&url, &failure_record(paused_at + 1_000))
            .await
            .unwrap();
        replay::replay(&sim.ctx, None, true, false).await.unwrap();
        let c = sim.ctx.control().await.unwrap();
        assert!(c.paused_at_ms.is_some());
        assert!(c.cutoff_ms.unwrap() > paused_at + 1_000, "{c:?}");
        let r = stream_failures(&sim.ctx, 100, true, false).await.unwrap();
        assert_eq!((r.cleared, r.left), (1, 1), "paused: {}", r.text());
        pause::resume(&sim.ctx, false).await.unwrap();
        sim.assert_converged().await;
        sim.stop_pollers();
        let r = stream_failures(&sim.ctx, 100, true, false).await.unwrap();
        assert_eq!(
            (r.cleared, r.left, r.exit_code()),
            (1, 0, 0),
            "{}",
            r.text()
        );
        assert_eq!(depth().await, 0);
    });
}

/// A clear that decided under one seed deletes nothing once another
/// operator's re-seed (or a verdict change) landed while it read.
#[test]
fn a_stream_failure_clear_that_outlives_a_reseed_deletes_nothing() {
    use ddb_relay::commands::stream_failures::stream_failures;
    use relay_aws::operator::Queues;
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 71)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_backup(&sim).await;
        sim.assert_converged().await;
        sim.stop_pollers();
        let cutoff = sim.ctx.control().await.unwrap().cutoff_ms.unwrap();
        let url = sim.ctx.stack.stream_failure_url.clone();
        sim.aws
            .send_message(&url, &failure_record(cutoff - 1_000))
            .await
            .unwrap();
        // The clear's second read of the control table (after its first
        // look at the control item) takes 3 s; the re-seed lands at 1 s.
        let reads = Arc::new(AtomicUsize::new(0));
        let r = reads.clone();
        let control = sim.ctx.stack.control_table.clone();
        sim.db.set_latency(move |call| {
            if call.table == control
                && call.op == "GetItem"
                && r.fetch_add(1, Ordering::SeqCst) == 1
            {
                Duration::from_secs(3)
            } else {
                Duration::ZERO
            }
        });
        let reseed = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let read = sim.ctx.control().await.unwrap();
            let pending = relay_core::control::ControlState {
                seed_method: Some("backup-pending".into()),
                cutoff_ms: None,
                ..read.without_verdict()
            };
            sim.ctx.write_control(&read, pending).await.unwrap();
        };
        let (cleared, ()) = tokio::join!(stream_failures(&sim.ctx, 100, true, false), reseed);
        let err = cleared.unwrap_err().to_string();
        assert!(
            err.contains("re-seeded") && err.contains("nothing was deleted"),
            "{err}"
        );
        assert_eq!(sim.aws.queue_attrs(&url).await.unwrap().visible, 1);
    });
}

/// helper-46 #10: `status --window` under a minute reads a minute of
/// metrics (CloudWatch's period), so its rates are per that minute, not
/// the minute's count over the shorter window.
#[test]
fn a_status_window_under_a_minute_reads_and_divides_by_a_minute() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 73)).await;
        tokio::time::sleep(Duration::from_secs(120)).await;
        sim.aws.metrics.record(
            "DdbRelay",
            relay_core::metrics::names::FORWARDED,
            &[("Migration", sim::STACK), ("Function", "forwarder")],
            30.0,
        );
        let s = status::status(&sim.ctx, 10).await.unwrap();
        assert_eq!(s.window_s, 60);
        assert_eq!(s.forwarded_per_min, Some(30.0));
    });
}

/// helper-46 #10: a source item the transform cannot map (its key comes
/// from an attribute the item lacks) is not in the target; a verify that
/// skipped it said clean and recorded that verdict for cutover.
#[test]
fn a_source_item_the_transform_cannot_map_is_never_clean() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::KeyByEmail, 79)).await;
        sim.start_pollers();
        sim.db.put("source", source_item(1, 1, 20, 0));
        seed_by_scan(&sim).await;
        sim.assert_converged().await;
        sim.stop_pollers();
        let mut no_email = source_item(2, 1, 20, 0);
        no_email.remove("email");
        sim.db.put("source", no_email);
        let v = verify::verify(&sim.ctx, 100.0, false, 1, copy(), &Default::default())
            .await
            .unwrap();
        assert_eq!(v.unmappable, 1);
        assert!(!v.clean, "{}", v.text());
        assert!(v.text().contains("cannot map"), "{}", v.text());
        let last = sim.ctx.control().await.unwrap().last_verify;
        assert_ne!(last.as_deref(), Some("clean"));
    });
}

/// helper-52 #2: a seeded migration whose target was deleted is seeded
/// again only under the replay rules (paused, the point after the
/// frontier), also when nothing was consumed yet (a quiet source).
#[test]
fn a_second_seed_of_a_quiet_source_keeps_the_replay_rules() {
    use relay_aws::operator::Tables;
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 83)).await;
        sim.start_pollers();
        seed_by_backup(&sim).await;
        let c = sim.ctx.control().await.unwrap();
        assert!(c.cutoff_ms.is_some() && c.consumed_ms.is_none(), "{c:?}");
        sim.stop_pollers();
        sim.aws.delete_table("target").await.unwrap();
        let again = sim::seed_args(ddb_relay::args::Method::Backup, None);
        let err = ddb_relay::commands::seed::seed(&sim.ctx, &again)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not paused"), "{err}");
        assert_eq!(sim.ctx.control().await.unwrap().cutoff_ms, c.cutoff_ms);
    });
}

/// A stream failure record cleared under a backup seed (nothing consumed: a
/// quiet source), then a re-seed whose restore failed: paused, its seed
/// recorded with no cutoff, the target gone. Returns the cleared change's
/// time and the pause's.
async fn cleared_then_failed_restore(sim: &Sim) -> (i64, i64) {
    use ddb_relay::commands::stream_failures::stream_failures;
    use relay_aws::operator::{Queues, Tables};
    tokio::time::sleep(Duration::from_secs(600)).await;
    sim.start_pollers();
    seed_by_backup(sim).await;
    sim.assert_converged().await;
    let lost_ms = sim.ctx.control().await.unwrap().cutoff_ms.unwrap() - 1_000;
    let url = sim.ctx.stack.stream_failure_url.clone();
    sim.aws
        .send_message(&url, &failure_record(lost_ms))
        .await
        .unwrap();
    let r = stream_failures(&sim.ctx, 100, true, false).await.unwrap();
    assert_eq!((r.cleared, r.left), (1, 0), "{}", r.text());
    let c = sim.ctx.control().await.unwrap();
    assert_eq!(c.cleared_ms, Some(lost_ms), "the floor is written");
    let paused = pause::pause(&sim.ctx, false).await.unwrap();
    sim.stop_pollers();
    let read = sim.ctx.control().await.unwrap();
    assert!(read.consumed_ms.is_none(), "{read:?}");
    let failed = relay_core::control::ControlState {
        seed_method: Some("pitr".into()),
        seed_ms: Some(sim.now_ms()),
        cutoff_ms: None,
        ..read.without_verdict()
    };
    sim.ctx.write_control(&read, failed).await.unwrap();
    sim.aws.delete_table("target").await.unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
    (lost_ms, paused.paused_at_ms.unwrap())
}

/// helper-53 #1 and #3: a stream failure cleared under one seed is held by
/// every later seed, also after a re-seed whose restore failed and left no
/// cutoff behind. Such a seed is held to the replay rules: not while
/// finished (`resume` reopens a finished migration whose target is gone,
/// for the re-seed: helper-54 #2), paused with the trigger off, the point
/// after the frontier, and only once the applier's invocations from before
/// the pause have ended.
#[test]
fn a_seed_after_a_cleared_stream_failure_keeps_the_replay_rules() {
    use ddb_relay::commands::seed::{seed, SeedArgs};
    use relay_aws::operator::Tables;
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 89)).await;
        let (lost_ms, paused_at) = cleared_then_failed_restore(&sim).await;
        let at = |t: i64| SeedArgs {
            method: ddb_relay::args::Method::Pitr,
            at: Some(When::At(t)),
            bucket: None,
            prefix: String::new(),
            dry_run: false,
        };
        // Before the cleared change: a seed there would lack it.
        let err = seed(&sim.ctx, &at(lost_ms - 10_000))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("too early"), "{err}");
        assert!(sim.aws.describe("target").await.unwrap().is_none());
        // Not after a finish (here: of the first seed, its target deleted
        // since); `resume` reopens it for the re-seed, paused.
        let read = sim.ctx.control().await.unwrap();
        let finished = relay_core::control::ControlState {
            finished_ms: Some(sim.now_ms()),
            cutoff_ms: Some(lost_ms + 1_000),
            ..read.clone()
        };
        sim.ctx.write_control(&read, finished).await.unwrap();
        let ok = paused_at + sim.ctx.stack.margin_ms + 1_000;
        let err = seed(&sim.ctx, &at(ok)).await.unwrap_err().to_string();
        assert!(err.contains("was finished"), "{err}");
        let r = pause::resume(&sim.ctx, false).await.unwrap();
        assert!(r.reopened && r.reseed_needed, "{}", r.text());
        assert!(r.text().contains("target table is missing"), "{}", r.text());
        assert!(!sim.aws.trigger_enabled(sim::APPLIER), "still paused");
        let failed = sim.ctx.control().await.unwrap();
        assert!(failed.finished_ms.is_none() && failed.paused_at_ms.is_some());
        // After the frontier it runs, once the pause's invocations ended.
        let stopped_by = sim.now_ms() + 60_000;
        let mut late = failed.clone();
        late.stopped_by_ms = Some(stopped_by);
        sim.ctx.write_control(&failed, late).await.unwrap();
        let r = seed(&sim.ctx, &at(ok)).await.unwrap();
        assert!(sim.now_ms() >= stopped_by, "waited for the pause");
        assert_eq!(r.seed_ms, Some(ok));
        let c = sim.ctx.control().await.unwrap();
        assert_eq!(c.cleared_ms, Some(lost_ms), "the floor stays");
        sim.start_pollers();
        pause::resume(&sim.ctx, false).await.unwrap();
        sim.db.put("source", source_item(1, 1, 20, 0));
        sim.assert_converged().await;
    });
}

/// helper-54 #1: the export load is a seed too. After the same cleared
/// record and failed restore, with a target the user's IaC created again,
/// neither an export taken before the cleared change nor one asked for at
/// such a point is loaded.
#[test]
fn an_export_load_after_a_cleared_stream_failure_keeps_the_replay_rules() {
    use ddb_relay::commands::load::{seed_export_load, LoadArgs};
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 97)).await;
        let (lost_ms, paused_at) = cleared_then_failed_restore(&sim).await;
        sim.create_target();
        let uri = sim::fabricate_export(&sim, "0003-early", &[], lost_ms - 10_000, 1);
        let args = |from_export: Option<String>, at: i64| LoadArgs {
            from_export,
            bucket: Some(sim::EXPORT_BUCKET.into()),
            prefix: String::new(),
            at: Some(When::At(at)),
        };
        let err = seed_export_load(&sim.ctx, &args(Some(uri), 0), copy(), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("too early"), "{err}");
        // Asked for at such a point: refused before the export is taken.
        let err = seed_export_load(&sim.ctx, &args(None, lost_ms - 10_000), copy(), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("too early"), "{err}");
        let c = sim.ctx.control().await.unwrap();
        assert_eq!((c.cutoff_ms, c.mode), (None, Mode::Normal), "nothing began");
        // A point after the frontier loads, once the pause's invocations
        // ended.
        let ok = paused_at + sim.ctx.stack.margin_ms + 1_000;
        let uri = sim::fabricate_export(&sim, "0004-late", &[], ok, 1);
        let stopped_by = sim.now_ms() + 60_000;
        let mut late = c.clone();
        late.stopped_by_ms = Some(stopped_by);
        sim.ctx.write_control(&c, late).await.unwrap();
        let r = seed_export_load(&sim.ctx, &args(Some(uri), 0), copy(), false)
            .await
            .unwrap();
        assert_eq!(r.seed_ms, ok, "{r:?}");
        assert!(sim.now_ms() >= stopped_by, "waited for the pause");
    });
}

/// A migration seeded (by scan, or by backup) under live writes,
/// converged, verified clean and GO.
async fn verified_go(seed: u64, by_scan: bool) -> Sim {
    let sim = Sim::new(Config::quiet(Shape::Identity, seed)).await;
    sim.start_pollers();
    keep_writing(&sim, 4, Duration::from_millis(200), Duration::from_secs(10));
    if by_scan {
        sim::seed_by_scan(&sim).await;
    } else {
        seed_by_backup(&sim).await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    sim.assert_converged().await;
    assert!(
        verify::verify(&sim.ctx, 100.0, false, 1, copy(), &Default::default())
            .await
            .unwrap()
            .clean
    );
    tokio::time::sleep(Duration::from_secs(200)).await;
    let d = decide(&sim, false).await;
    assert!(go(&d), "{by_scan}: {:?}", d.decision.reasons);
    sim
}

/// A stream label for the time `ms`.
fn stream_label(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3f")
        .to_string()
}

/// The source's stream replaced by one created at `created_ms`, and the
/// stack redeployed onto it (the forwarder's trigger on the new stream).
async fn replace_stream(sim: &Sim, created_ms: i64) {
    sim.aws
        .set_stream_label("source", &stream_label(created_ms));
    let arn = sim
        .aws
        .describe("source")
        .await
        .unwrap()
        .unwrap()
        .stream_arn
        .unwrap();
    sim.aws.retarget_trigger(sim::FORWARDER, &arn);
}

/// helper-76 #1: the source's stream replaced after the seed (a new view
/// type, or the stream off and on), then the stack redeployed onto the new
/// stream: changes made meanwhile may be in no queue, so cutover is NO-GO,
/// even with a clean verify from before or `--no-verify`, until a clean
/// verify begins after the new stream; `finish` reports it unverified
/// meanwhile; `status` says so.
#[test]
fn a_stream_replaced_after_the_seed_is_no_go_until_a_verify_begun_after_it() {
    sim::run(async {
        let sim = verified_go(236, false).await;
        // A backup may lack its minute before, which the stream must hold:
        // a stream created within that minute counts as replaced.
        let seed_ms = sim.ctx.control().await.unwrap().seed_ms.unwrap();
        for (created, replaced) in [(seed_ms - 61_000, false), (seed_ms - 30_000, true)] {
            sim.aws.set_stream_label("source", &stream_label(created));
            let st = ddb_relay::commands::status::status(&sim.ctx, 60)
                .await
                .unwrap();
            assert_eq!(st.stream_replaced_ms.is_some(), replaced, "{created}");
        }
        // The stream replaced, and the stack redeployed onto it.
        replace_stream(&sim, sim.now_ms()).await;
        let st = ddb_relay::commands::status::status(&sim.ctx, 60)
            .await
            .unwrap();
        assert_eq!(st.forwarder_on_current_stream, Some(true));
        assert!(st.stream_replaced_ms.is_some(), "{st:?}");
        assert!(ddb_relay::commands::status::status_text(&st).contains("REPLACED"));
        for waive in [false, true] {
            let d = decide(&sim, waive).await;
            assert!(
                !go(&d)
                    && d.decision
                        .reasons
                        .iter()
                        .any(|r| r.contains("stream was replaced")),
                "{waive}: {:?}",
                d.decision.reasons
            );
        }
        assert!(relay_core::decide::verdict(&st).is_err());
        let dry = finish::finish(&sim.ctx, 3, 300, None, true).await.unwrap();
        assert!(!dry.verified);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            verify::verify(&sim.ctx, 100.0, false, 1, copy(), &Default::default())
                .await
                .unwrap()
                .clean
        );
        let d = decide(&sim, false).await;
        assert!(go(&d), "{:?}", d.decision.reasons);
        let dry = finish::finish(&sim.ctx, 3, 300, None, true).await.unwrap();
        assert!(dry.verified);
        sim.stop_pollers();
    });
}

/// helper-76 #2: the target deleted and created again after its seed and a
/// clean verify (the IaC replacing the table, or the stack deployed
/// again): it lacks what the seed wrote, so `status` says REPLACED,
/// `cutover` is NO-GO even with `--no-verify`, `finish` refuses, and `seed`
/// does not call it seeded. For a copy seed (recorded at its start) and a
/// restore (recorded when its restore returned).
#[test]
fn a_target_replaced_after_the_seed_is_no_go() {
    for by_scan in [true, false] {
        sim::run(async move {
            let sim = verified_go(237, by_scan).await;
            // The IaC replaces the table.
            sim.aws.delete_table("target").await.unwrap();
            sim.create_target();
            let st = status::status(&sim.ctx, 60).await.unwrap();
            assert!(st.target_replaced, "{by_scan}");
            assert!(status::status_text(&st).contains("REPLACED"));
            for waive in [false, true] {
                let d = decide(&sim, waive).await;
                assert!(
                    !go(&d) && d.decision.reasons.iter().any(|r| r.starts_with("target:")),
                    "{by_scan} {waive}: {:?}",
                    d.decision.reasons
                );
            }
            let err = format!(
                "{:#}",
                finish::finish(&sim.ctx, 3, 300, None, false)
                    .await
                    .unwrap_err()
            );
            assert!(err.contains("is not the table the seed wrote"), "{err}");
            // Refused before it changed anything.
            assert!(sim.ctx.control().await.unwrap().finished_ms.is_none());
            assert!(sim.aws.trigger_enabled(sim::FORWARDER));
            if !by_scan {
                let args = sim::seed_args(ddb_relay::args::Method::Backup, None);
                let err = ddb_relay::commands::seed::seed(&sim.ctx, &args)
                    .await
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("is not the table the seed wrote"), "{err}");
            }
            sim.stop_pollers();
        });
    }
}

/// An import's table is recorded when its seed sets the cutoff (the seed
/// runs no restore of its own), so a replacement later is told apart too.
#[test]
fn an_imports_table_is_recorded_with_its_cutoff() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 238)).await;
        let seed_ms = sim.now_ms();
        let read = sim.ctx.control().await.unwrap();
        let next = relay_core::control::ControlState {
            seed_method: Some("export".into()),
            seed_ms: Some(seed_ms),
            ..read.clone()
        };
        sim.ctx.write_control(&read, next).await.unwrap();
        sim.create_target();
        ddb_relay::commands::seed::set_cutoff_when_active(&sim.ctx, seed_ms, "export")
            .await
            .unwrap();
        let c = sim.ctx.control().await.unwrap();
        let id = sim
            .aws
            .describe("target")
            .await
            .unwrap()
            .unwrap()
            .id
            .unwrap();
        assert_eq!(c.seed_table, Some(format!("export@{seed_ms}={id}")));
        assert!(c.cutoff_ms.is_some());
    });
}

/// helper-77 #2: a re-seed is held to the current stream too: after the
/// stream was replaced, `replay --from T` with T before the new stream's
/// creation is refused (its changes between were never streamed), and a
/// point after it is taken.
#[test]
fn a_replay_before_a_replaced_streams_creation_is_refused() {
    sim::run(async {
        let sim = verified_go(239, false).await;
        let paused = pause::pause(&sim.ctx, false).await.unwrap();
        let t = paused.earliest_replay_ms;
        // The stream replaced a minute after the earliest replay point.
        let created = t + 60_000;
        sim.ctx.wait_until(created, "the new stream").await.unwrap();
        replace_stream(&sim, created).await;
        sim.ctx
            .wait_until(created + 10_000, "past the new stream")
            .await
            .unwrap();
        let before = sim.ctx.control().await.unwrap();
        let err = format!(
            "{:#}",
            replay::replay(&sim.ctx, Some(When::At(t)), false, false)
                .await
                .unwrap_err()
        );
        assert!(
            err.contains("before the source's stream was created"),
            "{err}"
        );
        assert_eq!(sim.ctx.control().await.unwrap(), before);
        replay::replay(&sim.ctx, Some(When::At(created + 1_000)), false, false)
            .await
            .unwrap();
        let st = status::status(&sim.ctx, 60).await.unwrap();
        assert_eq!(st.stream_replaced_ms, None, "the re-seed closed the gap");
        sim.stop_pollers();
    });
}
