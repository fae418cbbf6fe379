//! The export load: `seed --method export --load` (export now, or at
//! `--at`) and `seed --method export --from-export s3://…` (an export you
//! already have). The data files go through the transform into a target
//! your IaC created, with the scan copy's rules (`scan.rs`: tombstone mode,
//! puts only where the key is absent or a placeholder, sweep); the cutoff is the export time
//! minus the margin. No read capacity is used on the source.
//!
//! The rules (stale exports refused, per-file checkpoints and counts) are
//! in `copy.rs`.

use anyhow::{anyhow, bail, Context, Result};
use relay_aws::operator::Aws;
use relay_core::export;
use relay_core::item::AttributeValue;

use super::copy::{checkpoint_key, read_checkpoint, Export};
use super::scan::{check_target, plan_only, seed_copy, ScanReport, Source};
use crate::args::CopyArgs;
use crate::ctx::{explain, rfc3339, Ctx, When};

/// What `seed --method export --load` is given.
#[derive(Clone, Debug)]
pub struct LoadArgs {
    /// `s3://bucket/<prefix>/AWSDynamoDB/<export-id>`: load this export.
    pub from_export: Option<String>,
    /// Otherwise export now (or at `at`) to this bucket and prefix.
    pub bucket: Option<String>,
    pub prefix: String,
    pub at: Option<When>,
}

/// Reads an export's manifests.
pub async fn read_export<A: Aws>(ctx: &Ctx<A>, bucket: &str, dir: &str) -> Result<Export> {
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let fetch = |key: String| {
        let path = tmp.path().join(key.replace('/', "_"));
        async move {
            ctx.aws
                .download(bucket, &key, &path)
                .await
                .map_err(|e| explain(e, &format!("s3://{bucket}/{key}")))?;
            std::fs::read_to_string(&path).with_context(|| format!("s3://{bucket}/{key}"))
        }
    };
    let summary = export::parse_summary(&fetch(format!("{dir}/manifest-summary.json")).await?)?;
    let files = export::parse_files(&fetch(summary.manifest_files_key.clone()).await?)?;
    export::check_total(&summary, &files)?;
    Ok(Export {
        bucket: bucket.into(),
        dir: dir.into(),
        summary,
        files,
        taken_here: false,
    })
}

/// Exports (or finds the export), then copies it like a scan copy.
pub async fn seed_export_load<A: Aws>(
    ctx: &Ctx<A>,
    a: &LoadArgs,
    limits: CopyArgs,
    dry_run: bool,
) -> Result<ScanReport> {
    let mut taken_here = false;
    let (bucket, dir) = match (&a.from_export, resumable(ctx).await?) {
        (Some(uri), _) => export::parse_s3_dir(uri).map_err(|e| anyhow!(e))?,
        (None, Some((bucket, dir))) => {
            ctx.step(&format!(
                "resuming the stopped load of s3://{bucket}/{dir} (its cutoff stands; --at and --s3-bucket are not used)"
            ));
            (bucket, dir)
        }
        (None, None) => {
            // Before an export that may take hours: would the load run?
            let read = ctx.control().await?;
            super::seed::refuse_interrupted_replay(&read)?;
            if read.cutoff_ms.is_some() {
                bail!(
                    "the target is already seeded ({} at {}): to copy again, `ddb-relay pause` then `ddb-relay restart --method scan`",
                    read.seed_method.as_deref().unwrap_or("?"),
                    read.seed_ms.map_or("?".into(), rfc3339)
                );
            }
            // And the copy's replay rules (`scan::seed_copy`), before an
            // export that may take hours: a re-seed must hold every change
            // it cannot find in the queue.
            if read.reseeding() {
                let b = super::pause::bounds(ctx, &read).await?;
                let point = a.at.map_or(ctx.now_ms(), |w| w.resolve(ctx.now_ms()));
                relay_core::decide::validate_replay_point(point, &b).map_err(|e| anyhow!("{e}"))?;
            }
            let loaded = crate::transform::load(ctx).await?;
            check_target(ctx, loaded.transform.as_ref(), "export").await?;
            // A target holding items is refused by the copy: before the
            // export, not after it (helper-68 #4).
            super::seed::refuse_filled_target(ctx, &read).await?;
            let bucket = a
                .bucket
                .clone()
                .ok_or_else(|| anyhow!("--load needs --s3-bucket or --from-export"))?;
            if dry_run {
                let at =
                    a.at.map_or("now".to_string(), |w| rfc3339(w.resolve(ctx.now_ms())));
                return Ok(plan_only(
                    ctx,
                    "export",
                    format!(
                        "export {} at {at} to s3://{bucket}/{}, then load its files through the transform into {} (tombstone mode, cutoff = export time - {} s, puts only where the key is absent or a repair's placeholder, then normal mode and the tombstone sweep)",
                        ctx.stack.source_table,
                        a.prefix,
                        ctx.stack.target_table,
                        ctx.stack.margin_ms / 1000
                    ),
                ));
            }
            let at = a.at.map(|w| w.resolve(ctx.now_ms()));
            if at.is_some() {
                super::copy::refuse_chosen_point_when_latest(ctx)?;
            }
            let (_, manifest) = ctx.run_export(&bucket, &a.prefix, at).await?;
            let manifest = manifest
                .ok_or_else(|| anyhow!("the export completed without naming its manifest"))?;
            taken_here = true;
            (bucket, export::export_dir(&manifest).to_string())
        }
    };
    ctx.step(&format!("reading the export s3://{bucket}/{dir}"));
    let mut x = read_export(ctx, &bucket, &dir).await?;
    x.taken_here = taken_here;
    seed_copy(ctx, &Source::Export(x), limits, dry_run, false).await
}

/// An export load that stopped halfway: its export, from the checkpoint.
async fn resumable<A: Aws>(ctx: &Ctx<A>) -> Result<Option<(String, String)>> {
    let c = read_checkpoint(ctx, &checkpoint_key(ctx)).await?;
    Ok(c.and_then(|c| match (c.get("export"), c.get("bucket")) {
        (Some(AttributeValue::S(dir)), Some(AttributeValue::S(b))) => {
            Some((b.clone(), dir.clone()))
        }
        _ => None,
    }))
}
