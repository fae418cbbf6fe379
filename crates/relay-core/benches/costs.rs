//! Request counts per 1 million events: ddb-relay's packed path against a
//! naive one-message-per-event, one-PutItem-per-event path. Counts, not
//! times: the same on every machine.
//!
//! `cargo bench -p relay-core --bench costs`
//!
//! Model: the stream delivers batches of B events; the forwarder packs each
//! batch into G groups and sends them with SendMessageBatch (<= 10 entries,
//! one per group per call); the applier receives up to 10 messages in send
//! order, coalesces per key and writes with BatchWriteItem (<= 25 per call).
//! The naive path sends one SendMessage per event and writes one PutItem or
//! DeleteItem per event.
#![allow(clippy::print_stdout)] // a bench binary prints its table

use relay_core::apply::{plan_with, Fetched, TtlPolicy, WriteOp};
use relay_core::control::Mode;
use relay_core::envelope::{decode, encode};
use relay_core::item::AttributeValue;
use relay_core::pack::{pack, OutMessage, PackConfig};
use relay_core::send_plan::{BatchLimits, Outcome, SendPlan};
use relay_core::transform::{Declarative, Transform};

mod common;

const SIMULATED: usize = 100_000;
const SCALE: usize = 1_000_000 / SIMULATED;
const CHUNK: usize = 64 * 1024;

#[derive(Default, Clone, Copy)]
struct Counts {
    messages: usize,
    send_requests: usize,
    /// Billed SQS requests: every 64 KB chunk of a send or receive payload
    /// counts as one request, plus one delete call per applier invocation.
    billed: usize,
    applier_invocations: usize,
    write_calls: usize,
    /// Control-item requests: per applier invocation, one consistent read
    /// of the control item and one conditional commit (a second read when
    /// the high-water mark does not advance is not counted).
    control_requests: usize,
    max_groups_in_batch: usize,
}

fn chunks(len: usize) -> usize {
    len.div_ceil(CHUNK).max(1)
}

fn ours(
    events: &[relay_core::event::ChangeEvent],
    batch: usize,
    buckets: u32,
    cap: usize,
    transform: Option<&dyn Transform>,
) -> Counts {
    let cfg = PackConfig {
        buckets,
        max_message_bytes: cap,
        forward_old_image: true,
        old_key_sources: Default::default(),
        envelope_version: relay_core::envelope::VERSION,
    };
    let mut c = Counts::default();
    let mut sent: Vec<OutMessage> = Vec::new();
    for window in events.chunks(batch) {
        let indexed: Vec<_> = window.iter().cloned().enumerate().collect();
        let packed = pack("Orders", &indexed, &cfg, 1).expect("pack");
        c.max_groups_in_batch = c.max_groups_in_batch.max(packed.groups.len());
        let mut plan = SendPlan::new(packed.groups, BatchLimits::default());
        loop {
            let round = plan.next_round();
            if round.is_empty() {
                break;
            }
            for call in round {
                c.send_requests += 1;
                let mut bytes = 0;
                for e in call {
                    let m = plan.message(e).clone();
                    c.messages += 1;
                    bytes += m.body.len();
                    sent.push(m);
                    plan.record(e, Outcome::Accepted);
                }
                c.billed += chunks(bytes);
            }
        }
    }
    for batch in sent.chunks(10) {
        c.applier_invocations += 1;
        c.control_requests += 2;
        // ReceiveMessage (by payload chunks) + DeleteMessageBatch.
        c.billed += chunks(batch.iter().map(|m| m.body.len()).sum()) + 1;
        let decoded: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(i, m)| (i, decode(&m.body).expect("decode").ev))
            .collect();
        let p = plan_with(
            &decoded,
            0,
            TtlPolicy::Replicate,
            0,
            transform,
            Mode::Normal,
            &Fetched::new(),
        );
        // Owned (conditional) writes are one call each; the rest in 25s.
        let owned = p
            .writes
            .iter()
            .filter(|w| matches!(w.op, WriteOp::PutOwned { .. } | WriteOp::DeleteOwned { .. }))
            .count();
        c.write_calls += owned + (p.writes.len() - owned).div_ceil(25);
    }
    c
}

/// The events with an `email` per item in both images (the old image as
/// the stream carries it with NEW_AND_OLD_IMAGES).
fn with_email(events: &[relay_core::event::ChangeEvent]) -> Vec<relay_core::event::ChangeEvent> {
    events
        .iter()
        .cloned()
        .map(|mut e| {
            let email = match e.keys.get("pk") {
                Some(AttributeValue::S(pk)) => AttributeValue::S(format!("{pk}@example.com")),
                _ => AttributeValue::S("?".into()),
            };
            let mut old = e.keys.clone();
            old.insert("email".into(), email.clone());
            if let Some(image) = e.new_image.as_mut() {
                image.insert("email".into(), email);
            }
            e.old_image = Some(old);
            e
        })
        .collect()
}

fn naive(events: &[relay_core::event::ChangeEvent]) -> Counts {
    let mut c = Counts::default();
    let mut sizes = Vec::with_capacity(events.len());
    for e in events {
        let body = encode("Orders", std::slice::from_ref(e));
        c.messages += 1;
        c.send_requests += 1;
        c.billed += chunks(body.len());
        c.write_calls += 1;
        sizes.push(body.len());
    }
    for batch in sizes.chunks(10) {
        c.applier_invocations += 1;
        c.billed += chunks(batch.iter().sum()) + 1;
    }
    c
}

fn row(label: &str, c: Counts, base: Counts) {
    let ratio = |a: usize, b: usize| b as f64 / a.max(1) as f64;
    println!(
        "| {label:<34} | {:>9} | {:>9} | {:>9} | {:>6.1}x | {:>9} | {:>9} | {:>6.1}x | {:>9} |",
        c.messages * SCALE,
        c.send_requests * SCALE,
        c.billed * SCALE,
        ratio(c.billed, base.billed),
        c.applier_invocations * SCALE,
        c.write_calls * SCALE,
        ratio(c.write_calls, base.write_calls),
        c.control_requests * SCALE,
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    println!("Per 1,000,000 events of ~1 KB (simulated {SIMULATED}, scaled x{SCALE}).");
    for (keys, label) in [
        (1_000_000u64, "1M keys (few repeats)"),
        (10_000, "10k keys (hot)"),
    ] {
        let events = common::events(SIMULATED, keys, 1024, 42);
        let base = naive(&events);
        println!("\nWorkload: {label}\n");
        println!("| path | messages | send calls | billed SQS requests | SQS cost cut | applier invocations | DynamoDB write calls | write calls cut | control-item requests |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        row("naive: 1 msg + 1 PutItem per event", base, base);
        for batch in [100usize, 1000] {
            for buckets in [1u32, 8, 32, 64, 256] {
                let c = ours(&events, batch, buckets, 256 * 1024, None);
                row(&format!("packed B={batch} G={buckets}"), c, base);
            }
        }
        let c = ours(&events, 1000, 32, 1024 * 1024, None);
        row("packed B=1000 G=32 cap=1MiB", c, base);
        // A target key from a non-key attribute (uuidv5 of an email that
        // each item keeps): every write is an owned, conditional one.
        let by_email = Declarative::parse(
            "key: [{attribute: id, uuidv5: {from: [email]}}]",
            &["pk".to_string(), "sk".to_string()],
        )
        .expect("spec");
        let emailed = with_email(&events);
        let c = ours(&emailed, 1000, 32, 256 * 1024, Some(&by_email));
        row("packed B=1000 G=32 key=uuidv5(email)", c, base);
    }
}
