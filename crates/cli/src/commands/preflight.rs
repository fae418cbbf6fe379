//! `preflight`: a checklist before seeding; any FAIL is a blocker (exit 3).

use anyhow::Result;
use relay_aws::operator::{Aws, TableInfo};
use relay_core::control::ControlState;
use relay_core::decide::{self, Check, CheckStatus};
use relay_core::iac::exposure;
use relay_core::place::SeedReach;
use serde::Serialize;

use super::cutover::check_lines;
use crate::args::Method;
use crate::ctx::{explain, rfc3339, Ctx};
use crate::report::{Report, EXIT_NO_GO};

#[derive(Debug, Serialize)]
pub struct PreflightReport {
    pub stack: String,
    pub method: String,
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report for PreflightReport {
    fn text(&self) -> String {
        let blockers = self
            .checks
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .count();
        format!(
            "{}\npreflight: {}",
            check_lines(&self.checks),
            if self.ok {
                "ready".into()
            } else {
                format!("{blockers} blocker(s)")
            }
        )
    }

    fn exit_code(&self) -> i32 {
        if self.ok {
            0
        } else {
            EXIT_NO_GO
        }
    }
}

/// Whether the deploy that points the user's template at the new table
/// can delete the source: the step where sources get lost. A warning, never
/// a blocker (`ddb-relay protect` clears it).
async fn source_protection<A: Aws>(ctx: &Ctx<A>, protected: bool) -> Check {
    const WHAT: &str = "source protection";
    let t = &ctx.stack.source_table;
    match ctx.aws.owner(t).await {
        Ok(owner) => {
            let e = exposure(t, protected, owner.as_ref());
            if e.exposed {
                Check::warn(WHAT, e.detail)
            } else {
                Check::pass(WHAT, e.detail)
            }
        }
        Err(err) if protected => Check::pass(
            WHAT,
            format!("deletion protection on (owning stack not looked up: {})", explain(err, "CloudFormation")),
        ),
        Err(err) => Check::warn(
            WHAT,
            format!("deletion protection off, and the owning stack could not be looked up ({}): run `ddb-relay protect`", explain(err, "CloudFormation")),
        ),
    }
}

/// Whether `seed --method export --from-export URI` would accept the export:
/// its manifests read and add up, and the queue can complete it (its table,
/// its time against the stream; [`super::copy::refuse_stale_export`]).
async fn export_check<A: Aws>(ctx: &Ctx<A>, uri: &str) -> Check {
    const WHAT: &str = "export";
    let (bucket, dir) = match relay_core::export::parse_s3_dir(uri) {
        Ok(p) => p,
        Err(e) => return Check::fail(WHAT, e),
    };
    let x = match super::load::read_export(ctx, &bucket, &dir).await {
        Ok(x) => x,
        Err(e) => return Check::fail(WHAT, format!("{e:#}")),
    };
    match super::copy::refuse_stale_export(ctx, &x).await {
        Ok(()) => Check::pass(
            WHAT,
            format!(
                "s3://{bucket}/{dir}: consistent to {}, {} items in {} files",
                rfc3339(x.summary.export_time_ms),
                x.summary.item_count,
                x.files.len()
            ),
        ),
        Err(e) => Check::fail(WHAT, format!("{e:#}")),
    }
}

pub async fn preflight<A: Aws>(
    ctx: &Ctx<A>,
    method: Method,
    load: bool,
    from_export: Option<&str>,
) -> Result<PreflightReport> {
    // `--from-export` implies `--load`.
    let load = load || from_export.is_some();
    // The copy seeds write into a target your IaC created.
    let copy = method == Method::Scan || (method == Method::Export && load);
    let s = &ctx.stack;
    let mut checks = vec![Check::pass(
        "stack",
        format!("{} (migration {})", s.name, s.migration),
    )];
    let probe =
        |what: &str, e: relay_aws::AwsError| Check::fail(what, explain(e, what).to_string());
    // A target in another region or account: only some seeds cross.
    if s.target.region.is_some() || s.target.assumes_role() {
        let place = format!(
            "{} (region {}{})",
            s.target_table,
            s.target.region.as_deref().unwrap_or("of the stack"),
            s.target
                .account()
                .map(|a| format!(
                    ", account {a} through {}",
                    s.target.role_arn.as_deref().unwrap_or_default()
                ))
                .unwrap_or_default()
        );
        checks.push(match s.target.seed_reach(method.as_str(), "") {
            SeedReach::Crosses => Check::pass(
                "target place",
                format!("{place}: a {} seed reaches it", method.as_str()),
            ),
            SeedReach::Refused(why) => Check::fail(
                "target place",
                format!("{place}: --method {} cannot: {why}", method.as_str()),
            ),
        });
    }

    // Source table, its stream, and the transform against both.
    match ctx.aws.describe(&s.source_table).await {
        Ok(Some(t)) => {
            checks.push(Check::pass(
                "source table",
                format!("{} ({})", t.name, t.status),
            ));
            checks.push(decide::stream_view_check(t.stream_view.as_deref()));
            match crate::transform::load_checked(ctx).await {
                Ok(loaded) => {
                    if let Some(why) = &loaded.mismatch {
                        checks.push(Check::fail("transform", why.clone()));
                    } else {
                        checks.push(Check::pass(
                            "transform",
                            match &s.transform_spec {
                                Some(_) => "the deployed TransformSpec".to_string(),
                                None => "none (items are copied unchanged)".to_string(),
                            },
                        ));
                    }
                    checks.push(crate::transform::remove_mapping_check(
                        loaded.transform.as_ref(),
                        &loaded.source_keys,
                        t.stream_view.as_deref(),
                    ));
                    if let Some(why) = loaded.transform.key_collisions() {
                        checks.push(Check::warn(
                            "transform key collisions",
                            format!("{why}. Two such source items share one target key: the later write replaces the other, and a delete of one removes the other's row, and `verify` may not see it: make sure the data has none"),
                        ));
                    }
                }
                Err(e) => checks.push(Check::fail("transform", e.to_string())),
            }
            match (ctx.forwarder_trigger().await, &t.stream_arn) {
                (Ok(m), Some(current)) if &m.source_arn == current => {
                    checks.push(if m.state == "Enabled" {
                        Check::pass("forwarder trigger", "Enabled on the current stream")
                    } else {
                        Check::fail("forwarder trigger", format!("{}: changes are not forwarded; enable it (`aws lambda update-event-source-mapping --uuid {} --enabled`)", m.state, m.uuid))
                    })
                }
                (Ok(m), Some(current)) => checks.push(Check::fail(
                    "forwarder trigger",
                    format!("reads {}, but the source's stream is now {current}: redeploy with SourceStreamArn={current} (once seeded, changes made around the switch may be in no queue: `cutover` then asks for a clean verify begun after the new stream, or a re-seed)", m.source_arn),
                )),
                (Ok(_), None) => {}
                (Err(e), _) => checks.push(Check::fail("forwarder trigger", e.to_string())),
            }
            checks.push(source_protection(ctx, t.deletion_protection).await);
        }
        Ok(None) => checks.push(Check::fail(
            "source table",
            format!(
                "{} not found: check SourceTableName and --region",
                s.source_table
            ),
        )),
        Err(e) => checks.push(probe("source table", e)),
    }

    // The export a load will read: it is what a PITR would have made.
    if let Some(uri) = from_export {
        checks.push(export_check(ctx, uri).await);
    } else if matches!(method, Method::Pitr | Method::Export) {
        // PITR, for the methods that need it.
        match ctx.aws.pitr(&s.source_table).await {
            Ok((true, _)) => checks.push(Check::pass("source PITR", "enabled")),
            Ok((false, _)) => checks.push(Check::fail(
                "source PITR",
                format!("disabled: `aws dynamodb update-continuous-backups --table-name {} --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true`", s.source_table),
            )),
            Err(e) => checks.push(probe("source PITR", e)),
        }
    }

    // The control item (also probes the permission to read it).
    let control = match ctx.control().await {
        Ok(c) => {
            checks.push(Check::pass(
                "control item",
                match c.cutoff_ms {
                    Some(t) => format!("cutoff {}", rfc3339(t)),
                    None => "no cutoff yet (seed sets it)".into(),
                },
            ));
            Some(c)
        }
        Err(e) => {
            checks.push(Check::fail("control item", e.to_string()));
            None
        }
    };
    let seeded = control.as_ref().is_some_and(|c| c.seed_ms.is_some());

    // The target: restore and import create it.
    match ctx.aws.describe(&s.target_table).await {
        Ok(None) if copy => checks.push(Check::fail(
            "target table",
            format!("{} does not exist: a {} copy writes into a table your IaC creates", s.target_table, method.as_str()),
        )),
        // Empty, or seeded already (a copy refuses items no seed wrote).
        Ok(Some(t)) if copy => checks.push(match &control {
            Some(c) => match super::seed::refuse_copy_over(ctx, c).await {
                Ok(()) => Check::pass(
                    "target table",
                    format!("{} ({}, keys {:?}) exists for the {} copy", t.name, t.status, t.key_names, method.as_str()),
                ),
                Err(e) => Check::fail("target table", format!("{e:#}")),
            },
            None => Check::pass(
                "target table",
                format!("{} ({}, keys {:?}) exists for the {} copy (its items not checked: the control item could not be read)", t.name, t.status, t.key_names, method.as_str()),
            ),
        }),
        Ok(None) => checks.push(Check::pass("target table", format!("{} does not exist yet; the {} seed creates it", s.target_table, method.as_str()))),
        Ok(Some(t)) if seeded => checks.push(seeded_target(ctx, control.as_ref(), &t).await),
        Ok(Some(t)) => checks.push(Check::fail(
            "target table",
            format!("{} already exists ({} keys {:?}) and no seed is recorded: a {} seed must create it; delete it or choose another TargetTableName", t.name, t.status, t.key_names, method.as_str()),
        )),
        Err(e) => checks.push(probe("target table", e)),
    }

    // Triggers and queues.
    match ctx.applier_trigger().await {
        Ok(m) => {
            let cutoff = control.as_ref().and_then(|c| c.cutoff_ms).is_some();
            checks.push(match (m.state.as_str(), cutoff) {
                ("Enabled", false) => Check::fail(
                    "applier trigger",
                    "Enabled without a cutoff: run `ddb-relay pause`, then seed",
                ),
                (st, _) => Check::pass("applier trigger", st.to_string()),
            });
        }
        Err(e) => checks.push(Check::fail("applier trigger", e.to_string())),
    }
    match (
        ctx.aws.queue_attrs(&s.queue_url).await,
        ctx.aws.function_timeout_s(&s.applier).await,
    ) {
        (Ok(q), Ok(t)) => checks.push(decide::visibility_check(q.visibility_s, t)),
        (Err(e), _) => checks.push(probe("queue", e)),
        (_, Err(e)) => checks.push(probe("applier function", e)),
    }
    match ctx.aws.queue_attrs(&s.dlq_url).await {
        Ok(q) if q.visible + q.in_flight == 0 => checks.push(Check::pass("DLQ", "empty")),
        Ok(q) => checks.push(Check::warn(
            "DLQ",
            format!("{} messages: `ddb-relay dlq list`", q.visible + q.in_flight),
        )),
        Err(e) => checks.push(probe("DLQ", e)),
    }

    Ok(PreflightReport {
        stack: s.name.clone(),
        method: method.as_str().into(),
        ok: !decide::has_blocker(&checks),
        checks,
    })
}

/// The target of a recorded seed. A restore whose cutoff is not set yet
/// must be the table its restore created (`seed::refuse_another_table`).
async fn seeded_target<A: Aws>(
    ctx: &Ctx<A>,
    control: Option<&ControlState>,
    t: &TableInfo,
) -> Check {
    let restore =
        control
            .filter(|c| c.cutoff_ms.is_none())
            .and_then(|c| match c.seed_method.as_deref() {
                Some(m @ ("pitr" | "backup")) => Some((c, m)),
                _ => None,
            });
    let Some((c, m)) = restore else {
        return Check::pass(
            "target table",
            format!("{} ({}), seeded by ddb-relay", t.name, t.status),
        );
    };
    match super::seed::refuse_another_table(ctx, c, m).await {
        Ok(()) => Check::pass(
            "target table",
            format!("{} ({}), created by the recorded {m} seed's restore: re-running the seed sets its cutoff", t.name, t.status),
        ),
        Err(e) => Check::fail("target table", format!("{e:#}")),
    }
}
