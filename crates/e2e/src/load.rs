//! Load for the end-to-end tests and the demo: a writer of every DynamoDB
//! type (puts, updates, deletes at a rate) and preloading.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_dynamodb::types::AttributeValue as Av;

use crate::{sdk, Local, PK, SK};

/// What a [`Writer`] did.
#[derive(Debug, Default)]
pub struct WriterCounts {
    pub puts: AtomicU64,
    pub updates: AtomicU64,
    pub deletes: AtomicU64,
    pub errors: AtomicU64,
}

impl WriterCounts {
    pub fn total(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
            + self.updates.load(Ordering::Relaxed)
            + self.deletes.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} puts, {} updates, {} deletes",
            self.puts.load(Ordering::Relaxed),
            self.updates.load(Ordering::Relaxed),
            self.deletes.load(Ordering::Relaxed)
        )
    }
}

/// A load generator: puts (full items of every DynamoDB type), updates and
/// deletes over `keys` items at about `rate` operations per second, until
/// stopped. Bounded: it also stops after `max_ops`.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub counts: Arc<WriterCounts>,
    handle: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub fn start(local: &Local, table: &str, keys: u32, rate: u32, max_ops: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(WriterCounts::default());
        let (ddb, table) = (local.ddb.clone(), table.to_string());
        let (stop2, counts2) = (stop.clone(), counts.clone());
        let handle = tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(0x5eed);
            let pause = Duration::from_micros(1_000_000 / u64::from(rate.max(1)));
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) && n < max_ops {
                n += 1;
                let k = rng.u32(0..keys);
                let r = match rng.u8(0..10) {
                    0..=4 => ddb
                        .put_item()
                        .table_name(&table)
                        .set_item(Some(sample_item(k, n, &mut rng)))
                        .send()
                        .await
                        .map(|_| &counts2.puts)
                        .map_err(drop),
                    5..=7 => ddb
                        .update_item()
                        .table_name(&table)
                        .key(PK, Av::S(pk(k)))
                        .key(SK, Av::N(sk(k)))
                        .update_expression("SET #c = if_not_exists(#c, :z) + :one, #w = :w")
                        .expression_attribute_names("#c", "counter")
                        .expression_attribute_names("#w", "written")
                        .expression_attribute_values(":z", Av::N("0".into()))
                        .expression_attribute_values(":one", Av::N("1".into()))
                        .expression_attribute_values(":w", Av::N(n.to_string()))
                        .send()
                        .await
                        .map(|_| &counts2.updates)
                        .map_err(drop),
                    _ => ddb
                        .delete_item()
                        .table_name(&table)
                        .key(PK, Av::S(pk(k)))
                        .key(SK, Av::N(sk(k)))
                        .send()
                        .await
                        .map(|_| &counts2.deletes)
                        .map_err(drop),
                };
                match r {
                    Ok(c) => c.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counts2.errors.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(pause).await;
            }
        });
        Writer {
            stop,
            counts,
            handle,
        }
    }

    /// Stops the writer and waits for its last operation.
    pub async fn stop(self) -> Arc<WriterCounts> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.await;
        self.counts
    }
}

fn pk(k: u32) -> String {
    format!("user#{:04}", k / 3)
}

fn sk(k: u32) -> String {
    (k % 3).to_string()
}

/// A full item with every DynamoDB type, big numbers and awkward strings.
pub fn sample_item(k: u32, n: u64, rng: &mut fastrand::Rng) -> HashMap<String, Av> {
    let mut m = HashMap::new();
    m.insert(PK.to_string(), Av::S(pk(k)));
    m.insert(SK.to_string(), Av::N(sk(k)));
    m.insert("written".into(), Av::N(n.to_string()));
    m.insert(
        "big".into(),
        Av::N(format!(
            "1234567890123456789012345678901234567.{}",
            rng.u8(0..9)
        )),
    );
    m.insert(
        "name".into(),
        Av::S(format!("naïve ☃ 🚀 \t{}", rng.u32(..))),
    );
    m.insert("empty".into(), Av::S(String::new()));
    m.insert("flag".into(), Av::Bool(rng.bool()));
    m.insert("nothing".into(), Av::Null(true));
    m.insert(
        "blob".into(),
        Av::B(aws_sdk_dynamodb::primitives::Blob::new(
            (0..16).map(|_| rng.u8(..)).collect::<Vec<u8>>(),
        )),
    );
    m.insert(
        "tags".into(),
        Av::Ss(vec!["a".into(), format!("t{}", rng.u8(..))]),
    );
    m.insert("scores".into(), Av::Ns(vec!["1".into(), "2.5".into()]));
    m.insert(
        "nested".into(),
        Av::M(HashMap::from([(
            "list".to_string(),
            Av::L(vec![
                Av::N("-0.001".into()),
                Av::S("x".into()),
                Av::Bool(false),
            ]),
        )])),
    );
    m.insert("pad".into(), Av::S("x".repeat(rng.usize(100..900))));
    m
}

/// Items of the source table as the writer would create them, written
/// directly (for preloading before a seed).
pub async fn preload(local: &Local, table: &str, count: u32) -> Result<()> {
    write_rate(local, table, count, 1, |k| k).await.map(|_| ())
}

/// Writes `n` sample items (keys `key(0..n)`) with `writers` concurrent
/// PutItem loops; returns items/s (the emulator's raw write rate).
pub async fn write_rate(
    local: &Local,
    table: &str,
    n: u32,
    writers: u32,
    key: fn(u32) -> u32,
) -> Result<f64> {
    let start = std::time::Instant::now();
    futures::future::try_join_all((0..writers).map(|w| async move {
        let mut rng = fastrand::Rng::with_seed(7 + u64::from(w));
        for k in (w..n).step_by(writers.max(1) as usize) {
            local
                .ddb
                .put_item()
                .table_name(table)
                .set_item(Some(sample_item(key(k), 0, &mut rng)))
                .send()
                .await
                .map_err(sdk)
                .context("put")?;
        }
        Ok::<_, anyhow::Error>(())
    }))
    .await?;
    Ok(f64::from(n) / start.elapsed().as_secs_f64())
}

/// Runs the `ddb-relay` binary beside the current executable (a bench
/// binary's) on `stack` with `--output json`; its JSON, or its stderr as
/// the error.
pub fn relay_json(local: &Local, stack: &str, args: &[&str]) -> Result<serde_json::Value> {
    let bin = std::env::current_exe()?
        .parent()
        .map(|d| d.join("ddb-relay"))
        .ok_or_else(|| anyhow::anyhow!("no ddb-relay beside this binary"))?;
    let out = std::process::Command::new(bin)
        .args(args)
        .args(["--output", "json"])
        .env("AWS_ENDPOINT_URL", &local.endpoint)
        .env("DDB_RELAY_STACK", stack)
        .env("AWS_REGION", crate::REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "ddb-relay {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
