//! The scan copy (`seed --method scan`, `restart --method scan`) and
//! `verify`, both through the same transform as the applier.
//!
//! **Invariant:** the scan copy never overwrites: each put requires the
//! target key to be absent, so a newer image or a tombstone written by the
//! applier wins over the (older) scanned copy.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures::future::try_join_all;
use indicatif::{ProgressBar, ProgressStyle};
use relay_aws::runtime::now_ms;
use relay_core::apply::{is_tombstone, TOMBSTONE_ATTR};
use relay_core::control::{cutoff_for_seed, ControlState, Mode};
use relay_core::diff::{self, key_of, Keyed};
use relay_core::item::{AttributeValue, Attrs, CanonicalKey};
use relay_core::transform::{remove_mapping_supported, Declarative, Identity, Transform};
use serde_json::json;

use crate::commands::emit;
use crate::ctx::{explain, rfc3339, Ctx};

/// The transform from `--transform` (or none), for the source's key schema.
pub async fn transform(ctx: &Ctx) -> Result<(Box<dyn Transform>, Vec<String>)> {
    let s = &ctx.stack;
    let src = ctx
        .ops
        .table(&s.source_table)
        .await
        .map_err(|e| explain(e, &s.source_table))?
        .ok_or_else(|| anyhow!("source table {} not found", s.source_table))?;
    let t: Box<dyn Transform> = match &ctx.transform_file {
        None => Box::new(Identity {
            key_names: src.key_names.clone(),
        }),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow!("cannot read the transform {}: {e}", path.display()))?;
            Box::new(
                Declarative::parse(&text, &src.key_names)
                    .map_err(|e| anyhow!("{}: {e}", path.display()))?,
            )
        }
    };
    Ok((t, src.key_names))
}

/// The preflight line for the transform and the stream view.
pub fn remove_mapping_check(
    t: &dyn Transform,
    source_keys: &[String],
    view: Option<&str>,
) -> relay_core::ops::Check {
    use relay_core::ops::Check;
    match remove_mapping_supported(t, source_keys, view) {
        Ok(()) => Check::pass(
            "transform key derivation",
            format!(
                "target key {:?} from {:?}",
                t.target_key_names(),
                t.key_sources()
            ),
        ),
        Err(why) => Check::fail("transform key derivation", why),
    }
}

fn bar(len: Option<u64>, what: &str) -> ProgressBar {
    let b = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    b.set_style(
        ProgressStyle::with_template(
            "    {spinner} {msg} {pos}/{len} items ({per_sec}, {elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_message(what.to_string());
    b
}

/// Simple rate limit: after `done` items, sleep until `done / rate` seconds
/// have passed.
async fn pace(start: Instant, done: u64, rate: u64) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(done as f64 / rate as f64);
    if let Some(wait) = due.checked_sub(start.elapsed()) {
        tokio::time::sleep(wait).await;
    }
}

/// Scans a whole table in `segments` parallel segments.
async fn scan_all(
    ctx: &Ctx,
    table: &str,
    segments: i32,
    rate: u64,
    pb: &ProgressBar,
) -> Result<Vec<Attrs>> {
    let start = Instant::now();
    let count = AtomicU64::new(0);
    let parts = try_join_all((0..segments).map(|seg| {
        let count = &count;
        async move {
            let mut out = Vec::new();
            let mut next = None;
            loop {
                let (items, more) = ctx
                    .ops
                    .scan_page(table, seg, segments, next.take(), true)
                    .await
                    .map_err(|e| explain(e, table))?;
                let n = items.len() as u64;
                out.extend(items);
                pb.inc(n);
                let done = count.fetch_add(n, Ordering::Relaxed) + n;
                pace(start, done, rate).await;
                match more {
                    Some(k) => next = Some(k),
                    None => return Ok::<_, anyhow::Error>(out),
                }
            }
        }
    }))
    .await?;
    Ok(parts.into_iter().flatten().collect())
}

/// How hard the scan copy may push.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub segments: i32,
    /// Items per second (0: no limit).
    pub rate: u64,
    /// Consumed write capacity units per second (0: no limit).
    pub max_wcu: u64,
}

/// The checkpoint item of a scan copy, beside the control item.
fn checkpoint_key(ctx: &Ctx) -> Attrs {
    Attrs::from([(
        relay_core::control::ATTR_MIGRATION.to_string(),
        AttributeValue::S(format!("{}#scan", ctx.stack.migration)),
    )])
}

/// Forgets a scan copy's checkpoints (a restart copies from the start).
pub async fn forget_checkpoints(ctx: &Ctx) -> Result<()> {
    ctx.ops
        .delete_item(&ctx.stack.control_table, &checkpoint_key(ctx))
        .await
        .map_err(|e| explain(e, "control table"))
}

/// Where each segment stands: `None` = start, `Some(None)` = done,
/// `Some(Some(key))` = continue after `key`.
fn segment_positions(item: &Attrs, segments: i32) -> Vec<Option<Option<Attrs>>> {
    (0..segments)
        .map(|i| match item.get(&format!("seg_{i}")) {
            Some(AttributeValue::S(s)) if s == "done" => Some(None),
            Some(AttributeValue::S(s)) => serde_json::from_str::<Attrs>(s).ok().map(Some),
            _ => None,
        })
        .collect()
}

/// Scan copy: tombstone mode and cutoff first, applier on, copy with
/// conditional puts (resumable from per-segment checkpoints), normal mode,
/// tombstones swept.
pub async fn seed_scan(ctx: &Ctx, limits: Limits, dry_run: bool) -> Result<i32> {
    let Limits {
        segments,
        rate,
        max_wcu,
    } = limits;
    let s = &ctx.stack;
    let (t, _) = transform(ctx).await?;
    let target = ctx
        .ops
        .table(&s.target_table)
        .await
        .map_err(|e| explain(e, &s.target_table))?
        .ok_or_else(|| anyhow!("target table {} does not exist: a scan copy writes into a table your IaC created (with key {:?})", s.target_table, t.target_key_names()))?;
    let mut want = t.target_key_names();
    let mut have = target.key_names.clone();
    want.sort();
    have.sort();
    if want != have {
        bail!(
            "target table {} is keyed on {:?}, but the transform produces {:?}: fix --transform or the table",
            s.target_table,
            target.key_names,
            t.target_key_names()
        );
    }
    let read = ctx.control().await?;
    let ckey = checkpoint_key(ctx);
    let checkpoint = ctx
        .ops
        .get_item(&s.control_table, &ckey)
        .await
        .map_err(|e| explain(e, "control table"))?;
    let number = |item: &Attrs, n: &str| match item.get(n) {
        Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
        _ => None,
    };
    // A copy that stopped halfway (same seed, same segments) continues.
    let resuming = matches!(
        (&checkpoint, read.seed_ms, read.cutoff_ms),
        (Some(c), Some(seed), Some(_))
            if read.seed_method.as_deref() == Some("scan")
                && read.mode == Mode::Tombstone
                && number(c, "seed_ms") == Some(seed)
                && number(c, "segments") == Some(i64::from(segments))
    );
    let start_ms = if resuming {
        read.seed_ms.unwrap_or_else(now_ms)
    } else {
        now_ms()
    };
    let cutoff = if resuming {
        read.cutoff_ms.unwrap_or(0)
    } else {
        cutoff_for_seed(start_ms, s.margin_ms)
    };
    if dry_run {
        emit(ctx, &json!({"stack": s.name, "method": "scan", "dry_run": true, "cutoff_ms": cutoff, "resuming": resuming, "target_key": t.target_key_names()}),
            &format!("dry run: would {}switch the applier to tombstone mode with cutoff {}, enable it, copy {} into {} ({segments} segments, puts only where the key is absent), then return to normal mode and delete the tombstones", if resuming { "resume the stopped copy; " } else { "" }, rfc3339(cutoff), s.source_table, s.target_table));
        return Ok(0);
    }
    let positions = if resuming {
        ctx.step("resuming the scan copy from its checkpoints (same cutoff)");
        segment_positions(checkpoint.as_ref().unwrap_or(&ckey), segments)
    } else {
        ctx.step(&format!(
            "tombstone mode, cutoff {} (scan start - {} s)",
            rfc3339(cutoff),
            s.margin_ms / 1000
        ));
        ctx.write_control(
            &read,
            ControlState {
                cutoff_ms: Some(cutoff),
                mode: Mode::Tombstone,
                seed_method: Some("scan".into()),
                seed_ms: Some(start_ms),
                ..read.clone()
            },
        )
        .await?;
        let mut c = ckey.clone();
        c.insert("seed_ms".into(), AttributeValue::N(start_ms.to_string()));
        c.insert("segments".into(), AttributeValue::N(segments.to_string()));
        ctx.ops
            .put_item(&s.control_table, &c)
            .await
            .map_err(|e| explain(e, "control table"))?;
        vec![None; segments as usize]
    };
    let (uuid, state) = ctx.applier_trigger().await?;
    if state != "Enabled" {
        ctx.step("enabling the applier (deletes during the copy become tombstones)");
        ctx.set_trigger(&uuid, true, "applier trigger").await?;
    }
    // Let every applier see tombstone mode before the copy starts.
    tokio::time::sleep(Duration::from_secs(6)).await;

    ctx.step(&format!(
        "copying {} -> {} ({segments} segments)",
        s.source_table, s.target_table
    ));
    let key_attr = t.target_key_names().first().cloned().unwrap_or_default();
    let pb = bar(
        ctx.ops
            .table(&s.source_table)
            .await
            .ok()
            .flatten()
            .and_then(|x| x.item_count)
            .map(|n| n as u64),
        "scan copy",
    );
    let copied = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let began = Instant::now();
    let seen = AtomicU64::new(0);
    let wcu_milli = AtomicU64::new(0);
    try_join_all((0..segments).map(|seg| {
        let (copied, skipped, seen, wcu_milli) = (&copied, &skipped, &seen, &wcu_milli);
        let (t, key_attr, pb, ckey) = (&t, &key_attr, &pb, &ckey);
        let position = positions.get(seg as usize).cloned().flatten();
        async move {
            let mut next = match position {
                Some(None) => return Ok::<(), anyhow::Error>(()),
                Some(Some(k)) => Some(k),
                None => None,
            };
            loop {
                let (items, more) = ctx
                    .ops
                    .scan_page(&s.source_table, seg, segments, next.take(), false)
                    .await
                    .map_err(|e| explain(e, &s.source_table))?;
                for item in &items {
                    let out = t
                        .item(item)
                        .map_err(|e| anyhow!("the transform cannot map a source item: {e}"))?;
                    let (written, wcu) = ctx
                        .ops
                        .put_if_absent(&s.target_table, &out, key_attr)
                        .await
                        .map_err(|e| explain(e, &s.target_table))?;
                    if written {
                        copied.fetch_add(1, Ordering::Relaxed);
                    } else {
                        skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    pb.inc(1);
                    let done = seen.fetch_add(1, Ordering::Relaxed) + 1;
                    pace(began, done, rate).await;
                    // Capacity as DynamoDB reports it (1 unit when it does not).
                    let used = (wcu.unwrap_or(1.0) * 1000.0) as u64;
                    let total = wcu_milli.fetch_add(used, Ordering::Relaxed) + used;
                    pace(began, total / 1000, max_wcu).await;
                }
                // The segment's checkpoint: resume after this page.
                let mark = match &more {
                    Some(k) => AttributeValue::S(serde_json::to_string(k).unwrap_or_default()),
                    None => AttributeValue::S("done".into()),
                };
                ctx.ops
                    .set_attr(&s.control_table, ckey, &format!("seg_{seg}"), mark)
                    .await
                    .map_err(|e| explain(e, "control table"))?;
                match more {
                    Some(k) => next = Some(k),
                    None => return Ok(()),
                }
            }
        }
    }))
    .await?;
    pb.finish_and_clear();
    let took = began.elapsed().as_secs_f64();

    ctx.step("normal mode; deleting tombstones");
    let read = ctx.control().await?;
    ctx.write_control(
        &read,
        ControlState {
            mode: Mode::Normal,
            ..read.clone()
        },
    )
    .await?;
    // The applier caches the control item for a few seconds: wait, then sweep.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let swept = sweep_tombstones(ctx, &t.target_key_names(), segments).await?;
    forget_checkpoints(ctx).await?;
    let (copied, skipped) = (copied.into_inner(), skipped.into_inner());
    emit(
        ctx,
        &json!({"stack": s.name, "method": "scan", "seed_ms": start_ms, "cutoff_ms": cutoff, "resumed": resuming, "copied": copied, "skipped_existing": skipped, "tombstones_deleted": swept, "seconds": took, "items_per_s": (copied + skipped) as f64 / took.max(0.001), "already": false, "dry_run": false}),
        &format!(
            "scan copy done: {copied} copied, {skipped} already there (newer or deleted), {swept} tombstones removed, {:.0} items/s; cutoff {}. The applier is running: `ddb-relay verify`",
            (copied + skipped) as f64 / took.max(0.001),
            rfc3339(cutoff)
        ),
    );
    Ok(0)
}

/// Deletes every tombstone still in the target; returns how many.
async fn sweep_tombstones(ctx: &Ctx, key_names: &[String], segments: i32) -> Result<u64> {
    let s = &ctx.stack;
    let mut deleted = 0;
    let pb = bar(None, "tombstone sweep");
    for item in scan_all(ctx, &s.target_table, segments, 0, &pb).await? {
        if is_tombstone(&item) {
            if let Some(key) = key_of(&item, key_names) {
                if ctx
                    .ops
                    .delete_if_marked(&s.target_table, &key, TOMBSTONE_ATTR)
                    .await
                    .map_err(|e| explain(e, &s.target_table))?
                {
                    deleted += 1;
                }
            }
        }
    }
    pb.finish_and_clear();
    Ok(deleted)
}

/// Deletes every item of the target (before a fresh scan copy).
pub async fn clear_target(ctx: &Ctx, segments: i32) -> Result<u64> {
    let s = &ctx.stack;
    let target = ctx
        .ops
        .table(&s.target_table)
        .await
        .map_err(|e| explain(e, &s.target_table))?
        .ok_or_else(|| anyhow!("target table {} not found", s.target_table))?;
    let pb = bar(None, "clearing the target");
    let mut n = 0;
    for item in scan_all(ctx, &s.target_table, segments, 0, &pb).await? {
        if let Some(key) = key_of(&item, &target.key_names) {
            ctx.ops
                .delete_item(&s.target_table, &key)
                .await
                .map_err(|e| explain(e, &s.target_table))?;
            n += 1;
        }
    }
    pb.finish_and_clear();
    Ok(n)
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

/// `verify`: expected target (source through the transform) against the
/// actual target; mismatches re-checked with consistent reads; `--repair`.
pub async fn verify(
    ctx: &Ctx,
    sample: f64,
    repair: bool,
    recheck_wait: u64,
    segments: i32,
    rate: u64,
) -> Result<i32> {
    let s = &ctx.stack;
    let (t, source_keys) = transform(ctx).await?;
    let tkeys = t.target_key_names();
    let began = Instant::now();

    let pb = bar(None, "reading the source");
    let source_items = scan_all(ctx, &s.source_table, segments, rate, &pb).await?;
    pb.finish_and_clear();
    let mut expected = Keyed::new();
    let mut origin: BTreeMap<CanonicalKey, Attrs> = BTreeMap::new();
    let mut unmappable = 0u64;
    for item in &source_items {
        match t.item(item) {
            Ok(out) => match key_of(&out, &tkeys) {
                Some(k) => {
                    let ck = CanonicalKey::of(&k);
                    if sampled(&ck, sample) {
                        if let Some(src_key) = key_of(item, &source_keys) {
                            origin.insert(ck.clone(), src_key);
                        }
                        expected.insert(ck, out);
                    }
                }
                None => unmappable += 1,
            },
            Err(_) => unmappable += 1,
        }
    }
    let pb = bar(None, "reading the target");
    let target_items = scan_all(ctx, &s.target_table, segments, rate, &pb).await?;
    pb.finish_and_clear();
    let (actual, _) = diff::index(target_items.into_iter().filter(|_| true), &tkeys);
    let actual: Keyed = actual
        .into_iter()
        .filter(|(k, _)| sampled(k, sample))
        .collect();
    let first = diff::diff(&expected, &actual);
    let compared = expected.len().max(actual.len());

    // Re-check mismatches after a pause, with consistent reads: lag is not divergence.
    let mut suspects: Vec<CanonicalKey> = first
        .missing
        .iter()
        .chain(&first.changed)
        .chain(&first.extra)
        .cloned()
        .collect();
    suspects.sort();
    suspects.dedup();
    if !suspects.is_empty() {
        tokio::time::sleep(Duration::from_secs(recheck_wait)).await;
    }
    let target_key_of = |ck: &CanonicalKey| -> Option<Attrs> {
        expected
            .get(ck)
            .or_else(|| actual.get(ck))
            .and_then(|i| key_of(i, &tkeys))
    };
    let mut missing = Vec::new();
    let mut changed = Vec::new();
    let mut extra = Vec::new();
    for ck in &suspects {
        let Some(tkey) = target_key_of(ck) else {
            continue;
        };
        let now_target = ctx
            .ops
            .get_item(&s.target_table, &tkey)
            .await
            .map_err(|e| explain(e, &s.target_table))?;
        let now_expected = match origin.get(ck) {
            Some(src_key) => match ctx
                .ops
                .get_item(&s.source_table, src_key)
                .await
                .map_err(|e| explain(e, &s.source_table))?
            {
                Some(item) => t.item(&item).ok(),
                None => None,
            },
            // No source item maps here (an extra): with an identity key the
            // source may have gained it since the scan.
            None if t.is_identity_key() => ctx
                .ops
                .get_item(&s.source_table, &tkey)
                .await
                .map_err(|e| explain(e, &s.source_table))?,
            None => None,
        };
        match (now_expected, now_target) {
            (Some(e), Some(a)) if CanonicalKey::of(&e) == CanonicalKey::of(&a) => {}
            (Some(e), Some(_)) => changed.push((tkey, Some(e))),
            (Some(e), None) => missing.push((tkey, Some(e))),
            (None, Some(_)) => extra.push((tkey, None)),
            (None, None) => {}
        }
    }
    let differences = missing.len() + changed.len() + extra.len();

    let mut repaired = 0usize;
    let mut still = differences;
    if repair && differences > 0 {
        ctx.step(&format!("repairing {differences} item(s) from the source"));
        for (key, want) in missing.iter().chain(&changed).chain(&extra) {
            match want {
                Some(item) => ctx
                    .ops
                    .put_item(&s.target_table, item)
                    .await
                    .map_err(|e| explain(e, &s.target_table))?,
                None => ctx
                    .ops
                    .delete_item(&s.target_table, key)
                    .await
                    .map_err(|e| explain(e, &s.target_table))?,
            }
        }
        // Re-verify what was touched.
        still = 0;
        for (key, want) in missing.iter().chain(&changed).chain(&extra) {
            let got = ctx
                .ops
                .get_item(&s.target_table, key)
                .await
                .map_err(|e| explain(e, &s.target_table))?;
            let ok = match (want, &got) {
                (Some(w), Some(g)) => CanonicalKey::of(w) == CanonicalKey::of(g),
                (None, None) => true,
                _ => false,
            };
            if ok {
                repaired += 1;
            } else {
                still += 1;
            }
        }
    }
    let took = began.elapsed().as_secs_f64();
    let verdict = if still == 0 {
        "clean".to_string()
    } else {
        format!("{still} difference(s) at {}", rfc3339(now_ms()))
    };
    if sample >= 100.0 {
        let read = ctx.control().await?;
        ctx.write_control(
            &read,
            ControlState {
                last_verify: Some(verdict.clone()),
                ..read.clone()
            },
        )
        .await?;
    }
    let show = |v: &[(Attrs, Option<Attrs>)]| {
        v.iter()
            .take(20)
            .map(|(k, _)| serde_json::to_value(k).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let value = json!({
        "stack": s.name,
        "clean": still == 0,
        "sample_percent": sample,
        "source_items": source_items.len(),
        "compared": compared,
        "unmappable": unmappable,
        "missing": missing.len(),
        "changed": changed.len(),
        "extra": extra.len(),
        "lag_resolved": suspects.len() - differences,
        "repaired": repaired,
        "remaining": still,
        "seconds": took,
        "items_per_s": (source_items.len() + compared) as f64 / took.max(0.001),
        "examples": {"missing": show(&missing), "changed": show(&changed), "extra": show(&extra)},
    });
    emit(
        ctx,
        &value,
        &format!(
            "verify {}: {} source items, {compared} compared ({sample}% sample): {} missing, {} different, {} extra{}{}; {:.1} s",
            if still == 0 { "CLEAN" } else { "DIVERGED" },
            source_items.len(),
            missing.len(),
            changed.len(),
            extra.len(),
            if suspects.len() > differences { format!(" ({} mismatches were lag and resolved on re-check)", suspects.len() - differences) } else { String::new() },
            if repair { format!("; repaired {repaired}, {still} remaining") } else if differences > 0 { "; fix with `ddb-relay verify --repair`".into() } else { String::new() },
            took
        ),
    );
    Ok(if still == 0 { 0 } else { crate::EXIT_NO_GO })
}
