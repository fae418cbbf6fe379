//! The applier handler on AWS-shaped SQS FIFO events, against the in-memory
//! DynamoDB fake with injected failures.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use relay_applier::Applier;
use relay_aws::fake::{Call, DbFault, FakeDynamo, FakeTable};
use relay_aws::{AwsError, NoMetrics};
use relay_core::apply::TtlPolicy;
use relay_core::config::{ApplierConfig, MetricsConfig, MetricsMode};
use relay_core::control::ControlState;
use relay_core::envelope::{encode, encode_as};
use relay_core::event::{ChangeEvent, Op};
use relay_core::item::{AttributeValue as V, Attrs, CanonicalKey};
use relay_core::metrics::names;

const FIXTURE: &str = include_str!("../../../fixtures/sqs-fifo-event.json");
const T0: i64 = 1_793_750_400_000;

type TestApplier = Applier<FakeTable, FakeTable, FakeTable, NoMetrics>;

fn setup(cutoff: Option<i64>, ttl: TtlPolicy) -> (FakeDynamo, TestApplier) {
    let db = FakeDynamo::new();
    db.create_table("target", &["pk"]);
    db.create_table("source", &["pk"]);
    db.create_table("control", &["migration"]);
    if let Some(c) = cutoff {
        set_cutoff(&db, c);
    }
    let config = ApplierConfig {
        target_table: "target".into(),
        source_table: "source".into(),
        control_table: "control".into(),
        ttl_policy: ttl,
        write_concurrency: 2,
        metrics: MetricsConfig {
            mode: MetricsMode::Off,
            namespace: "DdbRelay".into(),
            migration: "m1".into(),
        },
        transform: None,
        target: Default::default(),
    };
    let a = Applier::new(
        config,
        db.table("target"),
        db.table("source"),
        db.table("control"),
        NoMetrics,
    );
    (db, a)
}

fn set_cutoff(db: &FakeDynamo, cutoff: i64) {
    let state = ControlState {
        migration: "m1".into(),
        cutoff_ms: Some(cutoff),
        ..ControlState::default()
    };
    db.put("control", state.to_item());
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

fn fixture() -> SqsEvent {
    serde_json::from_str(FIXTURE).unwrap()
}

fn key(pk: &str) -> CanonicalKey {
    CanonicalKey::of(&[("pk".to_string(), V::S(pk.into()))].into())
}

fn failed_ids(r: &SqsBatchResponse) -> Vec<String> {
    r.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn ids(e: &SqsEvent) -> Vec<String> {
    e.records
        .iter()
        .map(|m| m.message_id.clone().unwrap())
        .collect()
}

fn item(pk: &str, v: i64) -> Attrs {
    [
        ("pk".to_string(), V::S(pk.into())),
        ("v".to_string(), V::N(v.to_string())),
    ]
    .into()
}

fn change(i: usize, op: Op, pk: &str, v: i64) -> ChangeEvent {
    ChangeEvent {
        event_id: format!("e{i}"),
        seq: i.to_string(),
        time_ms: T0,
        op,
        ttl: false,
        refetch: false,
        keys: [("pk".to_string(), V::S(pk.into()))].into(),
        new_image: (op != Op::Remove).then(|| item(pk, v)),
        old_image: None,
    }
}

fn sqs_event(bodies: Vec<String>) -> SqsEvent {
    let mut e = fixture();
    let template = e.records[0].clone();
    e.records = bodies
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let mut m = template.clone();
            m.message_id = Some(format!("msg-{i}"));
            m.body = Some(b);
            m
        })
        .collect();
    e
}

#[tokio::test(start_paused = true)]
async fn the_aws_fixture_is_applied_coalesced_and_counted() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    db.put("target", item("dave", 0));
    let out = a.apply(fixture(), deadline()).await;
    assert!(out.response.batch_item_failures.is_empty());
    let items = db.items("target");
    assert_eq!(items[&key("alice")]["v"], V::N("3".into()));
    assert_eq!(items[&key("alice")]["note"], V::S("é😀".into()));
    assert!(items.contains_key(&key("bob")) && items.contains_key(&key("carol")));
    assert!(
        !items.contains_key(&key("dave")),
        "TTL delete replicated by default"
    );
    assert_eq!(out.metrics.get(names::COALESCED), Some(2.0));
    assert_eq!(out.metrics.get(names::APPLIED_PUTS), Some(3.0));
    assert_eq!(out.metrics.get(names::APPLIED_DELETES), Some(1.0));
    assert_eq!(db.calls("BatchWriteItem"), 1);
}

/// An upgrade: the queue holds version 1 bodies (an earlier release's
/// forwarder, or `ENVELOPE_VERSION=1`) before version 2 ones, in one group;
/// the applier reads both, in order. (The AWS fixture above is version 1.)
#[tokio::test(start_paused = true)]
async fn version_1_and_version_2_bodies_apply_in_queue_order() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    let bodies = vec![
        encode_as(1, "Orders", &[change(1, Op::Insert, "a", 1)]),
        encode_as(2, "Orders", &[change(2, Op::Modify, "a", 2)]),
        encode_as(1, "Orders", &[change(3, Op::Insert, "b", 1)]),
        encode_as(2, "Orders", &[change(4, Op::Remove, "b", 0)]),
    ];
    assert!(bodies[0].starts_with(r#"{"v":1,"#) && bodies[1].starts_with("{'v':2,"));
    let out = a.apply(sqs_event(bodies), deadline()).await;
    assert!(out.response.batch_item_failures.is_empty());
    let items = db.items("target");
    assert_eq!(items[&key("a")]["v"], V::N("2".into()));
    assert!(!items.contains_key(&key("b")));
    assert_eq!(out.metrics.get(names::UNDECODABLE_MESSAGES), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn without_a_cutoff_nothing_is_written_and_every_message_fails() {
    let (db, a) = setup(None, TtlPolicy::Replicate);
    let event = fixture();
    let out = a.apply(event.clone(), deadline()).await;
    assert_eq!(failed_ids(&out.response), ids(&event));
    assert!(db.items("target").is_empty());
    assert_eq!(out.metrics.get(names::CUTOFF_MISSING), Some(1.0));
    assert_eq!(db.calls("BatchWriteItem"), 0);
}

#[tokio::test(start_paused = true)]
async fn events_before_the_cutoff_are_skipped_and_counted() {
    // e-6 (dave) is one second later than the rest.
    let (db, a) = setup(Some(T0 + 1000), TtlPolicy::Replicate);
    db.put("target", item("dave", 0));
    let out = a.apply(fixture(), deadline()).await;
    assert!(out.response.batch_item_failures.is_empty());
    assert_eq!(out.metrics.get(names::SKIPPED_BEFORE_CUTOFF), Some(5.0));
    let items = db.items("target");
    assert_eq!(items.len(), 0, "only dave's delete applied");
}

#[tokio::test(start_paused = true)]
async fn ttl_deletes_can_be_skipped_and_are_counted() {
    let (db, a) = setup(Some(T0), TtlPolicy::Skip);
    db.put("target", item("dave", 0));
    let out = a.apply(fixture(), deadline()).await;
    assert!(out.response.batch_item_failures.is_empty());
    assert!(db.items("target").contains_key(&key("dave")));
    assert_eq!(out.metrics.get(names::SKIPPED_TTL), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn throttling_and_unprocessed_items_are_retried_until_written() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    db.set_faults(move |call: &Call<'_>| {
        if call.op != "BatchWriteItem" {
            return None;
        }
        match c.fetch_add(1, Ordering::SeqCst) {
            0 => Some(DbFault::Error(AwsError::retryable(
                "BatchWriteItem",
                "ProvisionedThroughputExceededException",
                "slow down",
            ))),
            1 | 2 => Some(DbFault::Unprocessed(vec![0])),
            _ => None,
        }
    });
    let bodies = vec![encode(
        "Orders",
        &(0..60)
            .map(|i| change(i, Op::Insert, &format!("k{i}"), 1))
            .collect::<Vec<_>>(),
    )];
    let out = a.apply(sqs_event(bodies), deadline()).await;
    assert!(
        out.response.batch_item_failures.is_empty(),
        "{:?}",
        out.response
    );
    assert_eq!(db.items("target").len(), 60);
    assert!(out.metrics.get(names::WRITE_RETRIES).unwrap() >= 3.0);
}

#[tokio::test(start_paused = true)]
async fn a_refused_item_fails_its_earliest_message_and_every_later_one() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    // The target refuses any write of item "poison" (e.g. too large after a transform).
    db.set_faults(|call: &Call<'_>| {
        let poisoned = call
            .writes
            .iter()
            .any(|w| w.key_source()["pk"] == V::S("poison".into()));
        poisoned.then(|| {
            DbFault::Error(AwsError::permanent(
                "BatchWriteItem",
                "ValidationException",
                "Item size has exceeded the maximum allowed size",
            ))
        })
    });
    let bodies = vec![
        encode("Orders", &[change(1, Op::Insert, "a", 1)]),
        encode(
            "Orders",
            &[
                change(2, Op::Insert, "b", 1),
                change(3, Op::Insert, "poison", 1),
            ],
        ),
        encode(
            "Orders",
            &[
                change(4, Op::Modify, "poison", 2),
                change(5, Op::Insert, "c", 1),
            ],
        ),
    ];
    let event = sqs_event(bodies);
    let out = a.apply(event.clone(), deadline()).await;
    assert_eq!(failed_ids(&out.response), ids(&event)[1..].to_vec());
    let items = db.items("target");
    assert!(
        items.contains_key(&key("a"))
            && items.contains_key(&key("b"))
            && items.contains_key(&key("c"))
    );
    assert!(!items.contains_key(&key("poison")));
    assert_eq!(out.metrics.get(names::FAILED_MESSAGES), Some(2.0));
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_message_stops_the_batch_there() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    let bodies = vec![
        encode("Orders", &[change(1, Op::Insert, "a", 1)]),
        r#"{"v":9,"src":"Orders","ev":[]}"#.to_string(),
        encode("Orders", &[change(2, Op::Insert, "b", 1)]),
    ];
    let event = sqs_event(bodies);
    let out = a.apply(event.clone(), deadline()).await;
    assert_eq!(failed_ids(&out.response), ids(&event)[1..].to_vec());
    let items = db.items("target");
    assert!(items.contains_key(&key("a")));
    assert!(
        !items.contains_key(&key("b")),
        "nothing after the bad message is applied"
    );
    assert_eq!(out.metrics.get(names::UNDECODABLE_MESSAGES), Some(1.0));

    let event = sqs_event(vec!["not json at all".into()]);
    let out = a.apply(event.clone(), deadline()).await;
    assert_eq!(failed_ids(&out.response), ids(&event));
}

#[tokio::test(start_paused = true)]
async fn refetch_markers_copy_the_source_state_or_delete() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    db.put("source", item("live", 42));
    db.put("target", item("gone", 1));
    let bodies = vec![encode(
        "Orders",
        &[
            change(1, Op::Modify, "live", 1).into_refetch(),
            change(2, Op::Modify, "gone", 1).into_refetch(),
        ],
    )];
    let out = a.apply(sqs_event(bodies), deadline()).await;
    assert!(out.response.batch_item_failures.is_empty());
    let items = db.items("target");
    assert_eq!(items[&key("live")]["v"], V::N("42".into()));
    assert!(!items.contains_key(&key("gone")));
    assert_eq!(out.metrics.get(names::REFETCHES), Some(2.0));
}

#[tokio::test(start_paused = true)]
async fn every_batch_reads_the_control_item_and_commits_on_it() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    // Each batch is newer than the last, so its commit raises the
    // high-water mark in one conditional write (no second read).
    let body = |i: usize| {
        let mut c = change(i, Op::Insert, "a", 1);
        c.time_ms = T0 + i as i64 * 1000;
        vec![encode("Orders", &[c])]
    };
    a.apply(sqs_event(body(1)), deadline()).await;
    a.apply(sqs_event(body(2)), deadline()).await;
    assert_eq!(db.calls("GetItem"), 2);
    assert_eq!(db.calls("UpdateItem(control)"), 2);
    let state = relay_aws::ControlStore::load(&db.table("control"), "m1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.consumed_ms, Some(T0 + 2000));
}

#[tokio::test(start_paused = true)]
async fn out_of_time_fails_what_is_left_instead_of_dropping_it() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    db.set_faults(|call: &Call<'_>| {
        (call.op == "BatchWriteItem").then(|| {
            DbFault::Error(AwsError::retryable(
                "BatchWriteItem",
                "ThrottlingException",
                "slow down",
            ))
        })
    });
    let event = sqs_event(vec![
        encode("Orders", &[change(1, Op::Insert, "a", 1)]),
        encode("Orders", &[change(2, Op::Insert, "b", 1)]),
    ]);
    let out = a
        .apply(
            event.clone(),
            tokio::time::Instant::now() + Duration::from_secs(10),
        )
        .await;
    assert_eq!(failed_ids(&out.response), ids(&event));
}

/// A transform re-keys items (pk -> id = "user#" + pk), deletes find their
/// new key, and in tombstone mode (during a scan copy) deletes leave a
/// tombstone instead of nothing.
#[tokio::test(start_paused = true)]
async fn transforms_re_key_items_and_tombstone_mode_keeps_deletes_visible() {
    use relay_core::apply::is_tombstone;
    use relay_core::control::Mode;
    let db = FakeDynamo::new();
    db.create_table("target", &["id"]);
    db.create_table("source", &["pk"]);
    db.create_table("control", &["migration"]);
    set_cutoff(&db, T0);
    let config = ApplierConfig {
        target_table: "target".into(),
        source_table: "source".into(),
        control_table: "control".into(),
        ttl_policy: TtlPolicy::Replicate,
        write_concurrency: 2,
        metrics: MetricsConfig {
            mode: MetricsMode::Off,
            namespace: "DdbRelay".into(),
            migration: "m1".into(),
        },
        transform: Some(
            "key: [{attribute: id, concat: {from: [pk], separator: '#'}}]\nrename: {v: value}\n"
                .into(),
        ),
        target: Default::default(),
    };
    let a = Applier::new(
        config,
        db.table("target"),
        db.table("source"),
        db.table("control"),
        NoMetrics,
    );
    let id = |s: &str| CanonicalKey::of(&[("id".to_string(), V::S(s.into()))].into());
    let body = encode(
        "Orders",
        &[
            change(1, Op::Insert, "a", 1),
            change(2, Op::Insert, "b", 2),
            change(3, Op::Remove, "b", 0),
        ],
    );
    let out = a.apply(sqs_event(vec![body]), deadline()).await;
    assert!(out.response.batch_item_failures.is_empty());
    let items = db.items("target");
    assert_eq!(items[&id("a")]["value"], V::N("1".into()));
    assert!(!items[&id("a")].contains_key("v"));
    assert!(!items.contains_key(&id("b")));

    // Tombstone mode: the delete of "a" leaves a tombstone.
    let state = ControlState {
        migration: "m1".into(),
        cutoff_ms: Some(T0),
        mode: Mode::Tombstone,
        ..ControlState::default()
    };
    db.put("control", state.to_item());
    let body = encode("Orders", &[change(4, Op::Remove, "a", 0)]);
    let out = a.apply(sqs_event(vec![body]), deadline()).await;
    assert!(out.response.batch_item_failures.is_empty());
    assert!(is_tombstone(&db.items("target")[&id("a")]));
}

/// A delete whose target key needs an attribute the record lacks fails its
/// message (and every later one) instead of being dropped.
#[tokio::test(start_paused = true)]
async fn a_change_the_transform_cannot_map_fails_its_message() {
    let (db, mut a) = setup(Some(T0), TtlPolicy::Replicate);
    a.transform = Some(Box::new(
        relay_core::transform::Declarative::parse(
            "key: [{attribute: pk, uuidv5: {from: [v]}}]\ncopy: {pk: source_pk}",
            &[],
        )
        .unwrap(),
    ));
    let bodies = vec![
        encode("Orders", &[change(1, Op::Insert, "ok", 1)]),
        encode("Orders", &[change(2, Op::Remove, "x", 0)]),
        encode("Orders", &[change(3, Op::Insert, "later", 1)]),
    ];
    let event = sqs_event(bodies);
    let all = ids(&event);
    let out = a.apply(event, deadline()).await;
    assert_eq!(failed_ids(&out.response), all[1..].to_vec());
    // The message before it is written, by the plan made again without the
    // failing ones (it borrows the events it writes).
    let items = db.items("target");
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(items
        .values()
        .any(|i| i.get("source_pk") == Some(&V::S("ok".into()))));
}

/// A pause written while a batch is being written: the batch's commit fails
/// on the version, the re-read finds the pause, and every message is
/// reported failed (they wait for `resume`), nothing is consumed, and the
/// batch counts as paused.
#[tokio::test(start_paused = true)]
async fn a_batch_whose_commit_finds_a_pause_fails_every_message_and_consumes_nothing() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    db.set_latency(|call: &Call<'_>| {
        if call.op == "BatchWriteItem" {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        }
    });
    let mut c = change(1, Op::Insert, "a", 1);
    c.time_ms = T0 + 5_000;
    let event = sqs_event(vec![
        encode("Orders", &[c]),
        encode("Orders", &[change(2, Op::Insert, "b", 1)]),
    ]);
    let pause = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let control = db.table("control");
        let read = relay_aws::ControlStore::load(&control, "m1")
            .await
            .unwrap()
            .unwrap();
        let paused = ControlState {
            paused_at_ms: Some(T0 + 6_000),
            version: read.version + 1,
            ..read
        };
        db.put("control", paused.to_item());
    };
    let (out, ()) = tokio::join!(a.apply(event.clone(), deadline()), pause);
    assert_eq!(failed_ids(&out.response), ids(&event));
    assert_eq!(out.metrics.get(names::PAUSED_BATCHES), Some(1.0));
    let state = relay_aws::ControlStore::load(&db.table("control"), "m1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.consumed_ms, None, "nothing consumed under the pause");
    assert_eq!(state.paused_at_ms, Some(T0 + 6_000));
}

/// Every invocation reads the one control item: a throttled read is
/// retried like every other call of the batch, not a failed batch (which
/// would add a receive to every message and, repeated, dead-letter them).
#[tokio::test(start_paused = true)]
async fn a_throttled_control_read_is_retried_not_a_failed_batch() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    let reads = Arc::new(AtomicUsize::new(0));
    let r = reads.clone();
    db.set_faults(move |call: &Call<'_>| {
        (call.table == "control" && call.op == "GetItem" && r.fetch_add(1, Ordering::SeqCst) == 0)
            .then(|| {
                DbFault::Error(AwsError::retryable(
                    "GetItem",
                    "ProvisionedThroughputExceededException",
                    "slow down",
                ))
            })
    });
    let event = sqs_event(vec![encode("Orders", &[change(1, Op::Insert, "a", 1)])]);
    let out = a.apply(event, deadline()).await;
    assert!(
        out.response.batch_item_failures.is_empty(),
        "{:?}",
        out.response
    );
    assert!(db.items("target").contains_key(&key("a")));
    assert!(reads.load(Ordering::SeqCst) >= 2, "read again");
    assert!(out.metrics.get(names::WRITE_RETRIES).unwrap() >= 1.0);
}

/// A custom transform that refuses item "bad" always and item "flaky" from
/// its second call on (a transform that fails now and then).
#[derive(Debug, Default)]
struct Flaky {
    flaky_calls: AtomicUsize,
    /// "flaky" is refused from this call on (0: from the second).
    refuse_from: usize,
}

impl relay_core::transform::Transform for Flaky {
    fn item(&self, source: &Attrs) -> Result<Attrs, relay_core::transform::TransformError> {
        let refuse = match &source["pk"] {
            V::S(pk) if pk == "bad" => true,
            V::S(pk) if pk == "flaky" => {
                self.flaky_calls.fetch_add(1, Ordering::SeqCst) >= self.refuse_from.max(1)
            }
            _ => false,
        };
        if refuse {
            return Err(relay_core::transform::TransformError::Missing("pk".into()));
        }
        Ok(source.clone())
    }

    fn key_sources(&self) -> std::collections::BTreeSet<String> {
        ["pk".to_string()].into()
    }

    fn target_key_names(&self) -> Vec<String> {
        vec!["pk".to_string()]
    }

    fn key_only(&self, image: &Attrs) -> Result<Attrs, relay_core::transform::TransformError> {
        Ok([("pk".to_string(), image["pk"].clone())].into())
    }
}

/// A refusal on the batch's second plan (after the first plan's refusals
/// were taken out) fails its message and its group's later ones too, with
/// nothing of them written: never reported complete, and so consumed,
/// without its change written.
#[tokio::test(start_paused = true)]
async fn a_change_refused_on_the_second_plan_fails_its_message() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    let a = a.with_transform(Box::new(Flaky::default()));
    let mut event = sqs_event(vec![
        encode("Orders", &[change(1, Op::Insert, "bad", 1)]),
        encode("Orders", &[change(2, Op::Insert, "flaky", 1)]),
        encode("Orders", &[change(3, Op::Insert, "a", 1)]),
        encode("Orders", &[change(4, Op::Insert, "later", 1)]),
    ]);
    // The refusals fail only their own groups; "later" is flaky's group's.
    for (m, g) in event.records.iter_mut().zip(["g0", "g1", "g2", "g1"]) {
        m.attributes.insert("MessageGroupId".into(), g.into());
    }
    let out = a.apply(event.clone(), deadline()).await;
    let all = ids(&event);
    assert_eq!(
        failed_ids(&out.response),
        vec![all[0].clone(), all[1].clone(), all[3].clone()]
    );
    let items = db.items("target");
    assert!(items.contains_key(&key("a")));
    for k in ["bad", "flaky", "later"] {
        assert!(!items.contains_key(&key(k)), "{k} written");
    }
}

/// A transform that answers differently once more on the batch's last
/// plan (after a plan that refused nothing): nothing is written and every
/// message fails and comes back, so nothing of a failed group is written
/// and no message is reported complete unwritten.
#[tokio::test(start_paused = true)]
async fn a_change_refused_on_the_last_plan_fails_the_batch_and_writes_nothing() {
    let (db, a) = setup(Some(T0), TtlPolicy::Replicate);
    // "flaky" passes the first plan and the check plan, and is refused on
    // the last one (its third call).
    let a = a.with_transform(Box::new(Flaky {
        refuse_from: 2,
        ..Flaky::default()
    }));
    let mut event = sqs_event(vec![
        encode("Orders", &[change(1, Op::Insert, "bad", 1)]),
        encode("Orders", &[change(2, Op::Insert, "flaky", 1)]),
        encode("Orders", &[change(3, Op::Insert, "a", 1)]),
    ]);
    for (m, g) in event.records.iter_mut().zip(["g0", "g1", "g2"]) {
        m.attributes.insert("MessageGroupId".into(), g.into());
    }
    let out = a.apply(event.clone(), deadline()).await;
    assert_eq!(failed_ids(&out.response), ids(&event));
    assert!(db.items("target").is_empty(), "nothing written");
}

/// helper-45 #4: a transform that maps two source items to one target key
/// (`convert` S→N: "1" and "01" are both 1) coalesces their changes, from
/// two message groups, into one write. When it fails, both groups' messages
/// fail: the second group's change is not consumed unwritten.
#[tokio::test(start_paused = true)]
async fn a_failed_write_two_items_coalesced_into_fails_both_groups() {
    let db = FakeDynamo::new();
    db.create_table("target", &["id"]);
    db.create_table("source", &["pk"]);
    db.create_table("control", &["migration"]);
    set_cutoff(&db, T0);
    let config = ApplierConfig {
        target_table: "target".into(),
        source_table: "source".into(),
        control_table: "control".into(),
        ttl_policy: TtlPolicy::Replicate,
        write_concurrency: 2,
        metrics: MetricsConfig {
            mode: MetricsMode::Off,
            namespace: "DdbRelay".into(),
            migration: "m1".into(),
        },
        transform: Some("key: [{attribute: id, convert: {from: pk, to: N}}]\n".into()),
        target: Default::default(),
    };
    let a = Applier::new(
        config,
        db.table("target"),
        db.table("source"),
        db.table("control"),
        NoMetrics,
    );
    // Every write of target key 1 fails; item 7's succeeds.
    db.set_faults(|call: &Call<'_>| {
        let one = call
            .writes
            .iter()
            .any(|w| w.key_source().get("id") != Some(&V::N("7".into())));
        (call.table == "target" && one).then(|| {
            DbFault::Error(AwsError::permanent(
                "BatchWriteItem",
                "ValidationException",
                "Item size has exceeded the maximum allowed size",
            ))
        })
    });
    let mut event = sqs_event(vec![
        encode("Orders", &[change(1, Op::Insert, "1", 1)]),
        encode("Orders", &[change(2, Op::Insert, "01", 2)]),
        encode("Orders", &[change(3, Op::Insert, "7", 3)]),
    ]);
    for (i, m) in event.records.iter_mut().enumerate() {
        m.attributes
            .insert("MessageGroupId".into(), format!("g{i}"));
    }
    let out = a.apply(event.clone(), deadline()).await;
    assert_eq!(failed_ids(&out.response), ids(&event)[..2].to_vec());
    assert_eq!(db.items("target").len(), 1, "the other group completed");
}
