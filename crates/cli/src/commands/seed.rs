//! `seed --method backup|pitr|export`: create the target from the source and
//! set the cutoff (seed time - margin). The scan copy is `scan.rs`.
//!
//! **Invariant:** a seed records its method and time in the control item
//! before the target exists, so a re-run after a crash finishes it instead
//! of starting another; every seed clears the last verify verdict (a clean
//! verify is needed again before cutover).

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use relay_aws::operator::Aws;
use relay_core::control::{cutoff_for_seed, ControlState};
use relay_core::decide::validate_replay_point;
use serde::Serialize;
use serde_json::{json, Value};

use crate::args::Method;
use crate::ctx::{explain, rfc3339, Ctx, When};
use crate::report::Report;

mod refuse;
mod restored;
pub use refuse::{
    refuse_copy_over, refuse_filled_target, refuse_interrupted_replay,
    refuse_restore_with_transform,
};
use restored::record_restored_table;
pub use restored::{
    binding, recorded_table, refuse_another_table, refuse_replaced_target, target_id,
};

#[derive(Debug, Serialize)]
pub struct SeedReport {
    pub stack: String,
    pub method: String,
    pub seed_ms: Option<i64>,
    pub cutoff_ms: Option<i64>,
    pub target_table: String,
    pub target_items: Option<i64>,
    pub version: u64,
    pub already: bool,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Export seeds: the import is still to be done by your IaC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    #[serde(
        rename = "ImportSourceSpecification",
        skip_serializing_if = "Option::is_none"
    )]
    pub import_source_specification: Option<Value>,
    #[serde(skip)]
    margin_ms: i64,
}

impl Report for SeedReport {
    fn text(&self) -> String {
        if let Some(plan) = &self.plan {
            return format!("dry run: would {plan}");
        }
        let t = |v: Option<i64>| v.map_or("?".into(), rfc3339);
        if self.already {
            return format!(
                "already seeded ({} at {}), cutoff {}: nothing to do",
                self.method,
                t(self.seed_ms),
                t(self.cutoff_ms)
            );
        }
        if self.pending.is_some() {
            return format!("exported at {}. Next: create {} with this export as its ImportSourceSpecification (`ddb-relay seed --method export --print-import-spec --s3-bucket B`), then re-run `ddb-relay seed --method export` to set the cutoff.", t(self.seed_ms), self.target_table);
        }
        format!(
            "seeded {} by {} at {}; cutoff {} (seed time - {} s). Next: `ddb-relay resume`",
            self.target_table,
            self.method,
            t(self.seed_ms),
            t(self.cutoff_ms),
            self.margin_ms / 1000
        )
    }
}

#[derive(Debug, Serialize)]
pub struct ImportSpecReport {
    #[serde(rename = "ImportSourceSpecification")]
    pub import_source_specification: Value,
    pub key_names: Vec<String>,
    #[serde(skip)]
    bucket: String,
    #[serde(skip)]
    prefix: String,
}

impl Report for ImportSpecReport {
    fn text(&self) -> String {
        format!(
            "# Add to the target table's AWS::DynamoDB::Table properties (same keys: {:?}),\n# after `ddb-relay seed --method export --s3-bucket {b}` has exported:\nImportSourceSpecification:\n  InputFormat: DYNAMODB_JSON\n  InputCompressionType: GZIP\n  S3BucketSource:\n    S3Bucket: {b}\n    S3KeyPrefix: {p}/AWSDynamoDB/<export-id>/data/\n{owner}# Deploy it, then re-run `ddb-relay seed --method export` to set the cutoff.",
            self.key_names,
            b = self.bucket,
            p = self.prefix,
            owner = match self.import_source_specification["S3BucketSource"]["S3BucketOwner"].as_str() {
                Some(o) => format!("    S3BucketOwner: \"{o}\"\n# The target is in another account: the bucket's policy must let that\n# account's import read the prefix (s3:GetObject, s3:ListBucket).\n"),
                None => String::new(),
            },
        )
    }
}

/// `owner`: the bucket's account, when the target (and so the import) is
/// in another account (ImportTable defaults the owner to the caller's).
fn import_spec(bucket: &str, prefix: &str, owner: Option<&str>) -> Value {
    let mut source = json!({"S3Bucket": bucket, "S3KeyPrefix": format!("{prefix}/AWSDynamoDB/<export-id>/data/")});
    if let Some(o) = owner {
        source["S3BucketOwner"] = json!(o);
    }
    json!({
        "InputFormat": "DYNAMODB_JSON",
        "InputCompressionType": "GZIP",
        "S3BucketSource": source
    })
}

/// The stack's account (the export bucket's, as `seed --method export`
/// takes it) when the target is in another account.
fn bucket_owner(ctx_target_role: bool, source_arn: Option<&str>) -> Option<String> {
    if !ctx_target_role {
        return None;
    }
    source_arn
        .and_then(relay_core::place::arn_parts)
        .map(|(_, _, account)| account.to_string())
}

/// What `seed` was asked.
#[derive(Clone, Debug)]
pub struct SeedArgs {
    pub method: Method,
    pub at: Option<When>,
    pub bucket: Option<String>,
    pub prefix: String,
    pub dry_run: bool,
}

pub async fn print_import_spec<A: Aws>(
    ctx: &Ctx<A>,
    bucket: &str,
    prefix: &str,
) -> Result<ImportSpecReport> {
    let s = &ctx.stack;
    let src = ctx
        .aws
        .describe(&s.source_table)
        .await
        .map_err(|e| explain(e, &s.source_table))?
        .ok_or_else(|| anyhow!("source table {} not found", s.source_table))?;
    let owner = bucket_owner(s.target.assumes_role(), src.arn.as_deref());
    Ok(ImportSpecReport {
        import_source_specification: import_spec(bucket, prefix, owner.as_deref()),
        key_names: src.key_names,
        bucket: bucket.into(),
        prefix: prefix.into(),
    })
}

pub async fn seed<A: Aws>(ctx: &Ctx<A>, a: &SeedArgs) -> Result<SeedReport> {
    let s = &ctx.stack;
    let now = ctx.now_ms();
    let report = |method: &str| SeedReport {
        stack: s.name.clone(),
        method: method.to_string(),
        seed_ms: None,
        cutoff_ms: None,
        target_table: s.target_table.clone(),
        target_items: None,
        version: 0,
        already: false,
        dry_run: a.dry_run,
        plan: None,
        pending: None,
        import_source_specification: None,
        margin_ms: s.margin_ms,
    };
    refuse_restore_with_transform(ctx, &format!("a {} seed", a.method.as_str()))?;
    let read = ctx.control().await?;
    refuse_interrupted_replay(&read)?;
    if read.mode == relay_core::control::Mode::Tombstone {
        bail!(
            "a copy seed ({} at {}) is running or stopped halfway (tombstone mode): re-run it to finish (`ddb-relay seed --method scan`, or `ddb-relay seed --method export --load`)",
            read.seed_method.as_deref().unwrap_or("?"),
            read.seed_ms.map_or("?".into(), rfc3339)
        );
    }
    let target = ctx
        .aws
        .describe(&s.target_table)
        .await
        .map_err(|e| explain(e, &s.target_table))?;
    if let (Some(t), Some(seed_ms), Some(cutoff)) = (&target, read.seed_ms, read.cutoff_ms) {
        refuse_replaced_target(ctx, &read, "").await?;
        if t.status == "ACTIVE" {
            return Ok(SeedReport {
                seed_ms: Some(seed_ms),
                cutoff_ms: Some(cutoff),
                version: read.version,
                already: true,
                ..report(read.seed_method.as_deref().unwrap_or("?"))
            });
        }
    }
    if target.is_some() && read.seed_ms.is_none() {
        bail!(
            "target table {} already exists and no seed is recorded; the {} seed creates it: delete it or choose another TargetTableName",
            s.target_table,
            a.method.as_str()
        );
    }
    let at_ms = a.at.map(|w| w.resolve(now));
    // A first seed at a chosen point: the queue must hold every change
    // after it (a later seed is held to the replay rules below). Only when
    // the seed will run (not on a re-run that finishes a recorded one).
    let will_run = !(target.is_some() && read.seed_ms.is_some());
    // When a first backup seed waits for the stream to be a minute old.
    let mut backup_wait = None;
    if let (None, true) = (read.consumed_ms, will_run) {
        let stream = super::copy::source_stream(ctx).await?;
        let (point, fuzz, what, fix) = match (a.method, at_ms) {
            (Method::Backup, _) => {
                // A backup taken now may lack the writes of the minute
                // before, which the stream must then hold: right after the
                // stream was created, wait that minute out (a dry run says
                // so in its plan).
                let mut point = ctx.now_ms();
                // A stream whose label is not a time (another emulator)
                // exists now: its creation is counted as now.
                let created = stream.as_deref().map(|arn| {
                    super::copy::stream_created_ms(arn).unwrap_or_else(|| {
                        ctx.step(&format!("the source's stream label ({arn}) is not a time: counting the stream as created now"));
                        point
                    })
                });
                if let Some(created) = created {
                    let ready = created + super::copy::BACKUP_FUZZ_MS;
                    if ready - point > 2 * super::copy::BACKUP_FUZZ_MS {
                        bail!(
                            "the source's stream says it was created at {}, more than a minute after now ({}; AWS's time when its responses carry it, else this machine's): check the clock, then seed again",
                            rfc3339(created),
                            rfc3339(point)
                        );
                    }
                    if ready > point && !a.dry_run {
                        let why = format!("the source's stream was created at {}: a backup may lack the writes of the minute before it, so it is taken from {} on", rfc3339(created), rfc3339(ready));
                        ctx.step(&why);
                        ctx.wait_until(ready, &why).await?;
                    }
                    if ready > point {
                        backup_wait = Some(ready);
                    }
                    point = point.max(ready).max(ctx.now_ms());
                }
                (
                    point,
                    super::copy::BACKUP_FUZZ_MS,
                    "the backup",
                    "seed again later",
                )
            }
            (_, None) => {
                // Now (an export), or PITR's latest restorable time, which
                // is a few minutes before now.
                let latest = match a.method {
                    Method::Pitr => ctx
                        .aws
                        .pitr(&s.source_table)
                        .await
                        .map_err(|e| explain(e, &s.source_table))?
                        .1
                        .unwrap_or(now),
                    _ => now,
                };
                (latest, 0, "the seed", "seed again later")
            }
            (_, Some(t)) => {
                super::copy::refuse_chosen_point_when_latest(ctx)?;
                (t, 0, "--at", "choose a later point")
            }
        };
        super::copy::refuse_unstreamed_point(ctx, (point, fuzz), stream.as_deref(), what, fix)?;
    }
    // A seed before (a cutoff) or something consumed: this seed replaces a
    // seeded target, so the replay rules hold (paused, every change after T
    // still queued), checked against the point the restore will really
    // use: without --at, PITR restores at its latest restorable time,
    // minutes before now. Before, only something consumed counted: on a
    // quiet source a deleted target could be seeded again at an earlier
    // point without a pause, under the records a stream failure clear
    // trusted the old cutoff for (helper-52 #2).
    //
    // A cleared stream failure counts too: its changes are in no queue,
    // and a re-seed whose restore failed left no cutoff behind
    // (helper-53 #1). And as for a replay, the migration must not be
    // finished, the trigger must be off, and (below) the applier's
    // invocations from before the pause must have ended (helper-53 #3).
    let replay_rules = (read.reseeding() || read.cutoff_ms.is_some()) && target.is_none();
    if replay_rules {
        super::replay::require_paused(&read, &ctx.applier_trigger().await?.state)?;
        let mut b = super::pause::bounds(ctx, &read).await?;
        let point = match (a.method, at_ms) {
            (_, Some(t)) => t,
            (Method::Pitr, None) => {
                let (_, latest) = ctx
                    .aws
                    .pitr(&s.source_table)
                    .await
                    .map_err(|e| explain(e, &s.source_table))?;
                latest.unwrap_or(now)
            }
            _ => now,
        };
        b.latest_ms = point.max(b.latest_ms);
        validate_replay_point(point, &b).map_err(|e| anyhow!("{e}"))?;
        // A stream replaced since holds nothing before it (a backup's
        // time is checked when it is taken).
        if a.method != Method::Backup {
            super::copy::refuse_reseed_before_stream(
                ctx,
                (point, 0),
                "the seed's point",
                "choose a later point",
            )
            .await?;
        }
    }
    if a.dry_run {
        let plan = match a.method {
            Method::Backup => format!("{}create an on-demand backup of {}, restore it as {}, set cutoff = backup time - {} s", backup_wait.map_or(String::new(), |t| format!("wait until {} (the source's stream is under a minute old), then ", rfc3339(t))), s.source_table, s.target_table, s.margin_ms / 1000),
            Method::Pitr => format!("restore {} at {} as {}, set cutoff = that time - {} s", s.source_table, at_ms.map_or("the latest restorable time".into(), rfc3339), s.target_table, s.margin_ms / 1000),
            Method::Export => format!("export {} to s3://{}/{}, import it as {}, set cutoff = export time - {} s", s.source_table, a.bucket.as_deref().unwrap_or("<--s3-bucket>"), a.prefix, s.target_table, s.margin_ms / 1000),
            Method::Scan => "scan copy (see `seed --method scan --dry-run`)".to_string(),
        };
        return Ok(SeedReport {
            plan: Some(plan),
            version: read.version,
            ..report(a.method.as_str())
        });
    }
    if replay_rules {
        super::replay::wait_stopped(ctx, &read).await?;
    }
    let seed_ms = match (&target, read.seed_ms) {
        // A seed was started and its table exists: a re-run after a crash.
        (Some(_), Some(seed_ms)) => {
            if read.seed_method.as_deref() != Some(a.method.as_str()) {
                bail!(
                    "a {} seed at {} is recorded and its table exists: finish it with `ddb-relay seed --method {}` (this asked for {})",
                    read.seed_method.as_deref().unwrap_or("?"),
                    rfc3339(seed_ms),
                    read.seed_method.as_deref().unwrap_or("?"),
                    a.method.as_str()
                );
            }
            ctx.step(&format!(
                "resuming the recorded {} seed at {}",
                read.seed_method.as_deref().unwrap_or("?"),
                rfc3339(seed_ms)
            ));
            seed_ms
        }
        _ => run_seed(ctx, &read, a.method, at_ms, a.bucket.as_deref(), &a.prefix).await?,
    };
    if a.method == Method::Export
        && ctx
            .aws
            .describe(&s.target_table)
            .await
            .map_err(|e| explain(e, &s.target_table))?
            .is_none()
    {
        let b = a.bucket.as_deref().unwrap_or("<bucket>");
        return Ok(SeedReport {
            seed_ms: Some(seed_ms),
            pending: Some("import".into()),
            import_source_specification: Some(import_spec(b, &a.prefix, {
                let src = ctx.aws.describe(&s.source_table).await.ok().flatten();
                bucket_owner(s.target.assumes_role(), src.and_then(|t| t.arn).as_deref()).as_deref()
            })),
            version: ctx.control().await?.version,
            ..report("export")
        });
    }
    let (cutoff, written) = set_cutoff_when_active(ctx, seed_ms, a.method.as_str()).await?;
    let items = ctx
        .aws
        .describe(&s.target_table)
        .await
        .ok()
        .flatten()
        .and_then(|t| t.item_count);
    Ok(SeedReport {
        seed_ms: Some(seed_ms),
        cutoff_ms: Some(cutoff),
        target_items: items,
        version: written.version,
        ..report(a.method.as_str())
    })
}

/// Waits for the target to be ACTIVE, then sets cutoff = seed time - margin
/// and records the method.
pub async fn set_cutoff_when_active<A: Aws>(
    ctx: &Ctx<A>,
    seed_ms: i64,
    method: &str,
) -> Result<(i64, ControlState)> {
    ctx.wait_table_active(&ctx.stack.target_table).await?;
    let read = ctx.control().await?;
    let cutoff = cutoff_for_seed(seed_ms, ctx.stack.margin_ms);
    // Only the seed recorded before the restore (or import) gets its
    // cutoff: another operator's seed or re-seed since is not overwritten
    // (helper-68 #1), nor a record of another method resumed.
    let ours = read.seed_method.as_deref() == Some(method)
        && read.seed_ms == Some(seed_ms)
        && read.cutoff_ms.is_none_or(|c| c == cutoff)
        && read.mode == relay_core::control::Mode::Normal;
    if !ours {
        bail!(
            "the migration's seed record is not this {method} seed at {} any more (it says {} at {}{}): another operator seeded or re-seeded it, or a seed of another method was recorded; nothing was changed: check `ddb-relay status`",
            rfc3339(seed_ms),
            read.seed_method.as_deref().unwrap_or("none"),
            read.seed_ms.map_or("?".into(), rfc3339),
            read.cutoff_ms
                .map_or(String::new(), |c| format!(", cutoff {}", rfc3339(c)))
        );
    }
    if matches!(method, "pitr" | "backup") {
        refuse_another_table(ctx, &read, method).await?;
    }
    // The table this cutoff is set on: an import's is recorded here (a
    // restore recorded its own, a copy at its start).
    let seed_table = match recorded_table(&read) {
        Some(_) => read.seed_table.clone(),
        None => target_id(ctx)
            .await?
            .map(|id| binding(method, Some(seed_ms), &id)),
    };
    let next = ControlState {
        seed_table,
        cutoff_ms: Some(cutoff),
        seed_method: Some(method.to_string()),
        seed_ms: Some(seed_ms),
        ..read.clone()
    };
    Ok((cutoff, ctx.write_control(&read, next).await?))
}

/// Creates the target by `method`; records the seed (method and time) in
/// the control item before the target exists, so a re-run can resume, and
/// clears the cutoff and the last verify.
pub async fn run_seed<A: Aws>(
    ctx: &Ctx<A>,
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
        ..read.for_new_seed()
    };
    match method {
        Method::Scan => bail!("the scan copy runs through `seed --method scan`"),
        Method::Backup => {
            // A re-seed: the applier consumed changes up to `consumed_ms`
            // (a whole second: writes up to 999 ms later), and the queue
            // no longer holds them. A backup may lack the minute before
            // its time, so it is taken no sooner than a minute after them
            // (the clock is AWS's; the replay rule's margin nearly always
            // has passed this already).
            let consumed_by = read
                .consumed_ms
                .map(|c| c + 1000 + super::copy::BACKUP_FUZZ_MS);
            if let Some(t) = consumed_by.filter(|t| *t > ctx.now_ms()) {
                ctx.wait_until(t, "a backup may lack the minute before it, and the applier consumed changes until a minute ago")
                    .await?;
            }
            let name = format!("{}-seed-{}", s.migration, ctx.now_ms() / 1000);
            ctx.step(&format!("creating backup {name} of {}", s.source_table));
            let (arn, seed_ms) = ctx
                .aws
                .create_backup(&s.source_table, &name)
                .await
                .map_err(|e| explain(e, &s.source_table))?;
            // The backup's own time (AWS's clock, as the stream's label):
            // a backup may not lack writes the stream missed (a first
            // seed's, or a re-seed's after the stream was replaced:
            // helper-77 #2).
            let point = (seed_ms, super::copy::BACKUP_FUZZ_MS);
            let fix = format!("seed again (backup {name} is not used)");
            if read.consumed_ms.is_none() {
                super::copy::refuse_first_seed_before_stream(ctx, point, "the backup", &fix)
                    .await?;
            } else {
                super::copy::refuse_reseed_before_stream(ctx, point, "the backup", &fix).await?;
            }
            if let Some(t) = consumed_by.filter(|t| seed_ms < *t) {
                bail!(
                    "backup {name} was taken at {} (AWS's time), within a minute of changes the applier already consumed (until {}): it may lack them, and the queue no longer holds them; it is not used: re-run the command",
                    rfc3339(seed_ms),
                    rfc3339(t - super::copy::BACKUP_FUZZ_MS)
                );
            }
            ctx.wait(
                &format!("backup {name}: waiting for AVAILABLE"),
                Duration::from_secs(6 * 3600),
                || async {
                    Ok(ctx
                        .aws
                        .backup_status(&arn)
                        .await
                        .map_err(|e| explain(e, &arn))?
                        == "AVAILABLE")
                },
            )
            .await?;
            let recorded = ctx.write_control(read, record(seed_ms)).await?;
            ctx.step(&format!(
                "restoring {} from the backup (taken {})",
                s.target_table,
                rfc3339(seed_ms)
            ));
            let id = ctx
                .aws
                .restore_backup(&arn, &s.target_table)
                .await
                .map_err(|e| explain(e, &s.target_table))?;
            record_restored_table(ctx, &recorded, id).await?;
            Ok(seed_ms)
        }
        Method::Pitr => {
            let (enabled, latest) = ctx
                .aws
                .pitr(&s.source_table)
                .await
                .map_err(|e| explain(e, &s.source_table))?;
            if !enabled {
                bail!(
                    "point-in-time recovery is disabled on {}: enable it, or use --method backup",
                    s.source_table
                );
            }
            let latest = latest.unwrap_or_else(|| ctx.now_ms());
            let seed_ms = at_ms.unwrap_or(latest);
            if seed_ms > latest {
                bail!(
                    "--at {} is after the latest restorable time {}",
                    rfc3339(seed_ms),
                    rfc3339(latest)
                );
            }
            let recorded = ctx.write_control(read, record(seed_ms)).await?;
            ctx.step(&format!(
                "restoring {} at {} as {}",
                s.source_table,
                rfc3339(seed_ms),
                s.target_table
            ));
            let id = ctx
                .aws
                .restore_pitr(&s.source_table, &s.target_table, seed_ms)
                .await
                .map_err(|e| explain(e, &s.target_table))?;
            record_restored_table(ctx, &recorded, id).await?;
            Ok(seed_ms)
        }
        Method::Export => {
            let bucket = bucket.ok_or_else(|| {
                anyhow!("--method export needs --s3-bucket (a bucket in this account and region)")
            })?;
            let (seed_ms, _) = ctx.run_export(bucket, prefix, at_ms).await?;
            ctx.write_control(read, record(seed_ms)).await?;
            Ok(seed_ms)
        }
    }
}
