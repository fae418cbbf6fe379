//! `verify --fan-out`: the comparison run by the worker Lambda, for tables
//! too large for one machine's scan. Every part is one scan segment of one
//! table, compared by lookups on the other, page by page:
//!
//! - a **source** segment: each item through the transform, read back from
//!   the target at its target key (BatchGetItem): missing and different
//!   items;
//! - a **target** segment: each item, read back from the source at the
//!   source key it carries: an item whose source is gone or now maps to
//!   another key is extra.
//!
//! What differs is re-checked with consistent reads after a pause, then
//! settled (and repaired with `--repair`) by the same code as the
//! in-process verify (`verify.rs`). Each part saves its position, counts
//! and a few examples in the verify's checkpoint item; the CLI sums them
//! into one report.
//!
//! Memory per worker is one scan page plus at most [`FLUSH`] suspects,
//! whatever the table size. Reads: one scan of each table, one eventually
//! consistent read per item of each (batched by 100), and two consistent
//! GetItems per suspect and round.
//!
//! **Invariant:** a part's state moves only on the condition that it still
//! holds what the run read and that the checkpoint belongs to the task's
//! run (`run_ms`): a task run twice counts each page once, and a run of an
//! earlier verify writes nothing into a later one.
//!
//! **Boundary:** the target pass can find an extra item only through the
//! source key it carries; the CLI refuses `--fan-out` for a transform that
//! drops it (the in-process verify, which partitions both tables by target
//! key, has no such limit).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures::{StreamExt, TryStreamExt};
use relay_aws::operator::{Aws, Cond};
use relay_core::control::Mode;
use relay_core::diff::{self, key_of, Compared, Keyed, Mapped};
use relay_core::item::{AttributeValue, Attrs, CanonicalKey};
use relay_core::transform::Transform;
use relay_core::work::{
    verify_parts, Job, Pos, Side, Task, VerifyCounts, VerifyState, PART_EXAMPLES,
};

use super::copy::read_checkpoint;
use super::fanout::{self, Parts};
use super::verify::{
    add_example, record_verdict, refuse_repairs_during_a_copy, settle, still_different, Examples,
    Kind, VerifyReport,
};
use crate::ctx::{explain, Ctx};
use crate::worker::Outcome;

/// Suspects a part holds before it re-checks and settles them (and saves).
pub const FLUSH: usize = 512;
/// BatchGetItem requests of one part in flight at once.
const LOOKUPS_IN_FLIGHT: usize = 8;
/// Segments per table at most: every part's state lives in one checkpoint
/// item (400 KB).
pub const MAX_SEGMENTS: i32 = 500;

/// The checkpoint item of a fanned-out verify, beside the control item.
pub fn verify_key<A>(ctx: &Ctx<A>) -> Attrs {
    Attrs::from([(
        relay_core::control::ATTR_MIGRATION.to_string(),
        AttributeValue::S(format!("{}#verify", ctx.stack.migration)),
    )])
}

fn parts(run_ms: i64) -> Parts {
    Parts {
        owner: ("run_ms", run_ms),
        whose: "verify",
        done: |v| VerifyState::read(v).is_ok_and(|s| s.done()),
        items: |c| {
            verify_parts(c)
                .unwrap_or_default()
                .iter()
                .map(|p| p.n.source_items + p.n.target_items)
                .sum()
        },
    }
}

/// The CLI's side: starts a verify run, sends one task per segment of each
/// table, follows the parts, and merges their counts into one report.
pub async fn verify<A: Aws>(
    ctx: &Ctx<A>,
    sample: f64,
    repair: bool,
    recheck_wait: u64,
    segments: i32,
) -> Result<VerifyReport> {
    let s = &ctx.stack;
    fanout::workers(ctx)?;
    if segments > MAX_SEGMENTS {
        bail!("a fanned-out verify runs at most {MAX_SEGMENTS} segments per table (every part's state is kept in one item): use --segments {MAX_SEGMENTS} or fewer");
    }
    let loaded = crate::transform::load(ctx).await?;
    let t = loaded.transform.as_ref();
    // The target pass finds an extra item by the source key it carries.
    let (first, _) = ctx
        .aws
        .scan_page(&s.source_table, 0, 1, None, false)
        .await
        .map_err(|e| explain(e, &s.source_table))?;
    if let Some(out) = first.first().and_then(|i| t.item(i).ok()) {
        if t.source_key_of(&out, &loaded.source_keys).is_none() {
            bail!(
                "the transform drops the source key ({}) from target items, so a fanned-out verify cannot find where a target item came from (to tell an extra item): run verify without --fan-out (it compares in bounded memory in this process)",
                loaded.source_keys.join(", ")
            );
        }
    }
    let start = ctx.control().await?;
    if repair {
        refuse_repairs_during_a_copy(start.mode)?;
    }
    let began = std::time::Instant::now();
    let run_ms = ctx.now_ms();
    let key = verify_key(ctx);
    let mut item = key.clone();
    item.insert("run_ms".into(), AttributeValue::N(run_ms.to_string()));
    item.insert("segments".into(), AttributeValue::N(segments.to_string()));
    ctx.aws
        .put_item(&s.control_table, &item, &Cond::Always)
        .await
        .map_err(|e| explain(e, "control table"))?;
    let bp = diff::basis_points(sample);
    let tasks: Vec<Task> = [Side::Source, Side::Target]
        .into_iter()
        .flat_map(|side| {
            (0..segments).map(move |segment| {
                Task::new(
                    start.seed_ms.unwrap_or(0),
                    Job::Verify {
                        run_ms,
                        side,
                        segment,
                        segments,
                        sample_bp: bp,
                        repair,
                        recheck_wait_s: recheck_wait,
                    },
                )
            })
        })
        .collect();
    let mut expected = 0;
    for table in [&s.source_table, &s.target_table] {
        if let Ok(Some(info)) = ctx.aws.describe(table).await {
            expected += info.item_count.unwrap_or(0).max(0) as u64;
        }
    }
    let c = fanout::follow(
        ctx,
        &key,
        &tasks,
        "verify",
        (expected > 0).then_some(expected),
        &parts(run_ms),
    )
    .await?;
    let mut n = VerifyCounts::default();
    let mut examples = Examples::default();
    for p in verify_parts(&c).map_err(|e| anyhow!(e))? {
        n += p.n;
        for (kind, keys) in [
            (Kind::Missing, &p.missing),
            (Kind::Changed, &p.changed),
            (Kind::Extra, &p.extra),
        ] {
            for k in keys {
                add_example(&mut examples, kind, k);
            }
        }
    }
    let recorded = record_verdict(ctx, &start, sample, n.remaining).await?;
    let took = began.elapsed().as_secs_f64();
    Ok(VerifyReport {
        stack: s.name.clone(),
        clean: n.remaining == 0,
        sample_percent: sample,
        source_items: n.source_items,
        compared: n.expected.max(n.actual),
        unmappable: n.unmappable,
        missing: n.missing,
        changed: n.changed,
        extra: n.extra,
        lag_resolved: n.mismatched.saturating_sub(n.still_mismatched),
        repaired: n.repaired,
        remaining: n.remaining,
        unrepairable: n.unrepairable,
        seconds: took,
        items_per_s: (n.source_items + n.target_items) as f64 / took.max(0.001),
        recorded,
        examples,
        spill: Default::default(),
        fanned_out: Some(tasks.len() as u64),
        repair,
    })
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
    Ok(diff::index(pages.into_iter().flatten(), names).0)
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
    } = task.job
    else {
        bail!("not a verify task");
    };
    let s = &ctx.stack;
    let key = verify_key(ctx);
    let part = task.job.part();
    let owner = AttributeValue::N(run_ms.to_string());
    let Some(mut c) = read_checkpoint(ctx, &key)
        .await?
        .filter(|c| c.get("run_ms") == Some(&owner))
    else {
        return Ok((Outcome::Dropped("the task belongs to another verify"), 0));
    };
    let mut prev = c.remove(&part);
    let mut at = VerifyState::read(prev.as_ref()).map_err(|e| anyhow!("{part}: {e}"))?;
    if at.done() {
        return Ok((Outcome::Done, 0));
    }
    let loaded = crate::transform::load(ctx).await?;
    let t = loaded.transform.as_ref();
    let with = (t, loaded.source_keys.as_slice());
    let repair_in: Option<Mode> = if repair {
        let mode = ctx.control().await?.mode;
        refuse_repairs_during_a_copy(mode)?;
        Some(mode)
    } else {
        None
    };
    // Kept back for settling what was read (the re-check rounds and their
    // reads): at most half of this run's time, so that every run moves its
    // part by a page at least.
    let settling = until.map_or(Duration::ZERO, |u| {
        Duration::from_secs(3 * recheck_wait_s + 5)
            .min(u.saturating_duration_since(tokio::time::Instant::now()) / 2)
    });
    let late = || until.is_some_and(|u| tokio::time::Instant::now() + settling >= u);
    let table = match side {
        Side::Source => &s.source_table,
        Side::Target => &s.target_table,
    };
    let mut read = 0u64;
    loop {
        let mut next = at.clone();
        let mut suspects = Vec::new();
        let mut pages = 0;
        while suspects.len() < FLUSH && !next.done() && (pages == 0 || !late()) {
            let start = match &next.pos {
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
            read += items.len() as u64;
            let c = match side {
                Side::Source => forward(ctx, with, items, sample_bp, &mut next.n).await?,
                Side::Target => reverse(ctx, with, items, sample_bp, &mut next.n).await?,
            };
            // Keys compared: the source's by the forward pass, the
            // target's by the reverse one (as the in-process verify counts).
            match side {
                Side::Source => next.n.expected += c.expected,
                Side::Target => next.n.actual += c.actual,
            }
            next.n.mismatched += c.mismatched;
            suspects.extend(c.suspects);
            next.pos = match more {
                Some(k) => Pos::After(serde_json::to_string(&k).unwrap_or_default()),
                None => Pos::Done,
            };
            pages += 1;
        }
        // Lag is not divergence: re-read what differs after a pause, in up
        // to three rounds.
        for _ in 0..3 {
            if suspects.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(recheck_wait_s)).await;
            suspects = still_different(ctx, t, suspects).await?;
        }
        let mut kept: Vec<(Kind, Attrs)> = Vec::new();
        let room = PART_EXAMPLES.saturating_sub(next.examples());
        settle(
            ctx,
            t,
            suspects,
            (repair_in, recheck_wait_s),
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
        if !save(ctx, &key, (&part, &owner), &prev, &next).await? {
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
        if late() {
            return Ok((Outcome::Continue, read));
        }
    }
}

/// Saves a part's state on the condition that the checkpoint belongs to
/// the run and the part still holds `prev`.
async fn save<A: Aws>(
    ctx: &Ctx<A>,
    key: &Attrs,
    (part, owner): (&str, &AttributeValue),
    prev: &Option<AttributeValue>,
    next: &VerifyState,
) -> Result<bool> {
    let cond = Cond::All(vec![
        Cond::Equals("run_ms".into(), owner.clone()),
        match prev {
            None => Cond::Absent(part.into()),
            Some(v) => Cond::Equals(part.into(), v.clone()),
        },
    ]);
    ctx.aws
        .set_attr(
            &ctx.stack.control_table,
            key,
            part,
            Some(next.to_attr()),
            &cond,
        )
        .await
        .map(|w| w.done)
        .map_err(|e| explain(e, "control table"))
}
