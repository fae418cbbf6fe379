//! Which table a restore seed (`pitr`, `backup`) created: recorded once its
//! restore call returns, and checked before a resumed restore seed sets its
//! cutoff (helper-68 #1 i).
//!
//! **Invariant:** a restore seed's cutoff is set only on the table its
//! restore created. A seed record whose restore failed, followed by an
//! empty table created under the same name (the IaC re-deployed), would
//! otherwise get the cutoff, and every item that does not change after it
//! would be missing from the target for good.

use anyhow::{anyhow, bail, Context, Result};
use relay_aws::operator::Aws;
use relay_core::control::ControlState;

use crate::ctx::{explain, rfc3339, Ctx};

/// The record of the table a seed wrote (a restore created, or a copy or
/// import seeded), bound to its seed: a record left by another seed (an
/// earlier release's re-seed does not clear it) counts as none.
pub fn binding(method: &str, seed_ms: Option<i64>, id: &str) -> String {
    format!("{method}@{}={id}", seed_ms.unwrap_or_default())
}

/// The id of the table the seed `read` records wrote, if it recorded one.
pub fn recorded_table(read: &ControlState) -> Option<&str> {
    recorded_id(read, read.seed_method.as_deref()?)
}

/// The target's id now (`None`: no such table, or an engine without ids).
pub async fn target_id<A: Aws>(ctx: &Ctx<A>) -> Result<Option<String>> {
    let target = &ctx.stack.target_table;
    Ok(ctx
        .aws
        .describe(target)
        .await
        .map_err(|e| explain(e, target))?
        .and_then(|t| t.id))
}

/// Refuses a target that is not the table the seed recorded (deleted and
/// created again since: it lacks what the seed wrote).
pub async fn refuse_replaced_target<A: Aws>(
    ctx: &Ctx<A>,
    read: &ControlState,
    then: &str,
) -> Result<()> {
    let Some(recorded) = recorded_table(read) else {
        return Ok(());
    };
    let now = target_id(ctx).await?;
    let then = if then.is_empty() {
        String::new()
    } else {
        format!(", {then}")
    };
    match now.as_deref() {
        Some(id) if id == recorded => Ok(()),
        Some(id) => bail!(
            "target table {} is not the table the seed wrote (that was {recorded}, this is {id}): it was deleted and created again since, by the IaC or by hand, and lacks what the seed wrote; re-seed it (`ddb-relay pause`, then `ddb-relay restart`){then}",
            ctx.stack.target_table
        ),
        None => bail!(
            "target table {} is not the table the seed wrote ({recorded}): it does not exist now; re-seed (`ddb-relay pause`, then `ddb-relay restart`){then}",
            ctx.stack.target_table
        ),
    }
}

/// The table id `read` records for its own `method` seed, if any.
fn recorded_id<'a>(read: &'a ControlState, method: &str) -> Option<&'a str> {
    let prefix = binding(method, read.seed_ms, "");
    read.seed_table.as_deref()?.strip_prefix(prefix.as_str())
}

/// Records the target the restore just created (`seed_table`), on the
/// record the seed wrote before it, or on a later one that still names
/// this seed (another command's write in between). The id is the restore's
/// answer's, else DescribeTable's (which may not see a table created a
/// moment ago: asked a few times). An engine that tells no table id
/// records nothing, and a resumed seed then relies on DynamoDB's
/// RestoreSummary (below).
pub(super) async fn record_restored_table<A: Aws>(
    ctx: &Ctx<A>,
    recorded: &ControlState,
    returned: Option<String>,
) -> Result<()> {
    let target = &ctx.stack.target_table;
    let started = || {
        format!(
            "the restore of {target} started, and which table it created could not be recorded: check `ddb-relay status`, then run the seed again (`seed`, or for a replay `replay --from T` at the same T, finishes it on this table when it can tell the table is the restore's, and otherwise says to delete it; `restart` starts over)"
        )
    };
    let mut id = returned;
    for _ in 0..5 {
        if id.is_some() {
            break;
        }
        match ctx
            .aws
            .describe(target)
            .await
            .map_err(|e| explain(e, target))
            .with_context(started)?
        {
            Some(t) => {
                id = t.id;
                break;
            }
            None => tokio::time::sleep(ctx.poll).await,
        }
    }
    let (Some(id), Some(method)) = (id, recorded.seed_method.as_deref()) else {
        return Ok(());
    };
    let mut read = recorded.clone();
    for _ in 0..5 {
        let next = ControlState {
            seed_table: Some(binding(method, read.seed_ms, &id)),
            ..read.clone()
        };
        if ctx
            .write_control_unless_moved(&read, next)
            .await
            .with_context(started)?
            .is_some()
        {
            return Ok(());
        }
        read = ctx.control().await.with_context(started)?;
        let this_seed =
            read.seed_method == recorded.seed_method && read.seed_ms == recorded.seed_ms;
        // Another run of this seed recorded the table, or set its cutoff
        // (which it does only on the restore's table): nothing to add.
        if this_seed && (read.cutoff_ms.is_some() || recorded_id(&read, method).is_some()) {
            return Ok(());
        }
        if !this_seed {
            bail!(
                "{}: the control item no longer records this {method} seed at {} (another operator seeded or re-seeded since); check `ddb-relay status`",
                started(),
                recorded.seed_ms.map_or("?".into(), rfc3339)
            );
        }
    }
    bail!("{}: the control item kept changing", started())
}

/// Refuses to set a `method` restore's cutoff on a target that is not the
/// table its restore created: another table id than the one recorded for
/// this seed, or, with none recorded (the restore call failed, or the
/// command stopped right after it, or an earlier release ran it) and no
/// cutoff set yet, a table DynamoDB does not say was restored. Deleting the target and running the
/// seed again is always safe.
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
    // The command that started it runs it again: a seed as `seed`, a
    // replay at its point (or a later valid one), a restart as `restart`.
    let rerun = match method {
        "pitr" => format!(
            "`ddb-relay seed --method pitr` (for a replay: `ddb-relay replay --from {}`, or any later valid point)",
            read.seed_ms.map_or("T".into(), rfc3339)
        ),
        m => format!("`ddb-relay seed --method {m}` (for a restart: `ddb-relay restart --method {m}`)"),
    };
    let way_out = format!(
        "nothing was changed: delete {name} (it may lack the source's items, and they would be missing for good after the cutoff), then run {rerun} again"
    );
    match (recorded_id(read, method), t.id.as_deref()) {
        (Some(recorded), Some(id)) if recorded == id => Ok(()),
        (Some(recorded), id) => bail!(
            "target table {name} is not the table the {method} seed's restore created (that was {recorded}, this is {}): it was deleted and created again since, by the IaC or by hand; {way_out}",
            id.unwrap_or("a table with no id")
        ),
        // A cutoff set already is this seed's, resumed: only a recorded
        // table tells otherwise.
        (None, _) if t.restored || read.cutoff_ms.is_some() => Ok(()),
        (None, _) => bail!(
            "target table {name} is not known to be the {method} seed's restore: no restore recorded it (the restore failed, or the seed stopped right after it), and DynamoDB does not say the table was restored (MiniStack never says so, even for a real restore); {way_out}"
        ),
    }
}
