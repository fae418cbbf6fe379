//! Which table a restore seed (`pitr`, `backup`) created: recorded once its
//! restore call returns, and checked before a resumed restore seed sets its
//! cutoff (helper-68 #1 i).
//!
//! **Invariant:** a restore seed's cutoff is set only on the table its
//! restore created. A seed record whose restore failed, followed by an
//! empty table created under the same name (the IaC re-deployed), would
//! otherwise get the cutoff, and every item that does not change after it
//! would be missing from the target for good.

use anyhow::{anyhow, bail, Result};
use relay_aws::operator::Aws;
use relay_core::control::ControlState;

use crate::ctx::{explain, Ctx};

/// Records the target the restore just created (`seed_table`), on the
/// record the seed wrote before it. An engine that tells no table id
/// records nothing, and a resumed seed then relies on DynamoDB's
/// RestoreSummary (below).
pub(super) async fn record_restored_table<A: Aws>(
    ctx: &Ctx<A>,
    recorded: &ControlState,
) -> Result<()> {
    let target = &ctx.stack.target_table;
    let id = ctx
        .aws
        .describe(target)
        .await
        .map_err(|e| explain(e, target))?
        .and_then(|t| t.id);
    if let Some(id) = id {
        ctx.write_control(
            recorded,
            ControlState {
                seed_table: Some(id),
                ..recorded.clone()
            },
        )
        .await?;
    }
    Ok(())
}

/// Refuses to set a `method` restore's cutoff on a target that is not the
/// table its restore created: another table id than the recorded one, or,
/// with none recorded (the restore call failed, or the command stopped
/// right after it, or an earlier release ran it), a table DynamoDB does not
/// say was restored. Deleting the target and running the seed again is
/// always safe.
pub async fn refuse_another_table<A: Aws>(
    ctx: &Ctx<A>,
    read: &ControlState,
    method: &str,
) -> Result<()> {
    let name = &ctx.stack.target_table;
    let t = ctx
        .aws
        .describe(name)
        .await
        .map_err(|e| explain(e, name))?
        .ok_or_else(|| anyhow!("target table {name} is gone: run the seed again"))?;
    let way_out = format!(
        "nothing was changed: delete {name} (it may lack the source's items, and they would be missing for good after the cutoff), then run the same `ddb-relay seed --method {method}` (or `replay`/`restart`) again"
    );
    match (&read.seed_table, &t.id) {
        (Some(recorded), Some(id)) if recorded == id => Ok(()),
        (Some(recorded), id) => bail!(
            "target table {name} is not the table the {method} seed's restore created (that was {recorded}, this is {}): it was deleted and created again since, by the IaC or by hand; {way_out}",
            id.as_deref().unwrap_or("a table with no id")
        ),
        (None, _) if t.restored => Ok(()),
        (None, _) => bail!(
            "target table {name} is not known to be the {method} seed's restore: no restore recorded it (the restore failed, or the seed stopped right after it), and DynamoDB does not say the table was restored (another engine may not say so for a real restore); {way_out}"
        ),
    }
}
