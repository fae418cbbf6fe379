//! Model-based property test of a whole migration (`sim` runs it on one
//! simulated timeline): random source writes (puts, updates that move items
//! under a key-changing transform, items above half the message cap and
//! above the cap, deletes, TTL deletes), interleaved with operator commands
//! run through the `ddb-relay` library (pause, resume, replay with valid and
//! too-early points, restart by backup and by scan copy, verify --repair,
//! dlq repair, cutover, seeding again; any of them may be killed partway,
//! as a closed terminal or a lost laptop would), poison messages, and the
//! faults the
//! fakes inject (partial SendMessageBatch failures, throttling, unprocessed
//! items, slow writes, crashed invocations, stream redelivery).
//!
//! Properties:
//! - every command that is refused changes nothing (control item, triggers,
//!   target table);
//! - a too-early replay point is refused, naming the earliest valid one;
//! - after the writes stop and the operator finishes (re-runs a killed
//!   re-seed as its refusal says, resume, drain, dlq repair, and after a
//!   killed command `verify --repair`): target = transform(source), no
//!   tombstones or repair markers left, `verify` is clean, `cutover` says
//!   GO and `finish` completes.
//!
//! `PROPTEST_CASES` sets the number of cases (default 64).
#![allow(clippy::unwrap_used)]

mod sim;

use std::collections::HashMap;
use std::time::Duration;

use ddb_relay::commands::{cutover, dlq, finish, load, pause, replay, scan, seed, verify};
use ddb_relay::ctx::When;
use proptest::prelude::*;
use relay_core::control::ControlState;
use relay_core::decide::CutoverThresholds;
use relay_core::item::{AttributeValue as V, CanonicalKey};
use relay_core::transform::Transform;
use sim::{copy, source_item, source_key, Config, Shape, Sim};

#[derive(Clone, Copy, Debug)]
enum Act {
    /// A put of item `item`; `size` 0 small, 1 above half the cap, 2 above
    /// the cap; `moves` changes its email (its target key under KeyByEmail).
    Put {
        item: u8,
        size: u8,
        moves: bool,
    },
    Delete {
        item: u8,
    },
    TtlDelete {
        item: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmd {
    Pause,
    Resume,
    Replay,
    ReplayTooEarly,
    Restart,
    RestartScan { no_resume: bool },
    VerifyRepair,
    DlqRepair,
    Cutover,
    SeedAgain,
    Poison { item: u8 },
    Unpoison,
}

/// What an operator does next: mostly meaningful sequences.
fn steps() -> impl Strategy<Value = Vec<Cmd>> {
    let after_pause = prop_oneof![
        3 => Just(Cmd::Replay),
        2 => Just(Cmd::ReplayTooEarly),
        2 => Just(Cmd::Restart),
        2 => any::<bool>().prop_map(|no_resume| Cmd::RestartScan { no_resume }),
        2 => Just(Cmd::Resume),
        1 => Just(Cmd::VerifyRepair),
        1 => Just(Cmd::DlqRepair),
    ];
    prop_oneof![
        6 => prop::collection::vec(after_pause, 1..3).prop_map(|mut v| {
            v.insert(0, Cmd::Pause);
            v
        }),
        3 => Just(vec![Cmd::VerifyRepair]),
        2 => Just(vec![Cmd::DlqRepair]),
        2 => Just(vec![Cmd::Cutover]),
        1 => Just(vec![Cmd::SeedAgain]),
        1 => Just(vec![Cmd::Resume]),
        3 => (0u8..4).prop_map(|item| vec![Cmd::Poison { item }]),
        2 => Just(vec![Cmd::Unpoison, Cmd::DlqRepair]),
    ]
}

#[derive(Clone, Debug)]
struct Scenario {
    cfg: Config,
    seed: Seed,
    acts: Vec<(u16, Act)>,
    cmds: Vec<(u16, Vec<Killable>)>,
}

/// A command and the virtual ms after which it is killed, if it is.
type Killable = (Cmd, Option<u16>);

/// The commands of `steps`, each killed partway with a small chance.
fn killed_steps() -> impl Strategy<Value = Vec<Killable>> {
    steps().prop_flat_map(|v| {
        let n = v.len();
        (
            Just(v),
            prop::collection::vec(prop::option::weighted(0.2, 0u16..40_000), n),
        )
            .prop_map(|(v, kills)| v.into_iter().zip(kills).collect())
    })
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => (0u8..8, prop::sample::select(vec![0u8, 0, 0, 0, 1, 2]), any::<bool>())
            .prop_map(|(item, size, moves)| Act::Put { item, size, moves }),
        2 => (0u8..8).prop_map(|item| Act::Delete { item }),
        1 => (0u8..8).prop_map(|item| Act::TtlDelete { item }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        (
            prop::sample::select(vec![Shape::Identity, Shape::Rename, Shape::KeyByEmail]),
            1u32..6,
            prop::sample::select(vec![16 * 1024, 24 * 1024, 256 * 1024]),
            any::<bool>(),
            1usize..25,
            1usize..10,
            any::<u64>(),
        ),
        (
            0u32..20,
            0u32..15,
            0u32..20,
            0u32..15,
            0u32..15,
            0u32..10,
            0u32..15,
        ),
        0u8..3,
        prop::collection::vec((0u16..700, act()), 1..120),
        prop::collection::vec((0u16..8_000, killed_steps()), 0..5),
        prop_oneof![Just(0i64), -30_000i64..30_000],
    )
        .prop_map(
            |(
                (shape, buckets, cap, old, stream_batch, applier_batch, seed),
                f,
                scan,
                acts,
                cmds,
                operator_clock_ms,
            )| {
                Scenario {
                    cfg: Config {
                        shape,
                        buckets,
                        cap,
                        forward_old_image: old,
                        stream_batch,
                        applier_batch,
                        margin_s: 4,
                        max_receive: 4,
                        seed,
                        sqs_entry_fault: f.0,
                        sqs_call_fault: f.1,
                        db_unprocessed: f.2,
                        db_throttle: f.3,
                        latency: f.4,
                        crash: f.5,
                        replay: f.6,
                        operator_clock_ms,
                        ttl_skip: false,
                    },
                    // Restores copy the table as it is: a transform needs a
                    // copy seed (scan or export load).
                    seed: match scan {
                        0 if shape == Shape::Identity => Seed::Backup,
                        0 | 1 => Seed::Scan,
                        _ => Seed::Export,
                    },
                    acts,
                    cmds,
                }
            },
        )
}

/// What a refused command must leave as it was.
#[derive(Debug, PartialEq)]
struct Observable {
    control: Option<ControlState>,
    triggers: (bool, bool),
    target: bool,
}

async fn observe(sim: &Sim) -> Observable {
    let mut control = sim.ctx.control().await.ok();
    if let Some(c) = control.as_mut() {
        // The applier's own mark moves with traffic; the rest may not.
        c.consumed_ms = None;
    }
    Observable {
        control,
        triggers: (
            sim.aws.trigger_enabled(sim::FORWARDER),
            sim.aws.trigger_enabled(sim::APPLIER),
        ),
        target: sim.db.exists("target"),
    }
}

/// The emails of live items, drawn from one pool: an email an item gives up
/// is the next one another item takes, so under KeyByEmail a target key
/// passes from one source item to another (never held by two at once).
#[derive(Default)]
struct Emails {
    held: HashMap<u8, u32>,
    freed: Vec<u32>,
    next: u32,
}

impl Emails {
    /// Item `item`'s email, a new one when it has none or `moves`.
    fn of(&mut self, item: u8, moves: bool) -> u32 {
        match self.held.get(&item) {
            Some(&e) if !moves => e,
            current => {
                let old = current.copied();
                let e = self.freed.pop().unwrap_or_else(|| {
                    self.next += 1;
                    self.next
                });
                if let Some(old) = old {
                    self.freed.push(old);
                }
                self.held.insert(item, e);
                e
            }
        }
    }

    fn release(&mut self, item: u8) {
        if let Some(e) = self.held.remove(&item) {
            self.freed.push(e);
        }
    }
}

/// Writes to the source, as an application would.
async fn write(sim: &Sim, acts: &[(u16, Act)]) {
    let mut versions: HashMap<u8, usize> = HashMap::new();
    let mut emails = Emails::default();
    for (gap, act) in acts {
        tokio::time::sleep(Duration::from_millis(u64::from(*gap))).await;
        match *act {
            Act::Put { item, size, moves } => {
                let v = versions.entry(item).or_default();
                *v += 1;
                let pad = match size {
                    0 => 10 + (*v * 37) % 200,
                    1 => sim.cfg.cap * 6 / 10,
                    _ => sim.cfg.cap + 1000,
                };
                let mut put = source_item(item, *v, pad, 0);
                let email = emails.of(item, moves);
                put.insert("email".into(), V::S(format!("shared-{email}@example.com")));
                sim.db.put("source", put);
            }
            Act::Delete { item } | Act::TtlDelete { item } => {
                emails.release(item);
                let ttl = matches!(act, Act::TtlDelete { .. });
                sim.db.delete("source", &source_key(item), ttl);
            }
        }
    }
}

/// How the scenario seeds the target first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seed {
    Backup,
    Scan,
    /// An export of the source as it is now (fabricated in DynamoDB's
    /// layout), loaded through the transform while writes go on.
    Export,
}

/// Seeds the target as the scenario says.
async fn first_seed(sim: &Sim, how: Seed) -> anyhow::Result<()> {
    if how == Seed::Export {
        if !sim.db.exists("target") {
            sim.create_target();
        }
        // A load that stopped halfway continues from its checkpoint; else
        // a new export of the source as it is now.
        let stopped = sim
            .db
            .items("control")
            .values()
            .any(|c| c.contains_key("export"));
        let from_export = (!stopped).then(|| {
            let items: Vec<_> = sim.db.items("source").into_values().collect();
            let id = format!("e{}", sim.now_ms());
            sim::fabricate_export(sim, &id, &items, sim.now_ms(), 3)
        });
        load::seed_export_load(
            &sim.ctx,
            &load::LoadArgs {
                from_export,
                bucket: Some(sim::EXPORT_BUCKET.into()),
                prefix: String::new(),
                at: None,
            },
            copy(),
            false,
        )
        .await?;
    } else if how == Seed::Scan {
        if !sim.db.exists("target") {
            sim.create_target();
        }
        scan::seed_scan(&sim.ctx, copy(), false, false).await?;
    } else {
        seed::seed(
            &sim.ctx,
            &seed::SeedArgs {
                method: ddb_relay::args::Method::Backup,
                at: None,
                bucket: None,
                prefix: String::new(),
                dry_run: false,
            },
        )
        .await?;
        pause::resume(&sim.ctx, false).await?;
    }
    Ok(())
}

/// Runs one operator command, killed after `kill` virtual ms if given;
/// checks that a refusal changed nothing. `Ok(true)`: it was killed.
async fn operate(sim: &Sim, c: Cmd, how: Seed, kill: Option<u16>) -> Result<bool, TestCaseError> {
    let by_copy = how != Seed::Backup;
    let ctx = &sim.ctx;
    let before = observe(sim).await;
    let run = async {
        Ok::<anyhow::Result<String>, TestCaseError>(match c {
            Cmd::Pause => pause::pause(ctx, false)
                .await
                .map(|r| format!("earliest {}", r.earliest_replay_ms)),
            Cmd::Resume => pause::resume(ctx, false).await.map(|_| String::new()),
            Cmd::Replay => {
                let control = ctx.control().await.unwrap();
                let b = pause::bounds(ctx, &control).await.unwrap();
                // PITR restores up to a second ago: wait for the earliest point.
                let t = b.earliest_ms().max(sim.now_ms() - 1_000);
                ctx.wait_until(t + 1_000, "replay point").await.unwrap();
                replay::replay(ctx, Some(When::At(t)), false, false)
                    .await
                    .map(|r| format!("from {}", r.from_ms))
            }
            Cmd::ReplayTooEarly => {
                let control = ctx.control().await.unwrap();
                let b = pause::bounds(ctx, &control).await.unwrap();
                if control.paused_at_ms.is_none() || control.frontier().is_none() || by_copy {
                    return Ok(Ok("not tried".into()));
                }
                let earliest = b.earliest_ms();
                ctx.wait_until(earliest + 2_000, "past the earliest point")
                    .await
                    .unwrap();
                let r = replay::replay(ctx, Some(When::At(earliest - 1)), false, false).await;
                let err = match r {
                    Ok(_) => {
                        return Err(TestCaseError::fail(format!(
                            "replay at earliest - 1 ({}) was accepted",
                            earliest - 1
                        )))
                    }
                    Err(e) => e.to_string(),
                };
                prop_assert!(
                    err.contains(&format!("earliest valid T is {earliest}")),
                    "the refusal must name the earliest valid T {earliest}: {err}"
                );
                Err(anyhow::anyhow!(err))
            }
            Cmd::Restart => replay::replay(ctx, None, false, false)
                .await
                .map(|r| format!("from {}", r.from_ms)),
            Cmd::RestartScan { no_resume } => {
                if !sim.db.exists("target") {
                    sim.create_target();
                }
                scan::restart_scan(ctx, copy(), no_resume, false)
                    .await
                    .map(|r| format!("copied {} skipped {}", r.copied, r.skipped_existing))
            }
            Cmd::VerifyRepair => verify::verify(ctx, 100.0, true, 1, copy(), &Default::default())
                .await
                .map(|r| {
                    format!(
                        "found {}/{}/{} repaired {} remaining {}",
                        r.missing, r.changed, r.extra, r.repaired, r.remaining
                    )
                }),
            Cmd::DlqRepair => dlq::repair(ctx, 100, false)
                .await
                .map(|r| format!("repaired {} left {}", r.repaired, r.left)),
            Cmd::Cutover => cutover::cutover(
                ctx,
                &CutoverThresholds {
                    max_lag_ms: 5_000.0,
                    max_backlog: 0,
                    waive_verify: false,
                },
                300,
            )
            .await
            .map(|r| format!("go {}", r.decision.go)),
            Cmd::SeedAgain => first_seed(sim, how).await.map(|_| String::new()),
            Cmd::Poison { item } => {
                let key = sim
                    .db
                    .items("source")
                    .into_values()
                    .find(|i| i["pk"] == source_key(item)["pk"])
                    .map(|i| match &sim.transform {
                        Some(t) if !t.is_identity_key() => {
                            CanonicalKey::of(&t.key_only(&i).unwrap())
                        }
                        _ => CanonicalKey::of(&source_key(item)),
                    });
                *sim.poison.lock().unwrap() = key;
                Ok(String::new())
            }
            Cmd::Unpoison => {
                *sim.poison.lock().unwrap() = None;
                Ok(String::new())
            }
        })
    };
    let result = match kill {
        None => run.await?,
        Some(ms) => match tokio::time::timeout(Duration::from_millis(u64::from(ms)), run).await {
            Ok(r) => r?,
            Err(_) => {
                sim.note(format!("{c:?}: killed after {ms} ms"));
                return Ok(true);
            }
        },
    };
    match &result {
        Ok(what) => sim.note(format!("{c:?}: ok {what}")),
        Err(e) => sim.note(format!("{c:?}: refused: {e}")),
    }
    if result.is_err() {
        let after = observe(sim).await;
        prop_assert_eq!(before, after, "a refused {:?} changed something", c);
    }
    Ok(false)
}

async fn migrate(s: Scenario) -> Result<(), TestCaseError> {
    let sim = Sim::new(s.cfg.clone()).await;
    sim.start_pollers();
    // The application writes while the operator works.
    let writes = write(&sim, &s.acts);
    let operator = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seeded = first_seed(&sim, s.seed).await;
        sim.note(format!("first seed: {seeded:?}"));
        let mut killed = false;
        for (gap, seq) in &s.cmds {
            tokio::time::sleep(Duration::from_millis(u64::from(*gap))).await;
            for (c, kill) in seq {
                killed |= operate(&sim, *c, s.seed, *kill).await?;
            }
        }
        Ok::<bool, TestCaseError>(killed)
    };
    let ((), killed) = tokio::join!(writes, operator);
    let killed = killed?;

    // The writes stopped: finish the migration.
    *sim.poison.lock().unwrap() = None;
    let ctx = &sim.ctx;
    let control = ctx.control().await.unwrap();
    if let Some(m) = control
        .seed_method
        .as_deref()
        .filter(|m| m.ends_with("-pending"))
    {
        // A killed re-seed: re-run it, as its refusals say.
        let r = match m {
            "scan-pending" => {
                if !sim.db.exists("target") {
                    sim.create_target();
                }
                scan::restart_scan(ctx, copy(), false, false)
                    .await
                    .map(|_| ())
            }
            "pitr-pending" => {
                let at = control.seed_ms.map(When::At);
                replay::replay(ctx, at, false, false).await.map(|_| ())
            }
            _ => replay::replay(ctx, None, false, false).await.map(|_| ()),
        };
        prop_assert!(r.is_ok(), "re-running {m} failed: {r:?}\n{}", sim.report());
    }
    let control = ctx.control().await.unwrap();
    // A killed replay (or backup seed) whose restore ran: re-run it, as the
    // copy seed's refusal says (a copy would keep the restored items).
    let restored = control
        .seed_method
        .as_deref()
        .filter(|m| control.cutoff_ms.is_none() && matches!(*m, "pitr" | "backup"));
    if let Some(m) = restored {
        let r = match (m, s.seed) {
            ("backup", Seed::Backup) => first_seed(&sim, Seed::Backup).await,
            ("pitr", _) => replay::replay(ctx, control.seed_ms.map(When::At), false, false)
                .await
                .map(|_| ()),
            _ => replay::replay(ctx, None, false, false).await.map(|_| ()),
        };
        prop_assert!(
            r.is_ok(),
            "re-running the interrupted {m} failed: {r:?}\n{}",
            sim.report()
        );
    }
    let control = ctx.control().await.unwrap();
    if control.cutoff_ms.is_none() {
        let r = first_seed(&sim, s.seed).await;
        prop_assert!(r.is_ok(), "final seed failed: {r:?}\n{}", sim.report());
    } else if control.mode == relay_core::control::Mode::Tombstone
        || (control.is_copy_seed()
            && ddb_relay::commands::copy::read_checkpoint(
                ctx,
                &ddb_relay::commands::copy::checkpoint_key(ctx),
            )
            .await
            .unwrap()
            .is_some())
    {
        // A copy seed that stopped, or whose sweep did not finish (killed
        // after its switch to normal mode): running it again finishes it,
        // as verify's unrecorded verdict and status say.
        let how = match control.seed_method.as_deref() {
            Some("export") => Seed::Export,
            _ => Seed::Scan,
        };
        let r = first_seed(&sim, how).await;
        prop_assert!(
            r.is_ok(),
            "finishing a stopped copy failed: {r:?}\n{}",
            sim.report()
        );
    }
    let control = ctx.control().await.unwrap();
    if control.paused_at_ms.is_some() || !sim.aws.trigger_enabled(sim::APPLIER) {
        let r = pause::resume(ctx, false).await;
        prop_assert!(r.is_ok(), "final resume failed: {r:?}\n{}", sim.report());
    }
    prop_assert!(
        sim.drain(Duration::from_secs(900)).await,
        "never drained\n{}",
        sim.report()
    );
    if !sim.fifo.dlq().is_empty() {
        let r = dlq::repair(ctx, 1000, false).await.unwrap();
        prop_assert_eq!(
            r.left,
            0,
            "dlq repair left messages: {:?}\n{}",
            r.results,
            sim.report()
        );
        prop_assert!(
            sim.drain(Duration::from_secs(300)).await,
            "never drained\n{}",
            sim.report()
        );
    }
    if killed {
        // A killed repair may leave a mark or placeholder behind (best
        // effort, documented), and nothing else: every item holds its data.
        // Only then does the operator's verify repair the leftovers (a
        // repair must not hide a change a killed command lost).
        let lost = lost_beyond_marks(&sim);
        prop_assert!(
            lost.is_empty(),
            "a killed command lost {lost:?}\n{}",
            sim.report()
        );
        let r = verify::verify(ctx, 100.0, true, 1, copy(), &Default::default()).await;
        prop_assert!(
            r.is_ok(),
            "verify --repair after a kill: {r:?}\n{}",
            sim.report()
        );
        prop_assert!(
            sim.drain(Duration::from_secs(300)).await,
            "never drained\n{}",
            sim.report()
        );
    }
    let (wrong, extra, marked) = sim.divergence();
    prop_assert!(
        wrong.is_empty() && extra.is_empty() && marked.is_empty(),
        "target != transform(source)\n{}",
        sim.report()
    );
    let v = verify::verify(ctx, 100.0, false, 1, copy(), &Default::default())
        .await
        .unwrap();
    prop_assert!(v.clean && v.recorded, "verify: {v:?}\n{}", sim.report());
    tokio::time::sleep(Duration::from_secs(200)).await;
    let go = cutover::cutover(
        ctx,
        &CutoverThresholds {
            max_lag_ms: 5_000.0,
            max_backlog: 0,
            waive_verify: false,
        },
        60,
    )
    .await
    .unwrap();
    prop_assert!(
        go.decision.go,
        "cutover: {:?}\n{}",
        go.decision.reasons,
        sim.report()
    );
    let done = finish::finish(ctx, 3, 300, None, false).await;
    prop_assert!(done.is_ok(), "finish: {done:?}\n{}", sim.report());
    // After finish the target is the application's: a re-seed is refused
    // (it would drop the target or clear it) and changes nothing.
    let items = sim.db.items("target");
    for cmd in ["restart --method scan"] {
        let argv = ["ddb-relay", "--stack", "s"]
            .into_iter()
            .chain(cmd.split(' '));
        let cli = <ddb_relay::args::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        let refused = ddb_relay::commands::run(ctx, cli.command).await;
        prop_assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("was finished")),
            "{cmd} after finish: {refused:?}"
        );
    }
    prop_assert_eq!(sim.db.items("target"), items);
    sim.stop_pollers();
    if std::env::var("SIM_TRACE").is_ok() {
        eprintln!(
            "---- {:?} {} acts\n{}\n{}",
            s.cfg.shape,
            s.acts.len(),
            sim.report(),
            sim.stats()
        );
    }
    Ok(())
}

/// Target keys whose data differs from transform(source) once a repair's
/// marks are set aside: its token on an item, and a placeholder where no
/// item belongs (a placeholder where one belongs is data missing).
fn lost_beyond_marks(sim: &Sim) -> Vec<CanonicalKey> {
    use relay_core::apply::{PLACEHOLDER_ATTR, TOKEN_ATTR};
    let want = sim.expected();
    let got = sim.db.items("target");
    let wrong = want.iter().filter(|(k, v)| {
        got.get(*k).is_none_or(|g| {
            let mut g = g.clone();
            g.remove(TOKEN_ATTR);
            !relay_core::item::same_item(&g, v)
        })
    });
    let extra = got
        .iter()
        .filter(|(k, g)| !want.contains_key(*k) && !g.contains_key(PLACEHOLDER_ATTR));
    wrong
        .map(|(k, _)| k.clone())
        .chain(extra.map(|(k, _)| k.clone()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        .. ProptestConfig::default()
    })]

    #[test]
    fn the_target_converges_to_the_source_through_operator_commands_and_faults(s in scenario()) {
        let mut out = Ok(());
        sim::run(async { out = migrate(s).await; });
        out?;
    }
}
