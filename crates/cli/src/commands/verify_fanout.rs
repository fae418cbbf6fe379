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
//! Memory per worker is one scan page plus at most [`FLUSH`] suspects and
//! one chunk's, whatever the table size. Reads: one scan of each table, one
//! eventually consistent read by key of every item of each (BatchGetItem,
//! at least 0.5 RCU an item however small: see docs/DESIGN.md for the
//! cost), and two consistent GetItems per suspect and round. What bounds
//! the reads is the number of parts at once (`--segments`,
//! `WorkerConcurrency`); there is no `--rate` (pacing a part whose pages
//! hold more items than its share reads in one invocation would need a
//! scan `Limit`: not built).
//!
//! **Invariant:** a part's state (one item per part, keyed by the run) moves
//! only on the condition that it still holds what the run read: a task run
//! twice counts each item once, and a run of an earlier verify writes only
//! into its own run's items, which no later verify reads.
//!
//! **Invariant:** a run saves before its deadline: it stops reading when
//! settling what it holds (re-check rounds, repairs) could pass the
//! deadline, mid-page if need be (a scan resumes after any key of its
//! segment); a chunk whose suspects could not settle in time is left to the
//! next run, except the first chunk of a run (the CLI checks that one chunk
//! can always settle in one invocation).
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
    Kind, VerifyReport, RECHECK_CONCURRENCY,
};
use crate::ctx::{explain, Ctx};
use crate::worker::Outcome;

/// Suspects a part holds before it re-checks and settles them (and saves).
pub const FLUSH: usize = 512;
/// Pages a part reads at most between saves: its progress shows, and a run
/// that dies loses at most this much.
const FLUSH_PAGES: usize = 10;
/// Items compared at a time (one BatchGetItem's worth), and with `--repair`
/// (where each difference may take four re-reads) one round of
/// [`RECHECK_CONCURRENCY`].
const CHUNK: usize = 100;
const CHUNK_REPAIRING: usize = RECHECK_CONCURRENCY;
/// BatchGetItem requests of one part in flight at once.
const LOOKUPS_IN_FLIGHT: usize = 8;
/// Segments per table at most (the CLI reads every part's item while it
/// follows them).
pub const MAX_SEGMENTS: i32 = 1000;
/// The task kinds a worker runs, as its `WORKER_JOBS` names them.
const JOB: &str = "verify";

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

/// The item naming the current fanned-out verify run (`run_ms`,
/// `segments`), beside the control item.
pub fn verify_key<A>(ctx: &Ctx<A>) -> Attrs {
    key(&format!("{}#verify", ctx.stack.migration))
}

/// The item holding one part's state (`state`) in one run.
pub fn part_key<A>(ctx: &Ctx<A>, run_ms: i64, part: &str) -> Attrs {
    key(&format!("{}#verify#{run_ms}#{part}", ctx.stack.migration))
}

fn key(id: &str) -> Attrs {
    Attrs::from([(
        relay_core::control::ATTR_MIGRATION.to_string(),
        AttributeValue::S(id.into()),
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

/// The run item with every part's state added under the part's name (parts
/// not started are absent); eventually consistent, which is enough: a done
/// part's state is final.
async fn read_parts<A: Aws>(ctx: &Ctx<A>, tasks: &[Task], run_ms: i64) -> Result<Attrs> {
    let mut c = read_checkpoint(ctx, &verify_key(ctx))
        .await?
        .unwrap_or_default();
    if c.get("run_ms") != Some(&AttributeValue::N(run_ms.to_string())) {
        return Ok(c);
    }
    let names: BTreeMap<CanonicalKey, String> = tasks
        .iter()
        .map(|t| {
            let p = t.job.part();
            (CanonicalKey::of(&part_key(ctx, run_ms, &p)), p)
        })
        .collect();
    let keys: Vec<Attrs> = tasks
        .iter()
        .map(|t| part_key(ctx, run_ms, &t.job.part()))
        .collect();
    let table = &ctx.stack.control_table;
    let pages: Vec<Vec<Attrs>> = futures::stream::iter(keys.chunks(100))
        .map(|chunk| async move {
            ctx.aws
                .batch_get(table, chunk)
                .await
                .map_err(|e| explain(e, "control table"))
        })
        .buffer_unordered(LOOKUPS_IN_FLIGHT)
        .try_collect()
        .await?;
    for mut item in pages.into_iter().flatten() {
        let Some(state) = item.remove("state") else {
            continue;
        };
        let Some(id) = item.get(relay_core::control::ATTR_MIGRATION) else {
            continue;
        };
        let k = key(match id {
            AttributeValue::S(s) => s,
            _ => continue,
        });
        if let Some(p) = names.get(&CanonicalKey::of(&k)) {
            c.insert(p.clone(), state);
        }
    }
    Ok(c)
}

/// Deletes the part items of the run `run_ms` (best effort: a leftover is
/// a few bytes no later run reads).
async fn forget_run<A: Aws>(ctx: &Ctx<A>, run_ms: i64, segments: i32) {
    let parts = (0..segments).flat_map(|i| [format!("vsrc_{i}"), format!("vtgt_{i}")]);
    let _ = futures::stream::iter(parts)
        .map(|p| async move {
            ctx.aws
                .delete_item(
                    &ctx.stack.control_table,
                    &part_key(ctx, run_ms, &p),
                    &Cond::Always,
                )
                .await
        })
        .buffer_unordered(RECHECK_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
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
    let w = fanout::workers(ctx)?;
    if segments > MAX_SEGMENTS {
        bail!("a fanned-out verify runs at most {MAX_SEGMENTS} segments per table: use --segments {MAX_SEGMENTS} or fewer");
    }
    let jobs = ctx
        .aws
        .function_env(&w.worker, "WORKER_JOBS")
        .await
        .map_err(|e| explain(e, &format!("function {}", w.worker)))?
        .unwrap_or_default();
    if !jobs.split_whitespace().any(|j| j == JOB) {
        bail!(
            "the stack's copy worker ({}) predates verify --fan-out: redeploy the stack with this release's template.yaml, or verify in this process (drop --fan-out)",
            w.worker
        );
    }
    // Each run saves before its deadline; what it holds must settle in one
    // invocation (less the time kept back).
    let timeout = ctx
        .aws
        .function_timeout_s(&w.worker)
        .await
        .map_err(|e| explain(e, &format!("function {}", w.worker)))?;
    let usable = timeout.saturating_sub((timeout / 10).max(crate::worker::RESERVE.as_secs()));
    let chunk = if repair { CHUNK_REPAIRING } else { CHUNK };
    let need = settle_time(chunk, recheck_wait, repair).as_secs();
    if need > usable {
        bail!(
            "--recheck-wait {recheck_wait} leaves the workers no time: settling one chunk takes up to {need} s, and an invocation of {} has {usable} s (WorkerTimeoutSeconds={timeout}): lower --recheck-wait or raise WorkerTimeoutSeconds",
            w.worker
        );
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
    // A new run replaces the last one: its tasks still queued stop at the
    // run check, and its part items go.
    let key = verify_key(ctx);
    if let Some(last) = read_checkpoint(ctx, &key).await? {
        if let (Some(AttributeValue::N(r)), Some(AttributeValue::N(n))) =
            (last.get("run_ms"), last.get("segments"))
        {
            if let (Ok(r), Ok(n)) = (r.parse(), n.parse()) {
                forget_run(ctx, r, n).await;
            }
        }
    }
    let run_ms = ctx.now_ms();
    let mut item = key.clone();
    item.insert("run_ms".into(), AttributeValue::N(run_ms.to_string()));
    item.insert("segments".into(), AttributeValue::N(segments.to_string()));
    ctx.aws
        .put_item(&s.control_table, &item, &Cond::Always)
        .await
        .map_err(|e| explain(e, "control table"))?;
    let bp = diff::basis_points(sample);
    let jobs: Vec<Job> = [Side::Source, Side::Target]
        .into_iter()
        .flat_map(|side| {
            (0..segments).map(move |segment| Job::Verify {
                run_ms,
                side,
                segment,
                segments,
                sample_bp: bp,
                repair,
                recheck_wait_s: recheck_wait,
            })
        })
        .collect();
    let tasks = fanout::with_shares(start.seed_ms.unwrap_or(0), jobs, 0, 0, w.concurrency);
    let mut expected = 0;
    for table in [&s.source_table, &s.target_table] {
        if let Ok(Some(info)) = ctx.aws.describe(table).await {
            expected += info.item_count.unwrap_or(0).max(0) as u64;
        }
    }
    let read = || read_parts(ctx, &tasks, run_ms);
    let c = fanout::follow(
        ctx,
        &read,
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
    // Finished: a task of this run delivered late does nothing.
    ctx.aws
        .set_attr(
            &s.control_table,
            &key,
            "finished",
            Some(AttributeValue::Bool(true)),
            &Cond::Equals("run_ms".into(), AttributeValue::N(run_ms.to_string())),
        )
        .await
        .map_err(|e| explain(e, "control table"))?;
    forget_run(ctx, run_ms, segments).await;
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
    let with = (t, loaded.source_keys.as_slice());
    let repair_in: Option<Mode> = if repair {
        let mode = ctx.control().await?.mode;
        refuse_repairs_during_a_copy(mode)?;
        Some(mode)
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
                    Side::Source => forward(ctx, with, c.to_vec(), sample_bp, &mut next.n).await?,
                    Side::Target => reverse(ctx, with, c.to_vec(), sample_bp, &mut next.n).await?,
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
            suspects = still_different(ctx, with, suspects).await?;
        }
        let mut kept: Vec<(Kind, Attrs)> = Vec::new();
        let room = PART_EXAMPLES.saturating_sub(next.examples());
        settle(
            ctx,
            with,
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
