//! `verify`: the source through the transform against the target; what
//! differs is re-checked with consistent reads after a pause (lag is not
//! divergence), and `--repair` brings each difference to the source's
//! current state through `repair.rs`.
//!
//! **Invariant:** "clean" means source and target agree when re-read, not
//! that the target matches an earlier snapshot; the verdict is recorded for
//! `cutover` only for a full verify of the seed that is still current.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use relay_aws::operator::Aws;
use relay_core::control::ControlState;
use relay_core::diff::{self, key_of, Keyed};
use relay_core::item::{Attrs, CanonicalKey};
use serde::Serialize;

use super::scan::for_each_page;
use crate::args::CopyArgs;
use crate::ctx::{explain, rfc3339, Ctx};
use crate::repair::{agrees, repair};
use crate::report::{Report, EXIT_NO_GO};

#[derive(Debug, Default, Serialize)]
pub struct Examples {
    pub missing: Vec<serde_json::Value>,
    pub changed: Vec<serde_json::Value>,
    pub extra: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub stack: String,
    /// Source and target agree (after re-checks and repairs).
    pub clean: bool,
    pub sample_percent: f64,
    pub source_items: u64,
    pub compared: u64,
    pub unmappable: u64,
    /// Differences found (after the lag re-check), by kind.
    pub missing: u64,
    pub changed: u64,
    pub extra: u64,
    /// Mismatches of the first pass that were lag: they agreed on re-check.
    pub lag_resolved: u64,
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
    #[serde(skip)]
    repair: bool,
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
        if self.repair {
            t.push_str(&format!(
                "; repaired {}, {} remaining",
                self.repaired, self.remaining
            ));
        }
        if self.unrepairable > 0 {
            t.push_str(&format!(
                "; {} extra item(s) carry no source key, so their source cannot be checked: delete them by hand if they are orphans",
                self.unrepairable
            ));
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
            t.push_str("\n(not recorded for cutover: the target was re-seeded while verify ran)");
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

/// Repairs wait for a running scan copy: they would otherwise write in one
/// mode while the copy and the sweep work in another.
pub fn refuse_repairs_during_a_copy(mode: relay_core::control::Mode) -> Result<()> {
    if mode == relay_core::control::Mode::Tombstone {
        anyhow::bail!("a scan copy is running (tombstone mode): repair after it finishes (`ddb-relay status` shows the mode)");
    }
    Ok(())
}

fn sampled(key: &CanonicalKey, percent: f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    let h = key
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
    (h % 10_000) as f64 / 100.0 < percent
}

/// One difference: the target key, and the source items that may own it
/// (every source item the scan saw mapping there, and the one the target
/// item names; under a key that passes between items there can be several).
struct Suspect {
    target_key: Attrs,
    sources: Vec<Attrs>,
}

pub async fn verify<A: Aws>(
    ctx: &Ctx<A>,
    sample: f64,
    repair_them: bool,
    recheck_wait: u64,
    limits: CopyArgs,
) -> Result<VerifyReport> {
    let s = &ctx.stack;
    let loaded = crate::transform::load(ctx).await?;
    let t = loaded.transform.as_ref();
    let source_keys = &loaded.source_keys;
    let tkeys = t.target_key_names();
    let began = Instant::now();
    let start_control = ctx.control().await?;

    // 1. Expected (source through the transform) and actual target items.
    let expected = Mutex::new(Keyed::new());
    let origin: Mutex<BTreeMap<CanonicalKey, Vec<Attrs>>> = Mutex::default();
    let unmappable = std::sync::atomic::AtomicU64::new(0);
    let source_items = for_each_page(
        ctx,
        &s.source_table,
        limits.segments,
        "reading the source",
        |items| {
            let (expected, origin, unmappable, tkeys) = (&expected, &origin, &unmappable, &tkeys);
            async move {
                let n = items.len() as u64;
                for item in items {
                    let mapped = t
                        .item(&item)
                        .ok()
                        .and_then(|out| key_of(&out, tkeys).map(|k| (k, out)));
                    match mapped {
                        Some((k, out)) => {
                            let ck = CanonicalKey::of(&k);
                            if sampled(&ck, sample) {
                                if let Some(src_key) = key_of(&item, source_keys) {
                                    origin
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .entry(ck.clone())
                                        .or_default()
                                        .push(src_key);
                                }
                                expected
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(ck, out);
                            }
                        }
                        None => {
                            unmappable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
                Ok(n)
            }
        },
    )
    .await?;
    let actual = Mutex::new(Keyed::new());
    for_each_page(
        ctx,
        &s.target_table,
        limits.segments,
        "reading the target",
        |items| {
            let (actual, tkeys) = (&actual, &tkeys);
            async move {
                let (indexed, _) = diff::index(items, tkeys);
                let mut a = actual.lock().unwrap_or_else(|p| p.into_inner());
                a.extend(indexed.into_iter().filter(|(k, _)| sampled(k, sample)));
                Ok(0)
            }
        },
    )
    .await?;
    let (expected, origin, actual) = (
        expected.into_inner().unwrap_or_default(),
        origin.into_inner().unwrap_or_default(),
        actual.into_inner().unwrap_or_default(),
    );
    let first = diff::diff(&expected, &actual);
    let compared = expected.len().max(actual.len()) as u64;

    // 2. Re-check the mismatches with consistent reads after a pause, in
    //    up to three rounds: a key that is only behind (lag) agrees within
    //    a round or two; a divergent one stays different.
    // A key the scan saw several source items map to (one gave it up, one
    // took it, between two pages) compared against whichever came last:
    // re-checked too, whatever the first comparison said.
    let contested = origin
        .iter()
        .filter(|(_, sources)| sources.len() > 1)
        .map(|(ck, _)| ck);
    let mut suspects: Vec<CanonicalKey> = first
        .missing
        .iter()
        .chain(&first.changed)
        .chain(&first.extra)
        .chain(contested)
        .cloned()
        .collect();
    let mismatched = first.missing.len() + first.changed.len() + first.extra.len();
    suspects.sort();
    suspects.dedup();
    let mut pending: Vec<(CanonicalKey, Suspect)> = suspects
        .iter()
        .filter_map(|ck| {
            let item = expected.get(ck).or_else(|| actual.get(ck))?;
            let target_key = key_of(item, &tkeys)?;
            let mut sources = origin.get(ck).cloned().unwrap_or_default();
            if let Some(named) = actual
                .get(ck)
                .and_then(|target_item| t.source_key_of(target_item, source_keys))
            {
                if !sources
                    .iter()
                    .any(|k| CanonicalKey::of(k) == CanonicalKey::of(&named))
                {
                    sources.push(named);
                }
            }
            Some((
                ck.clone(),
                Suspect {
                    target_key,
                    sources,
                },
            ))
        })
        .collect();
    for _ in 0..3 {
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(recheck_wait)).await;
        let mut still = Vec::with_capacity(pending.len());
        for (ck, x) in pending {
            if !agrees(ctx, t, &x.sources, &x.target_key).await? {
                still.push((ck, x));
            }
        }
        pending = still;
    }
    let mut missing = Vec::new();
    let mut changed = Vec::new();
    let mut extra = Vec::new();
    for (ck, x) in pending {
        let here = ctx
            .aws
            .get_item(&s.target_table, &x.target_key)
            .await
            .map_err(|e| explain(e, &s.target_table))?
            .is_some();
        match (expected.contains_key(&ck), here) {
            (true, false) => missing.push(x),
            (true, true) => changed.push(x),
            (false, _) => extra.push(x),
        }
    }
    let differences = (missing.len() + changed.len() + extra.len()) as u64;

    // 3. Repair from the source's current state, then re-check each.
    let mut repaired = 0u64;
    let mut remaining = differences;
    let unrepairable = extra.iter().filter(|x| x.sources.is_empty()).count() as u64;
    if repair_them && differences > 0 {
        ctx.step(&format!("repairing {differences} item(s) from the source"));
        let mode = ctx.control().await?.mode;
        refuse_repairs_during_a_copy(mode)?;
        remaining = 0;
        for x in missing.iter().chain(&changed).chain(&extra) {
            if x.sources.is_empty() {
                remaining += 1;
                continue;
            }
            // Each candidate owner converges to its source item's state;
            // the key ends with whichever maps there now.
            let mut failed = false;
            for sk in &x.sources {
                if let Err(e) = repair(ctx, t, mode, sk, std::slice::from_ref(&x.target_key)).await
                {
                    ctx.step(&format!("a repair did not complete: {e}"));
                    failed = true;
                }
            }
            if failed {
                remaining += 1;
                continue;
            }
            // Re-read: lag after the repair is the applier catching up.
            let mut ok = false;
            for wait in [0u64, recheck_wait.max(1), recheck_wait.max(1) * 3] {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                if agrees(ctx, t, &x.sources, &x.target_key).await? {
                    ok = true;
                    break;
                }
            }
            if ok {
                repaired += 1;
            } else {
                remaining += 1;
            }
        }
    }
    let clean = remaining == 0;

    // 4. The verdict, for cutover: a full verify of the current seed only.
    let mut recorded = false;
    if sample >= 100.0 {
        let verdict = if clean {
            "clean".to_string()
        } else {
            format!("{remaining} difference(s) at {}", rfc3339(ctx.now_ms()))
        };
        for _ in 0..3 {
            let read = ctx.control().await?;
            if read.seed_ms != start_control.seed_ms
                || read.seed_method != start_control.seed_method
            {
                break;
            }
            match ctx
                .write_control(
                    &read,
                    ControlState {
                        last_verify: Some(verdict.clone()),
                        ..read.clone()
                    },
                )
                .await
            {
                Ok(_) => {
                    recorded = true;
                    break;
                }
                Err(_) => continue,
            }
        }
    }
    let show = |v: &[Suspect]| {
        v.iter()
            .take(20)
            .map(|x| serde_json::to_value(&x.target_key).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let took = began.elapsed().as_secs_f64();
    Ok(VerifyReport {
        stack: s.name.clone(),
        clean,
        sample_percent: sample,
        source_items,
        compared,
        unmappable: unmappable.into_inner(),
        missing: missing.len() as u64,
        changed: changed.len() as u64,
        extra: extra.len() as u64,
        lag_resolved: (mismatched as u64).saturating_sub(differences),
        repaired,
        remaining,
        unrepairable,
        seconds: took,
        items_per_s: (source_items + compared) as f64 / took.max(0.001),
        recorded,
        examples: Examples {
            missing: show(&missing),
            changed: show(&changed),
            extra: show(&extra),
        },
        repair: repair_them,
    })
}
