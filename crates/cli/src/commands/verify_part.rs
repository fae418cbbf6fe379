//! The worker's side of `verify --fan-out` (the CLI's side is
//! `verify_fanout.rs`, which has the design): one part, one scan segment of
//! one table, compared page by page by lookups on the other table, its
//! differences re-checked and settled before each save.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures::{StreamExt, TryStreamExt};
use relay_aws::operator::{Aws, Cond};
use relay_core::diff::{self, key_of, Compared, Keyed, Mapped};
use relay_core::item::{AttributeValue, Attrs, CanonicalKey};
use relay_core::transform::Transform;
use relay_core::work::{Job, Pos, Side, Task, VerifyCounts, VerifyState, PART_EXAMPLES};

use super::copy::read_checkpoint;
use super::verify::{
    refuse_repairs_unless_seeded, settle, still_different, Kind, RECHECK_CONCURRENCY,
};
use super::verify_fanout::{part_key, verify_key};
use crate::ctx::{explain, Ctx};
use crate::repair::Fence;
use crate::worker::Outcome;

/// Suspects a part holds before it re-checks and settles them (and saves).
pub const FLUSH: usize = 512;
/// Pages a part reads at most between saves: its progress shows, and a run
/// that dies loses at most this much.
const FLUSH_PAGES: usize = 10;
/// Items compared at a time (one BatchGetItem's worth), and with `--repair`
/// (where each difference may take four re-reads) one round of
/// [`RECHECK_CONCURRENCY`].
pub(super) const CHUNK: usize = 100;
pub(super) const CHUNK_REPAIRING: usize = RECHECK_CONCURRENCY;
/// BatchGetItem requests of one part in flight at once.
const LOOKUPS_IN_FLIGHT: usize = 8;
/// How long settling `n` suspects and saving may take: three re-check
/// rounds, and with repairs up to four re-reads per round of
/// [`RECHECK_CONCURRENCY`]; holding none, only the save.
pub fn settle_time(n: usize, recheck_wait_s: u64, repair: bool) -> Duration {
    if n == 0 {
        return Duration::from_secs(1);
    }
    let rounds = if repair {
        n.div_ceil(RECHECK_CONCURRENCY) as u64 * (4 * recheck_wait_s.max(1) + 1)
    } else {
        0
    };
    Duration::from_secs(3 * recheck_wait_s + 2 + rounds)
}

/// Reads `keys` from `table` by BatchGetItem (100 at a time, duplicates
/// once), keyed by `names`.
async fn lookup<A: Aws>(
    ctx: &Ctx<A>,
    table: &str,
    keys: Vec<Attrs>,
    names: &[String],
) -> Result<Keyed> {
    let mut unique: BTreeMap<CanonicalKey, Attrs> = BTreeMap::new();
    for k in keys {
        unique.entry(CanonicalKey::of(&k)).or_insert(k);
    }
    let keys: Vec<Attrs> = unique.into_values().collect();
    Ok(diff::index(batch_read(ctx, table, &keys).await?, names).0)
}

/// The items at `keys` (distinct) in `table`, by BatchGetItem, 100 keys a
/// request, [`LOOKUPS_IN_FLIGHT`] requests at once.
pub(super) async fn batch_read<A: Aws>(
    ctx: &Ctx<A>,
    table: &str,
    keys: &[Attrs],
) -> Result<Vec<Attrs>> {
    let pages: Vec<Vec<Attrs>> = futures::stream::iter(keys.chunks(100))
        .map(|chunk| async move {
            ctx.aws
                .batch_get(table, chunk)
                .await
                .map_err(|e| explain(e, table))
        })
        .buffer_unordered(LOOKUPS_IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(pages.into_iter().flatten().collect())
}

/// One page of a source segment: its items through the transform, looked
/// up in the target.
async fn forward<A: Aws>(
    ctx: &Ctx<A>,
    (t, source_keys): (&dyn Transform, &[String]),
    items: Vec<Attrs>,
    bp: u32,
    n: &mut VerifyCounts,
) -> Result<Compared> {
    let tkeys = t.target_key_names();
    n.source_items += items.len() as u64;
    let mut mapped = Vec::with_capacity(items.len());
    for item in items {
        let Some((k, out)) = t
            .item(&item)
            .ok()
            .and_then(|out| key_of(&out, &tkeys).map(|k| (k, out)))
        else {
            n.unmappable += 1;
            continue;
        };
        let ck = CanonicalKey::of(&k);
        if diff::sampled(&ck, bp) {
            mapped.push(Mapped {
                key: ck,
                target_key: k,
                item: out,
                source: key_of(&item, source_keys),
            });
        }
    }
    let keys = mapped.iter().map(|m| m.target_key.clone()).collect();
    let got = lookup(ctx, &ctx.stack.target_table, keys, &tkeys).await?;
    Ok(diff::check_forward(mapped, &got, |g| {
        t.source_key_of(g, source_keys)
    }))
}

/// One page of a target segment: each item looked up at the source item
/// it names.
async fn reverse<A: Aws>(
    ctx: &Ctx<A>,
    (t, source_keys): (&dyn Transform, &[String]),
    items: Vec<Attrs>,
    bp: u32,
    n: &mut VerifyCounts,
) -> Result<Compared> {
    let tkeys = t.target_key_names();
    n.target_items += items.len() as u64;
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let Some(ck) = key_of(&item, &tkeys).map(|k| CanonicalKey::of(&k)) else {
            continue;
        };
        if diff::sampled(&ck, bp) {
            kept.push((ck, item));
        }
    }
    let names = kept
        .iter()
        .filter_map(|(_, i)| t.source_key_of(i, source_keys))
        .collect();
    let got = lookup(ctx, &ctx.stack.source_table, names, source_keys).await?;
    Ok(diff::check_reverse(
        kept,
        &got,
        &tkeys,
        |i| t.source_key_of(i, source_keys),
        |s| t.key_only(s).ok().map(|k| CanonicalKey::of(&k)),
    ))
}

/// The worker's side: runs one verify part from its checkpoint until it is
/// done or `until` nears; returns how it ended and the items it read.
pub async fn run_part<A: Aws>(
    ctx: &Ctx<A>,
    task: &Task,
    until: Option<tokio::time::Instant>,
) -> Result<(Outcome, u64)> {
    let Job::Verify {
        run_ms,
        side,
        segment,
        segments,
        sample_bp,
        repair,
        recheck_wait_s,
        ref kept_ttl,
    } = task.job
    else {
        bail!("not a verify task");
    };
    let s = &ctx.stack;
    let current = read_checkpoint(ctx, &verify_key(ctx)).await?;
    let ours = current.as_ref().is_some_and(|c| {
        c.get("run_ms") == Some(&AttributeValue::N(run_ms.to_string()))
            && !c.contains_key("finished")
    });
    if !ours {
        return Ok((
            Outcome::Dropped("the task belongs to another verify, or one that finished"),
            0,
        ));
    }
    let part = task.job.part();
    let pkey = part_key(ctx, run_ms, &part);
    let mut prev = read_checkpoint(ctx, &pkey)
        .await?
        .and_then(|mut i| i.remove("state"));
    let mut at = VerifyState::read(prev.as_ref()).map_err(|e| anyhow!("{part}: {e}"))?;
    if at.done() {
        return Ok((Outcome::Done, 0));
    }
    let loaded = crate::transform::load(ctx).await?;
    let t = loaded.transform.as_ref();
    let with = (t, loaded.source_keys.as_slice(), kept_ttl.as_deref());
    let repair_in: Option<Fence> = if repair {
        let now = ctx.control().await?;
        refuse_repairs_unless_seeded(&now)?;
        Some(Fence::of(&now))
    } else {
        None
    };
    // Whether settling `n` suspects (and saving) now could pass the
    // deadline.
    let late = |n: usize| {
        until.is_some_and(|u| {
            tokio::time::Instant::now() + settle_time(n, recheck_wait_s, repair) >= u
        })
    };
    let (table, key_names) = match side {
        Side::Source => (&s.source_table, loaded.source_keys.clone()),
        Side::Target => (&s.target_table, t.target_key_names()),
    };
    let chunk = if repair { CHUNK_REPAIRING } else { CHUNK };
    let mut read = 0u64;
    loop {
        let mut next = at.clone();
        let mut suspects = Vec::new();
        let (mut pages, mut chunks) = (0, 0);
        'scan: while !next.done() {
            // (Empty pages count: a segment of them still moves on.)
            if (chunks > 0 || pages > 0)
                && (suspects.len() >= FLUSH || pages >= FLUSH_PAGES || late(suspects.len()))
            {
                break;
            }
            let from = next.pos.clone();
            let start = match &from {
                Pos::After(k) => Some(
                    serde_json::from_str::<Attrs>(k)
                        .map_err(|e| anyhow!("the checkpoint of {part} is damaged: {e}"))?,
                ),
                _ => None,
            };
            let (items, more) = ctx
                .aws
                .scan_page(table, segment, segments, start, false)
                .await
                .map_err(|e| explain(e, table))?;
            pages += 1;
            let last = items.len().div_ceil(chunk);
            // Where the scan resumes after a chunk: after its last key (a
            // scan resumes after any key of its segment).
            let after = |c: &[Attrs]| -> Result<Pos> {
                let k = c
                    .last()
                    .and_then(|item| key_of(item, &key_names))
                    .ok_or_else(|| anyhow!("an item of {table} lacks its key"))?;
                Ok(Pos::After(serde_json::to_string(&k).unwrap_or_default()))
            };
            for (i, c) in items.chunks(chunk).enumerate() {
                read += c.len() as u64;
                let (kept, held) = (next.clone(), suspects.len());
                let found = match side {
                    Side::Source => {
                        forward(ctx, (with.0, with.1), c.to_vec(), sample_bp, &mut next.n).await?
                    }
                    Side::Target => {
                        reverse(ctx, (with.0, with.1), c.to_vec(), sample_bp, &mut next.n).await?
                    }
                };
                // Keys compared: the source's by the forward pass, the
                // target's by the reverse one (as the in-process verify
                // counts).
                match side {
                    Side::Source => next.n.expected += found.expected,
                    Side::Target => next.n.actual += found.actual,
                }
                next.n.mismatched += found.mismatched;
                suspects.extend(found.suspects);
                if chunks > 0 && suspects.len() > held && late(suspects.len()) {
                    // What this chunk added could not settle in time: leave
                    // the chunk to the next run, which reads it again.
                    next = kept;
                    suspects.truncate(held);
                    next.pos = if i == 0 {
                        from
                    } else {
                        after(&items[..i * chunk])?
                    };
                    break 'scan;
                }
                chunks += 1;
                if i + 1 < last && (suspects.len() >= FLUSH || late(suspects.len())) {
                    next.pos = after(c)?;
                    break 'scan;
                }
            }
            next.pos = match more {
                Some(k) => Pos::After(serde_json::to_string(&k).unwrap_or_default()),
                None => Pos::Done,
            };
        }
        // Lag is not divergence: re-read what differs after a pause, in up
        // to three rounds.
        for _ in 0..3 {
            if suspects.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(recheck_wait_s)).await;
            let by_ttl;
            (suspects, by_ttl) = still_different(ctx, with, suspects).await?;
            next.n.ttl_kept += by_ttl;
        }
        let mut kept: Vec<(Kind, Attrs)> = Vec::new();
        let room = PART_EXAMPLES.saturating_sub(next.examples());
        settle(
            ctx,
            with,
            suspects,
            (repair_in.as_ref(), recheck_wait_s),
            &mut next.n,
            &mut |kind, k| {
                if kept.len() < room {
                    kept.push((kind, k.clone()));
                }
            },
        )
        .await?;
        for (kind, k) in kept {
            match kind {
                Kind::Missing => next.missing.push(k),
                Kind::Changed => next.changed.push(k),
                Kind::Extra => next.extra.push(k),
            }
        }
        if !save(ctx, &pkey, &prev, &next).await? {
            return Ok((
                Outcome::Dropped("another run of the task holds its part"),
                read,
            ));
        }
        prev = Some(next.to_attr());
        at = next;
        if at.done() {
            return Ok((Outcome::Done, read));
        }
        if late(chunk) {
            return Ok((Outcome::Continue, read));
        }
    }
}

/// Saves a part's state on the condition that it still holds `prev` (the
/// part's item is the run's own).
async fn save<A: Aws>(
    ctx: &Ctx<A>,
    pkey: &Attrs,
    prev: &Option<AttributeValue>,
    next: &VerifyState,
) -> Result<bool> {
    let cond = match prev {
        None => Cond::Absent("state".into()),
        Some(v) => Cond::Equals("state".into(), v.clone()),
    };
    ctx.aws
        .set_attr(
            &ctx.stack.control_table,
            pkey,
            "state",
            Some(next.to_attr()),
            &cond,
        )
        .await
        .map(|w| w.done)
        .map_err(|e| explain(e, "control table"))
}
