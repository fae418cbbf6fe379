//! What differs after the first pass: re-checked with consistent reads
//! (lag is not divergence), then settled: classified, and with `--repair`
//! brought to the source's current state. The in-process verify and the
//! fanned-out verify's parts share these.

use std::time::Duration;

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use relay_aws::operator::Aws;
use relay_core::diff::Suspect;
use relay_core::transform::Transform;
use relay_core::work::VerifyCounts;
use serde::Serialize;

use crate::ctx::{explain, Ctx};
use crate::repair::{agrees, repair, Agreement, Fence};
use crate::spill::Queue;

/// Suspects re-checked at once (consistent reads, one pair per suspect).
pub(crate) const RECHECK_CONCURRENCY: usize = 16;
/// Suspects read from their spill file at a time.
pub(super) const CHUNK: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
pub(crate) enum Kind {
    Missing,
    Changed,
    Extra,
}

/// The transform, the source key's attribute names, and the source's TTL
/// attribute under `TtlDeletes=skip` ([`kept_ttl`]).
pub(crate) type Through<'a> = (&'a dyn Transform, &'a [String], Option<&'a str>);

/// The source's TTL attribute when the stack keeps in the target what the
/// source's TTL deletes (`TtlDeletes=skip`): such an item, expired and with
/// no source item, is not a difference (`relay_core::ttl`).
pub(crate) async fn kept_ttl<A: Aws>(ctx: &Ctx<A>) -> Result<Option<String>> {
    if ctx.stack.ttl_deletes.as_deref() != Some("skip") {
        return Ok(None);
    }
    let s = &ctx.stack.source_table;
    ctx.aws.ttl_attribute(s).await.map_err(|e| explain(e, s))
}

/// Re-checks `pending` with consistent reads: returns those still different
/// (and adds to `kept` the target items kept on purpose).
pub(super) async fn recheck<A: Aws>(
    ctx: &Ctx<A>,
    t: Through<'_>,
    pending: Queue<Suspect>,
    (dir, kept): (Option<&std::path::Path>, &mut u64),
) -> Result<Queue<Suspect>> {
    let mut still = Queue::new(dir)?;
    for chunk in pending.chunks(CHUNK)? {
        let (differ, by_ttl) = still_different(ctx, t, chunk?).await?;
        *kept += by_ttl;
        for x in differ {
            still.push(&x)?;
        }
    }
    Ok(still)
}

/// The suspects that still differ when read again, consistently (one pair
/// of reads per suspect, [`RECHECK_CONCURRENCY`] at once), and how many
/// were target items kept on purpose (`TtlDeletes=skip`).
pub(crate) async fn still_different<A: Aws>(
    ctx: &Ctx<A>,
    (t, source_keys, ttl): Through<'_>,
    suspects: Vec<Suspect>,
) -> Result<(Vec<Suspect>, u64)> {
    let found: Vec<Agreement> = futures::stream::iter(&suspects)
        .map(|x| agrees(ctx, t, (&x.sources, source_keys, ttl), &x.target_key))
        .buffered(RECHECK_CONCURRENCY)
        .try_collect()
        .await?;
    // Counted as first-pass mismatches (a contested key that agreed on the
    // first pass and is kept now is like one that agrees).
    let kept = suspects
        .iter()
        .zip(&found)
        .filter(|(x, a)| x.mismatched && **a == Agreement::KeptByTtl)
        .count() as u64;
    let differ = suspects
        .into_iter()
        .zip(found)
        .filter_map(|(x, a)| (a == Agreement::Differs).then_some(x))
        .collect();
    Ok((differ, kept))
}

/// Settles suspects that still differed after the re-checks: each is
/// classified (missing, different or extra, by whether the target holds
/// the key now) and, with `repair` (the control item's mode), brought to
/// its source items' current state and re-read. Adds to `n`; `keep` sees
/// each difference's kind and target key (for the report's examples).
pub(crate) async fn settle<A: Aws>(
    ctx: &Ctx<A>,
    t: Through<'_>,
    still: Vec<Suspect>,
    (repair_in, recheck_wait): (Option<&Fence>, u64),
    n: &mut VerifyCounts,
    keep: &mut dyn FnMut(Kind, &relay_core::item::Attrs),
) -> Result<()> {
    let settled: Vec<Option<(Kind, Option<bool>)>> = futures::stream::iter(&still)
        .map(|x| settle_one(ctx, t, x, (repair_in, recheck_wait)))
        .buffered(RECHECK_CONCURRENCY)
        .try_collect()
        .await?;
    for (x, settled) in still.iter().zip(settled) {
        let Some((kind, repaired)) = settled else {
            n.ttl_kept += u64::from(x.mismatched);
            continue;
        };
        *match kind {
            Kind::Missing => &mut n.missing,
            Kind::Changed => &mut n.changed,
            Kind::Extra => &mut n.extra,
        } += 1;
        keep(kind, &x.target_key);
        n.still_mismatched += u64::from(x.mismatched);
        if kind == Kind::Extra && x.sources.is_empty() {
            n.unrepairable += 1;
        }
        if repaired == Some(true) {
            n.repaired += 1;
        } else {
            n.remaining += 1;
        }
    }
    Ok(())
}

/// One suspect: its kind, and with a repair whether it now agrees (`None`:
/// the source's TTL has deleted it since the re-checks, and
/// `TtlDeletes=skip` keeps it: no repair deletes it).
async fn settle_one<A: Aws>(
    ctx: &Ctx<A>,
    (t, source_keys, ttl): Through<'_>,
    x: &Suspect,
    (repair_in, recheck_wait): (Option<&Fence>, u64),
) -> Result<Option<(Kind, Option<bool>)>> {
    if ttl.is_some()
        && agrees(ctx, t, (&x.sources, source_keys, ttl), &x.target_key).await?
            == Agreement::KeptByTtl
    {
        return Ok(None);
    }
    let s = &ctx.stack;
    let here = ctx
        .aws
        .get_item(&s.target_table, &x.target_key)
        .await
        .map_err(|e| explain(e, &s.target_table))?
        .is_some();
    let kind = match (x.expected, here) {
        (true, false) => Kind::Missing,
        (true, true) => Kind::Changed,
        (false, _) => Kind::Extra,
    };
    let Some(fence) = repair_in else {
        return Ok(Some((kind, None)));
    };
    if x.sources.is_empty() {
        return Ok(Some((kind, Some(false))));
    }
    // Each candidate owner converges to its source item's state; the key
    // ends with whichever maps there now.
    let mut failed = false;
    for sk in &x.sources {
        if let Err(e) = repair(ctx, t, fence, sk, std::slice::from_ref(&x.target_key)).await {
            ctx.step(&format!("a repair did not complete: {e}"));
            failed = true;
        }
    }
    if failed {
        return Ok(Some((kind, Some(false))));
    }
    // Re-read: lag after the repair is the applier catching up.
    for wait in [0u64, recheck_wait.max(1), recheck_wait.max(1) * 3] {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let now = agrees(ctx, t, (&x.sources, source_keys, ttl), &x.target_key).await?;
        if now != Agreement::Differs {
            return Ok(Some((kind, Some(true))));
        }
    }
    Ok(Some((kind, Some(false))))
}
