//! Cold start and peak memory of the release `bootstrap` binaries (the ones
//! `sam build` makes, as deployed), each run as a process against a local
//! fake Lambda Runtime API on 127.0.0.1, which also answers the handlers'
//! AWS calls with `relay_aws::fake::workload::canned_answer` (same port,
//! `AWS_ENDPOINT_URL`). No network, no emulator.
//!
//! `make bench-coldstart` (runs `sam build` first), or
//! `cargo run --release -p relay-e2e --bin coldstart -- [FORWARDER APPLIER]`
//! (`COLDSTART_BATCHES=2400` measures that batch size alone).
//! The forwarder runs with the template's `GLIBC_TUNABLES`, as deployed.
//! `COLDSTART_ENV="NAME=value …"` adds variables to both bootstraps'
//! environments, after the template's (an experiment; `GLIBC_TUNABLES=`
//! gives glibc's defaults).
//!
//! Printed, per bootstrap and batch size, over `RUNS` fresh processes:
//! * init: process spawn → its first `GET …/invocation/next` (runtime and
//!   SDK set-up, configuration read);
//! * first: spawn → the response of its first invocation posted (init plus
//!   one cold invocation, its first connection to the AWS endpoint
//!   included: plain HTTP on 127.0.0.1, so no DNS or TLS, which a real cold
//!   start also pays);
//! * peak RSS: the process's `VmHWM` after `INVOCATIONS` invocations, read
//!   while it waits for the next one.
//!
//! The applier's events are the messages the forwarder bootstrap sent in
//! the same run (captured from its SendMessageBatch calls), 10 a batch.
#![allow(clippy::print_stdout)] // a bench binary prints its table

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use relay_aws::fake::workload::{canned_answer, sqs_json, stream_json, MIGRATION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RUNS: usize = 10;
const INVOCATIONS: usize = 10;
/// Every wait is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    events: VecDeque<String>,
    /// When each `next` and each response arrived.
    nexts: Vec<Instant>,
    responses: Vec<Instant>,
    errors: Vec<String>,
    /// SendMessageBatch request bodies, as sent (parsed after the run, so
    /// the fake does no parsing while the process is timed).
    sent: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// One HTTP/1.1 request: method, path, lower-cased headers, body.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request (Content-Length bodies only: what the runtime client
/// and the SDK send) or `None` at end of stream.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Request>> {
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if sock.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])?.to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (
        first.next().unwrap_or_default(),
        first.next().unwrap_or_default(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if headers.iter().any(|(k, _)| k == "transfer-encoding") {
        bail!("chunked requests are not supported by this fake");
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(Ok(0), |(_, v)| v.parse())?;
    while buf.len() < head_end + len {
        if sock.read_buf(buf).await? == 0 {
            bail!("connection closed inside a body");
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Ok(Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        headers,
        body,
    }))
}

/// The answer to one request: status, extra headers, body. `None`: hold
/// the request (no event left: the process waits, as in Lambda).
fn route(state: &Shared, req: &Request, n: &mut u64) -> Option<(u16, Vec<String>, String)> {
    const NEXT: &str = "/2018-06-01/runtime/invocation/next";
    let mut s = lock(state);
    if req.method == "GET" && req.path == NEXT {
        s.nexts.push(Instant::now());
        let event = s.events.pop_front()?;
        *n += 1;
        let deadline = relay_e2e::now_ms() + 300_000;
        let headers = vec![
            format!("Lambda-Runtime-Aws-Request-Id: req-{n}"),
            format!("Lambda-Runtime-Deadline-Ms: {deadline}"),
            "Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:bench".into(),
            "Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000".into(),
            "Content-Type: application/json".into(),
        ];
        return Some((200, headers, event));
    }
    if req.path.ends_with("/response") {
        s.responses.push(Instant::now());
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let failures = v["batchItemFailures"].as_array().map_or(0, |a| a.len());
        if failures > 0 {
            s.errors.push(format!("{failures} batch item failures"));
        }
        return Some((202, vec![], "{}".into()));
    }
    if req.path.ends_with("/error") {
        let e = String::from_utf8_lossy(&req.body).into_owned();
        s.errors.push(e);
        return Some((202, vec![], "{}".into()));
    }
    let target = req.header("x-amz-target").unwrap_or_default();
    let body = std::str::from_utf8(&req.body).unwrap_or_default();
    if target == "AmazonSQS.SendMessageBatch" {
        s.sent.push(body.to_string());
    }
    let headers = vec!["Content-Type: application/x-amz-json-1.0".to_string()];
    match canned_answer(target, body) {
        Some(answer) => Some((200, headers, answer)),
        None => {
            s.errors.push(format!("unexpected AWS call {target:?}"));
            Some((400, headers, r#"{"__type":"UnknownOperation"}"#.into()))
        }
    }
}

async fn serve(mut sock: TcpStream, state: Shared) -> Result<()> {
    let mut buf = Vec::new();
    let mut n = 0u64;
    while let Some(req) = read_request(&mut sock, &mut buf).await? {
        let Some((status, headers, body)) = route(&state, &req, &mut n) else {
            // Held until the process is killed.
            return std::future::pending().await;
        };
        let mut out = format!("HTTP/1.1 {status} OK\r\nContent-Length: {}\r\n", body.len());
        for h in headers {
            out.push_str(&h);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&body);
        sock.write_all(out.as_bytes()).await?;
    }
    Ok(())
}

/// One process's figures.
struct Sample {
    init: Duration,
    first: Duration,
    rss_kib: u64,
}

/// Peak resident set (`VmHWM`, KiB) of a live process.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

/// Runs `bootstrap` once over `events`: a fresh process, a fresh fake.
async fn run_once(
    bootstrap: &str,
    env: &[(&str, &str)],
    events: &[String],
) -> Result<(Sample, Vec<(String, String)>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state: Shared = Arc::default();
    lock(&state).events = events.iter().cloned().collect();
    let accept = {
        let state = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(sock, state.clone()).await {
                        lock(&state).errors.push(format!("fake server: {e:#}"));
                    }
                });
            }
        })
    };
    let home = std::env::temp_dir().join("ddb-relay-coldstart-home");
    std::fs::create_dir_all(&home)?;
    let endpoint = format!("http://{addr}");
    let api = addr.to_string();
    let mut cmd = tokio::process::Command::new(bootstrap);
    cmd.env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("MIGRATION_ID", MIGRATION)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawn {bootstrap}"))?;
    let pid = child.id().context("no pid")?;
    // Done: every event answered and the process back at `next`.
    let wanted = events.len();
    let done = loop {
        {
            let s = lock(&state);
            if !s.errors.is_empty() {
                break Err(anyhow::anyhow!("{}", s.errors.join("; ")));
            }
            if s.responses.len() == wanted && s.nexts.len() > wanted {
                break Ok(());
            }
        }
        if start.elapsed() > LIMIT {
            break Err(anyhow::anyhow!("not done within {LIMIT:?}"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!("{bootstrap} exited: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let rss = peak_rss_kib(pid);
    child.kill().await.ok();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).await.ok();
    }
    accept.abort();
    done.with_context(|| format!("stderr: {}", stderr.trim()))?;
    let s = lock(&state);
    let sample = Sample {
        init: s.nexts[0] - start,
        first: s.responses[0] - start,
        rss_kib: rss?,
    };
    let mut sent = Vec::new();
    for body in &s.sent {
        let v: serde_json::Value = serde_json::from_str(body)?;
        for e in v["Entries"].as_array().into_iter().flatten() {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            sent.push((text("MessageBody"), text("MessageGroupId")));
        }
    }
    Ok((sample, sent))
}

/// The template's `GLIBC_TUNABLES` for the forwarder: its one plain
/// `GLIBC_TUNABLES: glibc.…=N:…` line (the Makefile reads the same line;
/// `tests/validate.rs` keeps it one plain line). glibc ignores a tunable
/// it cannot parse, so anything else is an error here, not a silent run on
/// glibc's defaults.
fn template_tunables(template: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("read {}", template.display()))?;
    let values = relay_e2e::template_tunables(&text);
    match values[..] {
        [v] if relay_e2e::plain_tunables(v) => Ok(v.to_string()),
        _ => bail!(
            "{}: expected one plain `GLIBC_TUNABLES: glibc.x.y=N[:…]` line, found {values:?}",
            template.display()
        ),
    }
}

/// `COLDSTART_ENV`: space-separated `NAME=value` pairs both bootstraps
/// also get (an experiment, e.g. `SEND_IN_FLIGHT_BYTES=262144` or
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072`).
fn extra_env() -> Result<Vec<(String, String)>> {
    let Ok(v) = std::env::var("COLDSTART_ENV") else {
        return Ok(Vec::new());
    };
    v.split_whitespace()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("COLDSTART_ENV: {pair:?} is not NAME=value"))
        })
        .collect()
}

/// The batch sizes measured: `COLDSTART_BATCHES` (comma-separated record
/// counts, e.g. `2400` for the largest payload alone), or all of them.
fn batches() -> Result<Vec<usize>> {
    match std::env::var("COLDSTART_BATCHES") {
        Ok(v) => v
            .split(',')
            .map(|b| {
                b.trim()
                    .parse()
                    .context("COLDSTART_BATCHES: record counts, comma-separated")
            })
            .collect(),
        Err(_) => Ok(vec![1, 100, 500, 1000, 2400]),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn row(name: &str, batch: &str, invocations: usize, samples: &[Sample]) {
    let mut init: Vec<f64> = samples.iter().map(|s| ms(s.init)).collect();
    let mut first: Vec<f64> = samples.iter().map(|s| ms(s.first)).collect();
    let rss = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "| {name:<9} | {batch:<26} | {invocations:>2} | {:>4} | {:>6.1} / {:>6.1} | {:>6.1} / {:>6.1} | {:>6.1} |",
        samples.len(),
        median(&mut init),
        max(&init),
        median(&mut first),
        max(&first),
        rss as f64 / 1024.0
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = relay_e2e::repo_root();
    let path = |i: usize, f: &str| {
        args.get(i).cloned().unwrap_or_else(|| {
            root.join(format!(".aws-sam/build/{f}/bootstrap"))
                .to_string_lossy()
                .into_owned()
        })
    };
    let (forwarder, applier) = (path(0, "Forwarder"), path(1, "Applier"));
    for b in [&forwarder, &applier] {
        if !std::path::Path::new(b).exists() {
            bail!("{b} not found: run `infra/local/build.sh` (sam build) first");
        }
    }
    let extra = extra_env()?;
    // The allocator settings the template deploys the forwarder with.
    let tunables = template_tunables(&root.join("template.yaml"))?;
    let mut fwd_env = vec![
        ("QUEUE_URL", "http://127.0.0.1/123456789012/relay.fifo"),
        ("GLIBC_TUNABLES", tunables.as_str()),
    ];
    fwd_env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut app_env = vec![
        ("TARGET_TABLE", "OrdersV2"),
        ("SOURCE_TABLE", "Orders"),
        ("CONTROL_TABLE", "control"),
    ];
    app_env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    println!("| bootstrap | batch (one invocation)     | invocations of the last process | processes | init ms median / max | first response ms median / max | peak RSS MiB (max) |");
    println!("|---|---|---|---|---|---|---|");
    for b in batches()? {
        let event = stream_json(b, 7);
        let label = format!("{b} records, {:.2} MB", event.len() as f64 / 1e6);
        let mut samples = Vec::new();
        let mut sent = Vec::new();
        for run in 0..RUNS {
            // The last run goes on for INVOCATIONS invocations (peak RSS).
            let n = if run + 1 == RUNS { INVOCATIONS } else { 1 };
            let events: Vec<String> = (0..n).map(|i| stream_json(b, 7 + i as u64)).collect();
            let (s, out) = run_once(&forwarder, &fwd_env, &events).await?;
            samples.push(s);
            sent = out;
        }
        row("forwarder", &label, INVOCATIONS, &samples);
        // The applier: what the forwarder sent, 10 messages an invocation.
        let batches: Vec<String> = sent.chunks(10).map(sqs_json).collect();
        if batches.is_empty() {
            bail!("the forwarder sent nothing");
        }
        let biggest = batches.iter().map(String::len).max().unwrap_or(0);
        let label = format!("10 of its msgs, ≤{:.2} MB", biggest as f64 / 1e6);
        let mut samples = Vec::new();
        for run in 0..RUNS {
            let n = if run + 1 == RUNS { batches.len() } else { 1 };
            let (s, _) = run_once(&applier, &app_env, &batches[..n]).await?;
            samples.push(s);
        }
        row("applier", &label, batches.len(), &samples);
    }
    Ok(())
}
