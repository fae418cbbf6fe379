//! Instructions per event of the real handlers, counted by callgrind: the
//! same rows, workload and inputs as the `handlers` bench (its doc says
//! what each row runs; one row is this bench's own, below), but counted,
//! not timed. A count is repeatable for the same build on a noisy machine,
//! so a change of a few percent shows; it is not time (a cache miss and an
//! add count the same), so the `handlers` bench stays the figure for time.
//!
//! One row is this bench's own: `applier/raw-floor`, the least an applier
//! that wrote each new image as the JSON it came in (the raw-JSON write
//! path, not built) would do before its own work: the SQS event read as
//! `Messages`, each body copied and its quotes exchanged back as `decode`
//! does, each event's keys built, its new image's extent found and
//! borrowed (`serde_json::value::RawValue`), its old image skipped. No
//! plan, no writes: that path's read, a lower bound on its cost, not a
//! handler.
//!
//! `cargo bench -p relay-applier --bench instructions [-- FILTER]`: every
//! row, or those whose name contains FILTER (`applier/`, say).
//!
//! For each row and B, this binary runs itself under
//! `valgrind --tool=callgrind` twice: the batch set up, the row run once
//! to warm up, then 1 and then 3 more times. The difference over 2 runs,
//! divided by B, is the row's instructions per event: setup and warm-up
//! cancel out. Without valgrind it says so and stops.

#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::process::{Command, Stdio};

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::sqs::SqsEvent;
use relay_applier::Messages;
use relay_core::envelope::decode_without_old_images;
use std::hint::black_box;

#[path = "handlers/canned.rs"]
mod canned;
#[path = "handlers/common.rs"]
mod common;
use common::*;

/// Set in the child: `row B runs`.
const CHILD: &str = "RELAY_INSTRUCTIONS_CHILD";
const ROWS: [&str; 10] = [
    "forwarder/handle",
    "forwarder/naive",
    "forwarder/sdk",
    "forwarder/naive-sdk",
    "applier/decode",
    "applier/raw-floor",
    "applier/handle",
    "applier/naive",
    "applier/sdk",
    "applier/naive-sdk",
];
const SIZES: [usize; 2] = [100, 1000];

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec);
    }
    let valgrind = Command::new("valgrind").arg("--version").output();
    if !valgrind.is_ok_and(|o| o.status.success()) {
        println!("valgrind not found: instruction counts need `valgrind --tool=callgrind`");
        return;
    }
    // `cargo bench` passes `--bench`; the first other argument filters.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    let me = std::env::current_exe().expect("this binary's path");
    println!("instructions per event (callgrind; the runs' difference over 2 runs, / B)");
    println!("{:<22} {:>12} {:>12}", "row", "B=100", "B=1000");
    for row in ROWS.into_iter().filter(|r| r.contains(filter.as_str())) {
        let per: Vec<String> = SIZES
            .iter()
            .map(|&b| {
                let one = count(&me, row, b, 1);
                let three = count(&me, row, b, 3);
                format!("{:>12}", three.saturating_sub(one) / (2 * b as u64))
            })
            .collect();
        println!("{row:<22} {}", per.join(" "));
    }
}

/// Instructions callgrind counts for this binary running `row` `runs`
/// times (after setup and one warm-up run).
fn count(me: &std::path::Path, row: &str, b: usize, runs: usize) -> u64 {
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(me)
        .env(CHILD, format!("{row} {b} {runs}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run valgrind");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{row} B={b}: {text}");
    text.lines()
        .find_map(|l| l.split("Collected : ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{row} B={b}: no count in callgrind's output: {text}"))
}

/// Sets up one batch, runs `row` once to warm up, then `runs` times.
fn child(spec: &str) {
    let mut it = spec.split(' ');
    let (row, b, runs) = match (it.next(), it.next(), it.next()) {
        (Some(r), Some(b), Some(n)) => (
            r,
            b.parse::<usize>().expect("B"),
            n.parse::<usize>().expect("runs"),
        ),
        _ => panic!("{CHILD}: want `row B runs`, got {spec:?}"),
    };
    let rt = runtime();
    let s = sdk(&rt);
    let Batch {
        stream,
        packed,
        naive,
        ..
    } = batch(&rt, b);
    let (fwd, app) = (forwarder(false), applier());
    let (queue, tables) = (
        relay_aws::fake::recorders::RecordingQueue::default(),
        relay_aws::fake::recorders::NullTables::default(),
    );
    let run = || match row {
        "forwarder/handle" => {
            black_box(rt.block_on(fwd.handle_body(stream.as_bytes(), deadline()))).ok();
        }
        "forwarder/naive" => {
            let ev: Event = as_runtime(stream.as_bytes());
            black_box(rt.block_on(naive_forward(&queue, ev)));
        }
        "forwarder/sdk" => {
            black_box(rt.block_on(s.forwarder.handle_body(stream.as_bytes(), deadline()))).ok();
        }
        "forwarder/naive-sdk" => {
            let ev: Event = as_runtime(stream.as_bytes());
            black_box(rt.block_on(naive_forward(&s.queue, ev)));
        }
        "applier/decode" => {
            for p in &packed {
                let ev: Messages = as_runtime(p.as_bytes());
                for m in &ev.records {
                    black_box(decode_without_old_images(m.body.as_str()).expect("decode"));
                }
            }
        }
        "applier/raw-floor" => {
            for p in &packed {
                let ev: Messages = as_runtime(p.as_bytes());
                for m in &ev.records {
                    black_box(raw_floor(m.body.as_str()));
                }
            }
        }
        "applier/handle" | "applier/sdk" => {
            for p in &packed {
                let ev: Messages = as_runtime(p.as_bytes());
                let r = if row == "applier/handle" {
                    rt.block_on(app.handle(ev, deadline()))
                } else {
                    rt.block_on(s.applier.handle(ev, deadline()))
                };
                assert!(r.batch_item_failures.is_empty(), "{row}: failed messages");
            }
        }
        "applier/naive" | "applier/naive-sdk" => {
            for p in &naive {
                let ev: SqsEvent = as_runtime(p.as_bytes());
                if row == "applier/naive" {
                    black_box(rt.block_on(naive_apply(&tables, ev)));
                } else {
                    black_box(rt.block_on(naive_apply(&s.target, ev)));
                }
            }
        }
        _ => panic!("unknown row {row}"),
    };
    for _ in 0..=runs {
        run();
    }
}

/// An event as a reader that wrote new images as the JSON they came in
/// would read it: the keys built (coalescing needs them), the new image's
/// extent found and borrowed, the old image skipped. Not the applier: the
/// `applier/raw-floor` row's measure of that reader's least work.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct RawEvent<'a> {
    id: String,
    sq: String,
    t: i64,
    op: relay_core::event::Op,
    #[serde(default)]
    ttl: bool,
    #[serde(default)]
    rf: bool,
    k: relay_core::item::json::Item,
    #[serde(default, borrow)]
    n: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    o: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct RawEnvelope<'a> {
    v: u32,
    src: String,
    #[serde(borrow)]
    ev: Vec<RawEvent<'a>>,
}

/// The `applier/raw-floor` row's decode of one body: as `decode` copies a
/// borrowed body and exchanges its quotes back, then the events read as
/// [`RawEvent`]s (their count returned).
fn raw_floor(body: &str) -> usize {
    let mut bytes = body.as_bytes().to_vec();
    relay_core::envelope::exchange_quotes(&mut bytes);
    let json = String::from_utf8(bytes).expect("ASCII exchanged for ASCII");
    let env: RawEnvelope<'_> = serde_json::from_str(&json).expect("raw decode");
    env.ev.len()
}
