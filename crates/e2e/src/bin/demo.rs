//! `make demo`: a whole live migration on the local emulator, narrated.
//!
//! Creates a source table with a stream, deploys the real stack with
//! `sam deploy`, starts a load generator, seeds the target by backup and
//! restore while writes continue, sets the cutoff, enables the applier,
//! watches the backlog drain, stops the load and compares both tables. Exits
//! non-zero unless they are identical.
#![allow(clippy::print_stdout)] // a narrated command-line program

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use relay_e2e::{now_ms, preload, run_id, Local, Writer};

struct Steps {
    start: Instant,
    step: Instant,
    n: usize,
    timings: Vec<(String, Duration)>,
}

impl Steps {
    fn new() -> Self {
        Steps {
            start: Instant::now(),
            step: Instant::now(),
            n: 0,
            timings: Vec::new(),
        }
    }

    fn begin(&mut self, title: &str, what: &str) {
        self.n += 1;
        self.step = Instant::now();
        println!("\n[{}] {title}", self.n);
        for line in what.lines() {
            println!("    {line}");
        }
        self.timings.push((title.to_string(), Duration::ZERO));
    }

    fn done(&mut self, result: &str) {
        let took = self.step.elapsed();
        if let Some(last) = self.timings.last_mut() {
            last.1 = took;
        }
        println!("    -> {result} ({:.1} s)", took.as_secs_f64());
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let keys: u32 = env_or("DEMO_KEYS", 300);
    let rate: u32 = env_or("DEMO_RATE", 40);
    let live_secs: u64 = env_or("DEMO_LIVE_SECONDS", 20);
    let mut s = Steps::new();
    let local = Local::connect().await?;
    let run = run_id();
    let (source, target, name) = (
        format!("demo-orders-{run}"),
        format!("demo-orders-v2-{run}"),
        format!("ddb-relay-demo-{run}"),
    );
    println!(
        "ddb-relay demo: migrate the live table {source} into {target} on {}",
        local.endpoint
    );

    s.begin(
        "Create the source table",
        "A table keyed on (pk, sk) with a NEW_AND_OLD_IMAGES stream, preloaded with items\n\
         of every DynamoDB type. This is the 'production' table.",
    );
    let stream = local.create_source_table(&source).await?;
    preload(&local, &source, keys).await?;
    s.done(&format!("{keys} items in {source}"));

    s.begin(
        "Deploy the stack (sam deploy of template.yaml)",
        "Forwarder and applier Lambdas (the real bootstrap binaries), the FIFO queue and\n\
         its DLQ, the control table, alarms and dashboard. The applier trigger is created\n\
         disabled: nothing is applied before a cutoff exists.",
    );
    let stack = local
        .deploy(
            &name,
            &[
                ("SourceTableName", source.as_str()),
                ("SourceStreamArn", stream.as_str()),
                ("TargetTableName", target.as_str()),
                ("StreamBatchingWindowSeconds", "1"),
            ],
        )
        .await?;
    s.done(&format!(
        "stack {name} created; applier trigger created disabled"
    ));

    s.begin(
        "Preflight (ddb-relay preflight)",
        "The operator CLI checks the stream, triggers, target, timeouts and permissions.",
    );
    if relay(&local, &name, &["preflight", "--method", "backup"])? != 0 {
        bail!("preflight found a blocker");
    }
    s.done("ready");

    s.begin(
        "Protect the source (ddb-relay protect)",
        "Deletion protection on the source: the deploy that later points your IaC at the\n\
         new table cannot delete the old one. preflight warned about it above.",
    );
    if relay(&local, &name, &["protect"])? != 0 {
        bail!("protect failed");
    }
    s.done("deletion protection on");

    s.begin(
        "Start the load generator",
        &format!(
            "About {rate} writes/s (puts, updates, deletes) on {} items, for the rest of the demo.\n\
             The forwarder sends every change to the queue, where it waits for the applier.",
            keys + keys / 2
        ),
    );
    let writer = Writer::start(&local, &source, keys + keys / 2, rate, 1_000_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (v, f) = local.queue_depth(&stack.queue_url).await?;
    s.done(&format!(
        "{} so far; the queue holds {v} messages, {f} in flight (nothing applied yet)",
        writer.counts.summary(),
    ));

    s.begin(
        "Seed the target (ddb-relay seed --method backup)",
        "Writes continue during the seed. The backup is not a point in time, so the cutoff\n\
         is the backup time minus a margin: events after it are applied again (harmless,\n\
         full images in per-item order), events before it are skipped and counted. A backup\n\
         may lack the writes of its last minute, which only the stream can bring: within a\n\
         minute of the stream's creation, the seed first waits that minute out.",
    );
    if relay(&local, &name, &["seed", "--method", "backup"])? != 0 {
        bail!("seed failed");
    }
    let seeded = local.scan(&target).await?.len();
    s.done(&format!(
        "{target} restored with {seeded} items; cutoff = seed time - {} s",
        stack.margin_ms / 1000
    ));

    s.begin(
        "Enable the applier (ddb-relay resume)",
        "The queue drains into the target: puts of new images, deletes, coalesced per key.",
    );
    if relay(&local, &name, &["resume"])? != 0 {
        bail!("resume failed");
    }
    s.done("applier trigger Enabled");

    s.begin(
        "Live replication",
        "The load continues; the applier drains what queued during the seed, then keeps up.",
    );
    let live = Instant::now();
    let enabled_ms = now_ms();
    // At least `live_secs`, and until the backlog of the seed is drained
    // (at most 4 minutes).
    let mut backlog = usize::MAX;
    while live.elapsed() < Duration::from_secs(live_secs)
        || (backlog > 100 && live.elapsed() < Duration::from_secs(240))
    {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let (v, f) = local.queue_depth(&stack.queue_url).await?;
        backlog = (v + f) as usize;
        let target_items = local.scan(&target).await?.len();
        let lag = local
            .metric(&stack, "applier", "ReplicationLag", now_ms() - 10_000, true)
            .await
            .ok()
            .flatten()
            .map_or("n/a".to_string(), |ms| format!("{:.1} s", ms / 1000.0));
        println!(
            "    t+{:>3.0}s  writes: {:<40}  backlog: {:>3} visible {:>3} in flight  lag (max, last min): {:>7}  target: {} items",
            live.elapsed().as_secs_f64(),
            writer.counts.summary(),
            v,
            f,
            lag,
            target_items
        );
    }
    s.done("load ran throughout");

    s.begin(
        "Verify while the load continues (ddb-relay verify)",
        "Source through the transform against the target; mismatches are re-read until\n\
         they agree (lag) or stay different. A clean verify is recorded for cutover.",
    );
    if relay(&local, &name, &["verify", "--recheck-wait", "3"])? != 0 {
        bail!("verify found differences");
    }
    s.done("clean");

    s.begin(
        "Cutover check (ddb-relay cutover)",
        "GO needs: seeded, applier and forwarder enabled and caught up, low backlog and lag,\n\
         empty DLQ, no errors, nothing unknown, a clean verify since the seed.",
    );
    let go = relay(
        &local,
        &name,
        &[
            "cutover",
            "--max-lag",
            "30",
            "--max-backlog",
            "200",
            "--window",
            "60",
        ],
    )?;
    s.done(if go == 0 { "GO" } else { "NO-GO" });

    s.begin(
        "Stop writes to the source, then finish (ddb-relay finish)",
        "The application stops writing. finish waits until the forwarder has forwarded\n\
         everything and the queue is drained, then stops both triggers. Only then does the\n\
         application switch to the target: no queued older change can overwrite its writes.",
    );
    let counts = writer.stop().await;
    let stop_ms = now_ms();
    if relay(
        &local,
        &name,
        &["finish", "--quiet", "3", "--timeout", "180"],
    )? != 0
    {
        bail!("finish failed");
    }
    let paused_s = (now_ms() - stop_ms) as f64 / 1000.0;
    s.done(&format!(
        "drained and stopped; writes were paused for {paused_s:.1} s (with --quiet 3); {} in total",
        counts.summary()
    ));

    let mut counters = Vec::new();
    for (function, name) in [
        ("forwarder", "Forwarded"),
        ("forwarder", "MessagesSent"),
        ("applier", "AppliedPuts"),
        ("applier", "AppliedDeletes"),
        ("applier", "SkippedBeforeCutoff"),
        ("applier", "Coalesced"),
        ("applier", "FailedMessages"),
    ] {
        let v = local
            .metric(&stack, function, name, enabled_ms - 600_000, false)
            .await
            .ok()
            .flatten()
            .unwrap_or(0.0);
        counters.push(format!("{name} {v:.0}"));
    }
    println!(
        "    metrics (CloudWatch, PutMetricData): {}",
        counters.join(", ")
    );

    s.begin(
        "Compare the tables item for item",
        "A consistent scan of both tables, compared by canonical encoding.",
    );
    let (items, diff) = local.compare(&source, &target).await?;
    let (dv, df) = local.queue_depth(&stack.dlq_url).await?;
    s.done(&format!(
        "{items} source items: {} identical, {} missing, {} extra, {} different; DLQ {}",
        diff.same,
        diff.missing.len(),
        diff.extra.len(),
        diff.changed.len(),
        dv + df
    ));

    s.begin(
        "Hand the new table to your IaC (ddb-relay adopt)",
        "Reads the target as it is and prints what it lacks that the source had, its\n\
         definition for CloudFormation/SAM, CDK and Serverless, the import change set's\n\
         steps, and the source's retirement runbook. Changes nothing.",
    );
    if relay(&local, &name, &["adopt"])? != 0 {
        bail!("adopt failed");
    }
    s.done("printed");

    println!("\nStep timings:");
    for (title, took) in &s.timings {
        println!("  {:>6.1} s  {title}", took.as_secs_f64());
    }
    println!("  {:>6.1} s  total", s.start.elapsed().as_secs_f64());
    if !diff.is_clean() || dv + df > 0 || go != 0 {
        bail!("the tables differ: the migration is NOT complete");
    }
    println!(
        "\nRESULT: identical. {items} items, {} live writes replicated; writes paused {paused_s:.1} s for the switch.",
        counts.total()
    );
    Ok(())
}

/// Runs the operator CLI (`ddb-relay`, built beside this binary), shows the
/// command and its output, and returns its exit code.
fn relay(local: &Local, stack: &str, args: &[&str]) -> Result<i32> {
    let bin = std::env::current_exe()?
        .parent()
        .map(|d| d.join("ddb-relay"))
        .ok_or_else(|| anyhow::anyhow!("no directory for the ddb-relay binary"))?;
    println!("    $ ddb-relay {}", args.join(" "));
    let out = std::process::Command::new(&bin)
        .args(args)
        .env("AWS_ENDPOINT_URL", &local.endpoint)
        .env("DDB_RELAY_STACK", stack)
        .env("AWS_REGION", relay_e2e::REGION)
        .env(
            "AWS_ACCESS_KEY_ID",
            std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into()),
        )
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run {}: {e} (build it: cargo build -p ddb-relay)",
                bin.display()
            )
        })?;
    for line in String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
    {
        println!("      {line}");
    }
    Ok(out.status.code().unwrap_or(1))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
