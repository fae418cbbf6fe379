//! The copy seeds: `seed --method scan`, `restart --method scan` and the
//! export load (`seed --method export --load`, files read by `load.rs`);
//! what they share is in `copy.rs`.
//!
//! **Invariant:** the scan copy never overwrites an item: each put requires
//! the target key to be absent (or to hold only a repair's placeholder), so
//! a newer image or a tombstone written by the applier wins over the
//! (older) scanned copy.
//!
//! **Invariant:** mode switches wait for no applier. The copy starts right
//! after the control item says tombstone mode, and the sweep right after it
//! says normal mode: an applier invocation still working under the old mode
//! finds the item moved when it commits, and writes its batch again under
//! the new mode before any of its messages is deleted. (The switch to
//! normal mode does wait for the copy's own writers: every other run's
//! lease, and on workers one worker timeout, `fanout::fence`.)

use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use futures::future::try_join_all;
use relay_aws::operator::{Aws, Cond};
use relay_core::control::{cutoff_for_seed, ControlState, Mode};
use relay_core::decide::validate_replay_point;
use relay_core::item::{AttributeValue, Attrs};
use relay_core::work::{totals, Totals};
use serde::Serialize;

use super::copy::{checkpoint_key, read_checkpoint, Copier};
pub use super::copy::{clear_target, for_each_page, sweep_tombstones};
use super::lease::{wait_out, Lease};
use super::parts::{copy_segment, Ran};
use super::pause::{bounds, enable_applier};
use crate::args::CopyArgs;
use crate::ctx::{explain, rfc3339, Ctx};
use crate::report::Report;

mod restart;
use restart::fanned_out;
pub use restart::{restart_scan, retire_copy, still_ours};

#[derive(Debug, Serialize)]
pub struct ScanReport {
    pub stack: String,
    /// The target, `name@region[/account]` when elsewhere.
    pub target_table: String,
    pub method: String,
    pub seed_ms: i64,
    pub cutoff_ms: i64,
    pub resumed: bool,
    pub copied: u64,
    pub skipped_existing: u64,
    pub tombstones_deleted: u64,
    pub seconds: f64,
    pub items_per_s: f64,
    pub already: bool,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_key: Option<Vec<String>>,
}

impl Report for ScanReport {
    fn text(&self) -> String {
        if let Some(plan) = &self.plan {
            return format!("dry run: would {plan}");
        }
        format!(
            "{} copy done: {} copied, {} already there (newer or deleted), {} tombstones (and leftover repair placeholders) removed, {:.0} items/s; cutoff {}. The applier is running: `ddb-relay verify`",
            self.method,
            self.copied,
            self.skipped_existing,
            self.tombstones_deleted,
            self.items_per_s,
            rfc3339(self.cutoff_ms)
        )
    }
}

/// Where a copy reads the source's items.
#[derive(Debug)]
pub enum Source {
    /// A parallel scan of the source table, starting now.
    Scan,
    /// The data files of a DynamoDB export (consistent at its export time).
    Export(super::copy::Export),
}

impl Source {
    fn method(&self) -> &'static str {
        match self {
            Source::Scan => "scan",
            Source::Export(_) => "export",
        }
    }
}

/// A dry run's report, before anything is known but the plan.
pub fn plan_only<A>(ctx: &Ctx<A>, method: &str, plan: String) -> ScanReport {
    ScanReport {
        stack: ctx.stack.name.clone(),
        target_table: ctx.stack.target_table.clone(),
        method: method.into(),
        seed_ms: 0,
        cutoff_ms: 0,
        resumed: false,
        copied: 0,
        skipped_existing: 0,
        tombstones_deleted: 0,
        seconds: 0.0,
        items_per_s: 0.0,
        already: false,
        dry_run: true,
        plan: Some(plan),
        target_key: None,
    }
}

/// The target a copy writes into: created by your IaC, keyed as the
/// transform's output.
pub async fn check_target<A: Aws>(
    ctx: &Ctx<A>,
    t: &dyn relay_core::transform::Transform,
    method: &str,
) -> Result<()> {
    let s = &ctx.stack;
    let target = ctx
        .aws
        .describe(&s.target_table)
        .await
        .map_err(|e| explain(e, &s.target_table))?
        .ok_or_else(|| anyhow!("target table {} does not exist: a {method} copy writes into a table your IaC created (with key {:?})", s.target_table, t.target_key_names(), method = method))?;
    let mut want = t.target_key_names();
    let mut have = target.key_names.clone();
    want.sort();
    have.sort();
    if want != have {
        bail!(
            "target table {} is keyed on {:?}, but the transform produces {:?}: fix --transform or the table",
            s.target_table,
            target.key_names,
            t.target_key_names()
        );
    }
    Ok(())
}

/// Scan copy: tombstone mode and cutoff first, applier on, copy with
/// conditional puts (resumable from per-segment checkpoints), normal mode,
/// tombstones swept. `replacing`: called by `restart` on a cleared target.
pub async fn seed_scan<A: Aws>(
    ctx: &Ctx<A>,
    limits: CopyArgs,
    dry_run: bool,
    replacing: bool,
) -> Result<ScanReport> {
    seed_copy(ctx, &Source::Scan, limits, dry_run, replacing).await
}

/// A copy seed from `source`: tombstone mode and cutoff first, applier on,
/// conditional puts (resumable from checkpoints), normal mode, tombstones
/// swept.
pub async fn seed_copy<A: Aws>(
    ctx: &Ctx<A>,
    source: &Source,
    limits: CopyArgs,
    dry_run: bool,
    replacing: bool,
) -> Result<ScanReport> {
    let method = source.method();
    let CopyArgs {
        segments,
        rate,
        max_wcu,
        fan_out,
    } = limits;
    if fan_out {
        let w = super::fanout::workers(ctx)?;
        if let Source::Export(x) = source {
            super::fanout::check_bucket(&w, x)?;
        }
        // Before anything changes (helper-65 #2).
        super::fanout::require_task_version(ctx, &w, relay_core::work::COPY_TASK_VERSION).await?;
    }
    let s = &ctx.stack;
    let loaded = crate::transform::load(ctx).await?;
    let t = loaded.transform.as_ref();
    check_target(ctx, t, method).await?;
    let read = ctx.control().await?;
    let ckey = checkpoint_key(ctx);
    let checkpoint = read_checkpoint(ctx, &ckey).await?;
    // Only the interrupted restart or replay finishes its retire (a
    // restart's own copy comes after it).
    if checkpoint
        .as_ref()
        .is_some_and(|c| c.contains_key("retired"))
        && !replacing
    {
        bail!("{}", super::copy::RETIRE_INTERRUPTED);
    }
    let number = |item: &Attrs, n: &str| match item.get(n) {
        Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
        _ => None,
    };
    // A copy that stopped halfway (same seed, same segments or the same
    // export) continues.
    let same_source = |c: &Attrs| match source {
        Source::Scan => number(c, "segments") == Some(i64::from(segments)),
        Source::Export(x) => c.get("export") == Some(&AttributeValue::S(x.dir.clone())),
    };
    let resuming = matches!(
        (&checkpoint, read.seed_ms, read.cutoff_ms),
        (Some(c), Some(seed), Some(_))
            if read.seed_method.as_deref() == Some(method)
                && read.mode == Mode::Tombstone
                && number(c, "seed_ms") == Some(seed)
                && same_source(c)
    );
    let start_ms = match source {
        _ if resuming => read.seed_ms.unwrap_or_else(|| ctx.now_ms()),
        Source::Scan => ctx.now_ms(),
        Source::Export(x) => x.summary.export_time_ms,
    };
    let cutoff = if resuming {
        read.cutoff_ms.unwrap_or(0)
    } else {
        cutoff_for_seed(start_ms, s.margin_ms)
    };
    let report = |plan: Option<String>| ScanReport {
        stack: s.name.clone(),
        target_table: s.target_table.clone(),
        method: method.into(),
        seed_ms: start_ms,
        cutoff_ms: cutoff,
        resumed: resuming,
        copied: 0,
        skipped_existing: 0,
        tombstones_deleted: 0,
        seconds: 0.0,
        items_per_s: 0.0,
        already: false,
        dry_run,
        plan,
        target_key: None,
    };
    if !replacing {
        super::seed::refuse_copy_over(ctx, &read).await?;
    }
    // A first scan copy: every change after its start must be streamed
    // (an export's point was checked when it was read).
    if matches!(source, Source::Scan) && !resuming && !replacing && read.cutoff_ms.is_none() {
        super::copy::refuse_first_seed_before_stream(
            ctx,
            (start_ms, 0),
            "the copy",
            "copy again later",
        )
        .await?;
    }
    // The copy finished, but the sweep did not (a crash after the switch to
    // normal mode): finish the sweep.
    let unswept = checkpoint
        .as_ref()
        .and_then(|c| number(c, "seed_ms"))
        .is_some_and(|seed| read.names_copy(seed, Mode::Normal));
    if unswept && !replacing {
        if dry_run {
            return Ok(report(Some(
                "finish the interrupted copy: delete the tombstones it left".into(),
            )));
        }
        ctx.step("the copy finished but its tombstone sweep did not: sweeping");
        let seed_ms = read.seed_ms.unwrap_or(start_ms);
        let swept = if fan_out {
            // The fanned-out sweep goes on from its parts' checkpoints.
            super::fanout::sweep(ctx, &ckey, seed_ms, segments).await?
        } else {
            sweep_tombstones(ctx, &t.target_key_names(), segments, seed_ms).await?
        };
        super::copy::forget_checkpoint_of(ctx, seed_ms).await?;
        return Ok(ScanReport {
            resumed: true,
            tombstones_deleted: swept,
            seed_ms: read.seed_ms.unwrap_or(start_ms),
            cutoff_ms: read.cutoff_ms.unwrap_or(cutoff),
            ..report(None)
        });
    }
    // Any earlier seed: its cutoff, not a later one, decides which queued
    // changes the target still needs; copying again needs a restart.
    if !resuming && !replacing && read.cutoff_ms.is_some() {
        bail!(
            "the target is already seeded ({} at {}): to copy again, `ddb-relay pause` then `ddb-relay restart --method scan`",
            read.seed_method.as_deref().unwrap_or("?"),
            read.seed_ms.map_or("?".into(), rfc3339)
        );
    }
    if let (Source::Export(x), false) = (source, resuming) {
        super::copy::refuse_stale_export(ctx, x).await?;
    }
    // The copy's cutoff skips everything before it: every change after it
    // must still be queued, and every change of a cleared stream failure
    // (in no queue) must be before it, also when a re-seed's failed restore
    // left no cutoff behind (helper-54 #1).
    let replay_rules = !resuming && read.reseeding();
    if replay_rules {
        let b = bounds(ctx, &read).await?;
        validate_replay_point(start_ms, &b).map_err(|e| anyhow!("{e}"))?;
    }
    if dry_run {
        let from = match source {
            Source::Scan => format!("{} ({segments} segments", s.source_table),
            Source::Export(x) => format!(
                "the export s3://{}/{} ({} files, {} items, {segments} at a time",
                x.bucket,
                x.dir,
                x.files.len(),
                x.summary.item_count
            ),
        };
        let on = match &s.work {
            Some(w) if fan_out => format!(
                " on the copy workers ({}, one task per {}), wait one worker timeout when every part is done",
                w.worker,
                match source {
                    Source::Scan => "segment",
                    Source::Export(_) => "file",
                }
            ),
            _ => String::new(),
        };
        let plan = format!("{}switch the applier to tombstone mode with cutoff {}, enable it, copy {from}) into {}{on}, puts only where the key is absent or a repair's placeholder, then return to normal mode and delete the tombstones and placeholders", if resuming { "resume the stopped copy; " } else { "" }, rfc3339(cutoff), s.target_table);
        return Ok(ScanReport {
            target_key: Some(t.target_key_names()),
            ..report(Some(plan))
        });
    }
    let total = match source {
        Source::Scan => ctx
            .aws
            .describe(&s.source_table)
            .await
            .ok()
            .flatten()
            .and_then(|x| x.item_count)
            .map(|n| n as u64),
        Source::Export(x) => Some(x.summary.item_count),
    };
    // Applier invocations from before the pause must not write under the
    // copy (a restart has waited for them already).
    if replay_rules && !replacing {
        super::replay::wait_stopped(ctx, &read).await?;
    }
    if resuming {
        // Not into a table created again since the copy began.
        super::seed::refuse_replaced_target(ctx, &read, "").await?;
    }
    let written = if resuming {
        ctx.step(&format!(
            "resuming the {method} copy from its checkpoints (same cutoff)"
        ));
        read
    } else {
        ctx.step(&format!(
            "tombstone mode, cutoff {} ({} - {} s)",
            rfc3339(cutoff),
            match source {
                Source::Scan => "scan start",
                Source::Export(_) => "export time",
            },
            s.margin_ms / 1000
        ));
        // The table the copy writes, recorded with its seed: one deleted
        // and created again since is told apart (`status`, `finish`).
        let seed_table = super::seed::target_id(ctx)
            .await?
            .map(|id| super::seed::binding(method, Some(start_ms), &id));
        let written = ctx
            .write_control(
                &read,
                ControlState {
                    cutoff_ms: Some(cutoff),
                    mode: Mode::Tombstone,
                    seed_method: Some(method.into()),
                    seed_ms: Some(start_ms),
                    seed_table,
                    ..read.for_new_seed()
                },
            )
            .await?;
        let mut c = ckey.clone();
        c.insert("seed_ms".into(), AttributeValue::N(start_ms.to_string()));
        c.insert(
            "started_ms".into(),
            AttributeValue::N(ctx.now_ms().to_string()),
        );
        if let Some(n) = total {
            c.insert("expected".into(), AttributeValue::N(n.to_string()));
        }
        match source {
            Source::Scan => {
                c.insert("segments".into(), AttributeValue::N(segments.to_string()));
            }
            Source::Export(x) => {
                c.insert("export".into(), AttributeValue::S(x.dir.clone()));
                c.insert("bucket".into(), AttributeValue::S(x.bucket.clone()));
                c.insert("files".into(), AttributeValue::N(x.files.len().to_string()));
            }
        }
        ctx.aws
            .put_item(&s.control_table, &c, &Cond::Always)
            .await
            .map_err(|e| explain(e, "control table"))?;
        written
    };
    // Lifting a pause here is a `resume`: the changes the target still
    // needs must not expire before the applier reads them (helper-56 D5).
    if let (Some(_), Some(cutoff)) = (written.paused_at_ms, written.cutoff_ms) {
        bounds(ctx, &written)
            .await?
            .check_resume(cutoff)
            .map_err(|e| anyhow!("{e}"))?;
    }
    let trigger = ctx.applier_trigger().await?;
    if trigger.state != "Enabled" || written.paused_at_ms.is_some() {
        ctx.step("enabling the applier (deletes during the copy become tombstones)");
        enable_applier(
            ctx,
            &trigger.uuid,
            written,
            "`ddb-relay seed` (it continues the copy)",
        )
        .await?;
    }

    // What earlier runs of a resumed copy counted is not this run's.
    let before = part_totals(ctx, &ckey, source).await?;
    let began = Instant::now();
    let what = format!("{method} copy");
    let parts = if fan_out {
        let x = match source {
            Source::Scan => None,
            Source::Export(x) => Some(x),
        };
        let w = super::fanout::workers(ctx)?;
        let tasks =
            super::fanout::copy_tasks(start_ms, x, (segments, rate, max_wcu), w.concurrency);
        // Recorded before any task is sent: whoever ends or replaces this
        // copy waits for its workers (`fanout::fence`).
        if !super::fanout::mark(
            ctx,
            &ckey,
            start_ms,
            "fanned_out",
            AttributeValue::Bool(true),
            false,
        )
        .await?
        {
            bail!("the copy's checkpoint is gone or now belongs to another seed: stopping");
        }
        super::fanout::run(ctx, &ckey, &tasks, &what, total).await?
    } else {
        // A restart that replaces this copy waits for this run's writes.
        let lease = Lease::take(ctx, &ckey, start_ms).await?;
        let copier = Copier::new(t, rate, max_wcu, ctx.bar(total, &what)).with_lease(&lease);
        let run = async {
            match source {
                Source::Scan => {
                    ctx.step(&format!(
                        "copying {} -> {} ({segments} segments)",
                        s.source_table, s.target_table
                    ));
                    copy_segments(ctx, &copier, segments, (&ckey, start_ms)).await
                }
                Source::Export(x) => {
                    ctx.step(&format!(
                        "loading {} export files into {} ({segments} at a time)",
                        x.files.len(),
                        s.target_table
                    ));
                    super::parts::copy_files(ctx, &copier, x, segments, (&ckey, start_ms)).await
                }
            }
        };
        lease.hold(ctx, run).await?;
        lease.release(ctx).await?;
        copier.pb.finish_and_clear();
        part_totals(ctx, &ckey, source).await?
    };
    let took = began.elapsed().as_secs_f64();
    if fanned_out(ctx, &ckey).await? {
        // Every part is done, but a run delivered twice may still be
        // putting: its put after normal mode could bring back an item
        // deleted meanwhile.
        super::fanout::fence(
            ctx,
            "every part is done; waiting until no copy worker can still write (the worker's timeout)",
        )
        .await?;
    }
    // Another run of this copy in a CLI (a second terminal, an earlier run
    // left behind) may still be putting (helper-56 D1).
    wait_out(
        ctx,
        &ckey,
        Some(start_ms),
        "every part is done; waiting until no other run of this copy can still write (their leases)",
    )
    .await?;

    ctx.step("normal mode; deleting tombstones");
    if ctx.control().await?.names_copy(start_ms, Mode::Normal) {
        bail!("another run of this copy (another terminal?) switched it to normal mode while this one waited for it: that run finishes the copy (its tombstone sweep); this one stops. If that run stopped, run `ddb-relay seed` again to finish the sweep");
    }
    // Only the copy the control item still names switches to normal mode
    // (helper-56 D1: a run left behind, a restart's new copy running).
    let read = super::copy::still_the_copy(ctx, start_ms, Mode::Tombstone).await?;
    ctx.write_control(
        &read,
        ControlState {
            mode: Mode::Normal,
            ..read.clone()
        },
    )
    .await?;
    let swept = if fan_out {
        super::fanout::sweep(ctx, &ckey, start_ms, segments).await?
    } else {
        sweep_tombstones(ctx, &t.target_key_names(), segments, start_ms).await?
    };
    super::copy::forget_checkpoint_of(ctx, start_ms).await?;
    let copied = parts.written.saturating_sub(before.written);
    let skipped = (parts.items - parts.written).saturating_sub(before.items - before.written);
    Ok(ScanReport {
        copied,
        skipped_existing: skipped,
        tombstones_deleted: swept,
        seconds: took,
        items_per_s: (copied + skipped) as f64 / took.max(0.001),
        ..report(None)
    })
}

/// The scan copy's segments, in parallel, each from its checkpoint.
async fn copy_segments<A: Aws>(
    ctx: &Ctx<A>,
    copier: &Copier<'_>,
    segments: i32,
    (ckey, seed_ms): (&Attrs, i64),
) -> Result<()> {
    let keys = ctx
        .aws
        .describe(&ctx.stack.source_table)
        .await
        .map_err(|e| explain(e, &ctx.stack.source_table))?
        .map(|t| t.key_names)
        .unwrap_or_default();
    try_join_all((0..segments).map(|seg| {
        let keys = &keys;
        async move {
            // Another run moved the segment on: go on from where it is.
            loop {
                match copy_segment(ctx, copier, (ckey, seed_ms), (seg, segments), keys, None)
                    .await?
                {
                    Ran::Lost => continue,
                    ran => return super::parts::until_done(ran),
                }
            }
        }
    }))
    .await?;
    Ok(())
}

/// The copy's counts, summed over its parts' checkpoints.
async fn part_totals<A: Aws>(ctx: &Ctx<A>, ckey: &Attrs, source: &Source) -> Result<Totals> {
    let c = read_checkpoint(ctx, ckey).await?.unwrap_or_default();
    Ok(totals(
        &c,
        match source {
            Source::Scan => "seg_",
            Source::Export(_) => "file_",
        },
    ))
}
