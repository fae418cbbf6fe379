//! Repairs: bring a target item to its source item's current state, through
//! the transform, without ever overwriting a newer change.
//!
//! The writes are what the applier would write for a refetch marker
//! ([`relay_core::apply::converge`]: the transformed item at its target key,
//! deletes of stale keys). What makes a repair safe beside a running
//! applier is the order of its steps, per target key it will touch:
//!
//! 1. mark the target item with a random token (an attribute; a
//!    placeholder item when it is absent);
//! 2. read the source item, consistently;
//! 3. write (or delete) on the condition that the token is still there.
//!
//! Any applier write between 1 and 3 replaces or deletes the whole item, so
//! the token is gone and the repair's write is refused: the repair starts
//! over from fresh reads. A write after 3 belongs to a change made after the
//! source read of 2, so it is newer. Either way the target never moves
//! backwards.
//!
//! **Invariant:** a repair writes only data read from the source after the
//! last applier write to the same target item.
//!
//! What a repair cannot see in the item is the migration moving under it:
//! a second operator's `restart` clearing the target and switching to
//! tombstone mode while repairs that read normal mode run. Its delete would
//! then remove a copy's tombstone for real, and the copy's older put would
//! bring the deleted item back. So repairs start only on a seeded target
//! (`verify::refuse_repairs_unless_seeded`: a cutoff, no re-seed pending,
//! normal mode), and after marking, a repair reads the control item again
//! and writes nothing if its [`Fence`] moved. Every re-seed writes its
//! pending state (or the first seed its cutoff) before it touches the
//! target, so a repair that still sees its fence marked its keys before
//! that write: a restart's clear, which starts after it, deletes them (the
//! repair's write is then refused, or cleared too), and a drop removes
//! them with the table.
//!
//! **Invariant:** a repair writes only under the seed, mode and finish state
//! it started with, as read after its keys were marked.

use anyhow::{anyhow, Result};
use relay_aws::operator::{Aws, Cond};
use relay_core::apply::{converge, is_tombstone, WriteOp, PLACEHOLDER_ATTR};
use relay_core::control::{ControlState, Mode};
use relay_core::item::{same_item, AttributeValue, Attrs, CanonicalKey};
use relay_core::transform::Transform;

use crate::ctx::{explain, Ctx};

/// The attribute a repair marks a target item with while it decides.
pub const REPAIR_TOKEN_ATTR: &str = relay_core::apply::TOKEN_ATTR;

/// The condition of a copy's put: the target key is absent, or holds only a
/// repair's placeholder (see [`relay_core::apply::PLACEHOLDER_ATTR`]).
pub fn absent_or_placeholder(key_attr: &str) -> Cond {
    Cond::Any(vec![
        Cond::Absent(key_attr.to_string()),
        Cond::Exists(PLACEHOLDER_ATTR.to_string()),
    ])
}

/// Attempts before a repair of one key gives up (the item keeps changing).
const ATTEMPTS: usize = 8;

/// What a repair of one source item wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    pub puts: u32,
    pub deletes: u32,
}

/// What repairs hold to while they write: the control item's mode, seed
/// (method, time, cutoff) and finish, as read when they began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub mode: Mode,
    seed: (Option<String>, Option<i64>, Option<i64>),
    finished_ms: Option<i64>,
}

impl Fence {
    pub fn of(c: &ControlState) -> Self {
        Fence {
            mode: c.mode,
            seed: (c.seed_method.clone(), c.seed_ms, c.cutoff_ms),
            finished_ms: c.finished_ms,
        }
    }

    /// What moved since the fence was taken, if anything.
    pub fn moved(&self, now: &ControlState) -> Option<String> {
        let now = Fence::of(now);
        if now.mode != self.mode {
            Some(format!("the mode switched to {:?}", now.mode))
        } else if now.seed != self.seed {
            Some(format!(
                "the target was re-seeded ({})",
                now.seed.0.as_deref().unwrap_or("no seed")
            ))
        } else if now.finished_ms != self.finished_ms {
            Some("the migration was finished or resumed".into())
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marked {
    /// The item existed; the token was added to it.
    Existing,
    /// The item was absent; a placeholder (key + token) holds its place.
    Placeholder,
    /// Nothing to do: absent and only to be deleted, or held by another
    /// source item (an owned write).
    Absent,
}

fn ops_shape(plan: &[(Attrs, WriteOp<'_>)]) -> Vec<(CanonicalKey, &'static str)> {
    plan.iter()
        .map(|(k, op)| (CanonicalKey::of(k), op.kind()))
        .collect()
}

/// Brings the target to the current state of the source item `source_key`:
/// its transformed item at its target key (or a delete, or a tombstone in
/// tombstone mode), and deletes of the `stale` target keys it may still
/// occupy. Never overwrites a newer change, and writes nothing once the
/// `fence` moved (see the module docs).
pub async fn repair<A: Aws>(
    ctx: &Ctx<A>,
    t: &dyn Transform,
    fence: &Fence,
    source_key: &Attrs,
    stale: &[Attrs],
) -> Result<Repaired> {
    let s = &ctx.stack;
    let key_attr = t
        .target_key_names()
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("the transform names no target key"))?;
    let plan_for = |current: Option<&Attrs>| {
        converge(Some(t), source_key, current, stale)
            .map_err(|e| anyhow!("cannot repair this item: {e}"))
    };
    for _ in 0..ATTEMPTS {
        let before = ctx
            .aws
            .get_item(&s.source_table, source_key)
            .await
            .map_err(|e| explain(e, &s.source_table))?;
        let plan = plan_for(before.as_ref())?;
        let token = AttributeValue::S(format!("{:016x}", fastrand::u64(..)));
        let mut marked: Vec<(Attrs, Marked)> = Vec::with_capacity(plan.len());
        // `Ok(None)`: lost a race, start over. Whatever happens after the
        // first mark, the marks still ours are taken back.
        let attempt: Result<Option<Repaired>> = async {
            for (key, op) in &plan {
                match mark(ctx, key, op, &key_attr, &token).await? {
                    Some(m) => marked.push((key.clone(), m)),
                    None => return Ok(None),
                }
            }
            if let Some(what) = fence.moved(&ctx.control().await?) {
                return Err(anyhow!("the migration moved while this item was being repaired ({what}): nothing was written; repair again once it is done"));
            }
            let after = ctx
                .aws
                .get_item(&s.source_table, source_key)
                .await
                .map_err(|e| explain(e, &s.source_table))?;
            let plan2 = plan_for(after.as_ref())?;
            if ops_shape(&plan2) != ops_shape(&plan) {
                return Ok(None);
            }
            let mut done = Repaired::default();
            let ours = Cond::Equals(REPAIR_TOKEN_ATTR.into(), token.clone());
            for ((key, op), (_, m)) in plan2.into_iter().zip(&marked) {
                if *m == Marked::Absent {
                    // Nothing there to delete, or another source item's.
                    continue;
                }
                let op = op.in_mode(fence.mode);
                let written = match op.put_item() {
                    Some(item) => ctx
                        .aws
                        .put_item(&s.target_table, item, &ours)
                        .await
                        .map(|w| (w.done, true)),
                    None => ctx
                        .aws
                        .delete_item(&s.target_table, &key, &ours)
                        .await
                        .map(|w| (w.done, false)),
                }
                .map_err(|e| explain(e, &s.target_table))?;
                match written {
                    (true, true) => done.puts += 1,
                    (true, false) => done.deletes += 1,
                    // A newer change landed meanwhile: never overwrite it.
                    (false, _) => return Ok(None),
                }
            }
            Ok(Some(done))
        }
        .await;
        match attempt {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => unmark(ctx, &marked, &token).await,
            Err(e) => {
                unmark(ctx, &marked, &token).await;
                return Err(e);
            }
        }
    }
    Err(anyhow!(
        "the item kept changing during {ATTEMPTS} repair attempts; the applier is writing it (re-run later)"
    ))
}

/// Marks one target key with the token. `None`: another writer created the
/// item between the two checks (start over).
async fn mark<A: Aws>(
    ctx: &Ctx<A>,
    key: &Attrs,
    op: &WriteOp<'_>,
    key_attr: &str,
    token: &AttributeValue,
) -> Result<Option<Marked>> {
    let table = &ctx.stack.target_table;
    // A delete (or tombstone) on behalf of a source item may only touch the
    // item while it is that item's: another source item's is left alone. A
    // live item's put takes the key whoever holds it: the source, read after
    // this mark, says the item maps here (as the applier settles it).
    let (existing, owned) = match op {
        WriteOp::DeleteOwned { owner, .. } => (Cond::owned_by(key_attr, owner), true),
        WriteOp::PutOwned { item, owner } if is_tombstone(item) => {
            (Cond::owned_by(key_attr, owner), true)
        }
        WriteOp::Put(_) | WriteOp::PutOwned { .. } | WriteOp::Delete(_) => {
            (Cond::Exists(key_attr.to_string()), false)
        }
    };
    let on_existing = ctx
        .aws
        .set_attr(
            table,
            key,
            REPAIR_TOKEN_ATTR,
            Some(token.clone()),
            &existing,
        )
        .await
        .map_err(|e| explain(e, table))?;
    if on_existing.done {
        return Ok(Some(Marked::Existing));
    }
    if let WriteOp::Delete(_) | WriteOp::DeleteOwned { .. } = op {
        return Ok(Some(Marked::Absent));
    }
    // A placeholder carries its owner, so later owned writes know whose it is.
    let mut placeholder = key.clone();
    if let WriteOp::PutOwned { owner, .. } = op {
        placeholder.extend(owner.clone());
    }
    placeholder.insert(REPAIR_TOKEN_ATTR.into(), token.clone());
    placeholder.insert(PLACEHOLDER_ATTR.into(), AttributeValue::Bool(true));
    let created = ctx
        .aws
        .put_item(table, &placeholder, &Cond::Absent(key_attr.to_string()))
        .await
        .map_err(|e| explain(e, table))?;
    Ok(match (created.done, owned) {
        (true, _) => Some(Marked::Placeholder),
        // Another source item holds the key: not ours to write.
        (false, true) => Some(Marked::Absent),
        (false, false) => None,
    })
}

/// Takes the token back where it is still ours (best effort: a leftover
/// token or placeholder is a difference the next verify repairs).
async fn unmark<A: Aws>(ctx: &Ctx<A>, marked: &[(Attrs, Marked)], token: &AttributeValue) {
    let table = &ctx.stack.target_table;
    let ours = Cond::Equals(REPAIR_TOKEN_ATTR.into(), token.clone());
    for (key, m) in marked {
        let _ = match m {
            Marked::Existing => {
                ctx.aws
                    .set_attr(table, key, REPAIR_TOKEN_ATTR, None, &ours)
                    .await
            }
            Marked::Placeholder => ctx.aws.delete_item(table, key, &ours).await,
            Marked::Absent => continue,
        };
    }
}

/// Whether `sk` is not one of `sources` (the candidate the target item
/// names).
fn not_among(sources: &[Attrs], sk: &Attrs) -> bool {
    let k = CanonicalKey::of(sk);
    !sources.iter().any(|s| CanonicalKey::of(s) == k)
}

/// What a re-read of one target key found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agreement {
    /// The target holds what the source says belongs there.
    Agrees,
    /// No candidate source item exists, and the target item is one
    /// `TtlDeletes=skip` keeps on purpose (its TTL has passed).
    KeptByTtl,
    Differs,
}

/// Whether the target holds exactly what the source says belongs at
/// `target_key` (re-read, consistently): the transformed current item of the
/// first of the candidates that maps there, else nothing. The candidates are
/// `sources` and the source item the target item names now (under the
/// `source_keys` names): a key that passed to another item since it was
/// first read agrees when it holds that item's current state. With
/// `kept_ttl` (the source's TTL attribute under `TtlDeletes=skip`), a
/// target item whose candidate source items (at least one) are all gone,
/// and whose TTL has passed, is kept on purpose.
pub async fn agrees<A: Aws>(
    ctx: &Ctx<A>,
    t: &dyn Transform,
    (sources, source_keys, kept_ttl): (&[Attrs], &[String], Option<&str>),
    target_key: &Attrs,
) -> Result<Agreement> {
    let s = &ctx.stack;
    let got = ctx
        .aws
        .get_item(&s.target_table, target_key)
        .await
        .map_err(|e| explain(e, &s.target_table))?;
    let mut candidates = sources.to_vec();
    if let Some(named) = got
        .as_ref()
        .filter(|_| !source_keys.is_empty())
        .and_then(|g| t.source_key_of(g, source_keys))
    {
        let nk = CanonicalKey::of(&named);
        if !candidates.iter().any(|k| CanonicalKey::of(k) == nk) {
            candidates.push(named);
        }
    }
    let mut want = None;
    let mut any_source = false;
    for sk in &candidates {
        let Some(item) = ctx
            .aws
            .get_item(&s.source_table, sk)
            .await
            .map_err(|e| explain(e, &s.source_table))?
        else {
            continue;
        };
        any_source = true;
        let here = t
            .key_only(&item)
            .map(|k| CanonicalKey::of(&k) == CanonicalKey::of(target_key))
            .unwrap_or(false);
        if here {
            match t.item(&item) {
                Ok(out) => want = Some(out),
                // The candidate the target names now, if the transform
                // fails on it: not the key's owner (as unmappable items are
                // not compared); a source seen on the first pass: an error.
                Err(_) if not_among(sources, sk) => continue,
                Err(e) => return Err(anyhow!("{e}")),
            }
            break;
        }
    }
    // Only when its source is known and gone: an item whose source key
    // the transform drops cannot be told from one left at a key its
    // (living) source moved away from.
    let kept = |g: &Attrs| {
        !candidates.is_empty()
            && !any_source
            && kept_ttl.is_some_and(|a| relay_core::ttl::expired(g, a, ctx.now_ms()))
    };
    Ok(match (want, got) {
        (None, None) => Agreement::Agrees,
        (Some(w), Some(g)) if same_item(&w, &g) => Agreement::Agrees,
        (None, Some(g)) if kept(&g) => Agreement::KeptByTtl,
        _ => Agreement::Differs,
    })
}
