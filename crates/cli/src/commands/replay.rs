//! `replay --from T` (point-in-time restore at T) and `restart` (re-seed
//! now, by backup or scan copy).
//!
//! **Invariant:** a replay point T is accepted only if every change after
//! `T - margin` is still in the queue: the applier is paused (the fence is
//! set, so nothing more is consumed) and `T - margin` is not before the
//! control item's frontier (the newest consumed change, or the pause). The
//! target is dropped only once no invocation that started before the pause
//! can still write to it.

use anyhow::{anyhow, bail, Result};
use relay_aws::operator::Aws;
use relay_core::control::{cutoff_for_seed, ControlState, Mode};
use relay_core::decide::{validate_replay_point, ReplayError};
use serde::Serialize;

use super::pause::{bounds, enable_applier};
use super::seed::{run_seed, set_cutoff_when_active};
use crate::args::Method;
use crate::ctx::{explain, rfc3339, Ctx, When};
use crate::report::Report;

#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub stack: String,
    pub method: String,
    pub from_ms: i64,
    pub cutoff_ms: i64,
    pub trigger: String,
    pub version: u64,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Messages in the DLQ: their changes are not replayed (`dlq repair`).
    pub dlq_depth: u64,
}

impl Report for ReplayReport {
    fn text(&self) -> String {
        if let Some(plan) = &self.plan {
            return format!("dry run: would {plan}");
        }
        let mut t = format!(
            "replayed from {} (cutoff {}); applier {}{}",
            rfc3339(self.from_ms),
            rfc3339(self.cutoff_ms),
            self.trigger,
            if self.trigger == "Enabled" {
                ""
            } else {
                ": `ddb-relay resume` when ready"
            }
        );
        if self.dlq_depth > 0 {
            t.push_str(&format!("\nwarning: the DLQ holds {} message(s); their changes are not replayed: `ddb-relay dlq repair`", self.dlq_depth));
        }
        t
    }
}

/// A re-seed needs the applier paused (the fence set, the trigger not
/// Enabled), and a migration that is not finished: after `finish` the
/// target is the application's table, and dropping or clearing it would
/// lose the application's writes since.
pub fn require_paused(read: &ControlState, trigger_state: &str) -> Result<()> {
    if let Some(t) = read.finished_ms {
        bail!("this migration was finished at {}: the target may hold the application's writes since, and a re-seed drops it or clears every item. If the application never wrote to the target (it was not switched), `ddb-relay resume` reopens the migration; then pause and re-seed", crate::ctx::rfc3339(t));
    }
    if read.paused_at_ms.is_none() || trigger_state == "Enabled" {
        bail!("{}", ReplayError::NotPaused);
    }
    Ok(())
}

/// A re-seed drops the target (or clears every item of it): refused while
/// the target has deletion protection on, which says it is now precious
/// (`protect --target`, or the user's own IaC).
pub async fn refuse_protected_target<A: Aws>(ctx: &Ctx<A>) -> Result<()> {
    let t = &ctx.stack.target_table;
    let info = ctx.aws.describe(t).await.map_err(|e| explain(e, t))?;
    if info.is_some_and(|i| i.deletion_protection) {
        bail!(
            "the target {t} has deletion protection on, and a re-seed drops it or clears every item: if you mean to re-seed it, turn protection off first (`aws dynamodb update-table{} --table-name {} --no-deletion-protection-enabled`)",
            ctx.stack
                .target
                .region
                .as_deref()
                .map(|r| format!(" --region {r}"))
                .unwrap_or_default(),
            t.split('@').next().unwrap_or(t)
        );
    }
    Ok(())
}

/// Waits until no applier invocation that started before the pause can
/// still write (then the target can be dropped or cleared).
pub async fn wait_stopped<A: Aws>(ctx: &Ctx<A>, read: &ControlState) -> Result<()> {
    match read.stopped_by_ms {
        Some(t) => {
            ctx.wait_until(
                t,
                "waiting for applier invocations that started before the pause to end",
            )
            .await
        }
        None => {
            bail!("the pause did not finish (no stop time recorded): run `ddb-relay pause` again")
        }
    }
}

/// `replay --from T` (`from` = Some) or `restart --method backup` (None).
pub async fn replay<A: Aws>(
    ctx: &Ctx<A>,
    from: Option<When>,
    no_resume: bool,
    dry_run: bool,
) -> Result<ReplayReport> {
    let s = &ctx.stack;
    super::seed::refuse_restore_with_transform(
        ctx,
        if from.is_some() {
            "a replay (point-in-time restore)"
        } else {
            "a restart by backup"
        },
    )?;
    refuse_protected_target(ctx).await?;
    let read = ctx.control().await?;
    let trigger = ctx.applier_trigger().await?;
    require_paused(&read, &trigger.state)?;
    let mut b = bounds(ctx, &read).await?;
    let (method, t) = match from {
        Some(f) => {
            let (enabled, latest) = ctx
                .aws
                .pitr(&s.source_table)
                .await
                .map_err(|e| explain(e, &s.source_table))?;
            if !enabled {
                bail!("replay --from needs point-in-time recovery on {}: enable it, or use `ddb-relay restart` (re-seed by backup now)", s.source_table);
            }
            b.latest_ms = latest.unwrap_or(b.now_ms);
            let t = f.resolve(b.now_ms);
            validate_replay_point(t, &b).map_err(|e| anyhow!("{e}"))?;
            // A stream replaced since the pause holds nothing before it
            // (helper-77 #2).
            super::copy::refuse_reseed_before_stream(ctx, (t, 0), "--from", "choose a later point")
                .await?;
            (Method::Pitr, t)
        }
        None => {
            // Re-seeding now: if the pause is too recent, wait for the
            // earliest valid point (at most the margin) instead of refusing.
            let earliest = b.earliest_ms();
            if !dry_run && earliest > b.now_ms {
                ctx.wait_until(
                    earliest,
                    &format!("the earliest valid restart point is {}", rfc3339(earliest)),
                )
                .await?;
            }
            let b = bounds(ctx, &ctx.control().await?).await?;
            let now = b.now_ms.max(earliest);
            if !dry_run {
                validate_replay_point(now, &b).map_err(|e| anyhow!("{e}"))?;
            }
            (Method::Backup, now)
        }
    };
    let dlq_depth = {
        let q = ctx
            .aws
            .queue_attrs(&s.dlq_url)
            .await
            .map_err(|e| explain(e, "DLQ"))?;
        q.visible + q.in_flight
    };
    let cutoff = cutoff_for_seed(t, s.margin_ms);
    if dry_run {
        let plan = format!(
            "drop {}, re-seed it by {} at {}, set cutoff {}{}",
            s.target_table,
            method.as_str(),
            rfc3339(t),
            rfc3339(cutoff),
            if no_resume { "" } else { ", resume" }
        );
        return Ok(ReplayReport {
            stack: s.name.clone(),
            method: method.as_str().into(),
            from_ms: t,
            cutoff_ms: cutoff,
            trigger: trigger.state,
            version: read.version,
            dry_run: true,
            plan: Some(plan),
            dlq_depth,
        });
    }
    let read = ctx.control().await?;
    // A re-run after a crash: the restore of the recorded PITR seed at the
    // same T had started ("pitr" is recorded after the old target was
    // dropped, right before the restore), so it continues.
    let same_pitr = method == Method::Pitr
        && read.seed_method.as_deref() == Some("pitr")
        && read.seed_ms == Some(t)
        && read.cutoff_ms.is_none();
    let seed_ms = if same_pitr
        && ctx
            .aws
            .describe(&s.target_table)
            .await
            .map_err(|e| explain(e, &s.target_table))?
            .is_some()
    {
        ctx.step("the target is already being re-seeded at this point");
        t
    } else {
        wait_stopped(ctx, &read).await?;
        // Read again after the wait: another operator may have resumed
        // (the applier then consumed changes after T, which the queue no
        // longer holds) or paused again meanwhile (helper-57 #1). The
        // pending write below is conditional on this read, and comes
        // before anything of the old seed is touched (helper-58 #1).
        let read = ctx.control().await?;
        require_paused(&read, &ctx.applier_trigger().await?.state)?;
        wait_stopped(ctx, &read).await?;
        let mut b = bounds(ctx, &read).await?;
        b.latest_ms = b.latest_ms.max(t);
        validate_replay_point(t, &b).map_err(|e| anyhow!("{e}"))?;
        ctx.step("step 1/4: record the replay (cutoff cleared until the new seed is ready)");
        let cleared = ctx
            .write_control(
                &read,
                ControlState {
                    cutoff_ms: None,
                    mode: Mode::Normal,
                    seed_method: Some(format!("{}-pending", method.as_str())),
                    seed_ms: Some(t),
                    ..read.for_new_seed()
                },
            )
            .await?;
        // A scan copy that was filling the target (interrupted, or its
        // sweep unfinished) ends here: its workers stop writing, and the
        // restored table is applied in normal mode (tombstones left by the
        // old mode would never be swept).
        super::scan::retire_copy(ctx).await?;
        // The retire may have waited minutes for the copy's workers: the
        // drop goes ahead only if no one wrote the control item since this
        // replay recorded itself (helper-59 D1: another operator's re-seed
        // finished meanwhile, its applier running).
        super::scan::still_ours(ctx, &cleared).await?;
        ctx.step(&format!("step 2/4: drop {}", s.target_table));
        ctx.aws
            .delete_table(&s.target_table)
            .await
            .map_err(|e| explain(e, &s.target_table))?;
        ctx.wait_table_gone(&s.target_table).await?;
        ctx.step(&format!(
            "step 3/4: re-seed {} by {}",
            s.target_table,
            method.as_str()
        ));
        run_seed(ctx, &cleared, method, Some(t), None, "").await?
    };
    ctx.step("step 4/4: set the cutoff once the target is ACTIVE");
    let (cutoff, mut written) = set_cutoff_when_active(ctx, seed_ms, method.as_str()).await?;
    let trigger = if no_resume {
        "Disabled"
    } else {
        written = enable_applier(ctx, &trigger.uuid, written, "`ddb-relay resume`").await?;
        "Enabled"
    };
    Ok(ReplayReport {
        stack: s.name.clone(),
        method: method.as_str().into(),
        from_ms: seed_ms,
        cutoff_ms: cutoff,
        trigger: trigger.into(),
        version: written.version,
        dry_run: false,
        plan: None,
        dlq_depth,
    })
}
