//! `verify`: the source through the transform against the target; what
//! differs is re-checked with consistent reads after a pause (lag is not
//! divergence), and `--repair` brings each difference to the source's
//! current state through `repair.rs`.
//!
//! Memory is bounded whatever the table size: both sides go to spill files
//! partitioned by target key (`spill.rs`), compared one partition at a time
//! (`diff::compare`); the suspects wait in a file between re-check rounds.
//! Reads: one scan of each table, then two consistent GetItems per suspect
//! and round (source and target).
//!
//! **Invariant:** "clean" means source and target agree when re-read, not
//! that the target matches an earlier snapshot, and that the transform maps
//! every source item (one it cannot map is not in the target); a clean
//! verdict is recorded for `cutover` only for a full verify that began on a
//! whole target and ran while no operator command changed the migration
//! (differences whenever the seed is still the one it compared).

use std::time::{Duration, Instant};

use anyhow::Result;
use relay_aws::operator::Aws;
use relay_core::control::ControlState;
use relay_core::diff::{self, key_of, Seen, Suspect};
use relay_core::item::CanonicalKey;
use relay_core::work::VerifyCounts;
use serde::Serialize;

use super::copy::for_each_page;
use crate::args::{CopyArgs, SpillArgs};
use crate::ctx::{rfc3339, Ctx};
use crate::repair::Fence;
use crate::report::{Report, EXIT_NO_GO};
use crate::spill::{Queue, Spill, SpillStats};

#[derive(Debug, Default, Serialize)]
pub struct Examples {
    pub missing: Vec<serde_json::Value>,
    pub changed: Vec<serde_json::Value>,
    pub extra: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub stack: String,
    /// Source and target agree (after re-checks and repairs), and the
    /// transform maps every source item.
    pub clean: bool,
    pub sample_percent: f64,
    pub source_items: u64,
    pub compared: u64,
    /// Source items the transform cannot map (they cannot be in the
    /// target): a verify with any is not clean.
    pub unmappable: u64,
    /// Differences found (after the lag re-check), by kind.
    pub missing: u64,
    pub changed: u64,
    pub extra: u64,
    /// Mismatches of the first pass that were lag: they agreed on re-check.
    pub lag_resolved: u64,
    /// Target items with no source item that `TtlDeletes=skip` keeps on
    /// purpose (their TTL has passed): not differences.
    pub ttl_kept: u64,
    pub repaired: u64,
    /// Differences still there at the end.
    pub remaining: u64,
    /// Extra items whose source item cannot be found (the transform drops
    /// the source key): reported, never deleted blindly.
    pub unrepairable: u64,
    pub seconds: f64,
    pub items_per_s: f64,
    /// Whether the verdict was recorded for `cutover`.
    pub recorded: bool,
    pub examples: Examples,
    /// What the comparison wrote to disk, and the largest partition it read
    /// back (file bytes; in memory it takes about 4x that).
    pub spill: SpillStats,
    /// Worker tasks the comparison ran as (`--fan-out`); absent when it
    /// ran in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanned_out: Option<u64>,
    #[serde(skip)]
    pub(crate) repair: bool,
}

impl Report for VerifyReport {
    fn text(&self) -> String {
        let found = self.missing + self.changed + self.extra;
        let mut t = format!(
            "verify: {} source items, {} compared ({}% sample): found {} missing, {} different, {} extra",
            self.source_items, self.compared, self.sample_percent, self.missing, self.changed, self.extra
        );
        if self.lag_resolved > 0 {
            t.push_str(&format!(
                " ({} first-pass mismatches were lag and agreed on re-check)",
                self.lag_resolved
            ));
        }
        if self.ttl_kept > 0 {
            t.push_str(&format!(
                " ({} target item(s) whose TTL has passed are kept on purpose under TtlDeletes=skip: not differences)",
                self.ttl_kept
            ));
        }
        if self.repair {
            t.push_str(&format!(
                "; repaired {}, {} remaining",
                self.repaired, self.remaining
            ));
        }
        if self.unmappable > 0 {
            t.push_str(&format!(
                "; {} source item(s) the transform cannot map, so they are not in the target (not clean): fix the data or the transform (then `ddb-relay restart --method scan`)",
                self.unmappable
            ));
        }
        if self.unrepairable > 0 {
            t.push_str(&format!(
                "; {} extra item(s) carry no source key, so their source cannot be checked: delete them by hand if they are orphans",
                self.unrepairable
            ));
        }
        if let Some(tasks) = self.fanned_out {
            t.push_str(&format!("; compared by the workers in {tasks} tasks"));
        }
        t.push_str(&format!(
            "; {:.1} s\n{}",
            self.seconds,
            if self.clean {
                "CLEAN: source and target agree".to_string()
            } else if found > 0 && !self.repair {
                "DIVERGED: fix with `ddb-relay verify --repair`".to_string()
            } else {
                "DIVERGED".to_string()
            }
        ));
        if !self.recorded && self.sample_percent >= 100.0 {
            t.push_str("\n(not recorded for cutover: the target was not whole when verify began (a re-seed pending, a copy or sweep running), or an operator command (a re-seed, pause, resume, mode switch or stream failure clear) changed the migration while it ran; run verify again)");
        }
        t
    }

    fn exit_code(&self) -> i32 {
        if self.clean {
            0
        } else {
            EXIT_NO_GO
        }
    }
}

/// Repairs run only on a seeded target: not during a scan copy (they would
/// write in one mode while the copy and the sweep work in another), not
/// before the first seed, and not while a re-seed is pending (a restart's
/// clear would not see a placeholder it had passed, and the copy's put,
/// only where the key is absent, would then keep an older repair).
pub fn refuse_repairs_unless_seeded(c: &relay_core::control::ControlState) -> Result<()> {
    if c.mode == relay_core::control::Mode::Tombstone {
        anyhow::bail!("a scan copy is running (tombstone mode): repair after it finishes (`ddb-relay status` shows the mode)");
    }
    if let Some(m) = c.seed_method.as_deref().filter(|m| m.ends_with("-pending")) {
        anyhow::bail!(
            "a re-seed is pending ({m}): repair after it completes (`ddb-relay status` names it)"
        );
    }
    if c.cutoff_ms.is_none() {
        anyhow::bail!("the target is not seeded yet (no cutoff): repair after the seed completes");
    }
    Ok(())
}

/// Examples of each kind shown in the report.
const EXAMPLES: usize = 20;

mod settle;
pub(crate) use settle::{kept_ttl, settle, still_different, Kind, RECHECK_CONCURRENCY};
use settle::{recheck, CHUNK};

/// Whether a verify starting on `start` may record its verdict: the target
/// was whole then (seeded, no re-seed pending, no copy or sweep running,
/// ACTIVE). A verify during a scan copy compares a target the copy is
/// still filling.
pub(crate) async fn may_record<A: Aws>(ctx: &Ctx<A>, start: &ControlState) -> bool {
    super::finish::refuse_partial_target(ctx, start, "")
        .await
        .is_ok()
}

/// Records the verdict for `cutover`. "clean" only for a full verify
/// (`sample` 100) that began on a whole target (`whole`, [`may_record`])
/// while no operator wrote the control item (its version is still
/// `start`'s: no re-seed, even one at the same point, no pause, resume,
/// mode switch or finish). Differences, from a sample too, while the seed,
/// mode and finish are still `start`'s: dropping them would leave an older
/// "clean" in force, and after a re-seed they are about a table that is
/// gone (and the re-seed's own writes must not meet a moved version).
/// `started_ms` is recorded with it. `true` when recorded.
pub(crate) async fn record_verdict<A: Aws>(
    ctx: &Ctx<A>,
    (start, started_ms, whole): (&ControlState, i64, bool),
    sample: f64,
    remaining: u64,
) -> Result<bool> {
    let clean = remaining == 0;
    if clean && (sample < 100.0 || !whole) {
        return Ok(false);
    }
    let verdict = match (clean, sample < 100.0) {
        (true, _) => "clean".to_string(),
        (false, false) => format!("{remaining} difference(s) at {}", rfc3339(ctx.now_ms())),
        (false, true) => format!(
            "{remaining} difference(s) in a {sample}% sample at {}",
            rfc3339(ctx.now_ms())
        ),
    };
    let fence = Fence::of(start);
    for _ in 0..3 {
        let read = ctx.control().await?;
        let moved = if clean {
            read.version != start.version
        } else {
            fence.moved(&read).is_some()
        };
        if moved {
            break;
        }
        let next = ControlState {
            last_verify: Some(verdict.clone()),
            verify_ms: Some(started_ms),
            ..read.clone()
        };
        if ctx.write_control(&read, next).await.is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Adds a difference to the report's examples (at most [`EXAMPLES`] of each
/// kind).
pub(crate) fn add_example(ex: &mut Examples, kind: Kind, key: &relay_core::item::Attrs) {
    let shown = match kind {
        Kind::Missing => &mut ex.missing,
        Kind::Changed => &mut ex.changed,
        Kind::Extra => &mut ex.extra,
    };
    if shown.len() < EXAMPLES {
        shown.push(serde_json::to_value(key).unwrap_or_default());
    }
}

pub async fn verify<A: Aws>(
    ctx: &Ctx<A>,
    sample: f64,
    repair_them: bool,
    recheck_wait: u64,
    limits: CopyArgs,
    spill: &SpillArgs,
) -> Result<VerifyReport> {
    let s = &ctx.stack;
    let loaded = crate::transform::load(ctx).await?;
    let t = loaded.transform.as_ref();
    let source_keys = &loaded.source_keys;
    let tkeys = t.target_key_names();
    let ttl = kept_ttl(ctx).await?;
    let through = (t, source_keys.as_slice(), ttl.as_deref());
    let began = Instant::now();
    let started_ms = ctx.now_ms();
    let start_control = ctx.control().await?;
    let whole = may_record(ctx, &start_control).await;
    if repair_them {
        // Known now: refused before hours of comparing, not after.
        refuse_repairs_unless_seeded(&start_control)?;
    }
    let dir = spill.work_dir.as_deref();
    let budget = spill.memory_mb.saturating_mul(1 << 20);
    let bp = diff::basis_points(sample);

    // 1. Both sides, partitioned by target key into files: the source
    //    through the transform, and the target.
    let mut size = 0u64;
    for table in [&s.source_table, &s.target_table] {
        if let Ok(Some(info)) = ctx.aws.describe(table).await {
            // Without a size, the item count at 1 KB an item; both are 0
            // (unknown) for hours after a restore.
            let bytes = info
                .size_bytes
                .filter(|b| *b > 0)
                .or(info.item_count.map(|n| n.saturating_mul(1024)));
            size += bytes.unwrap_or(0).max(0) as u64;
        }
    }
    // Records are DynamoDB JSON, about twice the stored size.
    let parts: Spill<Seen> = Spill::new(dir, size.saturating_mul(2), budget)?;
    ctx.step(&format!(
        "comparing in {} MiB of memory; spill files under {}",
        spill.memory_mb,
        dir.map_or_else(
            || std::env::temp_dir().display().to_string(),
            |d| d.display().to_string()
        )
    ));
    let unmappable = std::sync::atomic::AtomicU64::new(0);
    let source_items = for_each_page(
        ctx,
        &s.source_table,
        limits.segments,
        "reading the source",
        |items| {
            let (parts, unmappable, tkeys) = (&parts, &unmappable, &tkeys);
            async move {
                let n = items.len() as u64;
                for item in items {
                    let mapped = t
                        .item(&item)
                        .ok()
                        .and_then(|out| key_of(&out, tkeys).map(|k| (k, out)));
                    let Some((k, out)) = mapped else {
                        unmappable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    };
                    let ck = CanonicalKey::of(&k);
                    if diff::sampled(&ck, bp) {
                        let source = key_of(&item, source_keys);
                        parts.push(&ck, &Seen::Expected { item: out, source })?;
                    }
                }
                Ok(n)
            }
        },
    )
    .await?;
    for_each_page(
        ctx,
        &s.target_table,
        limits.segments,
        "reading the target",
        |items| {
            let (parts, tkeys) = (&parts, &tkeys);
            async move {
                for item in items {
                    let Some(ck) = key_of(&item, tkeys).map(|k| CanonicalKey::of(&k)) else {
                        continue;
                    };
                    if diff::sampled(&ck, bp) {
                        let names = t.source_key_of(&item, source_keys);
                        parts.push(&ck, &Seen::Actual { item, names })?;
                    }
                }
                Ok(0)
            }
        },
    )
    .await?;

    // 2. One partition at a time: both sides of each key meet; what differs
    //    (or was contested by several source items) is a suspect.
    let (mut expected, mut actual, mut mismatched) = (0u64, 0u64, 0u64);
    let mut pending: Queue<Suspect> = Queue::new(dir)?;
    ctx.step("comparing the tables partition by partition");
    let spilled = parts.drain(|records| {
        let c = diff::compare(records, &tkeys);
        expected += c.expected;
        actual += c.actual;
        mismatched += c.mismatched;
        c.suspects.iter().try_for_each(|x| pending.push(x))
    })?;
    let compared = expected.max(actual);

    // 3. Re-check the suspects with consistent reads after a pause, in up
    //    to three rounds: a key that is only behind (lag) agrees within a
    //    round or two; a divergent one stays different.
    let mut n = VerifyCounts::default();
    for _ in 0..3 {
        if pending.len == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(recheck_wait)).await;
        pending = recheck(ctx, through, pending, (dir, &mut n.ttl_kept)).await?;
    }
    let mut examples = Examples::default();
    let repair_in = if repair_them && pending.len > 0 {
        ctx.step(&format!(
            "{} item(s) still differ after the re-checks: repairing them from the source",
            pending.len
        ));
        let now = ctx.control().await?;
        refuse_repairs_unless_seeded(&now)?;
        Some(Fence::of(&now))
    } else {
        None
    };
    for chunk in pending.chunks(CHUNK)? {
        settle(
            ctx,
            through,
            chunk?,
            (repair_in.as_ref(), recheck_wait),
            &mut n,
            &mut |k, key| add_example(&mut examples, k, key),
        )
        .await?;
    }
    // A source item the transform cannot map is not in the target either:
    // never clean.
    let unmappable = unmappable.into_inner();
    let left = n.remaining + unmappable;
    let clean = left == 0;
    let recorded = record_verdict(ctx, (&start_control, started_ms, whole), sample, left).await?;
    let took = began.elapsed().as_secs_f64();
    Ok(VerifyReport {
        stack: s.name.clone(),
        clean,
        sample_percent: sample,
        source_items,
        compared,
        unmappable,
        missing: n.missing,
        changed: n.changed,
        extra: n.extra,
        lag_resolved: mismatched.saturating_sub(n.still_mismatched + n.ttl_kept),
        ttl_kept: n.ttl_kept,
        repaired: n.repaired,
        remaining: n.remaining,
        unrepairable: n.unrepairable,
        seconds: took,
        items_per_s: (source_items + compared) as f64 / took.max(0.001),
        recorded,
        examples,
        spill: spilled,
        fanned_out: None,
        repair: repair_them,
    })
}
