//! `verify --fan-out`: the comparison run by the worker Lambda, for tables
//! too large for one machine's scan. Every part is one scan segment of one
//! table, compared by lookups on the other, page by page:
//!
//! - a **source** segment: each item through the transform, read back from
//!   the target at its target key (BatchGetItem): missing and different
//!   items;
//! - a **target** segment: each item, read back from the source at the
//!   source key it carries: an item whose source is gone or now maps to
//!   another key is extra.
//!
//! What differs is re-checked with consistent reads after a pause, then
//! settled (and repaired with `--repair`) by the same code as the
//! in-process verify (`verify.rs`). Each part saves its position, counts
//! and a few examples in the verify's checkpoint item; the CLI sums them
//! into one report.
//!
//! Memory per worker is one scan page plus at most [`FLUSH`] suspects and
//! one chunk's, whatever the table size. Reads: one scan of each table, one
//! eventually consistent read by key of every item of each (BatchGetItem,
//! at least 0.5 RCU an item however small: see docs/DESIGN.md for the
//! cost), and two consistent GetItems per suspect and round. What bounds
//! the reads is the number of parts at once (`--segments`,
//! `WorkerConcurrency`); there is no `--rate` (pacing a part whose pages
//! hold more items than its share reads in one invocation would need a
//! scan `Limit`: not built).
//!
//! **Invariant:** a part's state (one item per part, keyed by the run) moves
//! only on the condition that it still holds what the run read: a task run
//! twice counts each item once, and a run of an earlier verify writes only
//! into its own run's items, which no later verify reads.
//!
//! **Invariant:** a run saves before its deadline: it stops reading when
//! settling what it holds (re-check rounds, repairs) could pass the
//! deadline, mid-page if need be (a scan resumes after any key of its
//! segment); a chunk whose suspects could not settle in time is left to the
//! next run, except the first chunk of a run (the CLI checks that one chunk
//! can always settle in one invocation).
//!
//! **Boundary:** the target pass can find an extra item only through the
//! source key it carries; the CLI refuses `--fan-out` for a transform that
//! drops it (the in-process verify, which partitions both tables by target
//! key, has no such limit).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use futures::StreamExt;
use relay_aws::operator::{Aws, Cond};
use relay_core::diff;
use relay_core::item::{AttributeValue, Attrs, CanonicalKey};
use relay_core::work::{verify_parts, Job, Side, Task, VerifyCounts, VerifyState};

use super::copy::read_checkpoint;
use super::fanout::{self, Parts};
use super::verify::{
    add_example, record_verdict, refuse_repairs_unless_seeded, Examples, Kind, VerifyReport,
    RECHECK_CONCURRENCY,
};
use super::verify_part::{batch_read, settle_time, CHUNK, CHUNK_REPAIRING};
use crate::ctx::{explain, Ctx};

/// Segments per table at most (the CLI reads every part's item while it
/// follows them).
pub const MAX_SEGMENTS: i32 = 1000;
/// The task kinds a worker runs, as its `WORKER_JOBS` names them.
const JOB: &str = "verify";

/// The item naming the current fanned-out verify run (`run_ms`,
/// `segments`), beside the control item.
pub fn verify_key<A>(ctx: &Ctx<A>) -> Attrs {
    key(&format!("{}#verify", ctx.stack.migration))
}

/// The item holding one part's state (`state`) in one run.
pub fn part_key<A>(ctx: &Ctx<A>, run_ms: i64, part: &str) -> Attrs {
    key(&format!("{}#verify#{run_ms}#{part}", ctx.stack.migration))
}

fn key(id: &str) -> Attrs {
    Attrs::from([(
        relay_core::control::ATTR_MIGRATION.to_string(),
        AttributeValue::S(id.into()),
    )])
}

fn parts(run_ms: i64) -> Parts {
    Parts {
        owner: ("run_ms", run_ms),
        whose: "verify",
        done: |v| VerifyState::read(v).is_ok_and(|s| s.done()),
        items: |c| {
            verify_parts(c)
                .unwrap_or_default()
                .iter()
                .map(|p| p.n.source_items + p.n.target_items)
                .sum()
        },
    }
}

/// The run item with every part's state added under the part's name (parts
/// not started are absent); eventually consistent, which is enough: a done
/// part's state is final.
async fn read_parts<A: Aws>(ctx: &Ctx<A>, tasks: &[Task], run_ms: i64) -> Result<Attrs> {
    let mut c = read_checkpoint(ctx, &verify_key(ctx))
        .await?
        .unwrap_or_default();
    if c.get("run_ms") != Some(&AttributeValue::N(run_ms.to_string())) {
        return Ok(c);
    }
    let names: BTreeMap<CanonicalKey, String> = tasks
        .iter()
        .map(|t| {
            let p = t.job.part();
            (CanonicalKey::of(&part_key(ctx, run_ms, &p)), p)
        })
        .collect();
    let keys: Vec<Attrs> = tasks
        .iter()
        .map(|t| part_key(ctx, run_ms, &t.job.part()))
        .collect();
    let items = batch_read(ctx, &ctx.stack.control_table, &keys).await?;
    for mut item in items {
        let Some(state) = item.remove("state") else {
            continue;
        };
        let Some(id) = item.get(relay_core::control::ATTR_MIGRATION) else {
            continue;
        };
        let k = key(match id {
            AttributeValue::S(s) => s,
            _ => continue,
        });
        if let Some(p) = names.get(&CanonicalKey::of(&k)) {
            c.insert(p.clone(), state);
        }
    }
    Ok(c)
}

/// Deletes the part items of the run `run_ms` (best effort: a leftover is
/// a few bytes no later run reads).
async fn forget_run<A: Aws>(ctx: &Ctx<A>, run_ms: i64, segments: i32) {
    let parts = (0..segments).flat_map(|i| [format!("vsrc_{i}"), format!("vtgt_{i}")]);
    let _ = futures::stream::iter(parts)
        .map(|p| async move {
            ctx.aws
                .delete_item(
                    &ctx.stack.control_table,
                    &part_key(ctx, run_ms, &p),
                    &Cond::Always,
                )
                .await
        })
        .buffer_unordered(RECHECK_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
}

/// The CLI's side: starts a verify run, sends one task per segment of each
/// table, follows the parts, and merges their counts into one report.
pub async fn verify<A: Aws>(
    ctx: &Ctx<A>,
    sample: f64,
    repair: bool,
    recheck_wait: u64,
    segments: i32,
) -> Result<VerifyReport> {
    let s = &ctx.stack;
    let w = fanout::workers(ctx)?;
    if segments > MAX_SEGMENTS {
        bail!("a fanned-out verify runs at most {MAX_SEGMENTS} segments per table: use --segments {MAX_SEGMENTS} or fewer");
    }
    let jobs = fanout::worker_jobs(ctx, &w).await?;
    if !jobs.split_whitespace().any(|j| j == JOB) {
        bail!(
            "the stack's copy worker ({}) predates verify --fan-out: redeploy the stack with this release's template.yaml, or verify in this process (drop --fan-out)",
            w.worker
        );
    }
    // Each run saves before its deadline; what it holds must settle in one
    // invocation (less the time kept back).
    let timeout = ctx
        .aws
        .function_timeout_s(&w.worker)
        .await
        .map_err(|e| explain(e, &format!("function {}", w.worker)))?;
    let usable = timeout.saturating_sub((timeout / 10).max(crate::worker::RESERVE.as_secs()));
    let chunk = if repair { CHUNK_REPAIRING } else { CHUNK };
    let need = settle_time(chunk, recheck_wait, repair).as_secs();
    if need > usable {
        bail!(
            "--recheck-wait {recheck_wait} leaves the workers no time: settling one chunk takes up to {need} s, and an invocation of {} has {usable} s (WorkerTimeoutSeconds={timeout}): lower --recheck-wait or raise WorkerTimeoutSeconds",
            w.worker
        );
    }
    let loaded = crate::transform::load(ctx).await?;
    let t = loaded.transform.as_ref();
    // The target pass finds an extra item by the source key it carries.
    let (first, _) = ctx
        .aws
        .scan_page(&s.source_table, 0, 1, None, false)
        .await
        .map_err(|e| explain(e, &s.source_table))?;
    if let Some(out) = first.first().and_then(|i| t.item(i).ok()) {
        if t.source_key_of(&out, &loaded.source_keys).is_none() {
            bail!(
                "the transform drops the source key ({}) from target items, so a fanned-out verify cannot find where a target item came from (to tell an extra item): run verify without --fan-out (it compares in bounded memory in this process)",
                loaded.source_keys.join(", ")
            );
        }
    }
    let started_ms = ctx.now_ms();
    let start = ctx.control().await?;
    let whole = super::verify::may_record(ctx, &start).await;
    if repair {
        refuse_repairs_unless_seeded(&start)?;
    }
    let ttl = super::verify::kept_ttl(ctx).await?;
    // Before the last run is forgotten (helper-65 #2).
    let need = relay_core::work::verify_task_version(repair, ttl.is_some());
    fanout::require_task_version(ctx, &w, need).await?;
    let began = std::time::Instant::now();
    // A new run replaces the last one: its tasks still queued stop at the
    // run check, and its part items go.
    let key = verify_key(ctx);
    if let Some(last) = read_checkpoint(ctx, &key).await? {
        if let (Some(AttributeValue::N(r)), Some(AttributeValue::N(n))) =
            (last.get("run_ms"), last.get("segments"))
        {
            if let (Ok(r), Ok(n)) = (r.parse(), n.parse()) {
                forget_run(ctx, r, n).await;
            }
        }
    }
    let run_ms = ctx.now_ms();
    let mut item = key.clone();
    item.insert("run_ms".into(), AttributeValue::N(run_ms.to_string()));
    item.insert("segments".into(), AttributeValue::N(segments.to_string()));
    ctx.aws
        .put_item(&s.control_table, &item, &Cond::Always)
        .await
        .map_err(|e| explain(e, "control table"))?;
    let bp = diff::basis_points(sample);
    let jobs: Vec<Job> = [Side::Source, Side::Target]
        .into_iter()
        .flat_map(|side| {
            let ttl = ttl.clone();
            (0..segments).map(move |segment| Job::Verify {
                run_ms,
                side,
                segment,
                segments,
                sample_bp: bp,
                repair,
                recheck_wait_s: recheck_wait,
                kept_ttl: ttl.clone(),
            })
        })
        .collect();
    let tasks = fanout::with_shares(start.seed_ms.unwrap_or(0), jobs, 0, 0, w.concurrency);
    let mut expected = 0;
    for table in [&s.source_table, &s.target_table] {
        if let Ok(Some(info)) = ctx.aws.describe(table).await {
            expected += info.item_count.unwrap_or(0).max(0) as u64;
        }
    }
    let read = || read_parts(ctx, &tasks, run_ms);
    let c = fanout::follow(
        ctx,
        &read,
        &tasks,
        "verify",
        (expected > 0).then_some(expected),
        &parts(run_ms),
    )
    .await?;
    let mut n = VerifyCounts::default();
    let mut examples = Examples::default();
    for p in verify_parts(&c).map_err(|e| anyhow!(e))? {
        n += p.n;
        for (kind, keys) in [
            (Kind::Missing, &p.missing),
            (Kind::Changed, &p.changed),
            (Kind::Extra, &p.extra),
        ] {
            for k in keys {
                add_example(&mut examples, kind, k);
            }
        }
    }
    // Finished: a task of this run delivered late does nothing.
    ctx.aws
        .set_attr(
            &s.control_table,
            &key,
            "finished",
            Some(AttributeValue::Bool(true)),
            &Cond::Equals("run_ms".into(), AttributeValue::N(run_ms.to_string())),
        )
        .await
        .map_err(|e| explain(e, "control table"))?;
    forget_run(ctx, run_ms, segments).await;
    // A source item the transform cannot map is not in the target either.
    let left = n.remaining + n.unmappable;
    let recorded = record_verdict(ctx, (&start, started_ms, whole), sample, left).await?;
    let took = began.elapsed().as_secs_f64();
    Ok(VerifyReport {
        stack: s.name.clone(),
        clean: left == 0,
        sample_percent: sample,
        source_items: n.source_items,
        compared: n.expected.max(n.actual),
        unmappable: n.unmappable,
        missing: n.missing,
        changed: n.changed,
        extra: n.extra,
        lag_resolved: n.mismatched.saturating_sub(n.still_mismatched + n.ttl_kept),
        ttl_kept: n.ttl_kept,
        repaired: n.repaired,
        remaining: n.remaining,
        unrepairable: n.unrepairable,
        seconds: took,
        items_per_s: (n.source_items + n.target_items) as f64 / took.max(0.001),
        recorded,
        examples,
        spill: Default::default(),
        fanned_out: Some(tasks.len() as u64),
        repair,
    })
}
