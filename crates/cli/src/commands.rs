//! The commands. Each gathers facts, lets `relay_core::ops` decide, acts,
//! and prints text or one JSON document.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use relay_aws::runtime::now_ms;
use relay_core::control::{cutoff_for_seed, ControlState};
use relay_core::ops::{self, Check, CheckStatus, CutoverThresholds, Status};
use serde_json::{json, Value};

use crate::args::{Cli, Command, DlqCommand, Method};
use crate::ctx::{explain, parse_time, rfc3339, Ctx};
use crate::EXIT_NO_GO;

pub async fn run(cli: Cli) -> Result<i32> {
    let ctx = Ctx::new(&cli.global).await?;
    match cli.command {
        Command::Preflight { method } => preflight(&ctx, method).await,
        Command::Seed {
            method,
            at,
            s3_bucket,
            s3_prefix,
            print_import_spec,
            segments,
            rate,
            max_wcu,
            dry_run,
        } if method == Method::Scan && !print_import_spec => {
            let _ = (at, s3_bucket, s3_prefix);
            let limits = crate::copy::Limits {
                segments,
                rate,
                max_wcu,
            };
            crate::copy::seed_scan(&ctx, limits, dry_run).await
        }
        Command::Seed {
            method,
            at,
            s3_bucket,
            s3_prefix,
            print_import_spec,
            dry_run,
            ..
        } => {
            seed(
                &ctx,
                method,
                at.as_deref(),
                s3_bucket.as_deref(),
                &s3_prefix,
                print_import_spec,
                dry_run,
            )
            .await
        }
        Command::Pause { dry_run } => pause(&ctx, dry_run).await,
        Command::Resume { dry_run } => resume(&ctx, dry_run).await,
        Command::Replay {
            from,
            no_resume,
            dry_run,
        } => replay(&ctx, Some(&from), no_resume, dry_run).await,
        Command::Restart {
            method: Method::Scan,
            segments,
            rate,
            max_wcu,
            no_resume,
            dry_run,
        } => {
            let limits = crate::copy::Limits {
                segments,
                rate,
                max_wcu,
            };
            restart_scan(&ctx, limits, no_resume, dry_run).await
        }
        Command::Restart {
            no_resume, dry_run, ..
        } => replay(&ctx, None, no_resume, dry_run).await,
        Command::Verify {
            sample,
            repair,
            recheck_wait,
            segments,
            rate,
        } => crate::copy::verify(&ctx, sample, repair, recheck_wait, segments, rate).await,
        Command::Status { window } => {
            let s = status(&ctx, window).await?;
            print_status(&ctx, &s);
            Ok(0)
        }
        Command::Watch {
            window,
            interval,
            count,
        } => watch(&ctx, window, interval, count).await,
        Command::Cutover {
            max_lag,
            max_backlog,
            window,
        } => cutover(&ctx, max_lag, max_backlog, window).await,
        Command::Finish {
            quiet,
            timeout,
            report,
            dry_run,
        } => finish(&ctx, quiet, timeout, report, dry_run).await,
        Command::Dlq { command } => match command {
            DlqCommand::List { max } => crate::dlq::list(&ctx, max).await,
            DlqCommand::Repair { max, dry_run } => crate::dlq::repair(&ctx, max, dry_run).await,
        },
    }
}

pub(crate) fn emit(ctx: &Ctx, value: &Value, text: &str) {
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{text}");
    }
}

fn check_lines(checks: &[Check]) -> String {
    checks
        .iter()
        .map(|c| {
            let tag = match c.status {
                CheckStatus::Pass => "PASS",
                CheckStatus::Warn => "WARN",
                CheckStatus::Fail => "FAIL",
            };
            format!("{tag}  {:<26} {}", c.name, c.detail)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------- preflight

async fn preflight(ctx: &Ctx, method: Method) -> Result<i32> {
    let s = &ctx.stack;
    let mut checks = vec![Check::pass(
        "stack",
        format!("{} (migration {})", s.name, s.migration),
    )];
    let probe =
        |what: &str, e: relay_aws::AwsError| Check::fail(what, explain(e, what).to_string());

    // Source table and its stream.
    match ctx.ops.table(&s.source_table).await {
        Ok(Some(t)) => {
            checks.push(Check::pass(
                "source table",
                format!("{} ({})", t.name, t.status),
            ));
            checks.push(ops::stream_view_check(t.stream_view.as_deref()));
            match crate::copy::transform(ctx).await {
                Ok((tf, keys)) => checks.push(crate::copy::remove_mapping_check(
                    tf.as_ref(),
                    &keys,
                    t.stream_view.as_deref(),
                )),
                Err(e) => checks.push(Check::fail("transform", e.to_string())),
            }
            match (ctx.forwarder_trigger().await, &t.stream_arn) {
                (Ok((_, state, arn)), Some(current)) if &arn == current => {
                    checks.push(if state == "Enabled" {
                        Check::pass("forwarder trigger", "Enabled on the current stream")
                    } else {
                        Check::fail("forwarder trigger", format!("{state}: changes are not forwarded; enable it (redeploy the stack)"))
                    })
                }
                (Ok((_, _, arn)), Some(current)) => checks.push(Check::fail(
                    "forwarder trigger",
                    format!("reads {arn}, but the source's stream is now {current}: redeploy with SourceStreamArn={current}"),
                )),
                (Ok(_), None) => {}
                (Err(e), _) => checks.push(Check::fail("forwarder trigger", e.to_string())),
            }
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

    // PITR, for the methods that need it.
    if matches!(method, Method::Pitr | Method::Export) {
        match ctx.ops.pitr(&s.source_table).await {
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
    match ctx.ops.table(&s.target_table).await {
        Ok(None) if method == Method::Scan => checks.push(Check::fail(
            "target table",
            format!("{} does not exist: a scan copy writes into a table your IaC creates", s.target_table),
        )),
        Ok(Some(t)) if method == Method::Scan => checks.push(Check::pass(
            "target table",
            format!("{} ({}, keys {:?}) exists for the scan copy", t.name, t.status, t.key_names),
        )),
        Ok(None) => checks.push(Check::pass("target table", format!("{} does not exist yet; the {} seed creates it", s.target_table, method.as_str()))),
        Ok(Some(t)) if seeded => checks.push(Check::pass("target table", format!("{} ({}), seeded by ddb-relay", t.name, t.status))),
        Ok(Some(t)) => checks.push(Check::fail(
            "target table",
            format!("{} already exists ({} keys {:?}) and no seed is recorded: a {} seed must create it; delete it or choose another TargetTableName", t.name, t.status, t.key_names, method.as_str()),
        )),
        Err(e) => checks.push(probe("target table", e)),
    }

    // Triggers and queues.
    match ctx.applier_trigger().await {
        Ok((_, state)) => {
            let cutoff = control.as_ref().and_then(|c| c.cutoff_ms).is_some();
            checks.push(match (state.as_str(), cutoff) {
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
        ctx.ops.queue_visibility_s(&s.queue_url).await,
        ctx.ops.function_timeout(&s.applier).await,
    ) {
        (Ok(v), Ok(t)) => checks.push(ops::visibility_check(v, t)),
        (Err(e), _) => checks.push(probe("queue", e)),
        (_, Err(e)) => checks.push(probe("applier function", e)),
    }
    match ctx.ops.queue_counts(&s.dlq_url).await {
        Ok((0, 0)) => checks.push(Check::pass("DLQ", "empty")),
        Ok((v, f)) => checks.push(Check::warn(
            "DLQ",
            format!("{} messages: `ddb-relay dlq list`", v + f),
        )),
        Err(e) => checks.push(probe("DLQ", e)),
    }

    let blocked = ops::has_blocker(&checks);
    let blockers = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .count();
    emit(
        ctx,
        &json!({"stack": s.name, "method": method.as_str(), "ok": !blocked, "checks": checks}),
        &format!(
            "{}\npreflight: {}",
            check_lines(&checks),
            if blocked {
                format!("{blockers} blocker(s)")
            } else {
                "ready".into()
            }
        ),
    );
    Ok(if blocked { EXIT_NO_GO } else { 0 })
}

// ---------------------------------------------------------------- seed

async fn seed(
    ctx: &Ctx,
    method: Method,
    at: Option<&str>,
    bucket: Option<&str>,
    prefix: &str,
    print_import_spec: bool,
    dry_run: bool,
) -> Result<i32> {
    let s = &ctx.stack;
    let now = now_ms();
    if print_import_spec {
        let bucket = bucket.ok_or_else(|| anyhow!("--print-import-spec needs --s3-bucket"))?;
        let src = ctx
            .ops
            .table(&s.source_table)
            .await
            .map_err(|e| explain(e, &s.source_table))?
            .ok_or_else(|| anyhow!("source table {} not found", s.source_table))?;
        let spec = import_spec(bucket, prefix);
        emit(
            ctx,
            &json!({"ImportSourceSpecification": spec, "key_names": src.key_names}),
            &format!(
                "# Add to the target table's AWS::DynamoDB::Table properties (same keys: {:?}),\n# after `ddb-relay seed --method export --s3-bucket {bucket}` has exported:\nImportSourceSpecification:\n  InputFormat: DYNAMODB_JSON\n  InputCompressionType: GZIP\n  S3BucketSource:\n    S3Bucket: {bucket}\n    S3KeyPrefix: {prefix}/AWSDynamoDB/<export-id>/data/\n# Deploy it, then re-run `ddb-relay seed --method export` to set the cutoff.",
                src.key_names
            ),
        );
        return Ok(0);
    }
    let read = ctx.control().await?;
    let target = ctx
        .ops
        .table(&s.target_table)
        .await
        .map_err(|e| explain(e, &s.target_table))?;
    if let (Some(t), Some(seed_ms), Some(cutoff)) = (&target, read.seed_ms, read.cutoff_ms) {
        if t.status == "ACTIVE" {
            emit(
                ctx,
                &json!({"stack": s.name, "method": read.seed_method, "seed_ms": seed_ms, "cutoff_ms": cutoff, "already": true, "dry_run": dry_run}),
                &format!(
                    "already seeded ({} at {}), cutoff {}: nothing to do",
                    read.seed_method.as_deref().unwrap_or("?"),
                    rfc3339(seed_ms),
                    rfc3339(cutoff)
                ),
            );
            return Ok(0);
        }
    }
    if target.is_some() && read.seed_ms.is_none() {
        bail!(
            "target table {} already exists and no seed is recorded; the {} seed creates it: delete it or choose another TargetTableName",
            s.target_table,
            method.as_str()
        );
    }
    let at_ms = at.map(|a| parse_time(a, now)).transpose()?;
    if dry_run {
        let plan = match method {
            Method::Backup => format!("create an on-demand backup of {}, restore it as {}, set cutoff = backup time - {} s", s.source_table, s.target_table, s.margin_ms / 1000),
            Method::Pitr => format!("restore {} at {} as {}, set cutoff = that time - {} s", s.source_table, at_ms.map_or("the latest restorable time".into(), rfc3339), s.target_table, s.margin_ms / 1000),
            Method::Export => format!("export {} to s3://{}/{prefix}, import it as {}, set cutoff = export time - {} s", s.source_table, bucket.unwrap_or("<--s3-bucket>"), s.target_table, s.margin_ms / 1000),
            Method::Scan => "scan copy (see `seed --method scan --dry-run`)".to_string(),
        };
        emit(
            ctx,
            &json!({"stack": s.name, "method": method.as_str(), "dry_run": true, "plan": plan}),
            &format!("dry run: would {plan}"),
        );
        return Ok(0);
    }

    let seed_ms = match (&target, read.seed_ms) {
        // A seed was started and its table exists: a re-run after a crash.
        (Some(_), Some(seed_ms)) => {
            ctx.step(&format!(
                "resuming the recorded {} seed at {}",
                read.seed_method.as_deref().unwrap_or("?"),
                rfc3339(seed_ms)
            ));
            seed_ms
        }
        _ => run_seed(ctx, &read, method, at_ms, bucket, prefix).await?,
    };
    if method == Method::Export
        && ctx
            .ops
            .table(&s.target_table)
            .await
            .map_err(|e| explain(e, &s.target_table))?
            .is_none()
    {
        let b = bucket.unwrap_or("<bucket>");
        emit(
            ctx,
            &json!({"stack": s.name, "method": "export", "seed_ms": seed_ms, "cutoff_ms": null, "pending": "import", "ImportSourceSpecification": import_spec(b, prefix)}),
            &format!("exported at {}. Next: create {} with this export as its ImportSourceSpecification (`ddb-relay seed --method export --print-import-spec --s3-bucket {b}`), then re-run `ddb-relay seed --method export` to set the cutoff.", rfc3339(seed_ms), s.target_table),
        );
        return Ok(0);
    }
    let (cutoff, written) = set_cutoff_when_active(ctx, seed_ms).await?;
    let items = ctx
        .ops
        .table(&s.target_table)
        .await
        .ok()
        .flatten()
        .and_then(|t| t.item_count);
    emit(
        ctx,
        &json!({"stack": s.name, "method": method.as_str(), "seed_ms": seed_ms, "cutoff_ms": cutoff, "target_table": s.target_table, "target_items": items, "version": written.version, "already": false, "dry_run": false}),
        &format!(
            "seeded {} by {} at {}; cutoff {} (seed time - {} s). Next: `ddb-relay resume`",
            s.target_table,
            method.as_str(),
            rfc3339(seed_ms),
            rfc3339(cutoff),
            s.margin_ms / 1000
        ),
    );
    Ok(0)
}

/// Waits for the target to be ACTIVE, then sets cutoff = seed time - margin.
async fn set_cutoff_when_active(ctx: &Ctx, seed_ms: i64) -> Result<(i64, ControlState)> {
    ctx.wait_table_active(&ctx.stack.target_table).await?;
    let read = ctx.control().await?;
    let cutoff = cutoff_for_seed(seed_ms, ctx.stack.margin_ms);
    let next = ControlState {
        cutoff_ms: Some(cutoff),
        ..read.clone()
    };
    Ok((cutoff, ctx.write_control(&read, next).await?))
}

fn import_spec(bucket: &str, prefix: &str) -> Value {
    json!({
        "InputFormat": "DYNAMODB_JSON",
        "InputCompressionType": "GZIP",
        "S3BucketSource": {"S3Bucket": bucket, "S3KeyPrefix": format!("{prefix}/AWSDynamoDB/<export-id>/data/")}
    })
}

/// Creates the target by `method`; records the seed (method and time) in
/// the control item before the target exists, so a re-run can resume.
async fn run_seed(
    ctx: &Ctx,
    read: &ControlState,
    method: Method,
    at_ms: Option<i64>,
    bucket: Option<&str>,
    prefix: &str,
) -> Result<i64> {
    let s = &ctx.stack;
    let record = |seed_ms: i64| ControlState {
        seed_method: Some(method.as_str().into()),
        seed_ms: Some(seed_ms),
        cutoff_ms: None,
        ..read.clone()
    };
    match method {
        Method::Scan => bail!("the scan copy runs through `seed --method scan`"),
        Method::Backup => {
            let name = format!("{}-seed-{}", s.migration, now_ms() / 1000);
            ctx.step(&format!("creating backup {name} of {}", s.source_table));
            let (arn, seed_ms, _) = ctx
                .ops
                .create_backup(&s.source_table, &name)
                .await
                .map_err(|e| explain(e, &s.source_table))?;
            ctx.wait(
                &format!("backup {name}: waiting for AVAILABLE"),
                Duration::from_secs(6 * 3600),
                || async {
                    Ok(ctx
                        .ops
                        .backup_status(&arn)
                        .await
                        .map_err(|e| explain(e, &arn))?
                        == "AVAILABLE")
                },
            )
            .await?;
            ctx.write_control(read, record(seed_ms)).await?;
            ctx.step(&format!(
                "restoring {} from the backup (taken {})",
                s.target_table,
                rfc3339(seed_ms)
            ));
            ctx.ops
                .restore_backup(&arn, &s.target_table)
                .await
                .map_err(|e| explain(e, &s.target_table))?;
            Ok(seed_ms)
        }
        Method::Pitr => {
            let (enabled, latest) = ctx
                .ops
                .pitr(&s.source_table)
                .await
                .map_err(|e| explain(e, &s.source_table))?;
            if !enabled {
                bail!(
                    "point-in-time recovery is disabled on {}: enable it, or use --method backup",
                    s.source_table
                );
            }
            let latest = latest.unwrap_or_else(now_ms);
            let seed_ms = at_ms.unwrap_or(latest);
            if seed_ms > latest {
                bail!(
                    "--at {} is after the latest restorable time {}",
                    rfc3339(seed_ms),
                    rfc3339(latest)
                );
            }
            ctx.write_control(read, record(seed_ms)).await?;
            ctx.step(&format!(
                "restoring {} at {} as {}",
                s.source_table,
                rfc3339(seed_ms),
                s.target_table
            ));
            ctx.ops
                .restore_pitr(&s.source_table, &s.target_table, seed_ms)
                .await
                .map_err(|e| explain(e, &s.target_table))?;
            Ok(seed_ms)
        }
        Method::Export => {
            let bucket = bucket.ok_or_else(|| {
                anyhow!("--method export needs --s3-bucket (a bucket in this account and region)")
            })?;
            let arn = ctx
                .ops
                .table_arn(&s.source_table)
                .await
                .map_err(|e| explain(e, &s.source_table))?;
            ctx.step(&format!(
                "exporting {} to s3://{bucket}/{prefix}",
                s.source_table
            ));
            let export = ctx
                .ops
                .export(&arn, bucket, prefix, at_ms)
                .await
                .map_err(|e| explain(e, &format!("export of {}", s.source_table)))?;
            let seed_ms = std::cell::Cell::new(0i64);
            ctx.wait(
                "export: waiting for COMPLETED",
                Duration::from_secs(12 * 3600),
                || async {
                    let (status, t, _) = ctx
                        .ops
                        .export_status(&export)
                        .await
                        .map_err(|e| explain(e, &export))?;
                    if status == "FAILED" {
                        bail!("export {export} FAILED; see the DynamoDB console");
                    }
                    seed_ms.set(t.unwrap_or(0));
                    Ok(status == "COMPLETED")
                },
            )
            .await?;
            ctx.write_control(read, record(seed_ms.get())).await?;
            Ok(seed_ms.get())
        }
    }
}

// ---------------------------------------------------------------- pause / resume

async fn pause(ctx: &Ctx, dry_run: bool) -> Result<i32> {
    let (uuid, state) = ctx.applier_trigger().await?;
    let read = ctx.control().await?;
    if dry_run {
        emit(ctx, &json!({"stack": ctx.stack.name, "dry_run": true, "trigger": state, "paused_at_ms": read.paused_at_ms}), &format!("dry run: would disable the applier trigger (now {state}) and record the pause time"));
        return Ok(0);
    }
    if state != "Disabled" {
        ctx.set_trigger(&uuid, false, "applier trigger").await?;
    }
    // The pause time is taken once the trigger is off: every change consumed
    // so far was received before it. A second pause keeps the first time.
    let paused_at = read.paused_at_ms.unwrap_or_else(now_ms);
    let written = if read.paused_at_ms.is_some() {
        read
    } else {
        ctx.write_control(
            &read,
            ControlState {
                paused_at_ms: Some(paused_at),
                ..read.clone()
            },
        )
        .await?
    };
    let earliest = relay_core::control::earliest_replay_point(paused_at, ctx.stack.margin_ms);
    emit(
        ctx,
        &json!({"stack": ctx.stack.name, "trigger": "Disabled", "paused_at_ms": paused_at, "earliest_replay_ms": earliest, "version": written.version, "dry_run": false}),
        &format!(
            "paused at {}; changes keep queueing (14-day retention). Earliest replay point: {}",
            rfc3339(paused_at),
            rfc3339(earliest)
        ),
    );
    Ok(0)
}

async fn resume(ctx: &Ctx, dry_run: bool) -> Result<i32> {
    let s = &ctx.stack;
    let read = ctx.control().await?;
    let Some(cutoff) = read.cutoff_ms else {
        bail!("no cutoff for migration {}: the target is not seeded; run `ddb-relay seed` first (resuming now would apply nothing and fail every batch)", s.migration);
    };
    match ctx
        .ops
        .table(&s.target_table)
        .await
        .map_err(|e| explain(e, &s.target_table))?
    {
        Some(t) if t.status == "ACTIVE" => {}
        Some(t) => bail!(
            "target table {} is {}, not ACTIVE: wait for the seed to finish",
            s.target_table,
            t.status
        ),
        None => bail!(
            "target table {} does not exist: run `ddb-relay seed`",
            s.target_table
        ),
    }
    let (uuid, state) = ctx.applier_trigger().await?;
    if dry_run {
        emit(
            ctx,
            &json!({"stack": s.name, "dry_run": true, "trigger": state, "cutoff_ms": cutoff}),
            &format!(
                "dry run: would enable the applier trigger (now {state}); cutoff {}",
                rfc3339(cutoff)
            ),
        );
        return Ok(0);
    }
    let written = enable_applier(ctx, &uuid, read).await?;
    emit(
        ctx,
        &json!({"stack": s.name, "trigger": "Enabled", "cutoff_ms": cutoff, "version": written.version, "dry_run": false}),
        &format!(
            "resumed: the applier drains the queue into {} (cutoff {})",
            s.target_table,
            rfc3339(cutoff)
        ),
    );
    Ok(0)
}

/// Enables the applier trigger and clears the pause.
async fn enable_applier(ctx: &Ctx, uuid: &str, read: ControlState) -> Result<ControlState> {
    ctx.set_trigger(uuid, true, "applier trigger").await?;
    if read.paused_at_ms.is_some() {
        ctx.write_control(
            &read,
            ControlState {
                paused_at_ms: None,
                ..read.clone()
            },
        )
        .await
    } else {
        Ok(read)
    }
}

// ---------------------------------------------------------------- replay / restart

/// `replay --from T` (PITR at T) or `restart` (backup now, `from` = None).
async fn replay(ctx: &Ctx, from: Option<&str>, no_resume: bool, dry_run: bool) -> Result<i32> {
    let s = &ctx.stack;
    let now = now_ms();
    let read = ctx.control().await?;
    let (_, state) = ctx.applier_trigger().await?;
    if read.paused_at_ms.is_none() || state != "Disabled" {
        bail!("{}", ops::ReplayError::NotPaused);
    }
    let (method, t) = match from {
        Some(f) => {
            let (enabled, latest) = ctx
                .ops
                .pitr(&s.source_table)
                .await
                .map_err(|e| explain(e, &s.source_table))?;
            if !enabled {
                bail!("replay --from needs point-in-time recovery on {}: enable it, or use `ddb-relay restart` (re-seed by backup now)", s.source_table);
            }
            let t = parse_time(f, now)?;
            ops::validate_replay_point(
                t,
                read.paused_at_ms,
                s.margin_ms,
                now,
                latest.unwrap_or(now),
            )?;
            (Method::Pitr, t)
        }
        None => {
            ops::validate_replay_point(now, read.paused_at_ms, s.margin_ms, now, now)
                .map_err(|e| anyhow!("{e}; wait, then re-run `ddb-relay restart`"))?;
            (Method::Backup, now)
        }
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
        emit(
            ctx,
            &json!({"stack": s.name, "dry_run": true, "method": method.as_str(), "from_ms": t, "cutoff_ms": cutoff, "plan": plan}),
            &format!("dry run: would {plan}"),
        );
        return Ok(0);
    }
    // A re-run after a crash: the recorded PITR seed at the same T continues.
    let same_pitr = method == Method::Pitr
        && read.seed_method.as_deref() == Some("pitr")
        && read.seed_ms == Some(t);
    let seed_ms = if same_pitr && read.cutoff_ms == Some(cutoff) {
        ctx.step("the target is already re-seeded at this point");
        t
    } else {
        ctx.step("step 1/4: record the replay (cutoff cleared until the new seed is ready)");
        let cleared = ctx
            .write_control(
                &read,
                ControlState {
                    cutoff_ms: None,
                    seed_method: Some(format!("{}-pending", method.as_str())),
                    seed_ms: Some(t),
                    ..read.clone()
                },
            )
            .await?;
        ctx.step(&format!("step 2/4: drop {}", s.target_table));
        ctx.ops
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
    let (cutoff, mut written) = set_cutoff_when_active(ctx, seed_ms).await?;
    let trigger = if no_resume {
        "Disabled"
    } else {
        let (uuid, _) = ctx.applier_trigger().await?;
        written = enable_applier(ctx, &uuid, written).await?;
        "Enabled"
    };
    emit(
        ctx,
        &json!({"stack": s.name, "method": method.as_str(), "from_ms": seed_ms, "cutoff_ms": cutoff, "trigger": trigger, "version": written.version, "dry_run": false}),
        &format!(
            "replayed from {} (cutoff {}); applier {trigger}{}",
            rfc3339(seed_ms),
            rfc3339(cutoff),
            if no_resume {
                ": `ddb-relay resume` when ready"
            } else {
                ""
            }
        ),
    );
    Ok(0)
}

/// `restart --method scan`: paused first; clears the target, copies again
/// (tombstone mode), and resumes.
async fn restart_scan(
    ctx: &Ctx,
    limits: crate::copy::Limits,
    no_resume: bool,
    dry_run: bool,
) -> Result<i32> {
    let read = ctx.control().await?;
    let (uuid, state) = ctx.applier_trigger().await?;
    if read.paused_at_ms.is_none() || state != "Disabled" {
        bail!("{}", ops::ReplayError::NotPaused);
    }
    if dry_run {
        emit(ctx, &json!({"stack": ctx.stack.name, "dry_run": true, "method": "scan"}), &format!("dry run: would delete every item of {}, copy {} again (tombstone mode), and resume", ctx.stack.target_table, ctx.stack.source_table));
        return Ok(0);
    }
    ctx.step(&format!("clearing {}", ctx.stack.target_table));
    let cleared = crate::copy::clear_target(ctx, limits.segments).await?;
    ctx.step(&format!("{cleared} items deleted; copying again"));
    crate::copy::forget_checkpoints(ctx).await?;
    let code = crate::copy::seed_scan(ctx, limits, false).await?;
    let read = ctx.control().await?;
    if no_resume {
        ctx.set_trigger(&uuid, false, "applier trigger").await?;
    } else if read.paused_at_ms.is_some() {
        ctx.write_control(
            &read,
            ControlState {
                paused_at_ms: None,
                ..read.clone()
            },
        )
        .await?;
    }
    Ok(code)
}

// ---------------------------------------------------------------- status / watch

pub async fn status(ctx: &Ctx, window_s: u64) -> Result<Status> {
    let s = &ctx.stack;
    let control = ctx.control().await?;
    let (_, applier) = ctx.applier_trigger().await?;
    let (_, forwarder, _) = ctx.forwarder_trigger().await?;
    let (queue_visible, queue_in_flight) = ctx
        .ops
        .queue_counts(&s.queue_url)
        .await
        .map_err(|e| explain(e, "queue"))?;
    let (dv, df) = ctx
        .ops
        .queue_counts(&s.dlq_url)
        .await
        .map_err(|e| explain(e, "DLQ"))?;
    let (fv, ff) = ctx
        .ops
        .queue_counts(&s.stream_failure_url)
        .await
        .map_err(|e| explain(e, "stream failure queue"))?;
    let since = now_ms() - (window_s as i64) * 1000;
    let dims = |f: &'static str| [("Migration", s.migration.as_str()), ("Function", f)];
    let ours = |name: &'static str, f: &'static str, max: bool, since: i64| {
        let d = dims(f);
        async move {
            ctx.ops
                .metric("DdbRelay", name, &d, since, max)
                .await
                .ok()
                .flatten()
        }
    };
    let per_min = |v: Option<f64>| v.map(|v| v * 60.0 / window_s.max(1) as f64);
    let forwarded = ours("Forwarded", "forwarder", false, since).await;
    let puts = ours("AppliedPuts", "applier", false, since).await;
    let deletes = ours("AppliedDeletes", "applier", false, since).await;
    let skipped = ours("SkippedBeforeCutoff", "applier", false, since).await;
    let lag = ours("ReplicationLag", "applier", true, now_ms() - 120_000).await;
    let mut errors: Option<f64> = None;
    for (name, f) in [
        ("SendFailures", "forwarder"),
        ("BadRecords", "forwarder"),
        ("FailedMessages", "applier"),
        ("UndecodableMessages", "applier"),
        ("CutoffMissing", "applier"),
    ] {
        if let Some(v) = ours(name, f, false, since).await {
            errors = Some(errors.unwrap_or(0.0) + v);
        }
    }
    let queue_name = s.queue_url.rsplit('/').next().unwrap_or_default();
    let oldest = ctx
        .ops
        .metric(
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            &[("QueueName", queue_name)],
            now_ms() - 300_000,
            true,
        )
        .await
        .ok()
        .flatten();
    let iterator_age = ctx
        .ops
        .metric(
            "AWS/Lambda",
            "IteratorAge",
            &[("FunctionName", s.forwarder.as_str())],
            now_ms() - 300_000,
            true,
        )
        .await
        .ok()
        .flatten();
    Ok(Status {
        stack: s.name.clone(),
        migration: s.migration.clone(),
        source_table: s.source_table.clone(),
        target_table: s.target_table.clone(),
        forwarder_trigger: forwarder,
        applier_trigger: applier,
        cutoff_ms: control.cutoff_ms,
        mode: format!("{:?}", control.mode).to_lowercase(),
        paused_at_ms: control.paused_at_ms,
        seed_method: control.seed_method,
        seed_ms: control.seed_ms,
        queue_visible,
        queue_in_flight,
        queue_oldest_age_s: oldest,
        dlq_depth: dv + df,
        stream_failures: fv + ff,
        forwarder_iterator_age_ms: iterator_age,
        window_s,
        forwarded_per_min: per_min(forwarded),
        applied_per_min: per_min(match (puts, deletes) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        }),
        skipped_per_min: per_min(skipped),
        replication_lag_ms: lag,
        errors,
        last_verify: control.last_verify,
    })
}

fn opt(v: Option<f64>, unit: &str, scale: f64) -> String {
    v.map_or("n/a".into(), |v| format!("{:.1}{unit}", v / scale))
}

fn status_text(s: &Status) -> String {
    let t = |v: Option<i64>| v.map_or("none".to_string(), rfc3339);
    format!(
        "migration {}  (stack {})\n  {} -> {}\n\
         triggers   forwarder {}   applier {}\n\
         cutoff     {}   mode {}   paused at {}   seed {} at {}\n\
         queue      {} visible   {} in flight   oldest {}\n\
         DLQ        {}   stream failures {}\n\
         forwarder  iterator age {}\n\
         rates      forwarded {}/min   applied {}/min   skipped (before cutoff) {}/min   (last {} s)\n\
         lag        {}   errors {}\n\
         verify     {}",
        s.migration,
        s.stack,
        s.source_table,
        s.target_table,
        s.forwarder_trigger,
        s.applier_trigger,
        t(s.cutoff_ms),
        s.mode,
        t(s.paused_at_ms),
        s.seed_method.as_deref().unwrap_or("none"),
        t(s.seed_ms),
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
        s.errors.map_or("n/a".into(), |e| format!("{e:.0}")),
        s.last_verify.as_deref().unwrap_or("never run"),
    )
}

fn print_status(ctx: &Ctx, s: &Status) {
    emit(
        ctx,
        &serde_json::to_value(s).unwrap_or_default(),
        &status_text(s),
    );
}

async fn watch(ctx: &Ctx, window: u64, interval: u64, count: Option<u64>) -> Result<i32> {
    let mut n = 0;
    loop {
        let s = status(ctx, window).await?;
        if ctx.json() {
            println!("{}", serde_json::to_string(&s)?);
        } else {
            // Redraw in place: clear the screen, cursor home.
            print!(
                "\x1b[2J\x1b[H{}\n\n(refresh every {interval} s; Ctrl-C to stop)\n",
                status_text(&s)
            );
        }
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(interval.max(1))).await;
    }
}

// ---------------------------------------------------------------- cutover / finish

async fn cutover(ctx: &Ctx, max_lag_s: f64, max_backlog: u64, window: u64) -> Result<i32> {
    let s = status(ctx, window).await?;
    let d = ops::cutover(
        &s,
        &CutoverThresholds {
            max_lag_ms: max_lag_s * 1000.0,
            max_backlog,
        },
    );
    emit(
        ctx,
        &json!({"stack": s.stack, "go": d.go, "reasons": d.reasons, "checks": d.checks}),
        &format!(
            "{}\n{}",
            check_lines(&d.checks),
            if d.go {
                "GO: the target is in sync; switch your application to it".to_string()
            } else {
                format!("NO-GO: {}", d.reasons.join("; "))
            }
        ),
    );
    Ok(if d.go { 0 } else { EXIT_NO_GO })
}

async fn finish(
    ctx: &Ctx,
    quiet: u64,
    timeout: u64,
    report: Option<std::path::PathBuf>,
    dry_run: bool,
) -> Result<i32> {
    let s = &ctx.stack;
    let (auuid, _) = ctx.applier_trigger().await?;
    let (fuuid, _, _) = ctx.forwarder_trigger().await?;
    if dry_run {
        emit(ctx, &json!({"stack": s.name, "dry_run": true, "quiet_s": quiet}), &format!("dry run: would wait for {quiet} s with an empty queue and nothing forwarded, then disable both triggers and write a report"));
        return Ok(0);
    }
    let start = Instant::now();
    // Quiet = an empty queue and a Forwarded total that stops growing (a
    // running total, so metric buckets do not matter).
    let since = now_ms() - 3_600_000;
    let quiet_since = std::cell::Cell::new(Instant::now());
    let last_total = std::cell::Cell::new(f64::NAN);
    ctx.wait(
        &format!("waiting for {quiet} s with an empty queue and no new changes"),
        Duration::from_secs(timeout),
        || async {
            let (v, f) = ctx
                .ops
                .queue_counts(&s.queue_url)
                .await
                .map_err(|e| explain(e, "queue"))?;
            let total = ctx
                .ops
                .metric(
                    "DdbRelay",
                    "Forwarded",
                    &[
                        ("Migration", s.migration.as_str()),
                        ("Function", "forwarder"),
                    ],
                    since,
                    false,
                )
                .await
                .ok()
                .flatten()
                .unwrap_or(0.0);
            if v + f > 0 || total != last_total.get() {
                quiet_since.set(Instant::now());
                last_total.set(total);
            }
            Ok(quiet_since.get().elapsed() >= Duration::from_secs(quiet))
        },
    )
    .await?;
    ctx.step("disabling the forwarder and applier triggers");
    ctx.set_trigger(&fuuid, false, "forwarder trigger").await?;
    ctx.set_trigger(&auuid, false, "applier trigger").await?;
    let st = status(ctx, start.elapsed().as_secs().max(60) + 300).await?;
    let src = ctx.ops.table(&s.source_table).await.ok().flatten();
    let tgt = ctx.ops.table(&s.target_table).await.ok().flatten();
    let value = json!({
        "stack": s.name,
        "migration": s.migration,
        "finished_ms": now_ms(),
        "source_table": s.source_table,
        "target_table": s.target_table,
        "source_items_approx": src.and_then(|t| t.item_count),
        "target_items_approx": tgt.and_then(|t| t.item_count),
        "seed_method": st.seed_method,
        "seed_ms": st.seed_ms,
        "cutoff_ms": st.cutoff_ms,
        "dlq_depth": st.dlq_depth,
        "stream_failures": st.stream_failures,
        "last_verify": st.last_verify,
        "triggers": "Disabled",
    });
    if let Some(path) = report {
        std::fs::write(&path, serde_json::to_string_pretty(&value)?)
            .map_err(|e| anyhow!("cannot write the report to {}: {e}", path.display()))?;
    }
    emit(ctx, &value, &format!("finished: queue drained and quiet for {quiet} s; both triggers disabled. DLQ {}, stream failures {}. The target {} is ready.", st.dlq_depth, st.stream_failures, s.target_table));
    Ok(0)
}
