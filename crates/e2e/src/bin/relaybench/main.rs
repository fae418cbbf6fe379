//! `make bench-replication`: the whole pipe end to end on the local
//! emulator (source table → stream → forwarder → FIFO queue → applier →
//! target table), against the emulator's own raw BatchWriteItem rate
//! measured in the same run. Prints Markdown tables (BENCHMARKS.md).
//!
//! One run, one stack (the real template, `sam deploy` to MiniStack):
//!
//! 1. Raw BatchWriteItem (25 items a call) of the changes' item shape into
//!    a plain table: 1 writer, and as many BatchWriteItem calls in flight as
//!    the applier keeps on MiniStack (one invocation at a time on a FIFO
//!    queue, `APPLIER_WRITES_IN_FLIGHT` calls in it).
//! 2. Drain: with the applier trigger disabled (as the stack is created),
//!    `BENCH_CHANGES` changes (INSERT, MODIFY by put and by update, REMOVE;
//!    every operation makes exactly one stream record) are written to the
//!    source; the forwarder queues them; once the queue stops growing, the
//!    cutoff lets everything through, the applier is enabled and timed
//!    until the queue is empty; then the target must equal the source.
//! 3. Lag: with the applier enabled, new items at a steady rate (each of
//!    `BENCH_RATES` changes/s for `BENCH_SECONDS`), each carrying its write
//!    time in ms; the target is polled with consistent BatchGetItems of the
//!    keys not yet seen every `BENCH_POLL_MS`; lag = the end of the poll that
//!    first returned the item − its write time.
//!
//! Every wait and loop is bounded in time and count; the scratch tables are
//! deleted and the applier trigger is disabled at the end.
#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::types::{AttributeValue as Av, KeysAndAttributes, PutRequest, WriteRequest};
use futures::future::try_join_all;
use futures::{stream, StreamExt, TryStreamExt};
use relay_e2e::{now_ms, run_id, sample_item, sdk, Local, Stack, PK, SK};

mod lag;
use lag::lag_run;

/// Applier invocations MiniStack runs at once for a FIFO queue's mapping
/// (`_sqs_esm_concurrency` in its `services/lambda_svc.py`: 1 for FIFO).
const APPLIER_INVOCATIONS: u32 = 1;
/// BatchWriteItem calls one applier invocation keeps in flight
/// (`WRITE_CONCURRENCY`, default 4, `relay_core::config`).
const APPLIER_WRITES_IN_FLIGHT: u32 = 4;
/// Concurrent writers of the source changes in the drain phase.
const CHANGE_WRITERS: u32 = 4;
/// Puts in flight at most while writing at a steady rate.
const LAG_PUTS_IN_FLIGHT: usize = 32;
/// Keys per BatchGetItem (the API's maximum).
const GET_CHUNK: usize = 100;
/// Bounds of the waits.
const FORWARD_LIMIT: Duration = Duration::from_secs(600);
const FORWARD_STABLE: Duration = Duration::from_secs(15);
const DRAIN_LIMIT: Duration = Duration::from_secs(900);
const LAG_TAIL: Duration = Duration::from_secs(120);

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The bench's own key: `pk` = `{prefix}#{k}`, `sk` = 0.
fn key(prefix: &str, k: u64) -> HashMap<String, Av> {
    HashMap::from([
        (PK.to_string(), Av::S(format!("{prefix}#{k}"))),
        (SK.to_string(), Av::N("0".into())),
    ])
}

/// The e2e writer's item (~1 KB, every DynamoDB type) under the bench's key.
fn item(prefix: &str, k: u64, n: u64, rng: &mut fastrand::Rng) -> HashMap<String, Av> {
    let mut m = sample_item(0, n, rng);
    m.extend(key(prefix, k));
    m
}

/// One BatchWriteItem call, its unprocessed items retried (bounded).
async fn batch_write(local: &Local, table: &str, mut reqs: Vec<WriteRequest>) -> Result<()> {
    for attempt in 1..=20u64 {
        let out = local
            .ddb
            .batch_write_item()
            .request_items(table, reqs)
            .send()
            .await
            .map_err(sdk)
            .context("BatchWriteItem")?;
        match out.unprocessed_items().and_then(|u| u.get(table)) {
            Some(left) if !left.is_empty() => {
                reqs = left.clone();
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            _ => return Ok(()),
        }
    }
    bail!("BatchWriteItem left items unprocessed after 20 attempts")
}

/// Writes `n` items with BatchWriteItem, 25 a call, `writers` calls in
/// flight; returns items/s.
async fn batch_write_rate(local: &Local, table: &str, n: u32, writers: u32) -> Result<f64> {
    let start = Instant::now();
    try_join_all((0..writers).map(|w| async move {
        let mut rng = fastrand::Rng::with_seed(17 + u64::from(w));
        let mine: Vec<u32> = (w..n).step_by(writers.max(1) as usize).collect();
        for chunk in mine.chunks(25) {
            let reqs = chunk
                .iter()
                .map(|&k| {
                    let put = PutRequest::builder()
                        .set_item(Some(item("raw", u64::from(k), 0, &mut rng)))
                        .build()?;
                    Ok(WriteRequest::builder().put_request(put).build())
                })
                .collect::<Result<Vec<_>>>()?;
            batch_write(local, table, reqs).await?;
        }
        Ok::<_, anyhow::Error>(())
    }))
    .await?;
    Ok(f64::from(n) / start.elapsed().as_secs_f64())
}

/// Source changes by kind.
#[derive(Debug, Default, Clone, Copy)]
struct Mix {
    inserts: u64,
    modifies: u64,
    removes: u64,
}

/// Writes `n` changes to `table` with `writers` concurrent writers, each on
/// keys of its own (so it knows which exist): a put of an absent key
/// (INSERT); of a present one 40% put, 40% update (both MODIFY, both change
/// the item), 20% delete (REMOVE). Every operation makes one stream record.
async fn write_changes(
    local: &Local,
    table: &str,
    prefix: &str,
    n: u32,
    writers: u32,
) -> Result<Mix> {
    let parts = try_join_all((0..writers).map(|w| async move {
        let keys = (n / 4 / writers).max(1) as usize;
        let mut present = vec![false; keys];
        let mut rng = fastrand::Rng::with_seed(0x5eed + u64::from(w));
        let mut mix = Mix::default();
        for i in (w..n).step_by(writers as usize) {
            let slot = rng.usize(0..keys);
            let k = slot as u64 * u64::from(writers) + u64::from(w);
            let op = if present[slot] { rng.u8(0..10) } else { 0 };
            let r = match op {
                0..=3 => {
                    if present[slot] {
                        mix.modifies += 1;
                    } else {
                        mix.inserts += 1;
                    }
                    present[slot] = true;
                    local
                        .ddb
                        .put_item()
                        .table_name(table)
                        .set_item(Some(item(prefix, k, u64::from(i), &mut rng)))
                        .send()
                        .await
                        .map(drop)
                        .map_err(sdk)
                }
                4..=7 => {
                    mix.modifies += 1;
                    local
                        .ddb
                        .update_item()
                        .table_name(table)
                        .set_key(Some(key(prefix, k)))
                        .update_expression("SET #c = if_not_exists(#c, :z) + :one, #w = :w")
                        .expression_attribute_names("#c", "counter")
                        .expression_attribute_names("#w", "written")
                        .expression_attribute_values(":z", Av::N("0".into()))
                        .expression_attribute_values(":one", Av::N("1".into()))
                        .expression_attribute_values(":w", Av::N(i.to_string()))
                        .send()
                        .await
                        .map(drop)
                        .map_err(sdk)
                }
                _ => {
                    mix.removes += 1;
                    present[slot] = false;
                    local
                        .ddb
                        .delete_item()
                        .table_name(table)
                        .set_key(Some(key(prefix, k)))
                        .send()
                        .await
                        .map(drop)
                        .map_err(sdk)
                }
            };
            r.with_context(|| format!("source change {i}"))?;
        }
        Ok::<_, anyhow::Error>(mix)
    }))
    .await?;
    Ok(parts.iter().fold(Mix::default(), |a, m| Mix {
        inserts: a.inserts + m.inserts,
        modifies: a.modifies + m.modifies,
        removes: a.removes + m.removes,
    }))
}

/// What the forwarder did while the changes were written.
#[derive(Debug)]
struct Forwarded {
    /// Messages in the queue when it stopped growing.
    messages: u64,
    /// First write → the last poll at which the queue had grown.
    last_growth: Duration,
    /// The forwarder's `Forwarded` metric (changes sent), summed over the
    /// phase.
    changes: f64,
}

/// Sum of one of the stack's metrics since `since_ms`.
async fn metric_sum(
    local: &Local,
    stack: &Stack,
    function: &str,
    name: &str,
    since_ms: i64,
) -> Result<f64> {
    Ok(local
        .metric(stack, function, name, since_ms, false)
        .await?
        .unwrap_or(0.0))
}

/// One drain phase.
#[derive(Debug)]
struct Drain {
    mix: Mix,
    /// Writing the changes to the source.
    load: Duration,
    fwd: Forwarded,
    /// Applier enabled → queue empty.
    drain: Duration,
    /// Target writes (AppliedPuts + AppliedDeletes) in the drain.
    writes: f64,
    /// Target items after the drain (= source items).
    items: usize,
}

/// Writes `n` changes (keys `{prefix}#…`) with the applier disabled, waits
/// for the forwarder to queue them, then enables the applier and times the
/// drain; the target must then equal the source. With `pause_forwarder`,
/// the forwarder's trigger is off while the changes are written, so it then
/// reads the stream in full batches (`StreamBatchSize`, 1000), as a batching
/// window would give it; its time runs from re-enabling it.
async fn drain_phase(
    local: &Local,
    stack: &Stack,
    prefix: &str,
    n: u32,
    since_ms: i64,
    pause_forwarder: bool,
) -> Result<Drain> {
    let forwarded_before = metric_sum(local, stack, "forwarder", "Forwarded", since_ms).await?;
    let writes_before = metric_sum(local, stack, "applier", "AppliedPuts", since_ms).await?
        + metric_sum(local, stack, "applier", "AppliedDeletes", since_ms).await?;
    if pause_forwarder {
        local.set_forwarder_trigger(stack, false).await?;
    }
    eprintln!(
        "writing {n} changes to {} ({CHANGE_WRITERS} writers), applier disabled{}",
        stack.source_table,
        if pause_forwarder {
            ", forwarder paused"
        } else {
            ""
        }
    );
    let load_done = AtomicBool::new(false);
    let began = Instant::now();
    let load = async {
        let r = write_changes(local, &stack.source_table, prefix, n, CHANGE_WRITERS).await;
        load_done.store(true, Ordering::Relaxed);
        r.map(|m| (m, began.elapsed()))
    };
    let (mix, load_time, fwd) = if pause_forwarder {
        let (mix, load_time) = load.await?;
        let (visible, in_flight) = local.queue_depth(&stack.queue_url).await?;
        if visible + in_flight != 0 {
            bail!("the paused forwarder queued {visible} messages");
        }
        let began = Instant::now();
        local.set_forwarder_trigger(stack, true).await?;
        let fwd = watch_forwarder(
            local,
            stack,
            n,
            began,
            since_ms,
            forwarded_before,
            &load_done,
        )
        .await?;
        (mix, load_time, fwd)
    } else {
        let watch = watch_forwarder(
            local,
            stack,
            n,
            began,
            since_ms,
            forwarded_before,
            &load_done,
        );
        let (load, fwd) = tokio::join!(load, watch);
        let (mix, load_time) = load?;
        (mix, load_time, fwd?)
    };
    let (visible, in_flight) = local.queue_depth(&stack.queue_url).await?;
    if in_flight != 0 {
        bail!("the applier consumed before it was enabled ({in_flight} in flight)");
    }
    eprintln!(
        "{} changes forwarded in {visible} messages; enabling the applier",
        fwd.changes
    );
    let t = Instant::now();
    local.set_applier_trigger(stack, true).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (visible, in_flight) = local.queue_depth(&stack.queue_url).await?;
        if visible + in_flight == 0 {
            break;
        }
        if t.elapsed() > DRAIN_LIMIT {
            bail!("the queue still had {visible} + {in_flight} messages after {DRAIN_LIMIT:?}");
        }
    }
    let drain = t.elapsed();
    local.set_applier_trigger(stack, false).await?;
    let (items, diff) = local.wait_converged(stack, Duration::from_secs(60)).await?;
    if !diff.is_clean() {
        bail!(
            "target differs from source after the drain: {} missing, {} extra, {} changed of {items}",
            diff.missing.len(),
            diff.extra.len(),
            diff.changed.len()
        );
    }
    let dlq = local.queue_depth(&stack.dlq_url).await?;
    if dlq != (0, 0) {
        bail!("messages reached the DLQ: {dlq:?}");
    }
    let writes = metric_sum(local, stack, "applier", "AppliedPuts", since_ms).await?
        + metric_sum(local, stack, "applier", "AppliedDeletes", since_ms).await?
        - writes_before;
    Ok(Drain {
        mix,
        load: load_time,
        fwd,
        drain,
        writes,
        items,
    })
}

/// Polls the queue every 250 ms while the changes are written and after,
/// until the forwarder's metric says all `n` changes were sent or the queue
/// has not grown for `FORWARD_STABLE` (bounded by `FORWARD_LIMIT`).
async fn watch_forwarder(
    local: &Local,
    stack: &Stack,
    n: u32,
    began: Instant,
    since_ms: i64,
    baseline: f64,
    load_done: &AtomicBool,
) -> Result<Forwarded> {
    let mut messages = 0;
    let mut last_growth = Duration::ZERO;
    let mut changes = 0.0;
    let mut next_metric = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (visible, in_flight) = local.queue_depth(&stack.queue_url).await?;
        if visible + in_flight > messages {
            messages = visible + in_flight;
            last_growth = began.elapsed();
        }
        if load_done.load(Ordering::Relaxed) {
            if Instant::now() >= next_metric {
                changes =
                    metric_sum(local, stack, "forwarder", "Forwarded", since_ms).await? - baseline;
                next_metric = Instant::now() + Duration::from_secs(1);
            }
            if changes >= f64::from(n) || began.elapsed() > last_growth + FORWARD_STABLE {
                return Ok(Forwarded {
                    messages,
                    last_growth,
                    changes,
                });
            }
        }
        if began.elapsed() > FORWARD_LIMIT {
            bail!(
                "the forwarder had not queued {n} changes after {FORWARD_LIMIT:?} ({changes} sent, {messages} messages)"
            );
        }
    }
}

async fn delete_table(local: &Local, table: &str) {
    if let Err(e) = local.ddb.delete_table().table_name(table).send().await {
        eprintln!("could not delete {table}: {}", sdk(e));
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: u32 = env_num("BENCH_CHANGES", 10_000u32).clamp(100, 1_000_000);
    let secs: u32 = env_num("BENCH_SECONDS", 30u32).clamp(1, 600);
    let poll = Duration::from_millis(env_num("BENCH_POLL_MS", 100u64).clamp(10, 10_000));
    let rates: Vec<u32> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "50,200".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .filter(|r| (1..=5000).contains(r))
        .collect();
    let local = Local::connect().await?;
    let run_began_ms = now_ms();
    let stack = local.new_migration("relay", &[], false).await?;
    local
        .create_target_table(&stack.target_table, &[(PK, "S"), (SK, "N")])
        .await?;
    // Nothing this run writes is older than the cutoff: nothing is skipped.
    local
        .set_cutoff(&stack, run_began_ms - stack.margin_ms)
        .await?;

    // 1. The emulator's raw BatchWriteItem rate.
    let applier_writes = APPLIER_INVOCATIONS * APPLIER_WRITES_IN_FLIGHT;
    let raw = format!("relay-raw-{}", run_id());
    local
        .create_target_table(&raw, &[(PK, "S"), (SK, "N")])
        .await?;
    eprintln!("raw BatchWriteItem, 1 and {applier_writes} writers");
    let raw_1 = batch_write_rate(&local, &raw, n, 1).await?;
    let raw_w = batch_write_rate(&local, &raw, n, applier_writes).await?;
    delete_table(&local, &raw).await;

    // 2. Drain: changes pile up in the queue, then the applier drains them;
    // once with the forwarder running during the writes, once with it
    // paused until they are all in the stream.
    let since_ms = now_ms();
    let live = drain_phase(&local, &stack, "chg", n, since_ms, false).await?;
    let paused = drain_phase(&local, &stack, "chg2", n, since_ms, true).await?;

    // 3. Lag at steady write rates, applier enabled.
    local.set_applier_trigger(&stack, true).await?;
    let mut lag = Vec::new();
    for &rate in &rates {
        eprintln!("steady writes at {rate}/s for {secs} s, polling the target every {poll:?}");
        lag.push(lag_run(&local, &stack, rate, secs, poll).await?);
    }
    local.set_applier_trigger(&stack, false).await?;

    println!(
        "Endpoint {}; stack {}; item ~1 KB (the e2e writer's, every DynamoDB type). The applier on MiniStack: {APPLIER_INVOCATIONS} invocation at a time (FIFO queue), up to 10 messages each, {APPLIER_WRITES_IN_FLIGHT} BatchWriteItem calls in flight.\n",
        local.endpoint, stack.name
    );
    println!("| measure | changes or items | seconds | per second | against raw BatchWriteItem, {applier_writes} writers |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| raw BatchWriteItem (25 puts a call), 1 writer | {n} | {:.1} | {raw_1:.0} | |",
        f64::from(n) / raw_1
    );
    println!(
        "| raw BatchWriteItem (25 puts a call), {applier_writes} writers | {n} | {:.1} | {raw_w:.0} | 1.00x |",
        f64::from(n) / raw_w
    );
    for (d, how, from) in [
        (&live, "forwarder running during the writes", "first write"),
        (
            &paused,
            "forwarder paused during the writes, then reading full batches",
            "its trigger enabled",
        ),
    ] {
        let total = d.mix.inserts + d.mix.modifies + d.mix.removes;
        println!("| *{how}* | | | | |");
        println!(
            "| source changes written ({} INSERT, {} MODIFY, {} REMOVE; {CHANGE_WRITERS} writers, PutItem/UpdateItem/DeleteItem) | {total} | {:.1} | {:.0} | |",
            d.mix.inserts,
            d.mix.modifies,
            d.mix.removes,
            d.load.as_secs_f64(),
            total as f64 / d.load.as_secs_f64()
        );
        println!(
            "| forwarder: {from} → queue stops growing ({} messages, {:.1} changes a message; `Forwarded` metric {:.0}) | {n} | {:.1} | {:.0} | |",
            d.fwd.messages,
            f64::from(n) / d.fwd.messages.max(1) as f64,
            d.fwd.changes,
            d.fwd.last_growth.as_secs_f64(),
            f64::from(n) / d.fwd.last_growth.as_secs_f64().max(0.001)
        );
        let rate = f64::from(n) / d.drain.as_secs_f64();
        println!(
            "| replication drain: applier enabled → queue empty ({:.0} target writes after coalescing; then target = source, {} items) | {n} | {:.1} | {rate:.0} | {:.2}x |",
            d.writes,
            d.items,
            d.drain.as_secs_f64(),
            rate / raw_w
        );
    }
    println!();
    println!("| steady write rate, changes/s (achieved) | changes | seen in the target | lag p50, ms | lag p99, ms | lag max, ms | target polls | poll cycle mean / max, ms (the lag's resolution) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in &lag {
        println!(
            "| {} ({:.0}) | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} |",
            l.rate,
            l.achieved,
            l.written,
            l.lags.len(),
            l.pct(0.50),
            l.pct(0.99),
            l.lags.last().copied().unwrap_or(-1),
            l.polls,
            l.cycle_mean_ms,
            l.cycle_max_ms
        );
    }
    Ok(())
}
