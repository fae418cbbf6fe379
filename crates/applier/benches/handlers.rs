//! CPU per event at the level users pay for: the real
//! `Forwarder::handle_body` and `Applier::handle`, JSON in (the Lambda event
//! as the runtime hands it over, read as each Lambda reads it in every
//! handle, naive, SDK, decode, read-body and parse-runtime row: the
//! forwarder reads the body itself, the applier and the naive handlers
//! through lambda_runtime's typed handler; the `parse` and `parse-ale` rows use
//! `serde_json::from_str` alone, and the floor rows `scan`, `check`,
//! `sdk-send` and `sdk-write` take their input ready-made, as each says),
//! with recording implementations
//! of the relay-aws traits (no network, nothing kept but counts), against a
//! naive one-message-per-event / one-PutItem-per-event handler measured in
//! the same run.
//!
//! `cargo bench -p relay-applier --bench handlers`
//!
//! Rows (B = stream batch size):
//! * `forwarder/parse/B`: `serde_json` → the forwarder's own stream event
//!   (`relay_core::stream::StreamEvent`: keys parsed, images checked and
//!   kept as JSON) only;
//! * `forwarder/parse-ale/B`: `serde_json` → `aws_lambda_events`' stream
//!   event (every image built into maps) only: what the forwarder parsed
//!   before, and what the naive rows parse;
//! * `forwarder/read-body/B`: the same parse as the forwarder's Lambda
//!   reads the invocation's body (`relay_forwarder::read_body`: `from_slice`,
//!   the images borrowed in place): what it pays to read (before round 7,
//!   `parse-runtime`: lambda_runtime's read, `serde_path_to_error` over
//!   `from_slice` into an owned event, a `String` per map key passed);
//! * `forwarder/scan/B`: `serde_json` reading the event's text into
//!   `IgnoredAny` (nothing kept, nothing checked): what reading it at all
//!   costs;
//! * `forwarder/check/B`: the image check alone
//!   (`relay_core::stream::check`) over every image of the batch, already
//!   captured;
//! * `forwarder/handle/B`: `Forwarder::handle_body`, as `main.rs` runs it:
//!   `read-body`, records → events → pack into G=32 groups →
//!   SendMessageBatch calls on the recorder;
//! * `forwarder/naive/B`: `aws_lambda_events` parse + one message per
//!   event, one send call each;
//! * `forwarder/sdk-send/B`: the messages `handle` made of the batch, built
//!   beforehand, sent 10 a call through the SDK client on the canned
//!   connector (below): what the SDK alone costs the forwarder per event;
//!   `forwarder/sdk-send-prose/B` the same with prose in every payload (an
//!   apostrophe every 40 bytes, a newline every 80), which the SDK escapes;
//! * `applier/parse/B`: `serde_json` → `aws_lambda_events` SQS event only,
//!   for the messages the forwarder made of one stream batch, 10 messages
//!   an invocation (the FIFO maximum), as the naive rows read it;
//!   `applier/parse-runtime/B` the same messages read as the applier's
//!   Lambda reads them: lambda_runtime's reader into `Messages` (id, group
//!   and body only; before round 11, into `aws_lambda_events`' SQS event);
//! * `applier/decode/B`: parse + every message's envelope decoded into
//!   events (old images skipped, as the applier without a key-changing
//!   transform reads them), nothing else: what this applier pays before
//!   its own work (this decoder's cost, not a proven floor);
//! * `applier/items-clone/B`: the batch's events, decoded beforehand,
//!   cloned and dropped: the item model's allocations and copies alone (a
//!   `String` per name and value, a map per item: the shape the SDK's typed
//!   `BatchWriteItem` takes), no JSON read;
//! * `applier/to-sdk/B`: each of those events' new image (or keys)
//!   converted into the SDK's attribute maps
//!   (`relay_aws::convert::to_sdk_item`): the copy the SDK path makes of
//!   every write, with every map hashed anew;
//! * `applier/sdk-control/B`: the control item's consistent read and the
//!   conditional commit through the SDK on the canned connector, once per
//!   invocation of the batch: what each invocation pays the SDK before and
//!   after its writes, per event;
//! * `applier/sdk-write/B`: the last write of each key of the batch, built
//!   beforehand, written 25 a call through the SDK client on the canned
//!   connector: what the SDK alone costs the applier per event;
//! * `applier/handle/B`: parse + `Applier::handle` of each of those
//!   invocations (decode, control item, cutoff, coalesce, plan,
//!   BatchWriteItem calls on the recorder, commit);
//! * `applier/naive/B`: the same B events as one message each, 10 an
//!   invocation, parsed + one PutItem/DeleteItem per event on the recorder.
//! * `…/sdk/B` and `…/naive-sdk/B`: the `handle` and `naive` rows again on
//!   the real SDK clients (`relay_aws::sdk`: requests built, serialised and
//!   signed, responses parsed) over a canned-response HTTP connector, no
//!   network (`handlers/canned.rs`).
//!
//! Per-event figures: divide by B (criterion's throughput line does).

use std::sync::atomic::Ordering;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::sqs::SqsEvent;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay_applier::Messages;
use relay_aws::fake::recorders::{NullTables, RecordingQueue};
use relay_aws::fake::workload::MIGRATION;
use relay_aws::{ControlStore, QueueSender, SendEntry, TargetWriter, Write};
use relay_core::envelope::decode_without_old_images;
use relay_core::stream::StreamEvent;
use relay_forwarder::read_body;
use serde::de::IgnoredAny;

#[path = "handlers/canned.rs"]
mod canned;
#[path = "handlers/common.rs"]
mod common;
use common::*;

/// 80 bytes of a version 2 body holding prose: two apostrophes (`"` once
/// exchanged) and a newline (`\n` in JSON).
pub const PROSE: &str =
    "Don\"t ship it; the customer\"s order is late again and support is on it.\\nOK.....";

fn handlers(c: &mut Criterion) {
    let rt = runtime();
    let s = sdk(&rt);
    for b in [100usize, 1000] {
        let Batch {
            stream,
            kept: f_kept,
            packed,
            naive,
        } = batch(&rt, b);

        let mut g = c.benchmark_group("forwarder");
        g.throughput(Throughput::Elements(b as u64));
        g.bench_function(BenchmarkId::new("parse", b), |bn| {
            bn.iter(|| black_box(serde_json::from_str::<StreamEvent<'_>>(&stream).expect("parse")))
        });
        g.bench_function(BenchmarkId::new("parse-ale", b), |bn| {
            bn.iter(|| black_box(serde_json::from_str::<Event>(&stream).expect("parse")))
        });
        g.bench_function(BenchmarkId::new("read-body", b), |bn| {
            bn.iter(|| black_box(read_body(stream.as_bytes()).expect("parse")))
        });
        // Floors: reading the event's text at all, nothing kept; and the
        // image check alone, on images already captured.
        g.bench_function(BenchmarkId::new("scan", b), |bn| {
            bn.iter(|| {
                black_box(serde_json::from_slice::<IgnoredAny>(stream.as_bytes()).expect("scan"))
            })
        });
        let images: Vec<String> = {
            let ev: StreamEvent<'_> = serde_json::from_str(&stream).expect("stream event");
            ev.records
                .iter()
                .flat_map(|r| [&r.change.new_image, &r.change.old_image])
                .flatten()
                .map(|i| i.get().to_owned())
                .collect()
        };
        g.bench_function(BenchmarkId::new("check", b), |bn| {
            bn.iter(|| {
                for i in &images {
                    black_box(relay_core::stream::check(i).expect("check"));
                }
            })
        });
        let f = forwarder(false);
        g.bench_function(BenchmarkId::new("handle", b), |bn| {
            bn.iter(|| black_box(rt.block_on(f.handle_body(stream.as_bytes(), deadline()))))
        });
        let q = RecordingQueue::default();
        g.bench_function(BenchmarkId::new("naive", b), |bn| {
            bn.iter(|| {
                let ev: Event = as_runtime(stream.as_bytes());
                black_box(rt.block_on(naive_forward(&q, ev)))
            })
        });
        // The same on the SDK clients; checked whole before it is timed.
        let r = rt
            .block_on(s.forwarder.handle_body(stream.as_bytes(), deadline()))
            .expect("a stream batch");
        assert!(
            r.batch_item_failures.is_empty(),
            "SDK forwarder failed records"
        );
        assert!(
            s.calls.send_batch.swap(0, Ordering::Relaxed) > 0,
            "nothing sent"
        );
        g.bench_function(BenchmarkId::new("sdk", b), |bn| {
            bn.iter(|| {
                black_box(rt.block_on(s.forwarder.handle_body(stream.as_bytes(), deadline())))
            })
        });
        // Floor on the SDK: the messages this batch made, sent as they are
        // (10 a call) through the SDK client on the canned connector.
        let calls: Vec<Vec<SendEntry>> = f_kept
            .chunks(10)
            .enumerate()
            .map(|(c, chunk)| {
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, (body, group))| SendEntry {
                        id: i.to_string(),
                        body: body.clone(),
                        group_id: group.clone(),
                        dedup_id: format!("{c}-{i}"),
                    })
                    .collect()
            })
            .collect();
        g.bench_function(BenchmarkId::new("sdk-send", b), |bn| {
            bn.iter(|| {
                for call in &calls {
                    black_box(rt.block_on(s.queue.send_batch(call.clone())).expect("send"));
                }
            })
        });
        // The same messages with prose in every payload: an apostrophe
        // every 40 bytes (a `"` in a version 2 body, which the SDK escapes)
        // and a newline (`\n`) every 80.
        let prose: Vec<Vec<SendEntry>> = calls
            .iter()
            .map(|call| {
                call.iter()
                    .map(|e| SendEntry {
                        body: e.body.replace(&"x".repeat(80), PROSE),
                        ..e.clone()
                    })
                    .collect()
            })
            .collect();
        assert_eq!(PROSE.len(), 80);
        assert!(prose[0][0].body.contains("Don\"t"), "no payload replaced");
        g.bench_function(BenchmarkId::new("sdk-send-prose", b), |bn| {
            bn.iter(|| {
                for call in &prose {
                    black_box(rt.block_on(s.queue.send_batch(call.clone())).expect("send"));
                }
            })
        });
        g.bench_function(BenchmarkId::new("naive-sdk", b), |bn| {
            bn.iter(|| {
                let ev: Event = as_runtime(stream.as_bytes());
                black_box(rt.block_on(naive_forward(&s.queue, ev)))
            })
        });
        g.finish();

        let mut g = c.benchmark_group("applier");
        g.throughput(Throughput::Elements(b as u64));
        // Each row applies the whole stream batch: every invocation its
        // chunk of messages, parsed and handled.
        g.bench_function(BenchmarkId::new("parse", b), |bn| {
            bn.iter(|| {
                for p in &packed {
                    black_box(serde_json::from_str::<SqsEvent>(p).expect("parse"));
                }
            })
        });
        g.bench_function(BenchmarkId::new("parse-runtime", b), |bn| {
            bn.iter(|| {
                for p in &packed {
                    black_box(as_runtime::<Messages>(p.as_bytes()));
                }
            })
        });
        let bodies: Vec<String> = packed
            .iter()
            .flat_map(|p| serde_json::from_str::<SqsEvent>(p).expect("parse").records)
            .map(|m| m.body.unwrap_or_default())
            .collect();
        // Every event of the batch, decoded once (the rows below start from it).
        let decoded: Vec<_> = bodies
            .iter()
            .flat_map(|body| decode_without_old_images(body).expect("decode").ev)
            .collect();
        assert_eq!(decoded.len(), b, "every event of the batch");
        // Floor on the SDK: the last write of each key in the batch,
        // written 25 a call through the SDK client on the canned connector.
        let mut last = std::collections::HashMap::new();
        for e in &decoded {
            last.insert(relay_core::item::CanonicalKey::of(&e.keys), e);
        }
        let events: Vec<_> = last.into_values().collect();
        let writes: Vec<Write<'_>> = events
            .iter()
            .map(|e| match &e.new_image {
                Some(img) => Write::Put(img),
                None => Write::Delete(&e.keys),
            })
            .collect();
        g.bench_function(BenchmarkId::new("sdk-write", b), |bn| {
            bn.iter(|| {
                for call in writes.chunks(25) {
                    black_box(rt.block_on(s.target.batch_write(call)).expect("write"));
                }
            })
        });
        // What the applier pays before its own work: the SQS event parsed
        // (each body unescaped) and every envelope decoded into the item
        // maps a write takes, nothing else.
        g.bench_function(BenchmarkId::new("decode", b), |bn| {
            bn.iter(|| {
                for p in &packed {
                    let ev: Messages = as_runtime(p.as_bytes());
                    for m in &ev.records {
                        black_box(decode_without_old_images(m.body.as_str()).expect("decode"));
                    }
                }
            })
        });
        // What the item model costs by itself: every event of the batch,
        // decoded beforehand, cloned and dropped (each name and value a
        // `String`, each item a map, as `decode` builds them and as the SDK's
        // typed API takes them), no JSON read.
        g.bench_function(BenchmarkId::new("items-clone", b), |bn| {
            bn.iter(|| black_box(decoded.clone()))
        });
        // The SDK adapter's copy of each write into the SDK's own maps
        // (`relay_aws::convert::to_sdk_item`, as `sdk-write` pays it): every
        // name and value copied, every map built and hashed anew.
        g.bench_function(BenchmarkId::new("to-sdk", b), |bn| {
            bn.iter(|| {
                for e in &decoded {
                    black_box(relay_aws::convert::to_sdk_item(
                        e.new_image.as_ref().unwrap_or(&e.keys),
                    ));
                }
            })
        });
        let a = applier();
        for p in &packed {
            let ev: Messages = as_runtime(p.as_bytes());
            let r = rt.block_on(a.handle(ev, deadline()));
            assert!(r.batch_item_failures.is_empty(), "applier failed messages");
        }
        let written = a.target.writes.swap(0, Ordering::Relaxed);
        assert!(
            written > 0 && written <= b as u64,
            "{written} writes for {b} events"
        );
        g.bench_function(BenchmarkId::new("handle", b), |bn| {
            bn.iter(|| {
                for p in &packed {
                    let ev: Messages = as_runtime(p.as_bytes());
                    black_box(rt.block_on(a.handle(ev, deadline())));
                }
            })
        });
        let t = NullTables::default();
        g.bench_function(BenchmarkId::new("naive", b), |bn| {
            bn.iter(|| {
                for p in &naive {
                    let ev: SqsEvent = as_runtime(p.as_bytes());
                    black_box(rt.block_on(naive_apply(&t, ev)));
                }
            })
        });
        for p in &packed {
            let ev: Messages = as_runtime(p.as_bytes());
            let r = rt.block_on(s.applier.handle(ev, deadline()));
            assert!(
                r.batch_item_failures.is_empty(),
                "SDK applier failed messages"
            );
        }
        assert!(
            s.calls.batch_write.swap(0, Ordering::Relaxed) > 0,
            "nothing written"
        );
        // The two control-table calls every invocation makes through the
        // SDK (the consistent read it plans under, the conditional commit),
        // once per invocation of the batch, nothing else.
        g.bench_function(BenchmarkId::new("sdk-control", b), |bn| {
            bn.iter(|| {
                for _ in &packed {
                    let state = rt.block_on(s.control.load(MIGRATION)).expect("load");
                    let version = state.expect("control item").version;
                    black_box(rt.block_on(s.control.commit(MIGRATION, version, Some(1))))
                        .expect("commit");
                }
            })
        });
        g.bench_function(BenchmarkId::new("sdk", b), |bn| {
            bn.iter(|| {
                for p in &packed {
                    let ev: Messages = as_runtime(p.as_bytes());
                    black_box(rt.block_on(s.applier.handle(ev, deadline())));
                }
            })
        });
        g.bench_function(BenchmarkId::new("naive-sdk", b), |bn| {
            bn.iter(|| {
                for p in &naive {
                    let ev: SqsEvent = as_runtime(p.as_bytes());
                    black_box(rt.block_on(naive_apply(&s.target, ev)));
                }
            })
        });
        g.finish();
    }
}

criterion_group!(benches, handlers);
criterion_main!(benches);
