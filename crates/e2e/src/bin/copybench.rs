//! `make bench-local`: scan-copy and verify throughput on the local
//! emulator, against the emulator's own raw scan and write rates measured in
//! the same run. Prints a Markdown table (BENCHMARKS.md).
#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::time::Instant;

use anyhow::{bail, Result};
use futures::future::try_join_all;
use relay_aws::operator::Tables;
use relay_e2e::{relay_json, write_rate, Local};

const SEGMENTS: i32 = 4;

/// Scans a table with `segments` parallel segments; returns (items, items/s).
async fn scan_rate(local: &Local, table: &str, segments: i32) -> Result<(usize, f64)> {
    let start = Instant::now();
    let counts = try_join_all((0..segments).map(|seg| async move {
        let mut n = 0;
        let mut next = None;
        loop {
            let (items, more) = local
                .ops
                .scan_page(table, seg, segments, next.take(), true)
                .await?;
            n += items.len();
            match more {
                Some(k) => next = Some(k),
                None => return Ok::<_, anyhow::Error>(n),
            }
        }
    }))
    .await?;
    let n: usize = counts.iter().sum();
    Ok((n, n as f64 / start.elapsed().as_secs_f64()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: u32 = std::env::var("BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let local = Local::connect().await?;
    let stack = local.new_migration("bench", &[], false).await?;
    eprintln!("loading {n} items of ~1 KB into {}", stack.source_table);
    let raw_write = write_rate(&local, &stack.source_table, n, SEGMENTS as u32, |k| k * 3).await?;
    let scratch = format!("{}-raw", stack.target_table);
    local.create_source_table(&scratch).await?;
    let raw_write_1 = write_rate(&local, &scratch, n / 4, 1, |k| k * 3).await?;
    let (items, raw_scan) = scan_rate(&local, &stack.source_table, SEGMENTS).await?;
    let (_, raw_scan_1) = scan_rate(&local, &stack.source_table, 1).await?;
    local.create_source_table(&stack.target_table).await?;

    eprintln!("scan copy");
    let seed = relay_json(
        &local,
        &stack.name,
        &["seed", "--method", "scan", "--segments", "4"],
    )?;
    eprintln!("verify");
    let verify = relay_json(&local, &stack.name, &["verify", "--segments", "4"])?;
    if verify["clean"] != true {
        bail!("verify is not clean after the copy: {verify}");
    }
    let copy_rate = seed["items_per_s"].as_f64().unwrap_or(0.0);
    let verify_rate = verify["items_per_s"].as_f64().unwrap_or(0.0);

    println!(
        "Items: {items} of ~1 KB; {SEGMENTS} segments / writers; endpoint {}.\n",
        local.endpoint
    );
    println!("| operation | items/s | against the raw rate |");
    println!("|---|---:|---:|");
    println!("| raw PutItem, 1 writer | {raw_write_1:.0} | |");
    println!("| raw PutItem, {SEGMENTS} writers | {raw_write:.0} | 1.00x |");
    println!("| raw Scan, 1 segment | {raw_scan_1:.0} | |");
    println!("| raw Scan, {SEGMENTS} segments | {raw_scan:.0} | 1.00x |");
    println!(
        "| ddb-relay scan copy (read + conditional put), {SEGMENTS} segments | {copy_rate:.0} | {:.2}x of raw PutItem |",
        copy_rate / raw_write
    );
    println!(
        "| ddb-relay verify (both tables read, transformed, compared), {SEGMENTS} segments | {verify_rate:.0} | {:.2}x of raw Scan |",
        verify_rate / raw_scan
    );
    Ok(())
}
