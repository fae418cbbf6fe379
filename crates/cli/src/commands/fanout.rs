//! `--fan-out`: a copy (or its tombstone sweep) run by the worker Lambda.
//! The CLI puts one task per part (scan segment, export file, sweep
//! segment) on the work queue and follows the parts' checkpoints until all
//! are done; the worker's side is `worker.rs`.
//!
//! **Invariant:** the CLI moves on (to normal mode, to the sweep, to
//! forgetting the checkpoints) only when every part's checkpoint says done.
//! Lost or dropped tasks are sent again when nothing is queued or running
//! and parts are still open; a task run twice is harmless (see
//! `relay_core::work`).

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use relay_aws::operator::{Aws, Cond, Work};
use relay_core::item::{AttributeValue, Attrs};
use relay_core::work::{self, share, Job, PartState, Task, Totals};

use super::copy::{read_checkpoint, Export};
use crate::ctx::{explain, Ctx};

/// The stack's workers, or why `--fan-out` cannot run.
pub fn workers<A>(ctx: &Ctx<A>) -> Result<Work> {
    ctx.stack.work.clone().ok_or_else(|| {
        anyhow!(
            "stack {} has no copy workers (outputs WorkQueueUrl, WorkDeadLetterQueueUrl, WorkerFunction): redeploy it with this release's template.yaml, or copy in this process (drop --fan-out)",
            ctx.stack.name
        )
    })
}

/// What the stack's worker says it runs (`WORKER_JOBS`: task kinds and
/// `tasks-vN`; empty for a worker from before the variable).
pub async fn worker_jobs<A: Aws>(ctx: &Ctx<A>, w: &Work) -> Result<String> {
    Ok(ctx
        .aws
        .function_env(&w.worker, "WORKER_JOBS")
        .await
        .map_err(|e| explain(e, &format!("function {}", w.worker)))?
        .unwrap_or_default())
}

/// Refuses tasks of version `need` when the stack's worker reads only older
/// ones: its `WORKER_JOBS` names the newest it reads (`tasks-vN`; none: 1,
/// a worker from before the token, some of which read only version 1). The
/// worker would refuse them one by one into the work DLQ, or an older one
/// run them the old way (helper-62 #2: a version 3 task is a copy or repair
/// with placeholders). Called before a command changes anything, and again
/// before tasks are sent.
pub async fn require_task_version<A: Aws>(ctx: &Ctx<A>, w: &Work, need: u32) -> Result<()> {
    if need <= 1 {
        return Ok(());
    }
    let reads = worker_jobs(ctx, w)
        .await?
        .split_whitespace()
        .filter_map(|j| j.strip_prefix("tasks-v")?.parse::<u32>().ok())
        .max()
        .unwrap_or(1);
    if need > reads {
        bail!(
            "the stack's copy worker ({}) reads tasks up to version {reads}, and this command's tasks are version {need}: redeploy the stack with this release's template.yaml (an older worker would refuse them, or copy or repair the old way), or run in this process (drop --fan-out)",
            w.worker
        );
    }
    Ok(())
}

/// Refuses an export the workers may not read: the stack names the one
/// bucket they can read (`ExportBucketName`), when it reports it.
pub fn check_bucket(w: &Work, x: &Export) -> Result<()> {
    match w.export_bucket.as_deref() {
        Some(b) if b == x.bucket => Ok(()),
        Some("") => bail!(
            "the workers may read no export bucket: redeploy the stack with ExportBucketName={}, or load in this process (drop --fan-out)",
            x.bucket
        ),
        Some(b) => bail!(
            "the workers may read only s3://{b}, not s3://{}: redeploy the stack with ExportBucketName={}, or load in this process (drop --fan-out)",
            x.bucket,
            x.bucket
        ),
        None => Ok(()),
    }
}

/// The copy's tasks: one per scan segment, or one per export file, each
/// with its share of the limits (shared by the parts that can run at
/// once).
pub fn copy_tasks(
    seed_ms: i64,
    export: Option<&Export>,
    (segments, rate, max_wcu): (i32, u64, u64),
    concurrency: u64,
) -> Vec<Task> {
    let jobs: Vec<Job> = match export {
        None => (0..segments)
            .map(|segment| Job::Scan { segment, segments })
            .collect(),
        Some(x) => x
            .files
            .iter()
            .enumerate()
            .map(|(index, f)| Job::File {
                index,
                bucket: x.bucket.clone(),
                key: f.key.clone(),
                items: f.item_count,
            })
            .collect(),
    };
    with_shares(seed_ms, jobs, rate, max_wcu, concurrency)
}

/// Runs the tombstone sweep on the workers, one task per segment of the
/// target; returns how many tombstones were deleted. A sweep that already
/// started keeps its number of segments (recorded as `sweep_segments`), so
/// its parts' checkpoints keep meaning the same ranges.
pub async fn sweep<A: Aws>(ctx: &Ctx<A>, ckey: &Attrs, seed_ms: i64, segments: i32) -> Result<u64> {
    let w = workers(ctx)?;
    let c = read_checkpoint(ctx, ckey).await?.unwrap_or_default();
    let segments = match c.get("sweep_segments") {
        Some(AttributeValue::N(n)) => n.parse().unwrap_or(segments),
        _ => {
            let set = mark(
                ctx,
                ckey,
                seed_ms,
                "sweep_segments",
                AttributeValue::N(segments.to_string()),
                true,
            )
            .await?;
            if !set {
                // Another CLI recorded its own number first: use it.
                let c = read_checkpoint(ctx, ckey).await?.unwrap_or_default();
                match c.get("sweep_segments") {
                    Some(AttributeValue::N(n)) => n.parse().unwrap_or(segments),
                    _ => bail!(
                        "the copy's checkpoint is gone or now belongs to another seed: stopping"
                    ),
                }
            } else {
                segments
            }
        }
    };
    // Recorded before any task is sent: a restart that replaces this copy
    // waits for the sweep's workers too (helper-57 #4).
    if !mark(
        ctx,
        ckey,
        seed_ms,
        "fanned_out",
        AttributeValue::Bool(true),
        false,
    )
    .await?
    {
        bail!("the copy's checkpoint is gone or now belongs to another seed: stopping");
    }
    let tasks = sweep_tasks(seed_ms, segments, w.concurrency);
    Ok(run(ctx, ckey, &tasks, "tombstone sweep", None)
        .await?
        .written)
}

/// Sets `name` on the copy's checkpoint only while it belongs to `seed_ms`
/// (and, with `once`, only if `name` is not set yet): a write never creates
/// a checkpoint that was forgotten. `false` when the condition failed.
pub async fn mark<A: Aws>(
    ctx: &Ctx<A>,
    ckey: &Attrs,
    seed_ms: i64,
    name: &str,
    value: AttributeValue,
    once: bool,
) -> Result<bool> {
    let mut all = vec![Cond::Equals(
        "seed_ms".into(),
        AttributeValue::N(seed_ms.to_string()),
    )];
    if once {
        all.push(Cond::Absent(name.into()));
    }
    ctx.aws
        .set_attr(
            &ctx.stack.control_table,
            ckey,
            name,
            Some(value),
            &Cond::All(all),
        )
        .await
        .map(|w| w.done)
        .map_err(|e| explain(e, "control table"))
}

/// Waits until no copy run that started before now can still write: the
/// worker's timeout (Lambda ends every invocation by then) plus 5 s. A run
/// delivered twice, or one left from an interrupted command, may still be
/// putting a chunk after its part was done by another.
pub async fn fence<A: Aws>(ctx: &Ctx<A>, why: &str) -> Result<()> {
    let w = workers(ctx)?;
    let timeout = ctx
        .aws
        .function_timeout_s(&w.worker)
        .await
        .map_err(|e| explain(e, &format!("function {}", w.worker)))?;
    let until = ctx.now_ms() + i64::try_from(timeout).unwrap_or(900) * 1000 + 5_000;
    ctx.wait_until(until, why).await
}

/// The sweep's tasks: one per segment of the target.
fn sweep_tasks(seed_ms: i64, segments: i32, concurrency: u64) -> Vec<Task> {
    let jobs = (0..segments)
        .map(|segment| Job::Sweep { segment, segments })
        .collect();
    with_shares(seed_ms, jobs, 0, 0, concurrency)
}

pub fn with_shares(
    seed_ms: i64,
    jobs: Vec<Job>,
    rate: u64,
    max_wcu: u64,
    concurrency: u64,
) -> Vec<Task> {
    // 0: no maximum, every part may run at once.
    let parts = jobs.len() as u64;
    let at_once = if concurrency == 0 {
        parts
    } else {
        parts.min(concurrency)
    };
    jobs.into_iter()
        .map(|job| Task {
            rate: share(rate, at_once),
            max_wcu: share(max_wcu, at_once),
            ..Task::new(seed_ms, job)
        })
        .collect()
}

/// How the CLI follows a set of parts on one checkpoint item.
#[derive(Debug)]
pub struct Parts {
    /// The attribute naming whose parts these are, and its value:
    /// `seed_ms` for a copy, `run_ms` for a verify.
    pub owner: (&'static str, i64),
    /// What the parts belong to, for errors ("the copy", "the verify").
    pub whose: &'static str,
    /// Whether a part's attribute says done.
    pub done: fn(Option<&AttributeValue>) -> bool,
    /// Items counted so far over all parts.
    pub items: fn(&Attrs) -> u64,
}

/// A copy's parts (`seg_`, `file_` or `sweep_`).
fn copy_parts(seed_ms: i64, job: &Job) -> Parts {
    let items: fn(&Attrs) -> u64 = match part_prefix(job) {
        "seg_" => |c| work::totals(c, "seg_").items,
        "file_" => |c| work::totals(c, "file_").items,
        _ => |c| work::totals(c, "sweep_").items,
    };
    Parts {
        owner: ("seed_ms", seed_ms),
        whose: "copy",
        done: |v| PartState::read(v).done(),
        items,
    }
}

/// Sends the tasks whose parts are not done, then follows the checkpoint
/// until every part is done; returns the parts' totals. Fails when a task
/// reaches the work dead-letter queue, or when the copy's checkpoint now
/// belongs to another seed.
pub async fn run<A: Aws>(
    ctx: &Ctx<A>,
    ckey: &Attrs,
    tasks: &[Task],
    what: &str,
    expected: Option<u64>,
) -> Result<Totals> {
    let Some(first) = tasks.first() else {
        return Ok(Totals::default());
    };
    let parts = copy_parts(first.seed_ms, &first.job);
    let read = || async { Ok(read_checkpoint(ctx, ckey).await?.unwrap_or_default()) };
    let c = follow(ctx, &read, tasks, what, expected, &parts).await?;
    Ok(work::totals(&c, part_prefix(&first.job)))
}

/// Sends the tasks whose parts are not done, then follows the parts (what
/// `read_parts` reads: the owner attribute and one attribute per part) until
/// every task's part is done; returns them as last read. Fails when a task
/// reaches the work dead-letter queue, or when the parts now belong to
/// another owner (a restart, another verify).
pub async fn follow<A, R, F>(
    ctx: &Ctx<A>,
    read_parts: &R,
    tasks: &[Task],
    what: &str,
    expected: Option<u64>,
    parts: &Parts,
) -> Result<Attrs>
where
    A: Aws,
    R: Fn() -> F,
    F: std::future::Future<Output = Result<Attrs>>,
{
    let w = workers(ctx)?;
    if let Some(need) = tasks.iter().map(|t| t.v).max() {
        require_task_version(ctx, &w, need).await?;
    }
    let (owner, id) = parts.owner;
    let dead_before = depth(ctx, &w.dlq_url).await?;
    // Many parts are read in many requests: poll them less often.
    let poll = ctx.poll * u32::try_from(tasks.len() / 100).unwrap_or(u32::MAX).max(1);
    let read = || async {
        let c = read_parts().await?;
        if c.get(owner) != Some(&AttributeValue::N(id.to_string())) {
            bail!(
                "the {}'s checkpoint now belongs to another run (a restart, another verify or another operator): stopping",
                parts.whose
            );
        }
        Ok::<_, anyhow::Error>(c)
    };
    let open = |c: &Attrs| -> Vec<&Task> {
        tasks
            .iter()
            .filter(|t| !(parts.done)(c.get(&t.job.part())))
            .collect()
    };
    let sent = send(ctx, &w, &open(&read().await?)).await?;
    ctx.step(&format!(
        "{what}: {sent} of {} tasks sent to the workers ({}, {})",
        tasks.len(),
        w.worker,
        match w.concurrency {
            0 => "no maximum at once".to_string(),
            n => format!("at most {n} at once"),
        }
    ));
    let pb = ctx.bar(expected, what);
    let mut idle_since: Option<tokio::time::Instant> = None;
    loop {
        let c = read().await?;
        pb.set_position((parts.items)(&c));
        let left = open(&c);
        if left.is_empty() {
            pb.finish_and_clear();
            return Ok(c);
        }
        let dead = depth(ctx, &w.dlq_url).await?;
        if dead > dead_before {
            bail!(
                "{} task(s) of the {what} failed repeatedly and are in the work dead-letter queue ({}); the worker's log group /ddb-relay/{}/worker (function {}) says why. Fix the cause and run the same command again",
                dead - dead_before,
                w.dlq_url,
                ctx.stack.name,
                w.worker
            );
        }
        // Nothing queued or running, parts still open (a task dropped by a
        // run that then died): send the open parts again.
        let q = ctx
            .aws
            .queue_attrs(&w.queue_url)
            .await
            .map_err(|e| explain(e, "work queue"))?;
        if q.visible + q.in_flight == 0 {
            let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= IDLE_RESEND {
                let n = send(ctx, &w, &left).await?;
                ctx.step(&format!(
                    "{what}: the work queue was empty with {n} parts open; sent them again"
                ));
                idle_since = None;
            }
        } else {
            idle_since = None;
        }
        tokio::time::sleep(poll).await;
    }
}

/// How long the work queue may stay empty while parts are open before
/// their tasks are sent again.
const IDLE_RESEND: Duration = Duration::from_secs(10);

/// Sends `tasks` to the work queue; returns how many.
async fn send<A: Aws>(ctx: &Ctx<A>, w: &Work, tasks: &[&Task]) -> Result<u64> {
    for t in tasks {
        ctx.aws
            .send_message(&w.queue_url, &t.encode())
            .await
            .map_err(|e| explain(e, "work queue"))?;
    }
    Ok(tasks.len() as u64)
}

fn part_prefix(job: &Job) -> &'static str {
    match job {
        Job::Scan { .. } => "seg_",
        Job::File { .. } => "file_",
        Job::Sweep { .. } => "sweep_",
        Job::Verify { .. } => "v",
    }
}

async fn depth<A: Aws>(ctx: &Ctx<A>, url: &str) -> Result<u64> {
    let q = ctx
        .aws
        .queue_attrs(url)
        .await
        .map_err(|e| explain(e, "work dead-letter queue"))?;
    Ok(q.visible + q.in_flight)
}
