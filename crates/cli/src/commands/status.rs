//! `status` and `watch`: one screen of facts, read with one CloudWatch
//! request per refresh. A fact that cannot be read is listed as unknown.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Result;
use relay_aws::operator::{Aws, MetricQuery, Series, Stat};
use relay_core::decide::Status;
use relay_core::metrics::names;

use crate::ctx::{explain, rfc3339, Ctx, Output};
use crate::report::Report;

/// Datapoints newer than this count as "recent" for lag.
const RECENT_MS: i64 = 180_000;

impl Report for StatusReport {
    fn text(&self) -> String {
        status_text(&self.0)
    }
}

/// `status` as a report.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct StatusReport(pub Status);

/// The metric series `status` reads, in one request.
struct Queries {
    list: Vec<MetricQuery>,
}

const FORWARDED: usize = 0;
const PUTS: usize = 1;
const DELETES: usize = 2;
const SKIPPED: usize = 3;
const LAG: usize = 4;
const FORWARDER_LAG: usize = 5;
const ITERATOR_AGE: usize = 6;
const OLDEST: usize = 7;
/// From here on: failures, summed into `errors`.
const ERRORS_FROM: usize = 8;

/// A metric the functions publish for this migration (`function`:
/// "forwarder" or "applier").
pub(crate) fn relay_metric(
    stack: &relay_aws::operator::Deployment,
    name: &str,
    function: &str,
    stat: Stat,
) -> MetricQuery {
    MetricQuery::new(
        "DdbRelay",
        name,
        &[
            ("Migration", stack.migration.as_str()),
            ("Function", function),
        ],
        stat,
    )
}

/// The queue's name, as CloudWatch's `AWS/SQS` dimension wants it.
pub(crate) fn queue_name(stack: &relay_aws::operator::Deployment) -> &str {
    stack.queue_url.rsplit('/').next().unwrap_or_default()
}

impl Queries {
    fn new<A>(ctx: &Ctx<A>) -> Self {
        let s = &ctx.stack;
        let ours = |name: &str, f: &str, stat| relay_metric(s, name, f, stat);
        let lambda = |name: &str, function: &str, stat| {
            MetricQuery::new("AWS/Lambda", name, &[("FunctionName", function)], stat)
        };
        let queue_name = queue_name(s);
        Queries {
            list: vec![
                ours(names::FORWARDED, "forwarder", Stat::Sum),
                ours(names::APPLIED_PUTS, "applier", Stat::Sum),
                ours(names::APPLIED_DELETES, "applier", Stat::Sum),
                ours(names::SKIPPED_BEFORE_CUTOFF, "applier", Stat::Sum),
                ours(names::REPLICATION_LAG_MS, "applier", Stat::Maximum),
                ours(names::REPLICATION_LAG_MS, "forwarder", Stat::Maximum),
                lambda("IteratorAge", &s.forwarder, Stat::Maximum),
                MetricQuery::new(
                    "AWS/SQS",
                    "ApproximateAgeOfOldestMessage",
                    &[("QueueName", queue_name)],
                    Stat::Maximum,
                ),
                ours(names::SEND_FAILURES, "forwarder", Stat::Sum),
                ours(names::BAD_RECORDS, "forwarder", Stat::Sum),
                ours(names::FAILED_MESSAGES, "applier", Stat::Sum),
                ours(names::UNDECODABLE_MESSAGES, "applier", Stat::Sum),
                ours(names::CUTOFF_MISSING, "applier", Stat::Sum),
                lambda("Errors", &s.forwarder, Stat::Sum),
                lambda("Errors", &s.applier, Stat::Sum),
                lambda("Throttles", &s.forwarder, Stat::Sum),
                lambda("Throttles", &s.applier, Stat::Sum),
            ],
        }
    }
}

fn sum(s: &Series) -> Option<f64> {
    (!s.is_empty()).then(|| s.iter().map(|(_, v)| v).sum())
}

/// The newest datapoint of the series, if it is recent.
fn newest(series: &[&Series], now_ms: i64) -> Option<f64> {
    series
        .iter()
        .flat_map(|s| s.last())
        .filter(|(t, _)| *t >= now_ms - RECENT_MS)
        .max_by_key(|(t, _)| *t)
        .map(|(_, v)| *v)
}

pub async fn status<A: Aws>(ctx: &Ctx<A>, window_s: u64) -> Result<Status> {
    // CloudWatch's periods are a minute: a shorter window reads a minute,
    // and rates are per the window read.
    let window_s = window_s.max(60);
    let s = &ctx.stack;
    let control = ctx.control().await?;
    let applier = ctx.applier_trigger().await?;
    let forwarder = ctx.forwarder_trigger().await?;
    let queue = ctx
        .aws
        .queue_attrs(&s.queue_url)
        .await
        .map_err(|e| explain(e, "queue"))?;
    let dlq = ctx
        .aws
        .queue_attrs(&s.dlq_url)
        .await
        .map_err(|e| explain(e, "DLQ"))?;
    let failures = ctx
        .aws
        .queue_attrs(&s.stream_failure_url)
        .await
        .map_err(|e| explain(e, "stream failure queue"))?;
    let source = ctx
        .aws
        .describe(&s.source_table)
        .await
        .map_err(|e| explain(e, &s.source_table))?;
    let now = ctx.now_ms();
    let since = now - (window_s as i64) * 1000;
    let q = Queries::new(ctx);
    let mut unknown = Vec::new();
    let series: Vec<Series> = match ctx.aws.metrics(&q.list, since, now + 60_000).await {
        Ok(series) => series,
        Err(e) => {
            unknown.push(format!("CloudWatch metrics ({}: {})", e.code, e.message));
            vec![Vec::new(); q.list.len()]
        }
    };
    if s.metrics_mode.as_deref() == Some("off") {
        unknown.push("the functions' own metrics: the stack's MetricsMode is off (deploy it with emf, or putmetricdata on an emulator)".into());
    }
    let metrics_known = unknown.is_empty();
    let per_min = |v: Option<f64>| v.map(|v| v * 60.0 / window_s as f64);
    let applied = match (sum(&series[PUTS]), sum(&series[DELETES])) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    };
    let errors = metrics_known.then(|| series[ERRORS_FROM..].iter().filter_map(sum).sum::<f64>());
    let (copy_progress, retire_interrupted) = match ctx
        .aws
        .get_item(&s.control_table, &super::copy::checkpoint_key(ctx))
        .await
    {
        Ok(c) => (
            c.as_ref()
                .and_then(|c| super::copy::progress(c, &control, now)),
            c.is_some_and(|c| c.contains_key("retired")),
        ),
        Err(e) => {
            unknown.push(format!("copy checkpoints ({}: {})", e.code, e.message));
            (None, false)
        }
    };
    // The seed holds the source as of its point (a backup: as of a minute
    // before it at worst), and the stream everything after: a stream
    // created after that was a replacement (helper-76 #1).
    let stream_replaced_ms = source
        .as_ref()
        .and_then(|t| t.stream_arn.as_deref())
        .and_then(super::copy::stream_created_ms)
        .filter(|created| {
            let fuzz = match control.seed_method.as_deref() {
                Some("backup") => super::copy::BACKUP_FUZZ_MS,
                _ => 0,
            };
            control.seed_ms.is_some_and(|s| *created > s - fuzz)
        });
    // The target the seed recorded, still there (helper-76 #2).
    let target_replaced = match super::seed::recorded_table(&control) {
        None => false,
        Some(recorded) => match super::seed::target_id(ctx).await {
            Ok(now) => now.as_deref() != Some(recorded),
            Err(e) => {
                unknown.push(format!("the target table ({e:#})"));
                false
            }
        },
    };
    Ok(Status {
        stack: s.name.clone(),
        migration: s.migration.clone(),
        source_table: s.source_table.clone(),
        target_table: s.target_table.clone(),
        // A source without a stream (off) is "not on the current stream".
        forwarder_on_current_stream: source.map(|t| {
            t.stream_arn
                .is_some_and(|current| current == forwarder.source_arn)
        }),
        forwarder_last_result: forwarder.last_result.clone(),
        forwarder_trigger: forwarder.state,
        applier_trigger: applier.state,
        cutoff_ms: control.cutoff_ms,
        mode: format!("{:?}", control.mode).to_lowercase(),
        paused_at_ms: control.paused_at_ms,
        consumed_ms: control.consumed_ms,
        seed_method: control.seed_method,
        seed_ms: control.seed_ms,
        queue_visible: queue.visible,
        queue_in_flight: queue.in_flight,
        queue_oldest_age_s: newest(&[&series[OLDEST]], now),
        dlq_depth: dlq.visible + dlq.in_flight,
        stream_failures: failures.visible + failures.in_flight,
        forwarder_iterator_age_ms: newest(&[&series[ITERATOR_AGE], &series[FORWARDER_LAG]], now),
        window_s,
        forwarded_per_min: per_min(sum(&series[FORWARDED])),
        applied_per_min: per_min(applied),
        skipped_per_min: per_min(sum(&series[SKIPPED])),
        replication_lag_ms: newest(&[&series[LAG]], now),
        errors,
        last_verify: control.last_verify,
        last_verify_age_s: control.verify_ms.map(|t| (now - t).max(0) / 1000),
        verify_ms: control.verify_ms,
        stream_replaced_ms,
        forwarder_from_latest: s.starting_position.as_deref() == Some("LATEST"),
        target_replaced,
        verdict_lifetime_s: relay_core::decide::verdict_lifetime_s(
            dlq.retention_s,
            failures.retention_s,
        ),
        finished_ms: control.finished_ms,
        copy_progress,
        retire_interrupted,
        unknown,
    })
}

fn opt(v: Option<f64>, unit: &str, scale: f64) -> String {
    v.map_or("n/a".into(), |v| format!("{:.1}{unit}", v / scale))
}

pub fn status_text(s: &Status) -> String {
    let t = |v: Option<i64>| v.map_or("none".to_string(), rfc3339);
    let mut out = format!(
        "migration {}  (stack {})\n  {} -> {}\n\
         triggers   forwarder {}{}   applier {}{}\n\
         cutoff     {}   mode {}   paused at {}   seed {} at {}\n\
         consumed   up to {}\n\
         queue      {} visible   {} in flight   oldest {}\n\
         DLQ        {}   stream failures {}\n\
         forwarder  behind the stream by {}\n\
         rates      forwarded {}/min   applied {}/min   skipped (before cutoff) {}/min   (last {} s)\n\
         lag        {}   errors {}\n\
         verify     {}",
        s.migration,
        s.stack,
        s.source_table,
        s.target_table,
        s.forwarder_trigger,
        if s.forwarder_on_current_stream == Some(false) {
            " (NOT on the source's current stream)"
        } else {
            ""
        },
        s.applier_trigger,
        if s.paused_at_ms.is_some() && s.applier_trigger == "Enabled" {
            " (but PAUSED: batches fail back to the queue; run `ddb-relay pause` again or `resume`)"
        } else {
            ""
        },
        t(s.cutoff_ms),
        s.mode,
        t(s.paused_at_ms),
        s.seed_method.as_deref().unwrap_or("none"),
        t(s.seed_ms),
        t(s.consumed_ms),
        s.queue_visible,
        s.queue_in_flight,
        opt(s.queue_oldest_age_s, " s", 1.0),
        s.dlq_depth,
        s.stream_failures,
        opt(s.forwarder_iterator_age_ms, " s", 1000.0),
        opt(s.forwarded_per_min, "", 1.0),
        opt(s.applied_per_min, "", 1.0),
        opt(s.skipped_per_min, "", 1.0),
        s.window_s,
        opt(s.replication_lag_ms, " s", 1000.0),
        s.errors.map_or("unknown".into(), |e| format!("{e:.0}")),
        match (s.last_verify.as_deref(), s.last_verify_age_s) {
            (Some(v), Some(age)) => format!(
                "{v} (began {} ago)",
                relay_core::decide::duration_text(age)
            ),
            (Some(v), None) => v.to_string(),
            (None, _) => "none since the last seed".into(),
        },
    );
    if let Some(f) = s.finished_ms {
        out.push_str(&format!(
            "\nfinished   at {} (restart and replay refuse; `resume` reopens)",
            rfc3339(f)
        ));
    }
    if s.target_replaced {
        out.push_str("\ntarget     REPLACED: not the table the seed wrote (deleted and created again since); re-seed (`ddb-relay pause`, then `ddb-relay restart`)");
    }
    if let Some(r) = s.stream_replaced_ms {
        out.push_str(&format!(
            "\nstream     REPLACED (the current one created {}, after the seed's point less a backup's minute): changes around it may be in no queue; a clean `ddb-relay verify` begun after it (with a forwarder starting at LATEST: a re-seed) is needed before cutover",
            rfc3339(r)
        ));
    }
    if s.retire_interrupted {
        out.push_str(&format!("\ncopy       {}", super::copy::RETIRE_INTERRUPTED));
    }
    if let Some(p) = &s.copy_progress {
        let rate = match (p.items_per_s, p.eta_s) {
            (Some(r), Some(eta)) => format!(", {r:.0} items/s, about {eta:.0} s left"),
            (Some(r), None) => format!(", {r:.0} items/s"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "\ncopy       {} of {} {} done, {} items{}{rate} ({} copy seed; if it stopped, run the same `ddb-relay seed` again to continue)",
            p.done,
            p.total,
            p.parts,
            p.items,
            p.expected.map_or(String::new(), |e| format!(" of ~{e}")),
            s.seed_method.as_deref().unwrap_or("copy")
        ));
    }
    for u in &s.unknown {
        out.push_str(&format!("\nunknown    {u}"));
    }
    out
}

/// `watch`: `status` every `interval` seconds; redraws in place only on a
/// terminal (a log or a pipe gets one snapshot after another).
#[allow(clippy::print_stdout)]
pub async fn watch<A: Aws>(
    ctx: &Ctx<A>,
    window: u64,
    interval: u64,
    count: Option<u64>,
) -> Result<i32> {
    let redraw = ctx.output == Output::Text && std::io::stdout().is_terminal();
    let mut n = 0;
    loop {
        let s = status(ctx, window).await?;
        match (ctx.output, redraw) {
            (Output::Json, _) => println!("{}", serde_json::to_string(&s)?),
            (Output::Text, true) => print!(
                "\x1b[2J\x1b[H{}\n\n(refresh every {interval} s; Ctrl-C to stop)\n",
                status_text(&s)
            ),
            (Output::Text, false) => println!("{}\n", status_text(&s)),
        }
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(interval.max(1))).await;
    }
}
