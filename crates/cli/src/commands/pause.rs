//! `pause` and `resume`.
//!
//! **Invariant:** `pause` sets the fence in the control item *before* it
//! disables the trigger, and reports when no invocation that started before
//! the pause can still write (`stopped_by_ms`: the trigger reported
//! Disabled, plus the applier's timeout). From the fence on, the applier
//! consumes nothing, so the frontier it reports is final.

use anyhow::{bail, Result};
use relay_aws::operator::Aws;
use relay_core::control::ControlState;
use relay_core::decide::ReplayBounds;
use serde::Serialize;

use crate::ctx::{explain, rfc3339, Ctx};
use crate::report::Report;

#[derive(Debug, Serialize)]
pub struct PauseReport {
    pub stack: String,
    pub trigger: String,
    pub paused_at_ms: Option<i64>,
    /// No applier invocation that started before the pause writes after this.
    pub stopped_by_ms: Option<i64>,
    /// The newest change the applier consumed.
    pub consumed_ms: Option<i64>,
    /// The earliest T `replay --from` accepts.
    pub earliest_replay_ms: i64,
    pub version: u64,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

impl Report for PauseReport {
    fn text(&self) -> String {
        if let Some(plan) = &self.plan {
            return format!("dry run: would {plan}");
        }
        format!(
            "paused at {}; changes keep queueing (14-day retention). Earliest replay point: {}",
            self.paused_at_ms.map_or("?".into(), rfc3339),
            rfc3339(self.earliest_replay_ms)
        )
    }
}

/// How long after `finish` `resume` may reopen the migration: the
/// forwarder trigger's `MaximumRecordAgeInSeconds` (23 hours in the
/// template; older records go to the stream failure queue), less an hour
/// for the forwarder to be enabled again and read the backlog.
const REOPEN_WITHIN_MS: i64 = super::copy::STREAM_RETENTION_MS - 2 * 3_600_000;

/// The replay bounds under a control item, now.
pub async fn bounds<A: Aws>(ctx: &Ctx<A>, control: &ControlState) -> Result<ReplayBounds> {
    let retention_s = ctx
        .aws
        .queue_attrs(&ctx.stack.queue_url)
        .await
        .map_err(|e| explain(e, "queue"))?
        .retention_s;
    let now = ctx.now_ms();
    Ok(ReplayBounds {
        frontier_ms: control.frontier(),
        paused: control.paused_at_ms.is_some(),
        margin_ms: ctx.stack.margin_ms,
        now_ms: now,
        latest_ms: now,
        retention_s,
        cleared_ms: control.cleared_ms,
    })
}

pub async fn pause<A: Aws>(ctx: &Ctx<A>, dry_run: bool) -> Result<PauseReport> {
    let trigger = ctx.applier_trigger().await?;
    let read = ctx.control().await?;
    if dry_run {
        let b = bounds(ctx, &read).await?;
        return Ok(PauseReport {
            stack: ctx.stack.name.clone(),
            trigger: trigger.state.clone(),
            paused_at_ms: read.paused_at_ms,
            stopped_by_ms: read.stopped_by_ms,
            consumed_ms: read.consumed_ms,
            earliest_replay_ms: b.earliest_ms(),
            version: read.version,
            dry_run: true,
            plan: Some(format!(
                "set the pause in the control item (nothing is consumed after it), disable the applier trigger (now {}) and record when in-flight invocations are done (stopped_by_ms)",
                trigger.state
            )),
        });
    }
    // A fence this kept may be lifted while it runs: by a `resume` (which
    // stands), or by the take-back of the pause or finish that wrote it,
    // whose trigger update failed (helper-66 #3; `taken_back_ms` names the
    // fence taken back): this then pauses with its own fence. Paused again
    // by anyone, it keeps that fence. At most three rounds.
    let mut read = read;
    let mut rounds = 0;
    let written = loop {
        rounds += 1;
        let (fenced, borrowed) = fence_and_disable(ctx, &trigger.uuid, read).await?;
        // Another operator's `resume` may have lifted the pause after this
        // read it, and enabled the trigger before this disable landed
        // (helper-65 #1).
        let mut lifted = settle_applier(ctx, &trigger.uuid, false, RERUN)
            .await?
            .is_some();
        if !lifted {
            let stopped_by = stopped_by(ctx).await?;
            if fenced.stopped_by_ms.is_some_and(|t| t >= stopped_by) {
                break fenced;
            }
            let next = ControlState {
                stopped_by_ms: Some(stopped_by),
                ..fenced.clone()
            };
            let w = ctx.write_control_unless_moved(&fenced, next).await?;
            // Moved since the fence (a take-back landing after the settle,
            // another pause; helper-70 #2), or a trigger update in flight
            // from before (an earlier release's take-back enables before
            // its control write; helper-71 #2): the trigger as the item says.
            lifted = settle_applier(ctx, &trigger.uuid, false, RERUN)
                .await?
                .is_some();
            if let (Some(w), false) = (w, lifted) {
                break w;
            }
        }
        let now = ctx.control().await?;
        // The fence this kept was taken back (not lifted by a resume).
        let taken_back =
            borrowed && now.taken_back_ms.is_some() && now.taken_back_ms == fenced.paused_at_ms;
        let again = now.paused_at_ms.is_some() || taken_back;
        if again && rounds < 3 {
            read = now;
            continue;
        }
        bail!(
            "{}: check `ddb-relay status`, then pause again if it is still needed",
            if again || !lifted {
                "the migration kept changing while this paused it (other operators pausing, resuming, or taking a pause back)"
            } else {
                "the pause was lifted while this paused it (another operator's resume, or an earlier release's take-back): it is not paused, and its applier trigger was enabled again"
            }
        );
    };
    let b = bounds(ctx, &written).await?;
    Ok(PauseReport {
        stack: ctx.stack.name.clone(),
        trigger: "Disabled".into(),
        paused_at_ms: written.paused_at_ms,
        stopped_by_ms: written.stopped_by_ms,
        consumed_ms: written.consumed_ms,
        earliest_replay_ms: b.earliest_ms(),
        version: written.version,
        dry_run: false,
        plan: None,
    })
}

/// What a `pause` that could not finish names.
const RERUN: &str = "`ddb-relay pause`";

/// The time after which no applier invocation started now can still write:
/// the function's timeout and 5 s from now.
async fn stopped_by<A: Aws>(ctx: &Ctx<A>) -> Result<i64> {
    let timeout_s = ctx
        .aws
        .function_timeout_s(&ctx.stack.applier)
        .await
        .map_err(|e| explain(e, &format!("function {}", ctx.stack.applier)))?;
    Ok(ctx.now_ms() + (timeout_s as i64 + 5) * 1000)
}

/// The pause's fence (a second pause keeps the first time), then the
/// applier trigger disabled. `true` with it: the fence was found, not
/// written.
async fn fence_and_disable<A: Aws>(
    ctx: &Ctx<A>,
    uuid: &str,
    read: ControlState,
) -> Result<(ControlState, bool)> {
    let was_paused = read.paused_at_ms.is_some();
    let fenced = if was_paused {
        read
    } else {
        ctx.write_control(
            &read,
            ControlState {
                paused_at_ms: Some(ctx.now_ms()),
                stopped_by_ms: None,
                ..read.clone()
            },
        )
        .await?
    };
    // Disabled whatever the state read said: another operator's `resume`
    // may have lifted the pause before the fence and enabled the trigger
    // since (helper-63 #1). A fence with the trigger still Enabled would
    // fail every batch back to the queue until its messages reach the DLQ:
    // if the trigger cannot be disabled, the fence is taken back.
    let Err(e) = ctx.set_trigger(uuid, false, "applier trigger").await else {
        return Ok((fenced, was_paused));
    };
    if was_paused {
        return Err(e.context("the applier trigger could not be disabled; the pause this found is kept: check `ddb-relay status`, then run `ddb-relay pause` again"));
    }
    let taken = ctx
        .write_control(
            &fenced,
            ControlState {
                paused_at_ms: None,
                // Named: a `pause` that kept this fence pauses again.
                taken_back_ms: fenced.paused_at_ms,
                ..fenced.clone()
            },
        )
        .await;
    Err(match taken {
        // A disable that failed may still have taken effect: the trigger
        // as the item now says (helper-71 #4).
        Ok(_) => match settle_applier(ctx, uuid, true, "`ddb-relay resume`").await {
            Ok(_) => e.context("the applier trigger could not be disabled; the pause was taken back"),
            Err(s) => e.context(format!("the applier trigger could not be disabled; the pause was taken back, but the trigger could not be set again: {s:#}")),
        },
        // helper-63 #6: say so when the take-back failed too.
        Err(t) => e.context(format!("the applier trigger could not be disabled, and the pause could not be taken back ({t:#}; another operator may have changed the migration): check `ddb-relay status`; while it says paused with the applier trigger Enabled, batches fail into the DLQ until `ddb-relay pause` (again) or `ddb-relay resume` succeeds")),
    })
}

#[derive(Debug, Serialize)]
pub struct ResumeReport {
    pub stack: String,
    pub trigger: String,
    pub cutoff_ms: i64,
    pub version: u64,
    /// A finished migration was reopened: the forwarder trigger enabled
    /// again, the verdict cleared.
    pub reopened: bool,
    /// Reopened more than [`REOPEN_WITHIN_MS`] after `finish`, with queued
    /// changes that may expire, or with the target missing: still paused,
    /// the target must be re-seeded.
    pub reseed_needed: bool,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

impl Report for ResumeReport {
    fn text(&self) -> String {
        match &self.plan {
            Some(plan) => format!("dry run: would {plan}"),
            None if self.reseed_needed => "reopened, NOT resumed: `finish` stopped the forwarder more than 22 hours ago (the trigger reads stream records up to 23 hours old), queued changes may expire before the applier drains them, or the target table is missing, so changes to the source may never reach the target. The forwarder trigger is enabled again and the applier stays paused: re-seed (`ddb-relay pause`, then `ddb-relay restart --method backup` or `--method scan`; a missing target: `ddb-relay seed`, or with a transform, create it with your IaC and `restart --method scan`)".into(),
            None => format!(
                "resumed{}: the applier drains the queue into the target (cutoff {})",
                if self.reopened {
                    " and reopened (forwarder trigger enabled again; verify again before cutover)"
                } else {
                    ""
                },
                rfc3339(self.cutoff_ms)
            ),
        }
    }

    fn exit_code(&self) -> i32 {
        if self.reseed_needed {
            crate::report::EXIT_NO_GO
        } else {
            0
        }
    }
}

pub async fn resume<A: Aws>(ctx: &Ctx<A>, dry_run: bool) -> Result<ResumeReport> {
    let s = &ctx.stack;
    let read = ctx.control().await?;
    let Some(cutoff) = read.cutoff_ms else {
        bail!("no cutoff for migration {}: the target is not seeded; run `ddb-relay seed` first, or re-run the interrupted re-seed the status names (resuming now would apply nothing and fail every batch)", s.migration);
    };
    // A finished migration whose target is gone is reopened for a re-seed
    // (`seed` and `restart` refuse while it is finished, and nothing of the
    // application's is left in the target to keep).
    let target_missing = match ctx
        .aws
        .describe(&s.target_table)
        .await
        .map_err(|e| explain(e, &s.target_table))?
    {
        Some(t) if t.status == "ACTIVE" => false,
        Some(t) => bail!(
            "target table {} is {}, not ACTIVE: wait for the seed to finish",
            s.target_table,
            t.status
        ),
        None if read.finished_ms.is_some() => true,
        None => bail!(
            "target table {} does not exist: run `ddb-relay seed`",
            s.target_table
        ),
    };
    // Changes the target still needs may have waited in the queue since
    // the pause (or the re-seed's point): refused if the oldest could
    // expire before the applier reads them.
    let expiring = bounds(ctx, &read).await?.check_resume(cutoff);
    // `finish` also stopped the forwarder: the source's changes since then
    // wait in its stream, which keeps them for the trigger's record age.
    // Reopened later (or with queued changes that may expire), the target
    // needs a re-seed and stays paused for it: `restart` refuses until the
    // finish is cleared, so reopening is never refused.
    let reopened = read.finished_ms.is_some();
    let reseed_needed = reopened
        && (expiring.is_err()
            || target_missing
            || read
                .finished_ms
                .is_some_and(|f| ctx.now_ms() - f > REOPEN_WITHIN_MS));
    if !reopened {
        expiring?;
    }
    let trigger = ctx.applier_trigger().await?;
    // The report, with the trigger's state, the control item's version and
    // (a dry run) the plan.
    let report = |trigger: String, version: u64, plan: Option<String>| ResumeReport {
        stack: s.name.clone(),
        trigger,
        cutoff_ms: cutoff,
        version,
        reopened,
        reseed_needed,
        dry_run: plan.is_some(),
        plan,
    };
    if dry_run {
        let plan = match (reopened, reseed_needed) {
            (_, true) => "reopen the finished migration without resuming (the forwarder was off for more than 22 hours, queued changes may expire, or the target is missing): enable the forwarder trigger, clear the finish and the verdict, keep the applier paused for a re-seed".to_string(),
            (true, false) => format!("reopen the finished migration (enable the forwarder trigger, clear the verdict), lift the pause and enable the applier trigger (now {}); cutoff {}", trigger.state, rfc3339(cutoff)),
            (false, false) => format!("lift the pause and enable the applier trigger (now {}); cutoff {}", trigger.state, rfc3339(cutoff)),
        };
        return Ok(report(trigger.state.clone(), read.version, Some(plan)));
    }
    let forwarder = if reopened {
        let forwarder = ctx.forwarder_trigger().await?;
        ctx.set_trigger(&forwarder.uuid, true, "forwarder trigger")
            .await?;
        Some(forwarder)
    } else {
        None
    };
    let (trigger_state, written) = if reseed_needed {
        let written = ctx
            .write_control(
                &read,
                ControlState {
                    finished_ms: None,
                    ..read.without_verdict()
                },
            )
            .await?;
        (trigger.state.clone(), written)
    } else {
        let written = enable_applier(ctx, &trigger.uuid, read, "`ddb-relay resume`").await?;
        ("Enabled".to_string(), written)
    };
    // Once more after the control write: a `finish` still stopping the
    // triggers may have disabled the forwarder after the enable above, and
    // read the finish before this write (helper-67 D2). Whichever updates
    // the forwarder last has read the other's write.
    if let Some(forwarder) = forwarder {
        ctx.set_trigger(&forwarder.uuid, true, "forwarder trigger")
            .await?;
    }
    Ok(report(trigger_state, written.version, None))
}

/// Lifts the pause (the fence first, so the first batches are not failed),
/// then enables the applier trigger.
pub async fn enable_applier<A: Aws>(
    ctx: &Ctx<A>,
    uuid: &str,
    read: ControlState,
    rerun: &str,
) -> Result<ControlState> {
    let written = if read.paused_at_ms.is_some()
        || read.stopped_by_ms.is_some()
        || read.finished_ms.is_some()
    {
        ctx.write_control(
            &read,
            ControlState {
                paused_at_ms: None,
                stopped_by_ms: None,
                finished_ms: None,
                // A reopened migration verifies again before its cutover.
                ..if read.finished_ms.is_some() {
                    read.without_verdict()
                } else {
                    read.clone()
                }
            },
        )
        .await?
    } else {
        read
    };
    ctx.set_trigger(uuid, true, "applier trigger")
        .await
        .map_err(|e| e.context(format!("the pause was lifted, but the applier trigger could not be enabled: nothing is applied; run {rerun} again")))?;
    // Another operator may have paused, begun a re-seed or finished while
    // this enabled the trigger (helper-63 #5): the applier must not run
    // under that.
    if settle_applier(ctx, uuid, true, rerun).await?.is_some() {
        bail!("another operator paused, re-seeded or finished the migration while this enabled the applier: its trigger was disabled again; check `ddb-relay status`");
    }
    Ok(written)
}

/// After a command's own control write and trigger update: until the
/// applier trigger agrees with the control item as read after the last
/// update (paused, no cutoff or finished: Disabled; else Enabled), set it
/// so, at most 10 rounds. Each correction is checked by a later read too
/// (helper-66 #1), so whichever command updates the trigger last has read
/// the other's control write. `Ok(None)`: it agrees with what the command
/// `intended`; `Ok(Some(state))`: another operator's write made it `state`.
/// A control read that fails leaves the trigger Disabled, the safe side
/// (helper-65 #5), and names the command to re-run (`rerun`).
pub(crate) async fn settle_applier<A: Aws>(
    ctx: &Ctx<A>,
    uuid: &str,
    intended: bool,
    rerun: &str,
) -> Result<Option<bool>> {
    let mut failed = None;
    for _ in 0..10 {
        let now = match ctx.control().await {
            Ok(now) => now,
            Err(e) => {
                let again = ctx.set_trigger(uuid, false, "applier trigger").await;
                bail!(
                    "the control item could not be read after the applier trigger was updated ({e:#}), so the trigger {}; run {rerun} again",
                    if again.is_ok() { "was disabled (the safe side)" } else { "may still be Enabled" }
                );
            }
        };
        // What the applier may do (`ControlState::applying`), and not finished.
        let want = matches!(now.applying(), relay_core::control::Applying::Yes { .. })
            && now.finished_ms.is_none();
        let state = ctx
            .aws
            .mapping_state(uuid)
            .await
            .map_err(|e| explain(e, "applier trigger"))?;
        // Another command's update in progress (Lambda refuses an update
        // meanwhile; helper-67 D3): look again once it is over.
        if state != "Enabled" && state != "Disabled" {
            tokio::time::sleep(ctx.poll).await;
            continue;
        }
        if (state == "Enabled") == want {
            return Ok((want != intended).then_some(want));
        }
        if let Err(e) = ctx.set_trigger(uuid, want, "applier trigger").await {
            failed = Some(e);
        }
    }
    match failed {
        Some(e) => bail!(
            "the applier trigger could not be set as the control item says (the last update failed: {e:#}): check `ddb-relay status`, then run {rerun} again"
        ),
        None => bail!(
            "the migration kept changing while this set the applier trigger (another operator is pausing and resuming it): check `ddb-relay status`, then run {rerun} again"
        ),
    }
}
