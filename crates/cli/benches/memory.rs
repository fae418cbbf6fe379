//! `make bench-memory`: peak RSS of `ddb-relay verify` and of the tombstone
//! sweep at 1k, 10k, 100k and 200k items of ~1 KB on the local emulator, in
//! the same run as the baseline (verify with a budget larger than the
//! tables: one partition, everything in memory, as before bounded memory).
//! Each measurement is a fresh process under GNU time (`%M`, its own peak
//! RSS). Prints a Markdown table (BENCHMARKS.md).
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a bench binary prints its table

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::types::{AttributeValue as Av, PutRequest, WriteRequest};
use futures::future::try_join_all;
use relay_aws::operator::Triggers;
use relay_e2e::{sample_item, Local, PK, SK};

const SIZES: [u32; 4] = [1_000, 10_000, 100_000, 200_000];
const BOUNDED_MB: &str = "32";
const UNBOUNDED_MB: &str = "100000";
const SEGMENTS: &str = "4";
const TOMBSTONES: u32 = 100;

/// Runs `program args` under GNU time; returns (exit code, peak RSS in
/// MiB, seconds, stdout).
fn measured(program: &std::path::Path, args: &[&str]) -> Result<(i32, f64, f64, String)> {
    let rss = tempfile::NamedTempFile::new()?;
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(rss.path())
        .arg(program)
        .args(args)
        .envs(env())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("/usr/bin/time (GNU time) runs each measured process")?;
    let secs = start.elapsed().as_secs_f64();
    let kib: f64 = std::fs::read_to_string(rss.path())?
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow!("GNU time printed no peak RSS"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        kib / 1024.0,
        secs,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        (
            "AWS_ENDPOINT_URL",
            std::env::var("AWS_ENDPOINT_URL").unwrap_or(relay_e2e::DEFAULT_ENDPOINT.into()),
        ),
        ("AWS_REGION", relay_e2e::REGION.into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
    ]
}

/// Writes items `from..to` to `tables` with BatchWriteItem, 8 calls at once.
async fn load(local: &Local, tables: &[&str], from: u32, to: u32) -> Result<()> {
    let keys: Vec<u32> = (from..to).collect();
    for table in tables {
        let batches: Vec<&[u32]> = keys.chunks(25).collect();
        for wave in batches.chunks(8) {
            try_join_all(wave.iter().map(|batch| async move {
                let mut rng = fastrand::Rng::with_seed(u64::from(batch[0]));
                let mut todo: Vec<WriteRequest> = batch
                    .iter()
                    .map(|k| {
                        let put = PutRequest::builder()
                            .set_item(Some(sample_item(*k, 0, &mut rng)))
                            .build()
                            .unwrap();
                        WriteRequest::builder().put_request(put).build()
                    })
                    .collect();
                for _ in 0..20 {
                    if todo.is_empty() {
                        return Ok(());
                    }
                    let out = local
                        .ddb
                        .batch_write_item()
                        .request_items(table.to_string(), todo)
                        .send()
                        .await
                        .map_err(relay_e2e::sdk)?;
                    todo = out
                        .unprocessed_items
                        .and_then(|mut u| u.remove(*table))
                        .unwrap_or_default();
                }
                bail!("BatchWriteItem kept returning unprocessed items")
            }))
            .await?;
        }
    }
    Ok(())
}

/// Tombstones for the sweep to delete (keys past the loaded ones).
async fn tombstones(local: &Local, table: &str, from: u32) -> Result<()> {
    for k in from..from + TOMBSTONES {
        let mut rng = fastrand::Rng::with_seed(1);
        let item = sample_item(k, 0, &mut rng);
        let t: HashMap<String, Av> = [
            (PK.to_string(), item[PK].clone()),
            (SK.to_string(), item[SK].clone()),
            (
                relay_core::apply::TOMBSTONE_ATTR.to_string(),
                Av::Bool(true),
            ),
        ]
        .into();
        local
            .ddb
            .put_item()
            .table_name(table)
            .set_item(Some(t))
            .send()
            .await
            .map_err(relay_e2e::sdk)?;
    }
    Ok(())
}

/// The child: one tombstone sweep of the stack's target, as `seed` runs it.
fn sweep_child(stack: &str) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(relay_e2e::REGION))
            .load()
            .await;
        let ctx = ddb_relay::ctx::Ctx::for_stack(
            relay_aws::operator::Sdk::new(&conf),
            stack,
            relay_e2e::REGION,
            relay_aws::runtime::Clock::wall(),
        )
        .await?;
        // A sweep goes on only under the copy the control item names.
        let read = ctx.control().await?;
        let seed_ms = match read.seed_ms {
            Some(s) if read.names_copy(s, relay_core::control::Mode::Normal) => s,
            _ => {
                let seed_ms = ctx.now_ms();
                let next = relay_core::control::ControlState {
                    seed_method: Some("scan".into()),
                    seed_ms: Some(seed_ms),
                    cutoff_ms: Some(seed_ms),
                    mode: relay_core::control::Mode::Normal,
                    ..read.clone()
                };
                ctx.write_control(&read, next).await?;
                seed_ms
            }
        };
        // ... and under a lease on that copy's checkpoint.
        let mut cp = ddb_relay::commands::copy::checkpoint_key(&ctx);
        cp.insert(
            "seed_ms".into(),
            relay_core::item::AttributeValue::N(seed_ms.to_string()),
        );
        let cond = relay_aws::operator::Cond::Always;
        relay_aws::operator::Tables::put_item(&ctx.aws, &ctx.stack.control_table, &cp, &cond)
            .await?;
        let keys = [PK.to_string(), SK.to_string()];
        let n = ddb_relay::commands::scan::sweep_tombstones(&ctx, &keys, 4, seed_ms).await?;
        println!("{n}");
        Ok(())
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--sweep-child") {
        return sweep_child(args.get(i + 1).ok_or_else(|| anyhow!("no stack"))?);
    }
    if args.iter().any(|a| a == "--list") {
        return Ok(()); // `cargo bench` asks benches for their list
    }
    let rt = tokio::runtime::Runtime::new()?;
    let local = rt.block_on(Local::connect())?;
    let stack = rt.block_on(local.new_migration("mem", &[], false))?;
    // Only the CLI runs here: the forwarder would replay every load write.
    rt.block_on(async {
        let m = local
            .ops
            .mapping(&stack.forwarder, "arn:aws:dynamodb:")
            .await?;
        local.ops.set_mapping(&m.uuid, false).await?;
        local.create_source_table(&stack.target_table).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    let tables = [stack.source_table.as_str(), stack.target_table.as_str()];
    let mut rows = Vec::new();
    let mut loaded = 0;
    for n in SIZES {
        eprintln!("loading to {n} items in each table");
        let start = Instant::now();
        rt.block_on(load(&local, &tables, loaded, n))?;
        let load_rate = f64::from(2 * (n - loaded)) / start.elapsed().as_secs_f64();
        loaded = n;
        let verify = |mb: &str| -> Result<(f64, f64, serde_json::Value)> {
            let (code, rss, secs, out) = measured(
                std::path::Path::new(env!("CARGO_BIN_EXE_ddb-relay")),
                &[
                    "verify",
                    "--segments",
                    SEGMENTS,
                    "--memory-mb",
                    mb,
                    "--recheck-wait",
                    "0",
                    "--output",
                    "json",
                    "--stack",
                    &stack.name,
                ],
            )?;
            let v: serde_json::Value =
                serde_json::from_str(&out).with_context(|| format!("verify printed {out:?}"))?;
            if code != 0 || v["clean"] != true || v["compared"] != n {
                bail!("verify at {n} items was not clean: {out}");
            }
            Ok((rss, secs, v))
        };
        eprintln!("verify, bounded ({BOUNDED_MB} MiB)");
        let (bounded, bounded_s, v) = verify(BOUNDED_MB)?;
        eprintln!("verify, one partition");
        let (unbounded, unbounded_s, _) = verify(UNBOUNDED_MB)?;
        rt.block_on(tombstones(&local, &stack.target_table, n + 1_000_000))?;
        eprintln!("sweep");
        let (code, sweep_rss, sweep_s, out) =
            measured(&std::env::current_exe()?, &["--sweep-child", &stack.name])?;
        if code != 0 || out.trim() != TOMBSTONES.to_string() {
            bail!("the sweep failed or deleted {out:?} tombstones");
        }
        rows.push(format!(
            "| {n} | {load_rate:.0} | {bounded:.1} | {} | {} | {bounded_s:.1} | {unbounded:.1} | {unbounded_s:.1} | {sweep_rss:.1} | {sweep_s:.1} |",
            v["spill"]["partitions"],
            v["spill"]["max_bytes_held"].as_u64().unwrap_or(0) / 1024
        ));
    }
    println!(
        "Items of ~1 KB in both tables (identity transform), {SEGMENTS} segments; endpoint {}.\n",
        local.endpoint
    );
    println!("| items per table | load items/s (BatchWriteItem) | verify peak RSS MiB, --memory-mb {BOUNDED_MB} | partitions | largest partition KiB on disk | verify s | baseline: verify peak RSS MiB, one partition (--memory-mb {UNBOUNDED_MB}) | baseline s | tombstone sweep peak RSS MiB | sweep s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
