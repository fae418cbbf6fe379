//! The worker Lambda's side of a fanned-out copy (the CLI's side is
//! `commands/fanout.rs`): one task per invocation, run with the same code as
//! the in-process copy (`commands/copy.rs`), until the task's part is done
//! or the invocation's time is nearly up; then the task goes back on the
//! work queue and the next invocation continues from the part's checkpoint.
//!
//! **Invariant:** a scan or file task copies only while the control item
//! says tombstone mode for the task's seed, and a sweep task runs only in
//! normal mode: a task of another seed, or one that arrives out of its
//! phase, does nothing.
//!
//! **Boundary:** the worker reads its stack from its environment, not from
//! CloudFormation; it needs the tables, the work queue and the export
//! bucket, nothing else.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use relay_aws::operator::{Aws, Deployment};
use relay_core::control::Mode;
use relay_core::export::DataFile;
use relay_core::item::AttributeValue;
use relay_core::metrics::MetricRecord;
use relay_core::work::{Job, PartState, Task};

use crate::commands::copy::{checkpoint_key, read_checkpoint, Copier};
use crate::commands::parts::{self, Ran};
use crate::ctx::{explain, Ctx};

/// The worker's stack, from its environment (the names the template sets).
pub fn deployment_from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Deployment> {
    let need = |k: &str| {
        get(k)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| anyhow!("environment variable {k} is not set"))
    };
    Ok(Deployment {
        name: get("STACK_NAME").unwrap_or_default(),
        queue_url: String::new(),
        dlq_url: String::new(),
        stream_failure_url: String::new(),
        forwarder: String::new(),
        applier: String::new(),
        control_table: need("CONTROL_TABLE")?,
        source_table: need("SOURCE_TABLE")?,
        target_table: need("TARGET_TABLE")?,
        migration: need("MIGRATION_ID")?,
        margin_ms: 0,
        transform_spec: get("TRANSFORM").filter(|s| !s.trim().is_empty()),
        starting_position: None,
        metrics_mode: None,
        // Verify tasks carry what they need of it (`Job::Verify::kept_ttl`).
        ttl_deletes: None,
        work: Some(relay_aws::operator::Work {
            queue_url: need("WORK_QUEUE_URL")?,
            dlq_url: String::new(),
            worker: String::new(),
            concurrency: 0,
            export_bucket: None,
        }),
        target: relay_core::place::TargetPlace::from_env(&get)?,
        roles: Vec::new(),
    })
}

/// Time kept back from the invocation's deadline to save the checkpoint
/// and send the task on.
pub const RESERVE: Duration = Duration::from_secs(10);

/// How one run of a task ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Out of time: continue with this task (sent back on the work queue).
    Continue,
    /// Another run holds the part, or the task belongs to another seed or
    /// phase.
    Dropped(&'static str),
}

/// Runs one task until its part is done or `until`.
pub async fn run_task<A: Aws>(
    ctx: &Ctx<A>,
    task: &Task,
    until: Option<tokio::time::Instant>,
) -> Result<Outcome> {
    run_counted(ctx, task, until).await.map(|(o, _)| o)
}

/// [`run_task`], with the items this run moved its part by (read, written).
pub async fn run_counted<A: Aws>(
    ctx: &Ctx<A>,
    task: &Task,
    until: Option<tokio::time::Instant>,
) -> Result<(Outcome, (u64, u64))> {
    if let Job::Verify { .. } = task.job {
        // Boxed: the verify's future nests deep enough to pass the
        // compiler's type-layout depth limit inside the Lambda runtime's.
        let (outcome, read) =
            Box::pin(crate::commands::verify_part::run_part(ctx, task, until)).await?;
        return Ok((outcome, (read, 0)));
    }
    let ckey = checkpoint_key(ctx);
    let checkpoint = read_checkpoint(ctx, &ckey).await?;
    let seed = checkpoint.as_ref().and_then(|c| match c.get("seed_ms") {
        Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    });
    if seed != Some(task.seed_ms) {
        return Ok((Outcome::Dropped("the task belongs to another seed"), (0, 0)));
    }
    let part = task.job.part();
    let before = PartState::read(checkpoint.as_ref().and_then(|c| c.get(&part)));
    let control = ctx.control().await?;
    let copying = matches!(task.job, Job::Scan { .. } | Job::File { .. });
    let phase = if copying {
        Mode::Tombstone
    } else {
        Mode::Normal
    };
    // A restart's pending state keeps the seed's time and mode, but no
    // cutoff and another method.
    if !control.names_copy(task.seed_ms, phase) {
        return Ok((
            Outcome::Dropped("the control item is not in the task's phase"),
            (0, 0),
        ));
    }
    let loaded = crate::transform::load(ctx).await?;
    let copier = Copier::new(
        loaded.transform.as_ref(),
        task.rate,
        task.max_wcu,
        indicatif::ProgressBar::hidden(),
    );
    let ran = match &task.job {
        Job::Scan { segment, segments } => {
            parts::copy_segment(
                ctx,
                &copier,
                (&ckey, task.seed_ms),
                (*segment, *segments),
                &loaded.source_keys,
                until,
            )
            .await?
        }
        Job::File {
            index,
            bucket,
            key,
            items,
        } => {
            let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
            let f = DataFile {
                key: key.clone(),
                item_count: *items,
            };
            parts::copy_file(
                ctx,
                &copier,
                (&ckey, task.seed_ms),
                bucket,
                (*index, &f),
                tmp.path(),
                until,
            )
            .await?
        }
        Job::Verify { .. } => unreachable!("run above"),
        Job::Sweep { segment, segments } => {
            parts::sweep_segment(
                ctx,
                (&ckey, task.seed_ms),
                (*segment, *segments),
                &loaded.transform.target_key_names(),
                until,
            )
            .await?
        }
    };
    let after = read_checkpoint(ctx, &ckey)
        .await?
        .map(|c| PartState::read(c.get(&part)))
        .unwrap_or_default();
    // Another run may have moved the part too: a rough count for metrics.
    let moved = (
        after.items.saturating_sub(before.items),
        after.written.saturating_sub(before.written),
    );
    let outcome = match ran {
        Ran::Done => Outcome::Done,
        Ran::Paused => Outcome::Continue,
        Ran::Lost => Outcome::Dropped("another run of the task holds its part"),
        Ran::Gone => Outcome::Dropped("the copy's checkpoint is gone or belongs to another seed"),
    };
    Ok((outcome, moved))
}

/// One invocation: each message is a task; a task out of time goes back on
/// the work queue, a failed one is reported (SQS retries it, then moves it
/// to the work dead-letter queue, where `seed` sees it).
pub async fn handle<A: Aws>(
    ctx: &Ctx<A>,
    event: SqsEvent,
    deadline: tokio::time::Instant,
) -> SqsBatchResponse {
    handle_counted(ctx, event, deadline).await.0
}

/// [`handle`], with the invocation's metrics: `CopyItemsRead`,
/// `CopyItemsWritten`, `CopyPartsDone` (verify parts too),
/// `VerifyItemsRead`, `CopyTaskFailures`.
pub async fn handle_counted<A: Aws>(
    ctx: &Ctx<A>,
    event: SqsEvent,
    deadline: tokio::time::Instant,
) -> (SqsBatchResponse, MetricRecord) {
    // Kept back: at least RESERVE, a tenth of a long invocation (SDK
    // retries under throttling take seconds).
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let until = deadline
        .checked_sub(RESERVE.max(left / 10))
        .unwrap_or(deadline);
    let mut failures = Vec::new();
    let (mut read, mut written, mut done, mut verified) = (0, 0, 0, 0);
    for m in event.records {
        let id = m.message_id.clone().unwrap_or_default();
        let body = m.body.as_deref().unwrap_or_default();
        let ran = async {
            let task = Task::parse(body)?;
            let (outcome, moved) = run_counted(ctx, &task, Some(until)).await?;
            if matches!(task.job, Job::Verify { .. }) {
                verified += moved.0;
            } else {
                read += moved.0;
            }
            written += moved.1;
            done += u64::from(outcome == Outcome::Done);
            if outcome == Outcome::Continue {
                let url = &ctx.stack.work.as_ref().context("no work queue")?.queue_url;
                ctx.aws
                    .send_message(url, &task.encode())
                    .await
                    .map_err(|e| explain(e, "work queue"))?;
            }
            Ok::<_, anyhow::Error>((task, outcome))
        }
        .await;
        match ran {
            Ok((task, outcome)) => {
                tracing::info!(part = %task.job.part(), outcome = ?outcome, "task");
            }
            Err(e) => {
                tracing::error!(message_id = %id, error = %format!("{e:#}"), "task failed");
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                failures.push(f);
            }
        }
    }
    let mut m = MetricRecord::new("worker");
    m.count("CopyItemsRead", read)
        .count("CopyItemsWritten", written)
        .count("CopyPartsDone", done)
        .count("VerifyItemsRead", verified)
        .count("CopyTaskFailures", failures.len() as u64);
    let mut r = SqsBatchResponse::default();
    r.batch_item_failures = failures;
    (r, m)
}
