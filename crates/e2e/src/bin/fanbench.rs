//! `make bench-fanout`: the scan copy fanned out over 1, 2, 4 and 8 copy
//! workers (`seed --method scan --fan-out`, one segment per worker) on the
//! local emulator, against the emulator's raw PutItem rate with as many
//! requests in flight, measured in the same run. Prints a Markdown table
//! (BENCHMARKS.md).
#![allow(clippy::print_stdout)] // a bench binary prints its table

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_lambda::types::ScalingConfig;
use relay_e2e::{relay_json, run_id, write_rate, Local};

const WORKERS: [u32; 4] = [1, 2, 4, 8];
/// Conditional puts each worker keeps in flight (`parts::PUTS_IN_FLIGHT`).
const PUTS_IN_FLIGHT: u32 = 16;

/// Lets the stack's worker trigger run `n` invocations at once (deployed
/// locally without a maximum: MiniStack runs 5 then).
async fn set_worker_concurrency(local: &Local, worker: &str, n: u32) -> Result<()> {
    let maps = local
        .ops
        .lambda
        .list_event_source_mappings()
        .function_name(worker)
        .send()
        .await
        .context("list the worker's trigger")?;
    for m in maps.event_source_mappings() {
        local
            .ops
            .lambda
            .update_event_source_mapping()
            .uuid(m.uuid().unwrap_or_default())
            .scaling_config(
                ScalingConfig::builder()
                    .maximum_concurrency(n.max(2) as i32)
                    .build(),
            )
            .send()
            .await
            .context("set the worker's concurrency")?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: u32 = std::env::var("BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8000);
    let local = Local::connect().await?;
    let run = run_id();
    let source = format!("fan-src-{run}");
    let stream = local.create_source_table(&source).await?;
    eprintln!("loading {n} items of ~1 KB into {source} (8 writers)");
    let load = write_rate(&local, &source, n, 8, |k| k).await?;
    let mut raw = Vec::new();
    for w in WORKERS {
        let scratch = format!("fan-raw{w}-{run}");
        local.create_source_table(&scratch).await?;
        // As many requests in flight as the copy keeps: 16 puts per worker.
        let writers = w * PUTS_IN_FLIGHT;
        raw.push(write_rate(&local, &scratch, (n / 2).max(writers * 50), writers, |k| k).await?);
    }
    let mut rows = Vec::new();
    for w in WORKERS {
        let (target, name) = (format!("fan-tgt{w}-{run}"), format!("fan{w}-{run}"));
        local.create_source_table(&target).await?;
        let stack = local
            .deploy(
                &name,
                &[
                    ("SourceTableName", source.as_str()),
                    ("SourceStreamArn", stream.as_str()),
                    ("TargetTableName", target.as_str()),
                    ("StreamStartingPosition", "LATEST"),
                ],
            )
            .await?;
        let worker = stack
            .work
            .clone()
            .ok_or_else(|| anyhow!("stack {name} has no workers"))?
            .worker;
        set_worker_concurrency(&local, &worker, w).await?;
        eprintln!("fanned-out scan copy, {w} worker(s)");
        let segments = w.to_string();
        let began = std::time::Instant::now();
        let seed = relay_json(
            &local,
            &stack.name,
            &[
                "seed",
                "--method",
                "scan",
                "--segments",
                &segments,
                "--fan-out",
            ],
        )?;
        let read =
            seed["copied"].as_u64().unwrap_or(0) + seed["skipped_existing"].as_u64().unwrap_or(0);
        if read != u64::from(n) {
            bail!("the copy read {read} items, not {n}: {seed}");
        }
        rows.push((
            w,
            seed["items_per_s"].as_f64().unwrap_or(0.0),
            began.elapsed().as_secs_f64(),
        ));
    }

    println!(
        "Items: {n} of ~1 KB (loaded at {load:.0} items/s by 8 writers); endpoint {}; one scan segment per worker.\n",
        local.endpoint
    );
    println!("| copy workers | copy phase, items/s (scan + transform + conditional put on the workers, tasks handed over) | raw PutItem, as many requests in flight (16 per worker), items/s | copy / raw | whole `seed` command, s (plus the sweep and the fence of one 30 s worker timeout) |");
    println!("|---:|---:|---:|---:|---:|");
    for ((w, rate, whole), raw) in rows.iter().zip(&raw) {
        println!(
            "| {w} | {rate:.0} | {raw:.0} | {:.2}x | {whole:.0} |",
            rate / raw
        );
    }
    Ok(())
}
