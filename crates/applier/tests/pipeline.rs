//! Property test of the whole pipeline: source writes, stream batches with
//! retries and replays, the forwarder, a FIFO queue with injected failures,
//! the applier with throttling, unprocessed items and crashes, a seed with a
//! fuzzy snapshot and a cutoff margin.
//!
//! Properties:
//! - the target ends equal to the source, item for item;
//! - in every forwarder invocation, each group receives a prefix of its
//!   events, in stream order (no gap, no reordering), and the reported
//!   failure is the earliest record not delivered;
//! - no `SendMessageBatch` call carries two entries of one group;
//! - nothing reaches the DLQ when every failure is transient.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use relay_applier::Applier;
use relay_aws::fake::events::{sqs_event, stream_event, Record};
use relay_aws::fake::{DbFault, EntryFault, FakeDynamo, FakeFifo};
use relay_aws::{AwsError, NoMetrics};
use relay_core::apply::TtlPolicy;
use relay_core::config::{ApplierConfig, ForwarderConfig, MetricsConfig, MetricsMode};
use relay_core::control::ControlState;
use relay_core::envelope::decode;
use relay_core::group::{bucket, group_id};
use relay_core::item::{AttributeValue as V, Attrs, CanonicalKey};
use relay_core::pack::PackConfig;
use relay_core::send_plan::BatchLimits;
use relay_forwarder::Forwarder;

const T0_S: i64 = 1_793_750_400;
const MARGIN_S: i64 = 2;

#[derive(Debug, Clone)]
struct Scenario {
    /// (item 0..12, kind: 0 put, 1 update, 2 delete, pad bytes)
    acts: Vec<(u8, u8, usize)>,
    buckets: u32,
    cap: usize,
    stream_batch: usize,
    applier_batch: usize,
    seed: u64,
    seed_at: usize,
    snapshot_fuzz: i64,
    sqs_entry_fault: u32,
    sqs_call_fault: u32,
    db_unprocessed: u32,
    db_throttle: u32,
    replay: u32,
    crash: u32,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec((0u8..12, 0u8..3, 0usize..3000), 1..60),
        1u32..8,
        prop::sample::select(vec![16 * 1024, 24 * 1024, 256 * 1024]),
        1usize..25,
        1usize..10,
        any::<u64>(),
        0usize..60,
        -MARGIN_S..=MARGIN_S,
        (0u32..30, 0u32..20, 0u32..30, 0u32..20, 0u32..30, 0u32..20),
    )
        .prop_map(
            |(acts, buckets, cap, stream_batch, applier_batch, seed, seed_at, snapshot_fuzz, f)| {
                Scenario {
                    seed_at: seed_at.min(acts.len()),
                    acts,
                    buckets,
                    cap,
                    stream_batch,
                    applier_batch,
                    seed,
                    snapshot_fuzz,
                    sqs_entry_fault: f.0,
                    sqs_call_fault: f.1,
                    db_unprocessed: f.2,
                    db_throttle: f.3,
                    replay: f.4,
                    crash: f.5,
                }
            },
        )
}

fn keys_of(i: u8) -> Attrs {
    [("pk".to_string(), V::S(format!("item-{i}")))].into()
}

/// Plays the acts on a model source; returns the stream records and the
/// source state after each act (index 0 = before any act).
fn play(acts: &[(u8, u8, usize)]) -> (Vec<Record>, Vec<BTreeMap<CanonicalKey, Attrs>>) {
    let mut table: BTreeMap<CanonicalKey, Attrs> = BTreeMap::new();
    let mut states = vec![table.clone()];
    let mut records = Vec::new();
    for (step, &(item, kind, pad)) in acts.iter().enumerate() {
        let keys = keys_of(item);
        let ck = CanonicalKey::of(&keys);
        let old = table.get(&ck).cloned();
        let time_s = T0_S + step as i64;
        let mut rec = Record {
            event_id: format!("ev-{step}"),
            event_name: String::new(),
            seq: format!("{:021}", 5000 + step),
            time_s,
            keys: keys.clone(),
            new_image: None,
            old_image: old.clone(),
            ttl: false,
        };
        if kind == 2 {
            if old.is_some() {
                table.remove(&ck);
                rec.event_name = "REMOVE".into();
                records.push(rec);
            }
        } else {
            let mut image = keys.clone();
            image.insert("v".into(), V::N(step.to_string()));
            image.insert("pad".into(), V::S("p".repeat(pad)));
            if kind == 1 {
                image.insert("n".into(), V::Ns(vec![step.to_string(), "1.5".into()]));
            }
            table.insert(ck, image.clone());
            rec.event_name = if old.is_some() { "MODIFY" } else { "INSERT" }.into();
            rec.new_image = Some(image);
            records.push(rec);
        }
        states.push(table.clone());
    }
    (records, states)
}

fn pct(rng: &Mutex<fastrand::Rng>, p: u32) -> bool {
    rng.lock().unwrap().u32(0..100) < p
}

async fn run(s: Scenario) -> Result<(), TestCaseError> {
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(s.seed)));
    let (records, states) = play(&s.acts);

    // The seed: a snapshot taken "around" act seed_at (backups are fuzzy),
    // cutoff = seed time - margin.
    let db = FakeDynamo::new();
    db.create_table("target", &["pk"]);
    db.create_table("source", &["pk"]);
    db.create_table("control", &["migration"]);
    for item in states.last().unwrap().values() {
        db.put("source", item.clone());
    }
    let snap = (s.seed_at as i64 + s.snapshot_fuzz).clamp(0, s.acts.len() as i64) as usize;
    for item in states[snap].values() {
        db.put("target", item.clone());
    }
    let cutoff_ms = (T0_S + s.seed_at as i64 - MARGIN_S) * 1000;
    db.put(
        "control",
        ControlState {
            migration: "m".into(),
            cutoff_ms: Some(cutoff_ms),
            ..ControlState::default()
        }
        .to_item(),
    );

    let fifo = FakeFifo::new(10_000);
    {
        let (r1, r2) = (rng.clone(), rng.clone());
        let (pe, pc) = (s.sqs_entry_fault, s.sqs_call_fault);
        fifo.set_entry_faults(move |_| pct(&r1, pe).then_some(EntryFault::Retryable));
        fifo.set_call_faults(move |_| {
            pct(&r2, pc)
                .then(|| AwsError::retryable("SendMessageBatch", "ServiceUnavailable", "injected"))
        });
        let r3 = rng.clone();
        let (pu, pt) = (s.db_unprocessed, s.db_throttle);
        db.set_faults(move |call| {
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
    }

    let metrics = MetricsConfig {
        mode: MetricsMode::Off,
        namespace: "DdbRelay".into(),
        migration: "m".into(),
    };
    let forwarder = Forwarder {
        config: ForwarderConfig {
            queue_url: "q".into(),
            pack: PackConfig {
                buckets: s.buckets,
                max_message_bytes: s.cap,
                forward_old_image: true,
                old_key_sources: Default::default(),
            },
            limits: BatchLimits {
                max_entries: 10,
                max_batch_bytes: 1024 * 1024,
                max_attempts: 4,
            },
            send_concurrency: 3,
            metrics: metrics.clone(),
        },
        queue: fifo.clone(),
        metrics: NoMetrics,
    };
    let applier = Applier::new(
        ApplierConfig {
            target_table: "target".into(),
            source_table: "source".into(),
            control_table: "control".into(),
            ttl_policy: TtlPolicy::Replicate,
            control_cache_ms: 5000,
            write_concurrency: 2,
            metrics,
            transform: None,
        },
        db.table("target"),
        db.table("source"),
        db.table("control"),
        NoMetrics,
    );

    let apply_round = || async {
        let msgs = fifo.receive(s.applier_batch);
        if msgs.is_empty() {
            return;
        }
        // Sometimes a tight budget, so that writes fail for lack of time.
        let budget = if pct(&rng, 40) { 1_500 } else { 30_000 };
        let out = applier
            .apply(
                sqs_event(&msgs),
                tokio::time::Instant::now() + Duration::from_millis(budget),
            )
            .await;
        let mut failed: HashSet<String> = out
            .response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        if pct(&rng, s.crash) {
            // The invocation wrote, then died before answering: all redelivered.
            failed = msgs.iter().map(|m| m.message_id.clone()).collect();
        }
        fifo.complete(&msgs, &failed);
    };

    // The stream: batches, retried from the reported record, sometimes replayed.
    let mut pos = 0usize;
    let mut invocations = 0;
    while pos < records.len() {
        invocations += 1;
        prop_assert!(invocations < 5_000, "stream never finished");
        let batch = &records[pos..(pos + s.stream_batch).min(records.len())];
        let before = fifo.accepted_entries().len();
        let out = forwarder
            .forward(
                stream_event("Src", batch),
                tokio::time::Instant::now() + Duration::from_secs(60),
            )
            .await;
        let sent = &fifo.accepted_entries()[before..];

        // Each group got a prefix of its events, in order.
        let mut got: HashMap<String, Vec<String>> = HashMap::new();
        for e in sent {
            let env = decode(&e.body).unwrap();
            got.entry(e.group_id.clone())
                .or_default()
                .extend(env.ev.into_iter().map(|x| x.event_id));
        }
        let mut want: HashMap<String, Vec<String>> = HashMap::new();
        for r in batch {
            let g = group_id(bucket("Src", &CanonicalKey::of(&r.keys), s.buckets));
            want.entry(g).or_default().push(r.event_id.clone());
        }
        for (g, ids) in &got {
            let w = &want[g];
            prop_assert!(
                ids.len() <= w.len() && ids[..] == w[..ids.len()],
                "group {g}: sent {ids:?}, stream {w:?}"
            );
        }
        let delivered: HashSet<&String> = got.values().flatten().collect();
        match out.response.batch_item_failures.first() {
            None => {
                prop_assert_eq!(delivered.len(), batch.len());
                pos += batch.len();
            }
            Some(f) => {
                let seq = f.item_identifier.clone().unwrap_or_default();
                let i = batch.iter().position(|r| r.seq == seq);
                prop_assert!(i.is_some(), "reported {seq:?}, not in the batch");
                let i = i.unwrap_or(0);
                prop_assert!(!delivered.contains(&batch[i].event_id));
                for r in &batch[..i] {
                    prop_assert!(
                        delivered.contains(&r.event_id),
                        "{} before the reported record was not sent",
                        r.event_id
                    );
                }
                pos += i;
            }
        }
        if pct(&rng, s.replay) {
            // At-least-once: the stream delivers a prefix again.
            pos = pos.saturating_sub(rng.lock().unwrap().usize(0..=s.stream_batch));
        }
        if pct(&rng, 50) {
            apply_round().await;
        }
    }
    prop_assert_eq!(fifo.same_group_violations(), 0);

    // Drain.
    let mut rounds = 0;
    while fifo.depth() > 0 {
        rounds += 1;
        prop_assert!(rounds < 20_000, "queue never drained");
        apply_round().await;
    }
    prop_assert!(fifo.dlq().is_empty());
    let target = db.items("target");
    let source = db.items("source");
    let extra: Vec<&CanonicalKey> = target.keys().filter(|k| !source.contains_key(*k)).collect();
    let wrong: Vec<&CanonicalKey> = source
        .iter()
        .filter(|(k, v)| target.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    prop_assert!(
        extra.is_empty() && wrong.is_empty(),
        "target differs: extra {extra:?}, missing or different {wrong:?}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        .. ProptestConfig::default()
    })]

    #[test]
    fn the_target_converges_to_the_source(s in scenario()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(s))?;
    }
}
