//! The passes that delete from the target: a copy's tombstone sweep (under
//! the run's lease, only while the control item names the copy) and a
//! restart's clear.

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use relay_aws::operator::{Aws, Cond};
use relay_core::apply::{is_tombstone, PLACEHOLDER_ATTR, TOMBSTONE_ATTR};
use relay_core::control::Mode;
use relay_core::diff::key_of;
use relay_core::item::Attrs;

use super::super::lease::Lease;
use super::super::parts::PUTS_IN_FLIGHT;
use super::{checkpoint_key, for_each_page, still_the_copy};
use crate::ctx::{explain, Ctx};

/// Deletes every tombstone still in the target (only while it is still a
/// tombstone), and every repair placeholder (helper-62 #1: one a repair
/// left when a restart's clear overtook it and the item it stood for is
/// gone, which no copy put replaces; a live repair whose placeholder goes
/// starts over); returns how many.
/// Only while the control item still names the copy seeded at `seed_ms`,
/// in normal mode (checked before each page), and under a lease on its
/// checkpoint (each delete): a copy that replaced it writes tombstones this
/// sweep must not delete (helper-56 D1), and the restart that replaces it
/// waits the lease out.
pub async fn sweep_tombstones<A: Aws>(
    ctx: &Ctx<A>,
    key_names: &[String],
    segments: i32,
    seed_ms: i64,
) -> Result<u64> {
    still_the_copy(ctx, seed_ms, Mode::Normal).await?;
    let lease = Lease::take(ctx, &checkpoint_key(ctx), seed_ms).await?;
    let what = "tombstone sweep";
    let swept = lease
        .hold(
            ctx,
            delete_target_items(ctx, key_names, segments, what, Some((seed_ms, &lease))),
        )
        .await?;
    lease.release(ctx).await?;
    Ok(swept)
}

/// Deletes every item of the target (a restart copies again); the applier
/// must be paused and stopped.
pub async fn clear_target<A: Aws>(
    ctx: &Ctx<A>,
    key_names: &[String],
    segments: i32,
) -> Result<u64> {
    delete_target_items(ctx, key_names, segments, "clearing the target", None).await
}

/// One pass over the target deleting its items (with `tombstones_only`,
/// only tombstones, and only while they still are); returns how many.
async fn delete_target_items<A: Aws>(
    ctx: &Ctx<A>,
    key_names: &[String],
    segments: i32,
    what: &str,
    sweep_of: Option<(i64, &Lease)>,
) -> Result<u64> {
    for_each_page(
        ctx,
        &ctx.stack.target_table,
        segments,
        what,
        |items| async move {
            if let Some((seed_ms, _)) = sweep_of {
                still_the_copy(ctx, seed_ms, Mode::Normal).await?;
            }
            let lease = sweep_of.map(|(_, l)| l);
            delete_page(ctx, &items, key_names, sweep_of.is_some(), lease).await
        },
    )
    .await
}

/// Deletes the items of one page of the target (with `tombstones_only`,
/// only its tombstones and repair placeholders, and only while they still
/// are; each under `lease` when an in-process run holds one); returns how
/// many.
pub(crate) async fn delete_page<A: Aws>(
    ctx: &Ctx<A>,
    items: &[Attrs],
    key_names: &[String],
    tombstones_only: bool,
    lease: Option<&Lease>,
) -> Result<u64> {
    let table = &ctx.stack.target_table;
    let cond = if tombstones_only {
        Cond::Any(vec![
            Cond::Exists(TOMBSTONE_ATTR.into()),
            Cond::Exists(PLACEHOLDER_ATTR.into()),
        ])
    } else {
        Cond::Always
    };
    let keys = items
        .iter()
        .filter(|i| !tombstones_only || is_tombstone(i) || i.contains_key(PLACEHOLDER_ATTR))
        .filter_map(|i| key_of(i, key_names));
    let done = futures::stream::iter(keys)
        .map(|key| {
            let cond = &cond;
            async move {
                let delete = async {
                    ctx.aws
                        .delete_item(table, &key, cond)
                        .await
                        .map_err(|e| explain(e, table))
                };
                let w = match lease {
                    Some(l) => l.write(delete).await?,
                    None => delete.await?,
                };
                Ok::<_, anyhow::Error>(u64::from(w.done))
            }
        })
        .buffer_unordered(PUTS_IN_FLIGHT)
        .try_collect::<Vec<u64>>()
        .await?;
    Ok(done.into_iter().sum())
}
