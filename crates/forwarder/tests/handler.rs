//! The forwarder handler on AWS-shaped stream events, against the in-memory
//! FIFO fake with injected failures.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use relay_aws::fake::events::{stream_event, Record, StreamBatch};
use relay_aws::fake::{EntryFault, FakeFifo};
use relay_aws::{AwsError, NoMetrics};
use relay_core::config::{ForwarderConfig, MetricsConfig, MetricsMode};
use relay_core::envelope::decode;
use relay_core::event::ChangeEvent;
use relay_core::group::{bucket, group_id};
use relay_core::item::{AttributeValue as V, Attrs, CanonicalKey};
use relay_core::metrics::names;
use relay_core::pack::PackConfig;
use relay_core::send_plan::BatchLimits;
use relay_core::stream::StreamEvent as Event;
use relay_forwarder::Forwarder;

const AWS_SAMPLES: &str = include_str!("../../../fixtures/dynamodb-stream-aws-samples.json");
const NO_CREATION_TIME: &str =
    include_str!("../../../fixtures/dynamodb-stream-no-creation-time.json");
const FIXTURE: &str = include_str!("../../../fixtures/dynamodb-stream-event.json");

fn config(buckets: u32, cap: usize) -> ForwarderConfig {
    ForwarderConfig {
        queue_url: "https://sqs.us-east-1.amazonaws.com/123456789012/relay.fifo".into(),
        pack: PackConfig {
            buckets,
            max_message_bytes: cap,
            forward_old_image: true,
            old_key_sources: Default::default(),
            envelope_version: relay_core::envelope::VERSION,
        },
        limits: BatchLimits::default(),
        send_concurrency: 4,
        send_in_flight_bytes: 2 * 1024 * 1024,
        metrics: MetricsConfig {
            mode: MetricsMode::Off,
            namespace: "DdbRelay".into(),
            migration: "test".into(),
        },
    }
}

fn forwarder(queue: &FakeFifo, buckets: u32, cap: usize) -> Forwarder<FakeFifo, NoMetrics> {
    Forwarder {
        config: config(buckets, cap),
        queue: queue.clone(),
        metrics: NoMetrics,
        clock: relay_aws::runtime::Clock::wall(),
    }
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

fn delivered(queue: &FakeFifo) -> Vec<(String, ChangeEvent)> {
    queue
        .accepted()
        .into_iter()
        .flat_map(|m| {
            let g = m.group_id.clone();
            decode(&m.body)
                .unwrap()
                .ev
                .into_iter()
                .map(move |e| (g.clone(), e))
        })
        .collect()
}

/// Change number `i` of item `pk`: a put with a ~`size`-byte payload.
fn change(i: usize, pk: &str, size: usize, insert: bool) -> Record {
    let k: Attrs = [("pk".to_string(), V::S(pk.into()))].into();
    let mut image = k.clone();
    image.insert("v".into(), V::N(i.to_string()));
    image.insert("pad".into(), V::S("p".repeat(size)));
    Record {
        event_id: format!("ev-{i}"),
        event_name: if insert { "INSERT" } else { "MODIFY" }.into(),
        seq: format!("{:021}", 1000 + i),
        time_s: 1_793_750_400,
        keys: k,
        new_image: Some(image),
        old_image: None,
        ttl: false,
    }
}

/// `n` changes cycling over `keys` items, each with a ~`size`-byte payload.
fn synthetic(n: usize, keys: usize, size: usize) -> (StreamBatch, Vec<Record>) {
    let records: Vec<Record> = (0..n)
        .map(|i| change(i, &format!("item-{}", i % keys), size, i < keys))
        .collect();
    (stream_event("Orders", &records), records)
}

#[tokio::test(start_paused = true)]
async fn the_aws_fixture_becomes_ordered_messages() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 4, 256 * 1024);
    let event: Event<'_> = serde_json::from_str(FIXTURE).unwrap();
    let out = f.forward(event, deadline()).await;
    assert!(out.response.batch_item_failures.is_empty());
    assert_eq!(out.metrics.get(names::FORWARDED), Some(5.0));

    let got = delivered(&queue);
    let ids: Vec<&str> = got.iter().map(|(_, e)| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 5);
    // Per item, stream order; all changes of an item in one group.
    let mut by_key: HashMap<String, (String, Vec<&str>)> = HashMap::new();
    for (g, e) in &got {
        let entry = by_key
            .entry(format!("{:?}", e.keys.get("pk")))
            .or_insert_with(|| (g.clone(), Vec::new()));
        assert_eq!(&entry.0, g, "one item, one group");
        entry.1.push(&e.event_id);
    }
    assert_eq!(
        by_key[&format!("{:?}", Some(V::S("order#1".into())))].1,
        vec!["e-1", "e-3"]
    );
    assert_eq!(
        by_key[&format!("{:?}", Some(V::S("order#2".into())))].1,
        vec!["e-2", "e-4"]
    );
    let ttl = got.iter().find(|(_, e)| e.event_id == "e-5").unwrap();
    assert!(ttl.1.ttl, "TTL delete is flagged");
    let modify = got.iter().find(|(_, e)| e.event_id == "e-3").unwrap();
    assert!(modify.1.old_image.is_some() && modify.1.new_image.is_some());
    assert_eq!(
        modify.1.new_image.as_ref().unwrap()["total"],
        V::N("12345678901234567890123456789012345678".into())
    );
    assert_eq!(modify.1.time_ms, 1_793_750_401_000);
}

/// Records shaped like AWS's documented sample stream events, with the
/// optional-field variants: float and integer creation times, no old image,
/// no images at all (KEYS_ONLY), a TTL delete, eventVersion 1.0, and empty
/// sets, lists, maps and strings.
#[tokio::test(start_paused = true)]
async fn aws_sample_events_and_their_variants_are_forwarded_faithfully() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 4, 256 * 1024);
    let event: Event<'_> = serde_json::from_str(AWS_SAMPLES).unwrap();
    let out = f.forward(event, deadline()).await;
    assert!(
        out.response.batch_item_failures.is_empty(),
        "{:?}",
        out.response
    );
    assert_eq!(out.metrics.get(names::FORWARDED), Some(6.0));
    assert_eq!(out.metrics.get(names::BAD_RECORDS), Some(0.0));
    let got: HashMap<String, ChangeEvent> = delivered(&queue)
        .into_iter()
        .map(|(_, e)| (e.seq.clone(), e))
        .collect();
    let e = |prefix: &str| {
        got.iter()
            .find(|(seq, _)| seq.starts_with(prefix))
            .map(|(_, e)| e)
            .unwrap_or_else(|| panic!("record {prefix}… not forwarded"))
    };
    assert_eq!(e("111").time_ms, 1_793_750_400_000);
    assert_eq!(e("222").time_ms, 1_793_750_401_000, "a float creation time");
    assert!(e("222").old_image.is_some() && e("222").new_image.is_some());
    assert_eq!(e("333").op, relay_core::event::Op::Remove);
    assert!(e("444").ttl, "the TTL service identity is kept");
    assert!(e("555").refetch, "no images: the applier reads the source");
    let empty = e("666").new_image.as_ref().unwrap();
    assert_eq!(empty["Tags"], V::Ss(vec![]));
    assert_eq!(empty["Scores"], V::Ns(vec![]));
    assert_eq!(empty["Blobs"], V::Bs(vec![]));
    assert_eq!(empty["Nothing"], V::M(Default::default()));
    assert_eq!(empty["Empty"], V::L(vec![]));
    assert_eq!(empty["Blank"], V::S(String::new()));
    assert!(e("666").old_image.is_none());
}

/// A record without ApproximateCreationDateTime is a bad record: reported
/// (so Lambda retries it and, past its age limit, hands it to the failure
/// queue) and counted, never forwarded as "the epoch" for the cutoff to
/// skip.
#[tokio::test(start_paused = true)]
async fn a_record_without_a_creation_time_is_reported_not_skipped() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 4, 256 * 1024);
    let event: Event<'_> = serde_json::from_str(NO_CREATION_TIME).unwrap();
    let out = f.forward(event, deadline()).await;
    assert_eq!(
        out.response.batch_item_failures[0]
            .item_identifier
            .as_deref(),
        Some("888000000000000000008")
    );
    assert_eq!(out.metrics.get(names::BAD_RECORDS), Some(1.0));
    let sent = delivered(&queue);
    assert_eq!(sent.len(), 1, "the record before it is forwarded");
    assert!(sent.iter().all(|(_, e)| e.time_ms > 0));
}

#[tokio::test(start_paused = true)]
async fn packing_uses_few_messages() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 4, 256 * 1024);
    let (event, _) = synthetic(400, 100, 1000);
    let out = f.forward(event.event(), deadline()).await;
    assert!(out.response.batch_item_failures.is_empty());
    let sent = out.metrics.get(names::MESSAGES_SENT).unwrap();
    assert!(
        sent <= 8.0,
        "400 events of ~1 KB in 4 groups took {sent} messages"
    );
    assert_eq!(delivered(&queue).len(), 400);
    assert_eq!(queue.same_group_violations(), 0);
}

/// Lambda retries a stream batch (a timeout after the sends, a bisected
/// batch) and the retry is packed differently: its first message is new but
/// its last one carries the same events as a message of the first attempt.
/// Were dedup ids derived from event ids alone, SQS would drop that last
/// message and the queue would end on the older change.
#[tokio::test(start_paused = true)]
async fn a_retried_batch_packed_differently_still_ends_on_the_newest_change() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 1, 16 * 1024);
    let records = [
        change(1, "item", 1_000, true),
        change(2, "item", 8_000, false),
        change(3, "item", 9_000, false),
    ];
    // First attempt: [ev-1, ev-2], [ev-3]. The retry from ev-2: [ev-2], [ev-3].
    for batch in [&records[..], &records[1..]] {
        let out = f
            .forward(stream_event("Orders", batch).event(), deadline())
            .await;
        assert!(out.response.batch_item_failures.is_empty());
    }
    let ids: Vec<String> = delivered(&queue)
        .into_iter()
        .map(|(_, e)| e.event_id)
        .collect();
    assert_eq!(
        ids,
        ["ev-1", "ev-2", "ev-3", "ev-2", "ev-3"],
        "the queue must end on the newest change"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_message_reports_its_first_record_and_stops_its_group() {
    let queue = FakeFifo::new(5);
    // Small messages: several per group.
    let f = forwarder(&queue, 3, 16 * 1024);
    let (event, records) = synthetic(120, 30, 1000);
    // The second message offered for the first group seen is refused for good.
    let seen: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
    let victim: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let (s2, v2) = (seen.clone(), victim.clone());
    queue.set_entry_faults(move |e| {
        let mut v = v2.lock().unwrap();
        let victim = v.get_or_insert_with(|| e.group_id.clone()).clone();
        let mut seen = s2.lock().unwrap();
        let n = seen.entry(e.group_id.clone()).or_insert(0);
        *n += 1;
        (e.group_id == victim && *n == 2).then_some(EntryFault::Permanent)
    });
    let out = f.forward(event.event(), deadline()).await;
    let victim = victim.lock().unwrap().clone().unwrap();

    // The refused message is the victim's second; its first event is the
    // earliest record not delivered.
    let got = delivered(&queue);
    let victim_events: Vec<&ChangeEvent> = got
        .iter()
        .filter(|(g, _)| *g == victim)
        .map(|(_, e)| e)
        .collect();
    let after_victim = records
        .iter()
        .position(|r| {
            !victim_events.iter().any(|e| e.event_id == r.event_id)
                && got.iter().all(|(_, e)| e.event_id != r.event_id)
        })
        .unwrap();
    assert_eq!(out.response.batch_item_failures.len(), 1);
    assert_eq!(
        out.response.batch_item_failures[0]
            .item_identifier
            .as_deref(),
        Some(records[after_victim].seq.as_str())
    );
    // Nothing later was sent for the victim group: it holds only its first message.
    assert_eq!(
        queue
            .accepted()
            .iter()
            .filter(|m| m.group_id == victim)
            .count(),
        1
    );
    // Other groups flowed: every event of every other group arrived.
    for r in &records {
        let g = group_id(bucket("Orders", &CanonicalKey::of(&r.keys), 3));
        if g != victim {
            assert!(
                got.iter().any(|(_, e)| e.event_id == r.event_id),
                "{} lost",
                r.event_id
            );
        }
    }
    assert_eq!(queue.same_group_violations(), 0);
    assert_eq!(out.metrics.get(names::SEND_FAILURES), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn throttling_and_failed_calls_are_retried() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 8, 16 * 1024);
    let (event, records) = synthetic(200, 50, 500);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    queue.set_call_faults(move |_| {
        (c.fetch_add(1, Ordering::SeqCst) < 2)
            .then(|| AwsError::retryable("SendMessageBatch", "ServiceUnavailable", "try later"))
    });
    let entries = Arc::new(AtomicUsize::new(0));
    let n = entries.clone();
    queue.set_entry_faults(move |_| {
        (n.fetch_add(1, Ordering::SeqCst) % 3 == 0).then_some(EntryFault::Retryable)
    });
    let out = f.forward(event.event(), deadline()).await;
    assert!(
        out.response.batch_item_failures.is_empty(),
        "{:?}",
        out.response
    );
    assert_eq!(delivered(&queue).len(), records.len());
    assert!(out.metrics.get(names::SEND_RETRIES).unwrap() > 0.0);
    assert_eq!(queue.same_group_violations(), 0);
}

/// An entry SQS queued but answered as failed (a response lost) is sent
/// again in the same invocation with the same deduplication id, so it is
/// queued once (group.rs: dedup ids are scoped to one invocation, and a
/// retry inside it reuses them).
#[tokio::test(start_paused = true)]
async fn an_ambiguous_failure_is_retried_under_the_same_deduplication_id() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 8, 16 * 1024);
    let (event, records) = synthetic(200, 50, 500);
    let first = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let seen = first.clone();
    queue.set_entry_faults(move |e| {
        // Each message's first send is queued but answered as failed.
        seen.lock()
            .unwrap()
            .insert(e.body.clone())
            .then_some(EntryFault::Ambiguous)
    });
    let out = f.forward(event.event(), deadline()).await;
    assert!(
        out.response.batch_item_failures.is_empty(),
        "{:?}",
        out.response
    );
    assert!(out.metrics.get(names::SEND_RETRIES).unwrap() > 0.0);
    // Every message was sent twice, and queued once.
    assert_eq!(queue.accepted_entries().len(), 2 * queue.accepted().len());
    assert_eq!(delivered(&queue).len(), records.len());
}

/// helper-55 #4: an endpoint whose batch limit is below the forwarder's
/// (here 20 KiB against the default 1 MiB) refuses a whole call as too
/// long, a sender fault. The calls are split on the retry instead of the
/// same batch failing until the stream gives it up.
#[tokio::test(start_paused = true)]
async fn a_call_too_long_for_the_endpoint_is_sent_again_in_smaller_calls() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 8, 16 * 1024);
    let (event, records) = synthetic(200, 50, 500);
    let refused = Arc::new(AtomicUsize::new(0));
    let r = refused.clone();
    queue.set_call_faults(move |entries| {
        let bytes: usize = entries.iter().map(|e| e.body.len()).sum();
        (bytes > 20 * 1024).then(|| {
            r.fetch_add(1, Ordering::SeqCst);
            AwsError::permanent(
                "SendMessageBatch",
                "AWS.SimpleQueueService.BatchRequestTooLong",
                "Batch requests cannot be longer than 20480 bytes",
            )
        })
    });
    let out = f.forward(event.event(), deadline()).await;
    assert!(
        out.response.batch_item_failures.is_empty(),
        "{:?}",
        out.response
    );
    assert!(refused.load(Ordering::SeqCst) > 0, "the limit was hit");
    assert_eq!(delivered(&queue).len(), records.len());
    assert_eq!(queue.same_group_violations(), 0);
}

#[tokio::test(start_paused = true)]
async fn no_time_left_means_nothing_sent_and_everything_reported() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 4, 256 * 1024);
    let (event, records) = synthetic(10, 5, 10);
    let out = f
        .forward(
            event.event(),
            tokio::time::Instant::now() + Duration::from_millis(500),
        )
        .await;
    assert_eq!(queue.calls(), 0);
    assert_eq!(
        out.response.batch_item_failures[0]
            .item_identifier
            .as_deref(),
        Some(records[0].seq.as_str())
    );
}

/// A `SendMessageBatch` call that hangs is abandoned before the deadline:
/// the batch is reported from its first unsent record instead of Lambda
/// killing the invocation mid-send.
#[tokio::test(start_paused = true)]
async fn a_hung_send_is_abandoned_before_the_deadline() {
    let queue = FakeFifo::new(5);
    queue.set_latency(|_| Duration::from_secs(600));
    let f = forwarder(&queue, 4, 256 * 1024);
    let (event, records) = synthetic(6, 6, 10);
    let start = tokio::time::Instant::now();
    let out = f
        .forward(event.event(), start + Duration::from_secs(30))
        .await;
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        out.response.batch_item_failures[0]
            .item_identifier
            .as_deref(),
        Some(records[0].seq.as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn a_record_without_keys_is_reported_not_skipped() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 4, 256 * 1024);
    let (_, mut records) = synthetic(6, 6, 10);
    records[3].keys.clear();
    let out = f
        .forward(stream_event("Orders", &records).event(), deadline())
        .await;
    assert_eq!(
        out.response.batch_item_failures[0]
            .item_identifier
            .as_deref(),
        Some(records[3].seq.as_str())
    );
    let ids: Vec<String> = delivered(&queue)
        .into_iter()
        .map(|(_, e)| e.event_id)
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids
        .iter()
        .all(|id| ["ev-0", "ev-1", "ev-2"].contains(&id.as_str())));
    assert_eq!(out.metrics.get(names::BAD_RECORDS), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn unknown_event_names_and_oversized_items_become_refetch_markers() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 1, 16 * 1024);
    let (_, mut records) = synthetic(3, 3, 10);
    records[0].event_name = "UPSERT".into();
    records[1]
        .new_image
        .as_mut()
        .unwrap()
        .insert("huge".into(), V::S("h".repeat(20 * 1024)));
    let out = f
        .forward(stream_event("Orders", &records).event(), deadline())
        .await;
    assert!(out.response.batch_item_failures.is_empty());
    let got = delivered(&queue);
    assert_eq!(got.len(), 3, "nothing dropped");
    assert!(got[0].1.refetch && got[1].1.refetch && !got[2].1.refetch);
    assert!(got[1].1.new_image.is_none());
    assert_eq!(out.metrics.get(names::REFETCH_MARKERS), Some(2.0));
}

/// A queue that accepts every entry after a pause, and records the most
/// calls and message-body bytes it had in flight at once, the largest
/// call, and how many calls.
#[derive(Default)]
struct Gauge {
    now: std::sync::Mutex<(usize, usize)>,
    most: std::sync::Mutex<(usize, usize)>,
    largest: std::sync::Mutex<usize>,
    calls: AtomicUsize,
    accepted: AtomicUsize,
}

impl relay_aws::QueueSender for Gauge {
    async fn send_batch(
        &self,
        entries: Vec<relay_aws::SendEntry>,
    ) -> Result<HashMap<String, relay_aws::EntryStatus>, AwsError> {
        let bytes: usize = entries.iter().map(|e| e.body.len()).sum();
        self.calls.fetch_add(1, Ordering::SeqCst);
        {
            let mut largest = self.largest.lock().unwrap();
            *largest = (*largest).max(bytes);
            let mut now = self.now.lock().unwrap();
            *now = (now.0 + 1, now.1 + bytes);
            let mut most = self.most.lock().unwrap();
            *most = (most.0.max(now.0), most.1.max(now.1));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        {
            let mut now = self.now.lock().unwrap();
            *now = (now.0 - 1, now.1 - bytes);
        }
        self.accepted.fetch_add(entries.len(), Ordering::SeqCst);
        Ok(entries
            .into_iter()
            .map(|e| (e.id, relay_aws::EntryStatus::Accepted))
            .collect())
    }
}

/// What one forwarder run on a [`Gauge`] saw.
struct Seen {
    /// Most calls, and most body bytes, in flight at once.
    most: (usize, usize),
    largest: usize,
    calls: usize,
    took: Duration,
    sent: f64,
}

/// The send window's invariant (`send_plan::Window`): a large batch's
/// bodies are handed to SQS within `SEND_IN_FLIGHT_BYTES` at a time, not
/// all at once, so its peak memory is bounded; the window refills as calls
/// complete; small calls are bounded by `SEND_CONCURRENCY` alone. Every
/// message still goes.
#[tokio::test(start_paused = true)]
async fn bodies_in_flight_stay_within_the_send_window() {
    // 64 groups of ~60 KB: one round of 7 calls of up to 10 entries.
    let records: Vec<Record> = (0..640)
        .map(|i| change(i, &format!("item-{i}"), 6_000, true))
        .collect();
    let text = relay_aws::fake::events::stream_event_value("Orders", &records).to_string();
    let run = |budget: usize| {
        let text = text.clone();
        async move {
            let mut config = config(64, 256 * 1024);
            config.send_in_flight_bytes = budget;
            let f = Forwarder {
                config,
                queue: Gauge::default(),
                metrics: NoMetrics,
                clock: relay_aws::runtime::Clock::wall(),
            };
            let started = tokio::time::Instant::now();
            let event = serde_json::from_str(&text).unwrap();
            let out = f.forward(event, deadline()).await;
            let took = started.elapsed();
            assert!(out.response.batch_item_failures.is_empty());
            let sent = out.metrics.get(names::MESSAGES_SENT).unwrap();
            assert_eq!(f.queue.accepted.load(Ordering::SeqCst) as f64, sent);
            assert_eq!(out.metrics.get(names::FORWARDED), Some(640.0));
            let most = *f.queue.most.lock().unwrap();
            let largest = *f.queue.largest.lock().unwrap();
            let calls = f.queue.calls.load(Ordering::SeqCst);
            Seen {
                most,
                largest,
                calls,
                took,
                sent,
            }
        }
    };
    let one_call = Duration::from_millis(20);
    let budget = 1_600_000;
    let s = run(budget).await;
    assert!(s.sent >= 64.0, "one message per group at least: {}", s.sent);
    let (calls, bytes) = s.most;
    assert!(
        bytes <= budget,
        "{bytes} body bytes in flight, over {budget}"
    );
    // Two of the largest calls fit the budget, so the window can, and
    // does, keep two in flight...
    assert!(
        2 * s.largest <= budget,
        "calls of up to {} bytes",
        s.largest
    );
    assert!(calls >= 2, "the window still sends concurrently: {calls}");
    // ...and refills as calls complete: any two calls fit, so at least two
    // are in flight while two wait, and the round takes at most half the
    // calls' 20 ms each (the clock is paused), rounded up.
    assert!(s.calls >= 4, "{} calls", s.calls);
    let pairs = one_call * s.calls.div_ceil(2) as u32;
    assert!(s.took <= pairs, "{:?} for {} calls", s.took, s.calls);
    // With room for everything, the call count is the bound.
    let s = run(64 * 1024 * 1024).await;
    assert_eq!(s.most.0, 4, "SEND_CONCURRENCY calls in flight");
    assert!(
        s.most.1 > budget,
        "four calls hold more than the budget: {}",
        s.most.1
    );
    // A budget smaller than one call still sends, one call at a time.
    let s = run(1_000).await;
    assert_eq!(s.most.0, 1);
    assert!(s.took >= one_call * s.calls as u32);
    assert!(s.sent >= 64.0);
}

/// `main.rs` hands the invocation's body to `handle_body`, which reads it
/// in place: the same messages as a plain read.
#[tokio::test(start_paused = true)]
async fn the_body_handled_as_main_does_forwards_the_same() {
    let (via_body, direct) = (FakeFifo::new(5), FakeFifo::new(5));
    let body = bytes::Bytes::from_static(AWS_SAMPLES.as_bytes());
    let response = forwarder(&via_body, 4, 256 * 1024)
        .handle_body(body, deadline())
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    forwarder(&direct, 4, 256 * 1024)
        .forward(serde_json::from_str(AWS_SAMPLES).unwrap(), deadline())
        .await;
    let events =
        |q: &FakeFifo| -> Vec<ChangeEvent> { delivered(q).into_iter().map(|(_, e)| e).collect() };
    assert!(!events(&direct).is_empty());
    assert_eq!(events(&via_body), events(&direct));
    // A body that is not a batch fails the invocation, and sends nothing.
    let none = FakeFifo::new(5);
    let e = forwarder(&none, 4, 256 * 1024)
        .handle_body(&b"{\"Records\": [{}]}"[..], deadline())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing field `eventID`"), "{e}");
    assert!(delivered(&none).is_empty());
}

/// `main.rs`'s wiring: `RawBody` as a layer of the runtime takes the body,
/// the runtime reads the handler's payload (`()`) from what it left, and
/// `Forwarder::invoke` takes the body back by request id.
#[tokio::test(start_paused = true)]
async fn an_invocation_through_the_body_layer_forwards_its_batch() {
    use lambda_runtime::tower::Layer;
    use lambda_runtime::{service_fn, LambdaEvent, LambdaInvocation, Service};

    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 4, 256 * 1024);
    let raw = relay_forwarder::RawBody::default();
    let invocation = |id: &str, body: &'static str| {
        let mut context = lambda_runtime::Context::default();
        context.request_id = id.to_string();
        context.deadline = (relay_aws::runtime::now_ms() + 60_000) as u64;
        LambdaInvocation {
            parts: http::Response::new(()).into_parts().0,
            body: bytes::Bytes::from_static(body.as_bytes()),
            context,
        }
    };
    // Below the layer, as lambda_runtime: the payload read from the body it
    // is handed, then the handler.
    let (f, raw_ref) = (&f, &raw);
    let runtime = service_fn(move |inv: LambdaInvocation| async move {
        let payload: () = serde_json::from_slice(&inv.body)?;
        let response = f
            .invoke(raw_ref, LambdaEvent::new(payload, inv.context))
            .await
            .map_err(|d| d.error_message)?;
        assert!(response.batch_item_failures.is_empty());
        Ok::<(), lambda_runtime::Error>(())
    });
    let mut svc = raw.layer(runtime);
    svc.call(invocation("r-1", AWS_SAMPLES)).await.unwrap();
    assert!(!delivered(&queue).is_empty());
    // A body that is not a batch fails its invocation, and says so.
    let e = svc.call(invocation("r-2", "{}")).await.unwrap_err();
    assert!(e.to_string().contains("missing field `Records`"), "{e}");
}

/// DESIGN's oversized records: a record whose keys cannot fit a message
/// even as a refetch marker is reported failed (Lambda retries it, then
/// hands it to the stream failure queue), never skipped; the records
/// before it are sent, and none after it (they follow it on the retry).
#[tokio::test(start_paused = true)]
async fn a_record_too_large_even_as_a_marker_is_reported_not_skipped() {
    let queue = FakeFifo::new(5);
    let f = forwarder(&queue, 4, 1024);
    let mut records: Vec<Record> = (0..6)
        .map(|i| change(i, &format!("item-{i}"), 10, true))
        .collect();
    let huge = "k".repeat(2048);
    records[3] = change(3, &huge, 10, true);
    let body = stream_event("Orders", &records).0;
    let event: Event<'_> = serde_json::from_str(&body).unwrap();
    let out = f.forward(event, deadline()).await;
    let failed: Vec<&str> = out
        .response
        .batch_item_failures
        .iter()
        .filter_map(|x| x.item_identifier.as_deref())
        .collect();
    assert_eq!(failed, vec![records[3].seq.as_str()]);
    let mut sent: Vec<String> = delivered(&queue)
        .into_iter()
        .map(|(_, e)| e.event_id)
        .collect();
    sent.sort();
    assert_eq!(sent, vec!["ev-0", "ev-1", "ev-2"]);
}
