//! `finish`: run after writes to the source stopped. Waits until the
//! forwarder has forwarded everything and the queue is drained, then stops
//! both triggers (and sets the pause fence) and writes a report.
//!
//! **Invariant:** quiet is proven, never assumed: an empty queue (visible
//! and in flight), a `Forwarded` total that stopped growing, a forwarder
//! that is Enabled, not behind, not throttled and not failing, and no
//! stream failures, all for `quiet` seconds. A metric that cannot be read
//! is not quiet.
//!
//! **Invariant:** the report says ready only if the main queue, the DLQ and
//! the stream failure queue are empty as read after both triggers are off.
//!
//! **Invariant:** `finish` runs only on a whole target: seeded (a cutoff,
//! no re-seed pending), no scan copy or sweep unfinished, the table ACTIVE;
//! and it marks the migration finished only if none of that moved while it
//! waited for quiet (`repair::Fence`, then the control item's version).

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use relay_aws::operator::{Aws, MetricQuery, Stat};
use relay_core::control::ControlState;
use relay_core::metrics::names;
use serde::Serialize;

use super::status::status;
use crate::ctx::{explain, rfc3339, Ctx};
use crate::repair::Fence;
use crate::report::Report;

mod picture;
use picture::picture;

#[derive(Debug, Serialize)]
pub struct FinishReport {
    pub stack: String,
    pub migration: String,
    pub finished_ms: i64,
    pub source_table: String,
    pub target_table: String,
    pub source_items_approx: Option<i64>,
    pub target_items_approx: Option<i64>,
    pub seed_method: Option<String>,
    pub seed_ms: Option<i64>,
    pub cutoff_ms: Option<i64>,
    pub dlq_depth: u64,
    pub stream_failures: u64,
    /// Messages on the main queue once both triggers are off (visible and
    /// in flight): changes that arrived after the quiet was proven.
    pub queued: u64,
    pub last_verify: Option<String>,
    /// A clean full verify since the seed, young enough for `cutover`
    /// (helper-63 #7: without one, the text says NOT VERIFIED).
    pub verified: bool,
    /// The triggers' states as read at the end ("Disabled" when both are).
    pub triggers: String,
    /// Seconds from the start of `finish` to quiet (how long writes paused
    /// at least, with `quiet`).
    pub drained_s: f64,
    /// The quiet window used: at least the forwarder's timeout, so an
    /// invocation still retrying its sends cannot hide.
    pub quiet_s: u64,
    pub dry_run: bool,
    /// Finished by an earlier run (both triggers were off): nothing was
    /// waited for or changed now, only looked at.
    pub already: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// With `--report`: the picture of the migration written beside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picture: Option<String>,
}

impl FinishReport {
    /// How the text begins: what this run proved, or that an earlier one did.
    fn head(&self) -> String {
        if self.already {
            format!(
                "finished at {} by an earlier run (nothing waited for or changed now)",
                rfc3339(self.finished_ms)
            )
        } else {
            format!(
                "finished: forwarder caught up and queue drained ({:.0} s)",
                self.drained_s
            )
        }
    }
}

impl Report for FinishReport {
    fn text(&self) -> String {
        if let Some(plan) = &self.plan {
            return format!("dry run: would {plan}");
        }
        if self.queued > 0 {
            return format!("{}; both triggers disabled. NOT READY: {} message(s) reached the queue after the quiet was proven (a write to the source after writes stopped): their changes are not in {}. Do not switch: `ddb-relay resume` reopens the migration (the forwarder trigger too) and applies them; stop the writes and run finish again.", self.head(), self.queued, self.target_table);
        }
        if self.dlq_depth + self.stream_failures > 0 {
            return format!("{}; both triggers disabled. NOT READY: the DLQ holds {} message(s) and the stream failure queue {}: their changes are not in {}. Before switching, run `ddb-relay dlq repair --after-finish` (the DLQ); the stream failures' changes are in no queue: `ddb-relay dlq stream-failures` lists them, and only a re-seed covers them (`resume`, `pause`, `restart`, then `dlq stream-failures --clear` and finish again).", self.head(), self.dlq_depth, self.stream_failures, self.target_table);
        }
        if !self.verified {
            return format!(
                "{}; triggers {}. DLQ 0, stream failures 0. NOT VERIFIED: the last full verify since the seed is {}: run `ddb-relay verify` before switching your application to {} (with the triggers off it compares two still tables).",
                self.head(),
                self.triggers,
                self.last_verify.as_deref().unwrap_or("none"),
                self.target_table
            );
        }
        format!(
            "{}; triggers {}. DLQ 0, stream failures 0, last full verify since the seed: clean. The target {} is ready: switch your application to it. (If writes may have reached the source after they were stopped, `ddb-relay verify` run now finds them.)",
            self.head(),
            self.triggers,
            self.target_table
        )
    }

    fn exit_code(&self) -> i32 {
        // A dry run decides nothing (helper-63 #8).
        if !self.dry_run && self.queued + self.dlq_depth + self.stream_failures > 0 {
            crate::report::EXIT_NO_GO
        } else {
            0
        }
    }
}

/// One look at the pipeline: `Ok(None)` when quiet, else what is not.
async fn not_quiet<A: Aws>(
    ctx: &Ctx<A>,
    since_ms: i64,
    last_total: &std::cell::Cell<Option<f64>>,
    quiet_ms: i64,
) -> Result<Option<String>> {
    let s = &ctx.stack;
    let forwarder = ctx.forwarder_trigger().await?;
    if forwarder.state != "Enabled" {
        bail!("the forwarder trigger is {}: source changes are not forwarded, so the drain cannot be proven; enable it (`aws lambda update-event-source-mapping --uuid {} --enabled`; after a `finish`, `ddb-relay resume` does) and run finish again", forwarder.state, forwarder.uuid);
    }
    let stream = super::copy::source_stream(ctx).await?;
    if stream.as_deref() != Some(forwarder.source_arn.as_str()) {
        bail!("the forwarder's trigger does not read the source's current stream (the stream is off or was replaced): the drain cannot be proven");
    }
    if let Some(p) = forwarder
        .last_result
        .as_deref()
        .filter(|r| r.starts_with("PROBLEM"))
    {
        return Ok(Some(format!("the forwarder's trigger reports {p}")));
    }
    let q = ctx
        .aws
        .queue_attrs(&s.queue_url)
        .await
        .map_err(|e| explain(e, "queue"))?;
    if q.visible + q.in_flight > 0 {
        return Ok(Some(format!("{} messages queued", q.visible + q.in_flight)));
    }
    let f = ctx
        .aws
        .queue_attrs(&s.stream_failure_url)
        .await
        .map_err(|e| explain(e, "stream failure queue"))?;
    if f.visible + f.in_flight > 0 {
        bail!("{} stream batches were given up by the forwarder (stream failure queue): their changes are in no queue and not in the target. `ddb-relay dlq stream-failures` lists them and deletes (`--clear`) those the seed covers; for the others re-seed (`pause`, `restart`), clear, then finish", f.visible + f.in_flight);
    }
    let now = ctx.now_ms();
    let dims = [
        ("Migration", s.migration.as_str()),
        ("Function", "forwarder"),
    ];
    let queries = [
        MetricQuery::new("DdbRelay", names::FORWARDED, &dims, Stat::Sum),
        MetricQuery::new("DdbRelay", names::REPLICATION_LAG_MS, &dims, Stat::Maximum),
        MetricQuery::new(
            "AWS/Lambda",
            "IteratorAge",
            &[("FunctionName", &s.forwarder)],
            Stat::Maximum,
        ),
        MetricQuery::new(
            "AWS/Lambda",
            "Throttles",
            &[("FunctionName", &s.forwarder)],
            Stat::Sum,
        ),
        MetricQuery::new(
            "AWS/Lambda",
            "Errors",
            &[("FunctionName", &s.forwarder)],
            Stat::Sum,
        ),
        MetricQuery::new("DdbRelay", names::SEND_FAILURES, &dims, Stat::Sum),
    ];
    let series = match ctx.aws.metrics(&queries, since_ms, now + 60_000).await {
        Ok(v) => v,
        // Unknown is not quiet.
        Err(e) => return Ok(Some(format!("metrics unknown ({}: {})", e.code, e.message))),
    };
    let total: f64 = series[0].iter().map(|(_, v)| v).sum();
    let recent = |i: usize| {
        series[i]
            .iter()
            .filter(|(t, _)| *t >= now - quiet_ms - 60_000)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    let behind = recent(1)
        .into_iter()
        .chain(recent(2))
        .fold(0.0f64, f64::max);
    let throttled: f64 = recent(3).iter().sum();
    let failing: f64 = recent(4).iter().sum::<f64>() + recent(5).iter().sum::<f64>();
    let changed = last_total.get() != Some(total);
    last_total.set(Some(total));
    Ok(if changed {
        Some("changes are still being forwarded".into())
    } else if throttled > 0.0 {
        Some(format!(
            "the forwarder is throttled ({throttled:.0} in the last minutes)"
        ))
    } else if failing > 0.0 {
        Some(format!(
            "the forwarder is failing ({failing:.0} errors in the last minutes)"
        ))
    } else if behind > quiet_ms as f64 {
        Some(format!(
            "the forwarder is {:.0} s behind the stream",
            behind / 1000.0
        ))
    } else {
        None
    })
}

/// Refuses to finish a target that is not whole: never seeded, a re-seed
/// interrupted (`*-pending`), a scan copy still in tombstone mode, a copy
/// or its tombstone sweep unfinished (its checkpoint is still there), or
/// the table missing or not ACTIVE. A quiet queue proves none of that: a
/// paused applier leaves the queue empty whatever the target holds.
/// `then` ends each message ("then finish").
pub(crate) async fn refuse_partial_target<A: Aws>(
    ctx: &Ctx<A>,
    c: &ControlState,
    then: &str,
) -> Result<()> {
    let s = &ctx.stack;
    let pending = c.seed_method.as_deref().filter(|m| m.ends_with("-pending"));
    if let Some(m) = pending {
        bail!("a re-seed of {} was interrupted ({m}): the target is not whole. Re-run it (`ddb-relay status` names it), {then}", s.target_table);
    }
    if c.cutoff_ms.is_none() {
        bail!(
            "{} was never seeded (no cutoff): run `ddb-relay seed`, {then}",
            s.target_table
        );
    }
    if c.mode == relay_core::control::Mode::Tombstone {
        bail!("a scan copy is still running (tombstone mode): the target is not whole. Let it finish (or re-run `ddb-relay seed` to continue it), {then}");
    }
    super::seed::refuse_replaced_target(ctx, c, then).await?;
    match super::copy::read_checkpoint(ctx, &super::copy::checkpoint_key(ctx)).await? {
        Some(c) if c.contains_key("retired") => bail!("{}, {then}", super::copy::RETIRE_INTERRUPTED),
        Some(_) => bail!("the copy seed's checkpoint is still there: its copy or tombstone sweep did not finish. Re-run `ddb-relay seed` to finish it, {then}"),
        None => {}
    }
    match ctx
        .aws
        .describe(&s.target_table)
        .await
        .map_err(|e| explain(e, &s.target_table))?
    {
        Some(t) if t.status == "ACTIVE" => Ok(()),
        Some(t) => bail!(
            "target table {} is {}, not ACTIVE",
            s.target_table,
            t.status
        ),
        None => bail!("target table {} does not exist", s.target_table),
    }
}

/// Takes back `finish`'s pause and finish (`written`, over `read`), with
/// the verdict: a verify that found differences while the finish was
/// written did not record them (its fence had moved), and the older clean
/// one must not stand for it (helper-53 #2). The fence it lifts is named in
/// `taken_back_ms`, so a `pause` that kept it pauses again. Moved since (a
/// `pause` kept the fence and wrote its own time; helper-71 #1): the finish
/// alone is taken back, the pause kept; reopened or finished by another
/// operator, it is left as it is. The item as it ends.
async fn take_back<A: Aws>(
    ctx: &Ctx<A>,
    read: &ControlState,
    written: &ControlState,
) -> Result<ControlState> {
    let next = ControlState {
        paused_at_ms: read.paused_at_ms,
        finished_ms: read.finished_ms,
        taken_back_ms: if read.paused_at_ms.is_none() {
            written.paused_at_ms
        } else {
            written.taken_back_ms
        },
        ..written.without_verdict()
    };
    if let Some(w) = ctx.write_control_unless_moved(written, next).await? {
        return Ok(w);
    }
    let now = ctx.control().await?;
    if now.finished_ms != written.finished_ms {
        return Ok(now);
    }
    ctx.write_control(
        &now,
        ControlState {
            finished_ms: read.finished_ms,
            ..now.without_verdict()
        },
    )
    .await
}

pub async fn finish<A: Aws>(
    ctx: &Ctx<A>,
    quiet: u64,
    timeout: u64,
    report: Option<&std::path::Path>,
    dry_run: bool,
) -> Result<FinishReport> {
    let s = &ctx.stack;
    if s.metrics_mode.as_deref() == Some("off") {
        bail!("finish proves the drain with the functions' own metrics, and the stack's MetricsMode is off: deploy it with MetricsMode=emf (putmetricdata on an emulator), then finish");
    }
    let start = ctx.control().await?;
    refuse_partial_target(ctx, &start, "then finish").await?;
    // Finished already, both triggers off (a finish that failed after them,
    // or one run again for its report; helper-63 #3): nothing to wait for
    // or change, only the last look and the report.
    let already = start.finished_ms.is_some()
        && ctx.applier_trigger().await?.state == "Disabled"
        && ctx.forwarder_trigger().await?.state == "Disabled";
    // Finished, but a trigger was enabled since (by hand): its changes would
    // wait under the finish's pause and never prove quiet (helper-66 #6).
    if start.finished_ms.is_some() && !already {
        bail!("the migration was finished, and a trigger is not Disabled (enabled since by hand, or another finish is still stopping the triggers or was interrupted): check `ddb-relay status`; to reopen it properly (forwarder and applier), run `ddb-relay resume`, then finish again once the writes are stopped");
    }
    // A forwarder invocation retrying its sends reports nothing until it
    // ends: quiet must last longer than one invocation can.
    let forwarder_timeout = ctx
        .aws
        .function_timeout_s(&s.forwarder)
        .await
        .map_err(|e| explain(e, &format!("function {}", s.forwarder)))?;
    let quiet = quiet.max(forwarder_timeout + 5);
    let plan = if already {
        "change nothing (the migration is finished and both triggers are off): look at the queues and write the report".to_string()
    } else {
        format!("wait until the forwarder is caught up and the queue stays empty for {quiet} s (at least the forwarder's timeout + 5 s), then set the pause, mark the migration finished (restart and replay refuse after it), disable both triggers and write a report")
    };
    let started = ctx.now_ms();
    let since = started - 3_600_000;
    let mut finished_ms = start.finished_ms;
    if !dry_run && !already {
        let last_total = std::cell::Cell::new(None);
        let quiet_since: std::cell::Cell<Option<i64>> = std::cell::Cell::new(None);
        let why = std::cell::RefCell::new(String::from("not checked yet"));
        let result = ctx
            .wait(
                &format!("waiting for {quiet} s of quiet: forwarder caught up, queue empty"),
                Duration::from_secs(timeout),
                || async {
                    match not_quiet(ctx, since, &last_total, (quiet * 1000) as i64).await? {
                        Some(reason) => {
                            *why.borrow_mut() = reason;
                            quiet_since.set(None);
                            Ok(false)
                        }
                        None => {
                            let since = quiet_since.get().unwrap_or_else(|| ctx.now_ms());
                            quiet_since.set(Some(since));
                            Ok(ctx.now_ms() - since >= (quiet * 1000) as i64)
                        }
                    }
                },
            )
            .await;
        if let Err(e) = result {
            return Err(anyhow!("{e} (last check: {})", why.borrow()));
        }
        ctx.step("setting the pause and disabling the forwarder and applier triggers");
        let read = ctx.control().await?;
        // Another operator may have started a re-seed while this waited: its
        // pending state must not be marked finished (the write below is
        // conditional on this read's version).
        if let Some(what) = Fence::of(&start).moved(&read) {
            bail!("the migration moved while finish waited ({what}): nothing was changed; finish again once it is done");
        }
        // The triggers as they are now, not as before the wait (helper-63
        // #2: another operator may have paused meanwhile): what a take-back
        // restores.
        let applier = ctx.applier_trigger().await?;
        let forwarder = ctx.forwarder_trigger().await?;
        let now = ctx.now_ms();
        let written = ctx
            .write_control(
                &read,
                ControlState {
                    paused_at_ms: read.paused_at_ms.or(Some(now)),
                    finished_ms: Some(now),
                    ..read.clone()
                },
            )
            .await?;
        // A trigger that cannot be disabled: the forwarder enabled again
        // (a disable that failed may still have taken effect) and the pause
        // and the finish taken back, so the refused finish changes nothing
        // (a pause with the applier's trigger still Enabled would fail
        // every batch into the DLQ). What could not be taken back is said.
        let stopped = match ctx
            .set_trigger(&forwarder.uuid, false, "forwarder trigger")
            .await
        {
            Ok(()) => {
                ctx.set_trigger(&applier.uuid, false, "applier trigger")
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = stopped {
            let mut said = Vec::new();
            // The pause and the finish taken back first, then the triggers
            // as they were (an update that failed may still have taken
            // effect), the applier's as the control item then says: never
            // Enabled under a pause (helper-70 #4).
            let restored = take_back(ctx, &read, &written).await;
            let finished = match &restored {
                Ok(now) => {
                    said.push(match (now.finished_ms, now.paused_at_ms, read.paused_at_ms) {
                        (Some(_), ..) => "the migration is finished as another operator left it".to_string(),
                        (None, Some(_), None) => "the finish was taken back, and the pause kept (another operator paused meanwhile)".to_string(),
                        _ => "the pause and the finish were taken back".to_string(),
                    });
                    now.finished_ms.is_some()
                }
                Err(r) => {
                    said.push(format!("the pause and the finish could not be taken back ({r:#}): check `ddb-relay status`; `ddb-relay resume` reopens it"));
                    true
                }
            };
            // The forwarder back only once the item no longer says finished
            // (helper-71 #1).
            if forwarder.state == "Enabled" && !finished {
                if let Err(r) = ctx
                    .set_trigger(&forwarder.uuid, true, "forwarder trigger")
                    .await
                {
                    let now = ctx
                        .aws
                        .mapping_state(&forwarder.uuid)
                        .await
                        .unwrap_or_else(|_| "unknown".to_string());
                    said.push(format!(
                        "the forwarder trigger is {now} (enabling it again failed: {r:#})"
                    ));
                }
            }
            let was = applier.state == "Enabled" && read.paused_at_ms.is_none();
            match super::pause::settle_applier(ctx, &applier.uuid, was, "`ddb-relay resume`").await
            {
                Ok(None) => {}
                Ok(Some(now)) => said.push(format!(
                    "the applier trigger is {}, as the control item says",
                    if now { "Enabled" } else { "Disabled" }
                )),
                Err(r) => said.push(format!("the applier trigger: {r:#}")),
            }
            return Err(e.context(format!(
                "a trigger could not be disabled; {}",
                said.join("; ")
            )));
        }
        // Another operator's `resume` may have reopened the migration while
        // this disabled the triggers (helper-66 #2): both are then put back
        // as that resume left them, and this finish stops.
        let now = ctx.control().await?;
        if now.finished_ms.is_none() {
            ctx.set_trigger(&forwarder.uuid, true, "forwarder trigger")
                .await?;
            // The applier as the control item says after that update, read
            // again after each correction (helper-67 D1: a `pause` may come
            // in between).
            super::pause::settle_applier(ctx, &applier.uuid, true, "`ddb-relay resume`").await?;
            bail!("another operator reopened the migration (`resume`) while this finished it: it is not finished, and its triggers were put back as the control item says; check `ddb-relay status`, then finish again once the writes are stopped");
        }
        finished_ms = written.finished_ms;
    }
    let st = status(ctx, 300).await?;
    let verified = relay_core::decide::verdict(&st).is_ok();
    let src = ctx.aws.describe(&s.source_table).await.ok().flatten();
    let tgt = ctx.aws.describe(&s.target_table).await.ok().flatten();
    let mut value = FinishReport {
        stack: s.name.clone(),
        migration: s.migration.clone(),
        finished_ms: finished_ms.unwrap_or_else(|| ctx.now_ms()),
        source_table: s.source_table.clone(),
        target_table: s.target_table.clone(),
        source_items_approx: src.and_then(|t| t.item_count),
        target_items_approx: tgt.and_then(|t| t.item_count),
        seed_method: st.seed_method,
        seed_ms: st.seed_ms,
        cutoff_ms: st.cutoff_ms,
        dlq_depth: st.dlq_depth,
        stream_failures: st.stream_failures,
        // Read after both triggers were disabled: a change forwarded in
        // the instant between the last quiet check and the forwarder's
        // stop waits here, under the pause, not in the target.
        queued: if dry_run {
            0
        } else {
            st.queue_visible + st.queue_in_flight
        },
        verified,
        last_verify: st.last_verify,
        triggers: if st.applier_trigger == st.forwarder_trigger {
            st.applier_trigger
        } else {
            format!(
                "applier {}, forwarder {}",
                st.applier_trigger, st.forwarder_trigger
            )
        },
        drained_s: (ctx.now_ms() - started) as f64 / 1000.0,
        quiet_s: if already { 0 } else { quiet },
        dry_run,
        already,
        plan: dry_run.then_some(plan),
        picture: None,
    };
    if let (Some(path), false) = (report, dry_run) {
        // The triggers are already off: a picture that cannot be drawn or
        // written is a warning, never a failed finish.
        let svg_path = path.with_extension("svg");
        let svg = picture(ctx, &value).await;
        match std::fs::write(&svg_path, svg) {
            Ok(()) => value.picture = Some(svg_path.display().to_string()),
            Err(e) => ctx.step(&format!(
                "warning: cannot write the picture to {}: {e}",
                svg_path.display()
            )),
        }
        std::fs::write(path, serde_json::to_string_pretty(&value)?)
            .map_err(|e| anyhow!("cannot write the report to {}: {e} (the migration is finished and its triggers are off: run `ddb-relay finish --report F` again for the report; it changes nothing)", path.display()))?;
    }
    Ok(value)
}
