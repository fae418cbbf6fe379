//! What the copy seeds share (`scan.rs`: the scan copy and the export
//! load): the writer of copied items, the checkpoint item, the page-by-page
//! passes over a table (read here; clear and tombstone sweep in
//! `copy/sweep.rs`), and the checks on an export; the parts a copy is made
//! of are in `parts.rs`, an in-process run's lease in `lease.rs`.
//!
//! **Invariant:** a copied item is put only where the target key is absent
//! or holds a repair's placeholder, so a newer image or a tombstone written
//! by the applier wins, and no repair overtaken by a restart keeps a key
//! from the new copy.
//!
//! **Invariant:** a pass over a table holds one page per segment, whatever
//! the table's size.
//!
//! **Invariant:** an export whose cutoff is older than the source's stream
//! can still deliver (its 24 hours, or its creation) is refused: every
//! change after the cutoff must reach the applier.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures::future::try_join_all;
use relay_aws::operator::{Aws, Cond};
use relay_core::control::{ControlState, Mode, ATTR_MIGRATION};
use relay_core::export::{DataFile, Summary};
use relay_core::item::{AttributeValue, Attrs};

use super::lease::Lease;
use crate::ctx::{explain, rfc3339, Ctx};
use crate::repair::absent_or_placeholder;

mod sweep;
pub(crate) use sweep::delete_page;
pub use sweep::{clear_target, sweep_tombstones};

/// Writes copied items: through the transform, only where the target key
/// is absent or holds a repair's placeholder, paced by `--rate` and `--max-wcu`, counted.
pub struct Copier<'a> {
    t: &'a dyn relay_core::transform::Transform,
    key_attr: String,
    rate: u64,
    max_wcu: u64,
    paced: tokio::time::Instant,
    seen: AtomicU64,
    wcu_milli: AtomicU64,
    pub copied: AtomicU64,
    pub skipped: AtomicU64,
    pub pb: indicatif::ProgressBar,
    /// An in-process run's lease (workers have none: Lambda ends them).
    lease: Option<&'a Lease>,
}

impl std::fmt::Debug for Copier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Copier")
            .field("copied", &self.copied)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

impl<'a> Copier<'a> {
    /// A writer through `t` at most `rate` items/s and `max_wcu` consumed
    /// write units/s (0: no limit), counting on `pb`.
    pub fn new(
        t: &'a dyn relay_core::transform::Transform,
        rate: u64,
        max_wcu: u64,
        pb: indicatif::ProgressBar,
    ) -> Self {
        Copier {
            t,
            key_attr: t.target_key_names().first().cloned().unwrap_or_default(),
            rate,
            max_wcu,
            paced: tokio::time::Instant::now(),
            seen: AtomicU64::new(0),
            wcu_milli: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            pb,
            lease: None,
        }
    }

    /// Every put only under the run's `lease`.
    pub fn with_lease(self, lease: &'a Lease) -> Self {
        Copier {
            lease: Some(lease),
            ..self
        }
    }

    /// Puts one item; `true` when it was written (`false`: the key was
    /// taken, by a newer image or a tombstone).
    pub async fn put<A: Aws>(&self, ctx: &Ctx<A>, item: &Attrs) -> Result<bool> {
        let table = &ctx.stack.target_table;
        let out = self
            .t
            .item(item)
            .map_err(|e| anyhow!("the transform cannot map a source item: {e}"))?;
        let put = async {
            ctx.aws
                .put_item(table, &out, &absent_or_placeholder(&self.key_attr))
                .await
                .map_err(|e| explain(e, table))
        };
        let w = match self.lease {
            Some(l) => l.write(put).await?,
            None => put.await?,
        };
        if w.done {
            self.copied.fetch_add(1, Ordering::Relaxed);
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
        self.pb.inc(1);
        let done = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        pace(self.paced, done, self.rate).await;
        // Capacity as DynamoDB reports it (1 unit when it does not).
        let used = (w.wcu.unwrap_or(1.0) * 1000.0) as u64;
        let total = self.wcu_milli.fetch_add(used, Ordering::Relaxed) + used;
        pace(self.paced, total / 1000, self.max_wcu).await;
        Ok(w.done)
    }

    /// Whether `n` more items would be paced past `until` (at least one
    /// write unit each): a part stops before such a chunk, so pacing never
    /// runs a worker past its deadline.
    pub fn would_wait_past(&self, n: u64, until: Option<tokio::time::Instant>) -> bool {
        let Some(until) = until else {
            return false;
        };
        let due = |done: u64, rate: u64| {
            (rate > 0).then(|| Duration::from_secs_f64(done as f64 / rate as f64))
        };
        let items = due(self.seen.load(Ordering::Relaxed) + n, self.rate);
        let wcu = due(
            self.wcu_milli.load(Ordering::Relaxed) / 1000 + n,
            self.max_wcu,
        );
        items.into_iter().chain(wcu).any(|d| self.paced + d > until)
    }

    /// Puts `items` concurrently; how many were written.
    pub async fn put_all<A: Aws>(&self, ctx: &Ctx<A>, items: &[Attrs]) -> Result<u64> {
        let written = try_join_all(items.iter().map(|i| self.put(ctx, i))).await?;
        Ok(written.into_iter().map(u64::from).sum())
    }
}

/// Simple rate limit: after `done` items, sleep until `done / rate` seconds
/// have passed.
async fn pace(start: tokio::time::Instant, done: u64, rate: u64) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(done as f64 / rate as f64);
    if let Some(wait) = due.checked_sub(start.elapsed()) {
        tokio::time::sleep(wait).await;
    }
}

/// The checkpoint item of a scan copy, beside the control item.
pub fn checkpoint_key<A>(ctx: &Ctx<A>) -> Attrs {
    Attrs::from([(
        ATTR_MIGRATION.to_string(),
        AttributeValue::S(format!("{}#scan", ctx.stack.migration)),
    )])
}

/// How far a copy seed is, from its checkpoint item (`segments` or
/// `files`, and the `seg_N` / `file_N` marked done), while the control item
/// says a copy is under way: tombstone mode, or normal mode with the sweep
/// still to run (a checkpoint a later restore left behind is not progress).
pub fn progress(
    checkpoint: &Attrs,
    control: &relay_core::control::ControlState,
    now_ms: i64,
) -> Option<relay_core::decide::CopyProgress> {
    if !control.is_copy_seed() {
        return None;
    }
    let number = |k: &str| match checkpoint.get(k) {
        Some(AttributeValue::N(n)) => n.parse::<i64>().ok(),
        _ => None,
    };
    let (parts, prefix, total) = if control.mode == relay_core::control::Mode::Normal
        && checkpoint.contains_key("sweep_segments")
    {
        ("sweep segments", "sweep_", number("sweep_segments")?)
    } else if let Some(n) = number("files") {
        ("files", "file_", n)
    } else {
        ("segments", "seg_", number("segments")?)
    };
    let t = relay_core::work::totals(checkpoint, prefix);
    let expected = number("expected").map(|n| n.max(0) as u64);
    let (items_per_s, eta_s) = match number("started_ms") {
        Some(started) if prefix != "sweep_" => {
            relay_core::work::rate_and_eta(t.items, expected, started, now_ms)
        }
        _ => (None, None),
    };
    Some(relay_core::decide::CopyProgress {
        parts: parts.into(),
        done: t.done,
        total: total.max(0) as u64,
        items: t.items,
        expected,
        items_per_s,
        eta_s,
    })
}

/// The copy's checkpoint item, as stored (`None`: no copy under way).
pub async fn read_checkpoint<A: Aws>(ctx: &Ctx<A>, ckey: &Attrs) -> Result<Option<Attrs>> {
    ctx.aws
        .get_item(&ctx.stack.control_table, ckey)
        .await
        .map_err(|e| explain(e, "control table"))
}

/// Forgets a scan copy's checkpoints (a restart copies from the start).
pub async fn forget_checkpoints<A: Aws>(ctx: &Ctx<A>) -> Result<()> {
    ctx.aws
        .delete_item(
            &ctx.stack.control_table,
            &checkpoint_key(ctx),
            &Cond::Always,
        )
        .await
        .map(|_| ())
        .map_err(|e| explain(e, "control table"))
}

/// Runs `each` on every item of `table`, page by page, segments in
/// parallel: memory is bounded by one page per segment, whatever the size
/// of the table. Returns how many items `each` counted.
pub async fn for_each_page<A, F, Fut>(
    ctx: &Ctx<A>,
    table: &str,
    segments: i32,
    what: &str,
    each: F,
) -> Result<u64>
where
    A: Aws,
    F: Fn(Vec<Attrs>) -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let pb = ctx.bar(None, what);
    let counted = AtomicU64::new(0);
    try_join_all((0..segments).map(|seg| {
        let (pb, counted, each) = (&pb, &counted, &each);
        async move {
            let mut next = None;
            loop {
                let (items, more) = ctx
                    .aws
                    .scan_page(table, seg, segments, next.take(), true)
                    .await
                    .map_err(|e| explain(e, table))?;
                pb.inc(items.len() as u64);
                counted.fetch_add(each(items).await?, Ordering::Relaxed);
                match more {
                    Some(k) => next = Some(k),
                    None => return Ok::<_, anyhow::Error>(()),
                }
            }
        }
    }))
    .await?;
    pb.finish_and_clear();
    Ok(counted.into_inner())
}

/// Refuses to go on with the copy seeded at `seed_ms` once the control item
/// names another seed (a restart replaced it, or is replacing it), or not
/// in `mode`.
pub async fn still_the_copy<A: Aws>(
    ctx: &Ctx<A>,
    seed_ms: i64,
    mode: Mode,
) -> Result<ControlState> {
    let c = ctx.control().await?;
    // A restart's pending state keeps the old seed's time and mode but no
    // cutoff and another method (helper-57 #2).
    if !c.names_copy(seed_ms, mode) {
        bail!(
            "the copy seeded at {} was replaced while it ran (the control item now says {} at {}, {} mode): this run stops and writes nothing more",
            rfc3339(seed_ms),
            c.seed_method.as_deref().unwrap_or("no seed"),
            c.seed_ms.map_or("?".into(), rfc3339),
            match c.mode {
                Mode::Normal => "normal",
                Mode::Tombstone => "tombstone",
            }
        );
    }
    Ok(c)
}

/// Said when a copy's checkpoint is a retired marker (`scan::retire_copy`
/// was interrupted while it waited for the copy's runs).
pub const RETIRE_INTERRUPTED: &str = "a restart or replay that was retiring the copy seed was interrupted while it waited for the copy's runs (its workers, or the leases of its runs in a CLI): the target is not whole. Re-run it (`ddb-relay restart` with its method, or `replay --from T` with any valid T; it waits for them again, then goes on)";

/// Forgets the checkpoint of the copy seeded at `seed_ms` only: a copy
/// that replaced it keeps its own.
pub async fn forget_checkpoint_of<A: Aws>(ctx: &Ctx<A>, seed_ms: i64) -> Result<()> {
    ctx.aws
        .delete_item(
            &ctx.stack.control_table,
            &checkpoint_key(ctx),
            &Cond::Equals("seed_ms".into(), AttributeValue::N(seed_ms.to_string())),
        )
        .await
        .map(|_| ())
        .map_err(|e| explain(e, "control table"))
}

/// The stream keeps changes for 24 hours: an export whose cutoff is older
/// may predate what the forwarder could read.
pub(crate) const STREAM_RETENTION_MS: i64 = 24 * 3600 * 1000;

/// An export, as the loader reads it.
#[derive(Clone, Debug)]
pub struct Export {
    pub bucket: String,
    /// The key prefix of its manifests: `<prefix>/AWSDynamoDB/<export-id>`.
    pub dir: String,
    pub summary: Summary,
    pub files: Vec<DataFile>,
    /// Taken by this command (not `--from-export`).
    pub taken_here: bool,
}

/// Refuses an export the queue cannot complete: every change after its
/// cutoff must reach the applier. So the export must be of the source table,
/// not in the future, not older than the stream's 24 hours, not from before
/// the stream existed, and, when the forwarder starts at `LATEST` (it sees
/// only what happens after its trigger was created), taken by this command
/// (`Export::taken_here`).
pub async fn refuse_stale_export<A: Aws>(ctx: &Ctx<A>, x: &Export) -> Result<()> {
    let s = &ctx.stack;
    let at = x.summary.export_time_ms;
    let when = rfc3339(at);
    let source = ctx
        .aws
        .describe(&s.source_table)
        .await
        .map_err(|e| explain(e, &s.source_table))?
        .ok_or_else(|| anyhow!("source table {} not found", s.source_table))?;
    if let (Some(theirs), Some(ours)) = (&x.summary.table_arn, &source.arn) {
        if theirs != ours {
            bail!("the export is of {theirs}, not of the source table {ours}");
        }
    }
    if at > ctx.now_ms() + 60_000 {
        bail!("the export says it is consistent to {when}, which is in the future: the manifest is wrong");
    }
    refuse_unstreamed_point(
        ctx,
        (at, 0),
        source.stream_arn.as_deref(),
        "the export",
        "take a new export (`ddb-relay seed --method export --load --s3-bucket B`)",
    )?;
    if let Some(p) = s
        .starting_position
        .as_deref()
        .filter(|p| *p != "TRIM_HORIZON")
    {
        if !x.taken_here {
            bail!(
                "the forwarder starts at {p} (StreamStartingPosition), so it may not have seen the changes after an export taken before it ran: take the export with this command (`--load --s3-bucket B`), not `--from-export`"
            );
        }
    }
    Ok(())
}

/// How long before its time an on-demand backup may lack writes: it holds
/// everything committed by about this long before, and may hold later ones.
/// The other seeds (PITR, export, scan) hold every change before their point.
pub const BACKUP_FUZZ_MS: i64 = 60_000;

/// Refuses a seed point (`what`, consistent to `at`, or to `fuzz_ms`
/// before it: [`BACKUP_FUZZ_MS`]) whose changes after it the queue may not
/// hold: its cutoff (`at` − margin) older than the 24 hours a stream keeps,
/// or `at − fuzz_ms` before the source's stream (`stream_arn`) was created.
pub fn refuse_unstreamed_point<A: Aws>(
    ctx: &Ctx<A>,
    (at, fuzz_ms): (i64, i64),
    stream_arn: Option<&str>,
    what: &str,
    fix: &str,
) -> Result<()> {
    let when = rfc3339(at);
    if at - ctx.stack.margin_ms < ctx.now_ms() - STREAM_RETENTION_MS {
        bail!(
            "{what} is consistent to {when}: its cutoff is older than the 24 hours a DynamoDB stream keeps, so changes after it may never have been queued; {fix}"
        );
    }
    refuse_point_before_stream(ctx, (at, fuzz_ms), stream_arn, what, fix)
}

/// The part of [`refuse_unstreamed_point`] every seed point keeps, a
/// re-seed's too (whose changes the queue holds for its retention, not the
/// stream's 24 hours): `at − fuzz_ms` not before the source's current
/// stream was created (a stream replaced since holds nothing before it).
pub fn refuse_point_before_stream<A: Aws>(
    ctx: &Ctx<A>,
    (at, fuzz_ms): (i64, i64),
    stream_arn: Option<&str>,
    what: &str,
    fix: &str,
) -> Result<()> {
    let when = rfc3339(at);
    let created = stream_arn.map(|arn| (arn, stream_created_ms(arn)));
    if let (Some((arn, None)), 0) = (created, fuzz_ms) {
        ctx.step(&format!("the source's stream label ({arn}) is not a time: {what} is not checked against the stream's creation"));
    }
    if let Some((_, Some(created))) = created {
        if at - fuzz_ms < created {
            let fuzz = match fuzz_ms {
                0 => String::new(),
                f => format!(" (or up to {} s before it)", f / 1000),
            };
            bail!(
                "{what} is consistent to {when}{fuzz}, before the source's stream was created ({}): the changes in between were never streamed; {fix} (a point from {} on)",
                rfc3339(created),
                rfc3339(created + fuzz_ms)
            );
        }
    }
    Ok(())
}

/// The source's current stream ARN, if it has one.
pub async fn source_stream<A: Aws>(ctx: &Ctx<A>) -> Result<Option<String>> {
    let s = &ctx.stack;
    Ok(ctx
        .aws
        .describe(&s.source_table)
        .await
        .map_err(|e| explain(e, &s.source_table))?
        .and_then(|t| t.stream_arn))
}

/// [`refuse_unstreamed_point`] for a first seed at `at` (`fuzz_ms`: see
/// there), reading the source's stream.
pub async fn refuse_first_seed_before_stream<A: Aws>(
    ctx: &Ctx<A>,
    (at, fuzz_ms): (i64, i64),
    what: &str,
    fix: &str,
) -> Result<()> {
    let stream = source_stream(ctx).await?;
    refuse_unstreamed_point(ctx, (at, fuzz_ms), stream.as_deref(), what, fix)
}

/// [`refuse_point_before_stream`] for a re-seed at `at`, reading the
/// source's stream.
pub async fn refuse_reseed_before_stream<A: Aws>(
    ctx: &Ctx<A>,
    (at, fuzz_ms): (i64, i64),
    what: &str,
    fix: &str,
) -> Result<()> {
    let stream = source_stream(ctx).await?;
    refuse_point_before_stream(ctx, (at, fuzz_ms), stream.as_deref(), what, fix)
}

/// A chosen point (`--at`) is refused when the forwarder starts at `LATEST`:
/// it saw only what happened after its trigger was created, which may be
/// after the point.
pub fn refuse_chosen_point_when_latest<A>(ctx: &Ctx<A>) -> Result<()> {
    if let Some(p) = ctx
        .stack
        .starting_position
        .as_deref()
        .filter(|p| *p != "TRIM_HORIZON")
    {
        bail!(
            "the forwarder starts at {p} (StreamStartingPosition): a chosen point (--at) may be before the first change it queued; seed at the default point (now, or the latest restorable time)"
        );
    }
    Ok(())
}

/// When a stream was created, from its ARN's label
/// (`…/stream/2026-11-26T10:00:00.000`; any number of fractional digits, or
/// none, as moto writes it). `None`: no label, or one that is not a time.
pub fn stream_created_ms(arn: &str) -> Option<i64> {
    let label = arn.rsplit_once("/stream/")?.1;
    chrono::NaiveDateTime::parse_from_str(label, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::stream_created_ms;

    #[test]
    fn a_stream_arn_says_when_the_stream_was_created() {
        assert_eq!(
            stream_created_ms(
                "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-11-01T00:00:00.500"
            ),
            Some(1_793_491_200_500)
        );
        assert_eq!(
            stream_created_ms("arn:aws:dynamodb:us-east-1:1:table/t"),
            None
        );
        // moto's labels: Python's isoformat(), microseconds or none.
        for (label, ms) in [
            ("2026-11-01T00:00:00.500250", 1_793_491_200_500),
            ("2026-11-01T00:00:01", 1_793_491_201_000),
        ] {
            let arn = format!("arn:aws:dynamodb:us-east-1:1:table/t/stream/{label}");
            assert_eq!(stream_created_ms(&arn), Some(ms), "{label}");
        }
        assert_eq!(
            stream_created_ms("arn:aws:dynamodb:us-east-1:1:table/t/stream/latest"),
            None
        );
    }
}
