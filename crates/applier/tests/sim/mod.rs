//! A whole migration on one simulated timeline: the real forwarder, the
//! real applier and the real operator commands (the `ddb-relay` library),
//! against the in-memory fakes (DynamoDB with streams, history and backups;
//! SQS FIFO with a DLQ; Lambda triggers; CloudWatch), with injected faults.
//!
//! Time is tokio's paused clock: every `sleep` (a poller's, a retry's, a
//! command's wait) advances it only when nothing else can run, so a case
//! covering minutes of migration runs in milliseconds, and the same seed
//! replays the same interleaving.
#![allow(dead_code, clippy::unwrap_used)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ddb_relay::ctx::{Ctx, Output};
use relay_applier::Applier;
use relay_aws::fake::events::{sqs_event, stream_event};
use relay_aws::fake::{DbFault, EntryFault, FakeAws, FakeDynamo, FakeFifo, FakeMetrics, FakeTable};
use relay_aws::operator::StackInfo;
use relay_aws::runtime::Clock;
use relay_aws::AwsError;
use relay_core::apply::{TtlPolicy, TOMBSTONE_ATTR};
use relay_core::config::{ApplierConfig, ForwarderConfig, MetricsConfig, MetricsMode};
use relay_core::item::{same_item, AttributeValue as V, Attrs, CanonicalKey};
use relay_core::pack::PackConfig;
use relay_core::send_plan::BatchLimits;
use relay_core::transform::{Declarative, Transform};
use relay_forwarder::Forwarder;

pub const T0_MS: i64 = 1_793_750_400_000;
pub const STACK: &str = "sim";
pub const APPLIER: &str = "sim-applier";
pub const FORWARDER: &str = "sim-forwarder";
pub const APPLIER_TIMEOUT_S: u64 = 10;
pub const WORKER_TIMEOUT_S: u64 = 30;
pub const WORK_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/sim-work";
pub const WORK_DLQ_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/sim-work-dlq";
pub const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:relay.fifo";

mod config;
pub use config::{Config, Shape};

type Rng = Arc<Mutex<fastrand::Rng>>;

fn pct(rng: &Rng, p: u32) -> bool {
    p > 0 && rng.lock().unwrap().u32(0..100) < p
}

/// One simulated migration.
pub struct Sim {
    pub cfg: Config,
    pub aws: FakeAws,
    pub db: FakeDynamo,
    pub fifo: FakeFifo,
    pub clock: Clock,
    pub ctx: Ctx<FakeAws>,
    pub transform: Option<Declarative>,
    pub rng: Rng,
    /// The target key whose writes the target refuses (a poison message).
    pub poison: Arc<Mutex<Option<CanonicalKey>>>,
    forwarder: Rc<Forwarder<FakeFifo, FakeMetrics>>,
    applier: Rc<Applier<FakeTable, FakeTable, FakeTable, FakeMetrics>>,
    /// The forwarder's position in the source stream.
    pub pos: Rc<Cell<usize>>,
    /// The pollers' generation: `stop_pollers` moves it on, and a poller
    /// runs while it is the one it started in (so pollers can be started
    /// again after a stop, and the old ones still end).
    stop: Rc<Cell<u64>>,
    /// What happened, for failure messages.
    pub log: Rc<RefCell<Vec<String>>>,
}

impl Sim {
    /// Builds the account, the stack and the functions (nothing runs yet).
    pub async fn new(cfg: Config) -> Sim {
        fastrand::seed(cfg.seed);
        let clock = Clock::virtual_from(T0_MS);
        let rng: Rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(cfg.seed ^ 0x5eed)));
        let db = FakeDynamo::with_clock(clock.clone(), 2_000, (cfg.margin_s * 1000) / 3, cfg.seed);
        db.create_table("source", &["pk"]);
        db.enable_stream_and_pitr("source");
        db.create_table("control", &["migration"]);
        let fifo = FakeFifo::new(cfg.max_receive);
        let metrics = FakeMetrics::new(clock.clone());
        let aws = FakeAws::new(db.clone(), fifo.clone(), metrics.clone());
        aws.add_function(
            FORWARDER,
            &relay_aws::fake::events::stream_arn("source"),
            true,
            60,
        );
        aws.add_function(APPLIER, QUEUE_ARN, false, APPLIER_TIMEOUT_S);
        aws.add_function(
            "sim-worker",
            "arn:aws:sqs:us-east-1:123456789012:sim-work",
            true,
            WORKER_TIMEOUT_S,
        );
        aws.set_env(
            "sim-worker",
            "WORKER_JOBS",
            "scan file sweep verify tasks-v3",
        );
        let spec = cfg.shape.spec();
        let outputs = [
            ("QueueUrl", aws.queue_url.as_str()),
            ("DeadLetterQueueUrl", aws.dlq_url.as_str()),
            ("StreamFailureQueueUrl", aws.failures_url.as_str()),
            ("ForwarderFunction", FORWARDER),
            ("ApplierFunction", APPLIER),
            ("ControlTable", "control"),
            ("SourceTable", "source"),
            ("TargetTable", "target"),
            ("MigrationId", STACK),
            ("WorkQueueUrl", WORK_URL),
            ("WorkDeadLetterQueueUrl", WORK_DLQ_URL),
            ("WorkerFunction", "sim-worker"),
            ("WorkerConcurrency", "3"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("CutoffMarginSeconds".to_string(), cfg.margin_s.to_string())])
        .collect();
        aws.add_stack(StackInfo {
            name: STACK.into(),
            status: "CREATE_COMPLETE".into(),
            outputs,
            parameters: [
                ("TransformSpec", spec.unwrap_or_default()),
                (
                    "TtlDeletes",
                    if cfg.ttl_skip { "skip" } else { "replicate" },
                ),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        });
        if cfg.ttl_skip {
            aws.set_ttl_attribute("source", "expires");
        }
        aws.set_page_size(3);
        // The operator's machine: its own clock, corrected by AWS's.
        let operator_clock = Clock::following(
            Clock::virtual_from(T0_MS + cfg.operator_clock_ms),
            aws.server_time.clone(),
        );
        let mut ctx = Ctx::for_stack(aws.clone(), STACK, "us-east-1", operator_clock)
            .await
            .unwrap();
        ctx.output = Output::Json;
        ctx.quiet = true;
        ctx.poll = Duration::from_millis(100);

        let transform = spec.map(|s| Declarative::parse(s, &["pk".to_string()]).unwrap());
        let metrics_cfg = MetricsConfig {
            mode: MetricsMode::PutMetricData,
            namespace: "DdbRelay".into(),
            migration: STACK.into(),
        };
        let forwarder = Forwarder {
            config: ForwarderConfig {
                queue_url: aws.queue_url.clone(),
                pack: PackConfig {
                    buckets: cfg.buckets,
                    max_message_bytes: cfg.cap,
                    forward_old_image: cfg.forward_old_image,
                    old_key_sources: match &transform {
                        Some(t) if !t.is_identity_key() => t.key_sources(),
                        _ => Default::default(),
                    },
                    // Half the scenarios queue version 1 bodies (a forwarder
                    // with ENVELOPE_VERSION=1), half version 2.
                    envelope_version: 1 + (cfg.seed % 2) as u32,
                },
                // Two entries a call, so that a round of up to five groups
                // is several calls, and the send window (3 calls, 4 KB)
                // holds some back by count or by bytes.
                limits: BatchLimits {
                    max_entries: 2,
                    max_batch_bytes: 1024 * 1024,
                    max_attempts: 4,
                },
                send_concurrency: 3,
                send_in_flight_bytes: 4096,
                metrics: metrics_cfg.clone(),
            },
            queue: fifo.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
        };
        let applier = Applier::new(
            ApplierConfig {
                target_table: "target".into(),
                source_table: "source".into(),
                control_table: "control".into(),
                ttl_policy: if cfg.ttl_skip {
                    TtlPolicy::Skip
                } else {
                    TtlPolicy::Replicate
                },
                write_concurrency: 2,
                metrics: metrics_cfg,
                transform: spec.map(str::to_string),
                target: Default::default(),
            },
            db.table("target"),
            db.table("source"),
            db.table("control"),
            metrics,
        )
        .with_clock(clock.clone());

        let poison: Arc<Mutex<Option<CanonicalKey>>> = Arc::default();
        {
            let (r1, r2) = (rng.clone(), rng.clone());
            let (pe, pc) = (cfg.sqs_entry_fault, cfg.sqs_call_fault);
            fifo.set_entry_faults(move |_| pct(&r1, pe).then_some(EntryFault::Retryable));
            fifo.set_call_faults(move |_| {
                pct(&r2, pc).then(|| {
                    AwsError::retryable("SendMessageBatch", "ServiceUnavailable", "injected")
                })
            });
            let r3 = rng.clone();
            let (pu, pt) = (cfg.db_unprocessed, cfg.db_throttle);
            let poisoned = poison.clone();
            let key_attr = cfg.shape.target_key().to_string();
            db.set_faults(move |call| {
                if call.table != "target" || call.writes.is_empty() {
                    return None;
                }
                let bad = poisoned.lock().unwrap().clone();
                if let Some(bad) = bad {
                    let hit = call.writes.iter().any(|w| {
                        w.key_source().get(&key_attr).is_some_and(|v| {
                            CanonicalKey::of(&[(key_attr.clone(), v.clone())].into()) == bad
                        })
                    });
                    if hit {
                        return Some(DbFault::Error(AwsError::permanent(
                            call.op,
                            "ValidationException",
                            "injected poison: the target refuses this item",
                        )));
                    }
                }
                if call.op != "BatchWriteItem" {
                    return None;
                }
                if pct(&r3, pt) {
                    return Some(DbFault::Error(AwsError::retryable(
                        "BatchWriteItem",
                        "ProvisionedThroughputExceededException",
                        "injected",
                    )));
                }
                let left: Vec<usize> = (0..call.writes.len()).filter(|_| pct(&r3, pu)).collect();
                (!left.is_empty()).then_some(DbFault::Unprocessed(left))
            });
            let r4 = rng.clone();
            let pl = cfg.latency;
            db.set_latency(move |call| {
                let slow = match (call.table, call.op) {
                    ("target", "BatchWriteItem") => pct(&r4, pl),
                    // The scan copy and the sweeps take time, so live
                    // traffic overlaps them.
                    (_, "Scan") => pct(&r4, 50),
                    _ => false,
                };
                if slow {
                    Duration::from_millis(r4.lock().unwrap().u64(100..3_000))
                } else {
                    Duration::ZERO
                }
            });
        }

        Sim {
            cfg,
            aws,
            db,
            fifo,
            clock,
            ctx,
            transform,
            rng,
            poison,
            forwarder: Rc::new(forwarder),
            applier: Rc::new(applier),
            pos: Rc::new(Cell::new(0)),
            stop: Rc::new(Cell::new(0)),
            log: Rc::default(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn note(&self, what: impl Into<String>) {
        let t = (self.now_ms() - T0_MS) as f64 / 1000.0;
        self.log
            .borrow_mut()
            .push(format!("{t:8.1}s {}", what.into()));
    }

    /// Creates the target table for a scan copy (the user's IaC would).
    pub fn create_target(&self) {
        self.db
            .create_table("target", &[self.cfg.shape.target_key()]);
    }

    /// Starts the forwarder poller and two applier pollers (as Lambda's
    /// event source mappings would), on the current `LocalSet`.
    pub fn start_pollers(&self) {
        let generation = self.stop.get();
        let (fwd, aws, db, pos, stop, rng) = (
            self.forwarder.clone(),
            self.aws.clone(),
            self.db.clone(),
            self.pos.clone(),
            self.stop.clone(),
            self.rng.clone(),
        );
        let (batch, replay) = (self.cfg.stream_batch, self.cfg.replay);
        tokio::task::spawn_local(async move {
            while stop.get() == generation {
                if aws.trigger_enabled(FORWARDER) {
                    let pending = db.stream("source", pos.get());
                    if !pending.is_empty() {
                        let records: Vec<_> =
                            pending.iter().take(batch).map(|r| r.to_record()).collect();
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                        // As the Lambda runs it: the invocation's body, read in place.
                        let body = stream_event("source", &records).0;
                        let out = fwd
                            .handle_body(body, deadline)
                            .await
                            .expect("a stream batch");
                        let advanced = match out.batch_item_failures.first() {
                            None => records.len(),
                            Some(f) => {
                                let seq = f.item_identifier.clone().unwrap_or_default();
                                records.iter().position(|r| r.seq == seq).unwrap_or(0)
                            }
                        };
                        pos.set(pos.get() + advanced);
                        if pct(&rng, replay) {
                            let back = rng.lock().unwrap().usize(0..=batch);
                            pos.set(pos.get().saturating_sub(back));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        for _ in 0..2 {
            let (applier, aws, fifo, stop, rng) = (
                self.applier.clone(),
                self.aws.clone(),
                self.fifo.clone(),
                self.stop.clone(),
                self.rng.clone(),
            );
            let (batch, crash) = (self.cfg.applier_batch, self.cfg.crash);
            tokio::task::spawn_local(async move {
                while stop.get() == generation {
                    if aws.trigger_enabled(APPLIER) {
                        let msgs = fifo.receive(batch);
                        if !msgs.is_empty() {
                            let timeout = Duration::from_secs(APPLIER_TIMEOUT_S);
                            let deadline = tokio::time::Instant::now() + timeout;
                            // Lambda kills an invocation at its timeout: then
                            // every message returns to the queue.
                            let mut failed: HashSet<String> = match tokio::time::timeout(
                                timeout,
                                applier.handle(sqs_event(&msgs), deadline),
                            )
                            .await
                            {
                                Ok(r) => r
                                    .batch_item_failures
                                    .into_iter()
                                    .map(|f| f.item_identifier)
                                    .collect(),
                                Err(_) => msgs.iter().map(|m| m.message_id.clone()).collect(),
                            };
                            if pct(&rng, crash) {
                                failed = msgs.iter().map(|m| m.message_id.clone()).collect();
                            }
                            fifo.complete(&msgs, &failed);
                            continue;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    }

    /// Forwards every pending stream record now (one forwarder pass, no
    /// applier): for tests that drive the applier by hand.
    pub async fn forward_pending(&self) {
        let records: Vec<_> = self
            .db
            .stream("source", self.pos.get())
            .iter()
            .map(|r| r.to_record())
            .collect();
        if records.is_empty() {
            return;
        }
        let body = stream_event("source", &records).0;
        let out = self
            .forwarder
            .handle_body(body, tokio::time::Instant::now() + Duration::from_secs(60))
            .await
            .expect("a stream batch");
        assert!(out.batch_item_failures.is_empty(), "forwarding failed");
        self.pos.set(self.pos.get() + records.len());
    }

    /// One applier invocation, with the Lambda timeout as its deadline.
    pub async fn apply(
        &self,
        event: aws_lambda_events::event::sqs::SqsEvent,
    ) -> aws_lambda_events::event::sqs::SqsBatchResponse {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(APPLIER_TIMEOUT_S);
        self.applier.handle(event, deadline).await
    }

    /// Receives and applies by hand (no pollers), up to `rounds` batches,
    /// reporting back what the applier failed: a failing message returns,
    /// and after `max_receive` receives goes to the DLQ.
    #[allow(dead_code)]
    pub async fn apply_by_hand(&self, rounds: usize) {
        for _ in 0..rounds {
            let msgs = self.fifo.receive(10);
            if msgs.is_empty() {
                break;
            }
            let out = self.apply(sqs_event(&msgs)).await;
            let failed = out
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect();
            self.fifo.complete(&msgs, &failed);
        }
    }

    /// Refuses (access denied) every `op` on `table` after its first
    /// `allowed` calls.
    #[allow(dead_code)]
    pub fn deny_after(&self, table: &'static str, op: &'static str, allowed: usize) {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        self.db.set_faults(move |c| {
            (c.table == table
                && c.op == op
                && calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= allowed)
                .then(|| {
                    DbFault::Error(AwsError::permanent(
                        op,
                        "AccessDeniedException",
                        &format!("not authorized to perform dynamodb:{op}"),
                    ))
                })
        });
    }

    /// `n` copy workers draining the work queue with the real worker
    /// handler, one task per invocation. With `faults`: short invocations
    /// (tasks continue in the next one), some tasks delivered twice, and
    /// some invocations killed midway (the task returns to the queue).
    pub async fn start_workers(&self, n: usize, faults: bool) {
        use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
        use relay_aws::operator::Queues;
        let generation = self.stop.get();
        for w in 0..n {
            let mut ctx = Ctx::for_stack(self.aws.clone(), STACK, "us-east-1", self.clock.clone())
                .await
                .unwrap();
            ctx.quiet = true;
            let (aws, stop, rng) = (self.aws.clone(), self.stop.clone(), self.rng.clone());
            tokio::task::spawn_local(async move {
                while stop.get() == generation {
                    let Ok(mut msgs) = aws.receive(WORK_URL, 1, 60).await else {
                        continue;
                    };
                    let Some(m) = msgs.pop() else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    if faults && pct(&rng, 20) {
                        aws.send_message(WORK_URL, &m.body).await.unwrap();
                    }
                    let mut msg = SqsMessage::default();
                    msg.message_id = Some(m.id.clone());
                    msg.body = Some(m.body.clone());
                    let mut event = SqsEvent::default();
                    event.records = vec![msg];
                    let budget = if faults {
                        ddb_relay::worker::RESERVE + Duration::from_millis(300 + 100 * w as u64)
                    } else {
                        Duration::from_secs(600)
                    };
                    let deadline = tokio::time::Instant::now() + budget;
                    let kill = if faults && pct(&rng, 15) {
                        Duration::from_millis(50)
                    } else {
                        budget
                    };
                    match tokio::time::timeout(
                        kill,
                        ddb_relay::worker::handle(&ctx, event, deadline),
                    )
                    .await
                    {
                        Ok(r) if r.batch_item_failures.is_empty() => {
                            aws.delete_message(WORK_URL, &m.receipt).await.unwrap();
                        }
                        // Failed or killed: SQS delivers it again.
                        _ => aws.release_message(WORK_URL, &m.receipt).await.unwrap(),
                    }
                }
            });
        }
    }

    /// Stops the pollers and workers (at their next turn); they can be
    /// started again.
    pub fn stop_pollers(&self) {
        self.stop.set(self.stop.get() + 1);
    }

    /// Whether every stream record was forwarded and every message consumed.
    pub fn drained(&self) -> bool {
        self.pos.get() >= self.db.stream("source", 0).len() && self.fifo.depth() == 0
    }

    /// Waits (in simulated time) until drained, at most `limit`.
    pub async fn drain(&self, limit: Duration) -> bool {
        let start = tokio::time::Instant::now();
        while !self.drained() {
            if start.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        true
    }

    /// Drains (at most 300 s simulated) and asserts target =
    /// transform(source), with no tombstone or repair token left.
    pub async fn assert_converged(&self) {
        assert!(
            self.drain(Duration::from_secs(300)).await,
            "{}",
            self.report()
        );
        let (wrong, extra, marked) = self.divergence();
        assert!(
            wrong.is_empty() && extra.is_empty() && marked.is_empty(),
            "target != transform(source): {}",
            self.report()
        );
    }

    /// The source's items through the transform, by target key.
    pub fn expected(&self) -> BTreeMap<CanonicalKey, Attrs> {
        self.db
            .items("source")
            .into_values()
            .map(|item| match &self.transform {
                None => {
                    let key: Attrs = [("pk".to_string(), item["pk"].clone())].into();
                    (CanonicalKey::of(&key), item)
                }
                Some(t) => {
                    let out = t.item(&item).unwrap();
                    (CanonicalKey::of(&t.key_only(&item).unwrap()), out)
                }
            })
            .collect()
    }

    /// How the target differs from the source through the transform:
    /// (missing or different, extra, leftover markers).
    pub fn divergence(&self) -> (Vec<CanonicalKey>, Vec<CanonicalKey>, Vec<CanonicalKey>) {
        let want = self.expected();
        let got = self.db.items("target");
        let wrong = want
            .iter()
            .filter(|(k, v)| got.get(*k).is_none_or(|g| !same_item(g, v)))
            .map(|(k, _)| k.clone())
            .collect();
        let extra = got
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        let marked = got
            .iter()
            .filter(|(_, v)| {
                v.contains_key(TOMBSTONE_ATTR)
                    || v.contains_key(ddb_relay::repair::REPAIR_TOKEN_ATTR)
            })
            .map(|(k, _)| k.clone())
            .collect();
        (wrong, extra, marked)
    }

    /// Totals of the functions' metrics (what the case exercised).
    pub fn stats(&self) -> String {
        use relay_aws::operator::{MetricQuery, Metrics, Stat};
        let names = [
            ("forwarder", "RefetchMarkers"),
            ("forwarder", "OldImagesDropped"),
            ("forwarder", "SendRetries"),
            ("applier", "Refetches"),
            ("applier", "Replanned"),
            ("applier", "PausedBatches"),
            ("applier", "FailedMessages"),
            ("applier", "SkippedBeforeCutoff"),
            ("applier", "WriteRetries"),
        ];
        let queries: Vec<MetricQuery> = names
            .iter()
            .map(|(f, n)| {
                MetricQuery::new(
                    "DdbRelay",
                    n,
                    &[("Migration", STACK), ("Function", f)],
                    Stat::Sum,
                )
            })
            .collect();
        let series = futures_lite_block(self.aws.metrics(&queries, 0, i64::MAX)).unwrap();
        names
            .iter()
            .zip(series)
            .map(|((_, n), s)| format!("{n}={}", s.iter().map(|(_, v)| v).sum::<f64>()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn report(&self) -> String {
        let (wrong, extra, marked) = self.divergence();
        format!(
            "missing or different {}, extra {}, tombstones/tokens {}; stream {} records, forwarded to {}; queue {}; DLQ {}\n{}",
            wrong.len(),
            extra.len(),
            marked.len(),
            self.db.stream("source", 0).len(),
            self.pos.get(),
            self.fifo.depth(),
            self.fifo.dlq().len(),
            self.log.borrow().join("\n")
        )
    }
}

/// A source item: key `pk = item-{i}`, a version, padding, and (for the
/// key-changing transform) an email that moves it.
pub fn source_item(i: u8, version: usize, pad: usize, email: u32) -> Attrs {
    let mut item: Attrs = [
        ("pk".to_string(), V::S(format!("item-{i}"))),
        ("v".to_string(), V::N(version.to_string())),
        (
            "email".to_string(),
            V::S(format!("{i}-{email}@example.com")),
        ),
    ]
    .into();
    if pad > 0 {
        item.insert("pad".into(), V::S("p".repeat(pad)));
    }
    item
}

pub fn source_key(i: u8) -> Attrs {
    [("pk".to_string(), V::S(format!("item-{i}")))].into()
}

/// Runs `f` on a current-thread runtime with paused time and a `LocalSet`.
pub fn run<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f);
}

/// Polls a future that never waits (the fakes' metrics query) to completion.
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Scan-copy limits for tests: two segments, unthrottled.
pub fn copy() -> ddb_relay::args::CopyArgs {
    ddb_relay::args::CopyArgs {
        segments: 2,
        rate: 0,
        max_wcu: 0,
        fan_out: false,
    }
}

/// Creates the target and seeds it by scan copy.
pub async fn seed_by_scan(sim: &Sim) {
    sim.create_target();
    ddb_relay::commands::scan::seed_scan(&sim.ctx, copy(), false, false)
        .await
        .unwrap();
}

/// `seed --method M [--at T]`'s arguments.
pub fn seed_args(
    method: ddb_relay::args::Method,
    at: Option<ddb_relay::ctx::When>,
) -> ddb_relay::commands::seed::SeedArgs {
    ddb_relay::commands::seed::SeedArgs {
        method,
        at,
        bucket: None,
        prefix: String::new(),
        dry_run: false,
    }
}

/// Seeds the target by backup and resumes the applier.
pub async fn seed_by_backup(sim: &Sim) {
    let args = seed_args(ddb_relay::args::Method::Backup, None);
    ddb_relay::commands::seed::seed(&sim.ctx, &args)
        .await
        .unwrap();
    ddb_relay::commands::pause::resume(&sim.ctx, false)
        .await
        .unwrap();
}

/// The fake S3 bucket the tests fabricate exports in.
pub const EXPORT_BUCKET: &str = "exports";

/// Writes `items` as a DynamoDB export consistent to `at_ms` under
/// `s3://exports/AWSDynamoDB/<id>`, split into `files` gzip data files, in
/// the documented layout; returns the `--from-export` URI.
pub fn fabricate_export(sim: &Sim, id: &str, items: &[Attrs], at_ms: i64, files: usize) -> String {
    fabricate(sim, id, items, at_ms, files, 0, None)
}

/// `fabricate_export`, with the first file's manifest count (and the
/// summary's total) overstated by `overstate`, and the summary naming
/// `table_arn`.
pub fn fabricate(
    sim: &Sim,
    id: &str,
    items: &[Attrs],
    at_ms: i64,
    files: usize,
    overstate: usize,
    table_arn: Option<&str>,
) -> String {
    use std::io::Write;
    let dir = format!("AWSDynamoDB/{id}");
    let mut manifest = String::new();
    for (i, chunk) in items.chunks(items.len().div_ceil(files).max(1)).enumerate() {
        let key = format!("{dir}/data/file-{i}.json.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(relay_core::export::data_lines(chunk).as_bytes())
            .unwrap();
        sim.aws
            .put_object(EXPORT_BUCKET, &key, gz.finish().unwrap());
        manifest.push_str(&format!(
            "{{\"itemCount\":{},\"md5Checksum\":\"x\",\"etag\":\"y\",\"dataFileS3Key\":\"{key}\"}}\n",
            chunk.len() + if i == 0 { overstate } else { 0 }
        ));
    }
    sim.aws.put_object(
        EXPORT_BUCKET,
        &format!("{dir}/manifest-files.json"),
        manifest.into_bytes(),
    );
    let at = chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let summary = format!(
        "{{\"version\":\"2020-06-30\",\"exportArn\":\"arn:aws:dynamodb:us-east-1:123456789012:table/source/export/{id}\",{}\"exportTime\":\"{at}\",\"s3Bucket\":\"{EXPORT_BUCKET}\",\"manifestFilesS3Key\":\"{dir}/manifest-files.json\",\"itemCount\":{},\"outputFormat\":\"DYNAMODB_JSON\",\"exportType\":\"FULL_EXPORT\"}}",
        table_arn.map_or(String::new(), |t| format!("\"tableArn\":\"{t}\",")),
        items.len() + overstate
    );
    sim.aws.put_object(
        EXPORT_BUCKET,
        &format!("{dir}/manifest-summary.json"),
        summary.into_bytes(),
    );
    format!("s3://{EXPORT_BUCKET}/{dir}")
}
