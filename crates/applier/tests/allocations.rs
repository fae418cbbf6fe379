//! Allocation counts of the real handlers, JSON in, on the recording trait
//! implementations (`relay_aws::fake::recorders`), at B = 100, 1,000 and
//! 10,000 stream records: per event they are flat in B and within a
//! budget. Counts, not time: this pins the fixes of the batch-size
//! superlinearity (BENCHMARKS.md, "CPU per event at the handler level"),
//! whose cause was allocator work (records and images cloned instead of
//! moved, maps rebuilt, a buffer per message), and fails if one returns.
//!
//! One test in this binary: the counters are process-wide.

use relay_alloc_count::{reset_peak, snapshot, Snapshot};
use relay_applier::{Applier, Messages};
use relay_aws::fake::recorders::{NullMetrics, NullTables, RecordingQueue};
use relay_aws::fake::workload::{applier_config, forwarder_config, sqs_json, stream_json};
use relay_forwarder::{read_body, Forwarder};
use std::hint::black_box;

#[global_allocator]
static ALLOC: relay_alloc_count::Counting = relay_alloc_count::Counting;

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(600)
}

/// Per event: allocations, bytes allocated, peak bytes live above the
/// input (the JSON text, already in memory as Lambda's runtime has it).
#[derive(Debug, Clone, Copy)]
struct PerEvent {
    allocations: f64,
    bytes: f64,
    peak: f64,
}

fn per_event(used: Snapshot, events: usize) -> PerEvent {
    let n = events as f64;
    PerEvent {
        allocations: used.allocations as f64 / n,
        bytes: used.bytes as f64 / n,
        peak: used.peak as f64 / n,
    }
}

fn forwarder(keep: bool) -> Forwarder<RecordingQueue, NullMetrics> {
    Forwarder {
        config: forwarder_config("off"),
        queue: RecordingQueue::new(keep),
        metrics: NullMetrics,
        clock: relay_aws::runtime::Clock::wall(),
    }
}

/// The forwarder over one stream batch of `b` records, measured on a
/// recorder that keeps nothing (so every byte counted is the handler's);
/// then, unmeasured, the messages it sends, 10 an SQS event, as the
/// applier's input.
fn forward(rt: &tokio::runtime::Runtime, b: usize) -> (PerEvent, PerEvent, Vec<String>) {
    let stream = stream_json(b, 7);
    let f = forwarder(false);
    // The read alone (the forwarder's own StreamEvent, in place), printed
    // for the record.
    let before = reset_peak();
    drop(black_box(
        read_body(stream.as_bytes()).expect("stream event"),
    ));
    let parsed = snapshot().since(&before);
    // As the Lambda runs it: the invocation's body (its bytes are the
    // runtime's, not counted), read in place, packed, sent.
    let before = reset_peak();
    let r = rt
        .block_on(f.handle_body(stream.as_bytes(), deadline()))
        .expect("a stream batch");
    let used = snapshot().since(&before);
    assert!(r.batch_item_failures.is_empty(), "forwarder failed records");

    let keeping = forwarder(true);
    let r = rt
        .block_on(keeping.handle_body(stream.as_bytes(), deadline()))
        .expect("a stream batch");
    assert!(r.batch_item_failures.is_empty(), "forwarder failed records");
    let events = keeping.queue.kept().chunks(10).map(sqs_json).collect();
    (per_event(used, b), per_event(parsed, b), events)
}

fn apply(rt: &tokio::runtime::Runtime, b: usize, events: &[String]) -> PerEvent {
    let a = Applier::new(
        applier_config("off"),
        NullTables::default(),
        NullTables::default(),
        NullTables::default(),
        NullMetrics,
    );
    let before = reset_peak();
    for e in events {
        let ev: Messages = serde_json::from_str(e).expect("SQS event");
        let r = rt.block_on(a.handle(ev, deadline()));
        assert!(r.batch_item_failures.is_empty(), "applier failed messages");
    }
    let used = snapshot().since(&before);
    assert!(
        a.target.writes.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "nothing written"
    );
    per_event(used, b)
}

#[test]
fn allocations_per_event_are_flat_in_batch_size_and_within_budget() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    // Warm-up: lazy statics, the runtime's first allocations.
    let (_, _, warm) = forward(&rt, 10);
    apply(&rt, 10, &warm);

    let mut rows = Vec::new();
    for b in [100usize, 1_000, 10_000] {
        let (f, parse, events) = forward(&rt, b);
        let a = apply(&rt, b, &events);
        eprintln!("B={b:>6}: forwarder {f:.1?} (its parse {parse:.1?}); applier {a:.1?}");
        rows.push((b, f, a));
    }
    let (_, f100, a100) = rows[0];
    for &(b, f, a) in &rows[1..] {
        // Flat: per event at B within 10% of per event at 100.
        for (what, at_b, at_100) in [
            ("forwarder allocations", f.allocations, f100.allocations),
            ("forwarder bytes", f.bytes, f100.bytes),
            ("forwarder peak", f.peak, f100.peak),
            ("applier allocations", a.allocations, a100.allocations),
            ("applier bytes", a.bytes, a100.bytes),
            ("applier peak", a.peak, a100.peak),
        ] {
            assert!(
                at_b <= at_100 * 1.10,
                "{what} per event grows with the batch: {at_b:.1} at B={b}, {at_100:.1} at B=100"
            );
        }
    }
    // Budgets per event at each B (measured, plus 5%: the counts are
    // deterministic for a given build). A copy of each event's images
    // (the forwarder reading an owned payload, as lambda_runtime's typed
    // handlers do) adds ~1.8 allocations and ~2 KB per event; going back to parsing
    // images into aws_lambda_events' maps adds ~140 allocations; an applier
    // that builds the old images again adds ~65 allocations, and one that
    // copies each item on its way from the events to the writes (in the
    // plan, or into the adapter's writes) ~41 per copy.
    for (&(b, f, a), budget) in rows.iter().zip(BUDGETS) {
        assert_eq!(b, budget.b);
        let within = |x: PerEvent, [allocations, bytes, peak]: [f64; 3]| {
            x.allocations <= allocations && x.bytes <= bytes && x.peak <= peak
        };
        assert!(
            within(f, budget.forwarder),
            "forwarder at B={b}: {f:.1?} over {budget:?}"
        );
        assert!(
            within(a, budget.applier),
            "applier at B={b}: {a:.1?} over {budget:?}"
        );
    }
}

/// Per event at one B: [allocations, bytes allocated, peak live bytes].
#[derive(Debug)]
struct Budget {
    b: usize,
    forwarder: [f64; 3],
    applier: [f64; 3],
}

// Measured (`cargo test -p relay-applier --test allocations -- --nocapture`
// prints them), per event at B = 100 / 1,000 / 10,000: forwarder 12.4 /
// 8.5 / 8.1 allocations, 10.2 / 8.9 / 8.2 KB allocated, 4.1 / 3.4 /
// 3.1 KB peak (its read: 7.0 allocations, ~0.7–0.9 KB peak); applier
// 70.4 / 67.2 / 66.4 allocations, 8.7 / 8.8 / 8.4 KB allocated, 2.2 /
// 1.7 / 0.6 KB peak (one invocation's peak over B). A reallocation counts
// as an allocation of its new size.
// Before the applier read its SQS event as `Messages` (id, group, body;
// as `SqsEvent`, every field and attribute of every message was a
// `String`): applier 77.2 / 67.9 / 66.6 allocations, 9.2 / 8.8 / 8.4 KB,
// 2.3 / 1.7 / 0.6 KB peak.
// Before items' maps were made at their size (`item::json`'s reused entry
// buffers; the workload's 14-name images grew twice): applier 79.0 / 69.7
// / 68.4 allocations, 10.1 / 9.7 / 9.3 KB.
// Before the packer built dedup ids as messages grew (it kept a copy of
// every event id), hashed keys in one buffer (a canonical key was two
// allocations per event, one for its sorted names), and the forwarder
// stopped copying every sequence number for its failure report:
// forwarder 17.9 / 13.5 / 13.1, applier 81.0 / 71.7 / 70.3.
// Before that, before items were read with `item::json::Item` (serde_dynamo's reader
// takes each value's type tag as a `String`, and each binary as a `String`
// before decoding it; the forwarder reads its keys so too, and the
// applier's envelope had a second array of wire events): forwarder 19.9 /
// 15.5 / 15.1, applier 107.7 / 98.0 / 96.6 allocations, 10.4 / 10.0 /
// 9.6 KB.
// Before the forwarder read its images, event names and source ARNs in
// place (lambda_runtime's owned payload: each copied out of the body; the
// names and ARNs were 2 of these allocations per event): 29.1 / 24.7 / 24.3
// allocations, 12.5 / 11.3 / 10.7 KB, 6.1 / 5.4 / 5.1 KB peak. Before
// envelope v2's bodies were taken from the SQS event, the applier: 108.1 /
// 98.0 / 96.6 allocations, 11.6 / 11.0 / 10.1 KB, 3.1 / 2.4 / 0.9 KB peak.
// Before the applier's plan and writes borrowed the events' images (the
// plan copied each item, and so did the writes handed to the adapter):
// 191.4 / 179.5 / 173.3 allocations, 17.4 / 16.8 / 15.5 KB, 5.5 / 4.1 /
// 1.4 KB peak; with only the writes' copy gone, 149.5 / 139.4 / 138.0.
// Before the forwarder kept images as the stream's JSON (it parsed them
// into aws_lambda_events' maps) and sized message bodies to fit: 166.7 /
// 162.7 / 162.3 allocations, 33.0 / 16.4 / 16.6 KB, 27.6 / 10.2 / 8.7 KB
// peak. Before the applier skipped the old images it does not use: 258.6
// / 247.0 / 240.8 allocations.
const BUDGETS: [Budget; 3] = [
    Budget {
        b: 100,
        forwarder: [13.0, 10_695.0, 4_335.0],
        applier: [73.9, 9_160.0, 2_290.0],
    },
    Budget {
        b: 1_000,
        forwarder: [8.9, 9_305.0, 3_635.0],
        applier: [70.6, 9_215.0, 1_745.0],
    },
    Budget {
        b: 10_000,
        forwarder: [8.5, 8_640.0, 3_265.0],
        applier: [69.7, 8_810.0, 630.0],
    },
];
