//! `restart --method scan`, and retiring the copy a re-seed replaces.

use anyhow::{bail, Result};
use relay_aws::operator::{Aws, Cond};
use relay_core::control::ControlState;
use relay_core::item::{AttributeValue, Attrs};

use super::super::copy::{checkpoint_key, clear_target, forget_checkpoints, read_checkpoint};
use super::super::pause::bounds;
use super::super::replay::{require_paused, wait_stopped};
use super::{seed_scan, ScanReport};
use crate::args::CopyArgs;
use crate::ctx::{explain, rfc3339, Ctx};

/// Before a re-seed replaces the target: the copy that filled it (or was
/// filling it) is retired first: its checkpoint is marked `retired` and
/// loses its `seed_ms`, which its runs' saves and lease renewals need.
/// The re-seed then waits until no run can still write: every in-process
/// run's lease recorded in the checkpoint (helper-56 D1), and, if workers
/// ran it, the worker's timeout. The marker keeps the leases and
/// `fanned_out` until those waits are over, so a re-run after an
/// interrupted wait waits again (helper-56 D2); then it is forgotten.
pub async fn retire_copy<A: Aws>(ctx: &Ctx<A>) -> Result<()> {
    let ckey = checkpoint_key(ctx);
    // Each write only on the checkpoint as read (never creating one that
    // was forgotten meanwhile); read again if it moved.
    for attempt in 0.. {
        let Some(c) = read_checkpoint(ctx, &ckey).await? else {
            return Ok(());
        };
        let Some(seed) = c.get("seed_ms").cloned() else {
            break;
        };
        if attempt == 5 {
            bail!("the copy's checkpoint kept changing while this command retired it (another command is writing it): nothing was dropped or cleared; check `ddb-relay status`, then re-run");
        }
        let read = Cond::Equals("seed_ms".into(), seed);
        let mut moved = false;
        for (name, value) in [
            ("retired", Some(AttributeValue::Bool(true))),
            ("seed_ms", None),
        ] {
            moved |= !ctx
                .aws
                .set_attr(&ctx.stack.control_table, &ckey, name, value, &read)
                .await
                .map_err(|e| explain(e, "control table"))?
                .done;
        }
        if !moved {
            break;
        }
    }
    // Read after `seed_ms` is gone: no lease can grow past what this reads.
    super::super::lease::wait_out(
        ctx,
        &ckey,
        None,
        "the replaced copy ran in a CLI: waiting until none of its runs can still write (their leases)",
    )
    .await?;
    if fanned_out(ctx, &ckey).await? {
        super::super::fanout::fence(
            ctx,
            "the replaced copy ran on workers: waiting until none can still write (the worker's timeout)",
        )
        .await?;
    }
    forget_checkpoints(ctx).await
}

/// After a re-seed recorded itself as `recorded` and waited (the retire's
/// fence): refuses to drop or clear anything if another operator wrote the
/// control item since (helper-59 D1: a second re-seed may have finished
/// meanwhile, with its applier running on the target).
pub async fn still_ours<A: Aws>(ctx: &Ctx<A>, recorded: &ControlState) -> Result<()> {
    let now = ctx.control().await?;
    if now.version != recorded.version {
        bail!(
            "another operator changed the migration while this re-seed waited for the old copy's workers (now {} at {}): nothing was dropped or cleared; check `ddb-relay status`, then re-run if it is still needed",
            now.seed_method.as_deref().unwrap_or("no seed"),
            now.seed_ms.map_or("?".into(), rfc3339)
        );
    }
    Ok(())
}

/// Whether copy workers ran (part of) the copy whose checkpoint is `ckey`.
pub(super) async fn fanned_out<A: Aws>(ctx: &Ctx<A>, ckey: &Attrs) -> Result<bool> {
    Ok(read_checkpoint(ctx, ckey)
        .await?
        .is_some_and(|c| c.contains_key("fanned_out")))
}

/// What the control item says while `restart --method scan` clears the
/// target (no cutoff: nothing applies, `resume` and `cutover` refuse).
const SCAN_PENDING: &str = "scan-pending";

/// `restart --method scan`: paused first; waits for the earliest valid
/// point and for in-flight invocations, clears the target, copies again
/// (tombstone mode), and resumes (or pauses again with `--no-resume`).
pub async fn restart_scan<A: Aws>(
    ctx: &Ctx<A>,
    limits: CopyArgs,
    no_resume: bool,
    dry_run: bool,
) -> Result<ScanReport> {
    super::super::replay::refuse_protected_target(ctx).await?;
    let read = ctx.control().await?;
    let trigger = ctx.applier_trigger().await?;
    require_paused(&read, &trigger.state)?;
    if limits.fan_out {
        // Before the clear (helper-65 #2).
        let w = super::super::fanout::workers(ctx)?;
        let v = relay_core::work::COPY_TASK_VERSION;
        super::super::fanout::require_task_version(ctx, &w, v).await?;
    }
    let loaded = crate::transform::load(ctx).await?;
    if dry_run {
        return seed_scan(ctx, limits, true, true).await.map(|mut r| {
            r.plan = Some(format!(
                "delete every item of {}, then {}",
                ctx.stack.target_table,
                r.plan.unwrap_or_default()
            ));
            r
        });
    }
    let b = bounds(ctx, &read).await?;
    ctx.wait_until(
        b.earliest_ms(),
        &format!(
            "the earliest valid restart point is {}",
            rfc3339(b.earliest_ms())
        ),
    )
    .await?;
    wait_stopped(ctx, &read).await?;
    // Before the first delete: an interrupted clear must not look like a
    // pause (`resume` would apply onto a half-cleared target, and the last
    // verify's verdict would still say clean). Read again after the waits:
    // another operator may have resumed (or paused again) meanwhile, and
    // the clear needs this pause's invocations ended (helper-56 D3). The
    // pending write is conditional on this read, and the old copy is
    // retired only after it (helper-58 #1: a retire before a refusal hid
    // an unfinished sweep).
    let read = ctx.control().await?;
    require_paused(&read, &ctx.applier_trigger().await?.state)?;
    wait_stopped(ctx, &read).await?;
    let t = &ctx.stack.target_table;
    if ctx
        .aws
        .describe(t)
        .await
        .map_err(|e| explain(e, t))?
        .is_none()
    {
        // A restore cannot seed a transform stack (helper-57 #6c): the way
        // out there is only the IaC's table.
        let pending = read
            .seed_method
            .as_deref()
            // A scan restart never drops the table: only a restore's does.
            .filter(|m| m.ends_with("-pending") && *m != SCAN_PENDING);
        bail!(
            "the target {t} does not exist{}: a scan restart clears a target, it does not create one; create it with your IaC (key {:?}) and run this again{}",
            pending.map_or(String::new(), |m| format!(" (an interrupted {m} dropped it)")),
            loaded.transform.target_key_names(),
            match (pending, &ctx.stack.transform_spec) {
                (Some(_), None) => ", or finish that re-seed (`ddb-relay restart --method backup`, or `replay --from T` with its T)",
                _ => "",
            }
        );
    }
    let recorded = if read.seed_method.as_deref() != Some(SCAN_PENDING) {
        ctx.step("recording the restart (cutoff and verdict cleared until the new copy starts)");
        ctx.write_control(
            &read,
            ControlState {
                cutoff_ms: None,
                seed_method: Some(SCAN_PENDING.into()),
                ..read.for_new_seed()
            },
        )
        .await?
    } else {
        read
    };
    retire_copy(ctx).await?;
    still_ours(ctx, &recorded).await?;
    ctx.step(&format!("clearing {}", ctx.stack.target_table));
    let cleared = clear_target(ctx, &loaded.transform.target_key_names(), limits.segments).await?;
    ctx.step(&format!("{cleared} items deleted; copying again"));
    forget_checkpoints(ctx).await?;
    let report = seed_scan(ctx, limits, false, true).await?;
    if no_resume {
        super::super::pause::pause(ctx, false).await?;
    }
    Ok(report)
}
