//! What a seed refuses before it changes anything: a restore under a
//! transform, an interrupted re-seed, and a copy into a target that holds
//! items no seed of the migration wrote.

use anyhow::{bail, Result};
use relay_aws::operator::Aws;
use relay_core::control::ControlState;

use crate::ctx::{explain, rfc3339, Ctx};

/// Restores and imports copy the table as it is: with a transform deployed
/// they would seed untransformed items, so only the scan copy may seed.
pub fn refuse_restore_with_transform<A>(ctx: &Ctx<A>, what: &str) -> Result<()> {
    if let Some(spec) = &ctx.stack.transform_spec {
        bail!(
            "{what} copies the table as it is, but stack {} transforms items (TransformSpec {spec}): seed with a copy instead (`ddb-relay seed --method scan`, `ddb-relay seed --method export --load --s3-bucket B`, or `ddb-relay restart --method scan`)",
            ctx.stack.name
        );
    }
    Ok(())
}

/// A replay or restart that stopped after clearing the cutoff and before its
/// new seed leaves "…-pending" in the control item and the old target in
/// place: only re-running it finishes it safely (a plain seed would set a
/// cutoff on the old, never-dropped target).
pub fn refuse_interrupted_replay(read: &ControlState) -> Result<()> {
    if let Some(m) = read
        .seed_method
        .as_deref()
        .filter(|m| m.ends_with("-pending"))
    {
        bail!(
            "a replay or restart ({m}{}) was interrupted before its new seed: re-run it (`ddb-relay replay --from T` with that T or any later valid one, or `ddb-relay restart` with the same method) to finish it",
            read.seed_ms
                .map_or(String::new(), |t| format!(" at {}", rfc3339(t)))
        );
    }
    Ok(())
}

/// A copy seed writes only where a key is absent, so it needs a target
/// holding nothing it did not write: before any seed has a cutoff, a
/// target with items is refused (see the body).
pub async fn refuse_filled_target<A: Aws>(ctx: &Ctx<A>, read: &ControlState) -> Result<()> {
    // With a cutoff, the copy is resumed or refused as already seeded.
    if read.cutoff_ms.is_some() {
        return Ok(());
    }
    // A copy puts only where a key is absent, so it would keep items
    // already there over the source's, and the applier would skip the
    // source's changes to them as older than the copy's cutoff. No cutoff
    // means no seed of this migration wrote them: a restore that stopped
    // before its cutoff (a killed `replay` or `seed`), or items from
    // elsewhere (an application writing to the new table early, an earlier
    // attempt, a hand-made load). An empty target (the IaC's, also after a
    // failed restore) is copied into.
    if !holds_items(ctx, &ctx.stack.target_table).await? {
        return Ok(());
    }
    match read.seed_method.as_deref() {
        // The import flow's table, its cutoff not yet set.
        Some("export") => bail!(
            "an export seed's import filled the target and its cutoff is not set yet: finish it with `ddb-relay seed --method export` (a copy over it would keep its older items)"
        ),
        Some(m @ ("pitr" | "backup")) => bail!(
            "an interrupted {m} seed or replay restored the target and set no cutoff: a copy over it would keep its older items. Re-run it (`ddb-relay replay --from T` with its T{}, `ddb-relay restart`, or the same `ddb-relay seed --method {m}`)",
            read.seed_ms.map_or(String::new(), |t| format!(" ({})", rfc3339(t)))
        ),
        _ => bail!(
            "target table {} already holds items, and no seed of migration {} wrote them (it has no cutoff): a copy puts only where a key is absent, so it would keep them over the source's. Empty the target (or delete it and create it again with your IaC, with the same key), then seed again",
            ctx.stack.target_table,
            ctx.stack.migration
        ),
    }
}

/// What a copy seed (not a restart) refuses over the control item `read`:
/// an interrupted re-seed, then a target holding items no seed wrote.
pub async fn refuse_copy_over<A: Aws>(ctx: &Ctx<A>, read: &ControlState) -> Result<()> {
    refuse_interrupted_replay(read)?;
    refuse_filled_target(ctx, read).await
}

/// Whether `table` holds any item (a consistent scan, paged past empty
/// pages).
async fn holds_items<A: Aws>(ctx: &Ctx<A>, table: &str) -> Result<bool> {
    let mut start = None;
    loop {
        let (items, next) = ctx
            .aws
            .scan_page(table, 0, 1, start, true)
            .await
            .map_err(|e| explain(e, table))?;
        if !items.is_empty() {
            return Ok(true);
        }
        match next {
            Some(k) => start = Some(k),
            None => return Ok(false),
        }
    }
}
