//! The parts of a copy seed, each run from its checkpoint until done or a
//! deadline: a scan segment of the source (`copy_segment`), a data file of
//! an export (`copy_file`), a scan segment of the target's tombstone sweep
//! (`sweep_segment`). The in-process copy runs every part with no deadline;
//! the copy workers run one part per task (`worker.rs`).
//!
//! **Invariant:** a part's checkpoint (position and counts in one
//! attribute) is written only while the copy's checkpoint belongs to the
//! run's seed and the part still holds what the run read (`save_part`).
//!
//! **Invariant:** a data file is done only after every item in it was
//! written and its item count matched the manifest's; its checkpoints in
//! between name a line up to which every item was written.

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use relay_aws::operator::{Aws, Cond};
use relay_core::diff::key_of;
use relay_core::export::{self, DataFile};
use relay_core::item::{AttributeValue, Attrs};
use relay_core::work::{PartState, Pos};

use super::copy::{delete_page, read_checkpoint, Copier, Export};
use crate::ctx::{explain, Ctx};

/// How a run over one part (a segment or a file) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ran {
    /// The part is done.
    Done,
    /// `until` came first; the part's checkpoint says where to go on.
    Paused,
    /// Another run moved the part's checkpoint first (a task delivered
    /// twice): that run goes on, this one stops.
    Lost,
    /// The copy's checkpoint is gone or belongs to another seed (the copy
    /// finished, or a restart replaced it): stop.
    Gone,
}

/// Saves a part's checkpoint only if the checkpoint still belongs to
/// `seed_ms` and the part still holds `prev` (what this run read or last
/// wrote); `false` when another run moved it first or the copy's
/// checkpoint is gone (an update would otherwise create it again).
async fn save_part<A: Aws>(
    ctx: &Ctx<A>,
    ckey: &Attrs,
    (part, seed_ms): (&str, i64),
    prev: &Option<AttributeValue>,
    next: &PartState,
) -> Result<bool> {
    let cond = Cond::All(vec![
        Cond::Equals("seed_ms".into(), AttributeValue::N(seed_ms.to_string())),
        match prev {
            None => Cond::Absent(part.into()),
            Some(v) => Cond::Equals(part.into(), v.clone()),
        },
    ]);
    ctx.aws
        .set_attr(
            &ctx.stack.control_table,
            ckey,
            part,
            Some(next.to_attr()),
            &cond,
        )
        .await
        .map(|w| w.done)
        .map_err(|e| explain(e, "control table"))
}

/// A part's checkpoint as stored (`Ok(None)`: not started), or `Err(())`
/// when the copy's checkpoint is gone or belongs to another seed.
async fn read_part<A: Aws>(
    ctx: &Ctx<A>,
    ckey: &Attrs,
    (part, seed_ms): (&str, i64),
) -> Result<std::result::Result<Option<AttributeValue>, ()>> {
    Ok(match read_checkpoint(ctx, ckey).await? {
        Some(mut c) if c.get("seed_ms") == Some(&AttributeValue::N(seed_ms.to_string())) => {
            Ok(c.remove(part))
        }
        _ => Err(()),
    })
}

fn past(until: Option<tokio::time::Instant>) -> bool {
    until.is_some_and(|u| tokio::time::Instant::now() >= u)
}

/// Runs one scan segment of `table` as the part `part`, page by page from
/// its checkpoint, `chunk` on each run of up to [`PUTS_IN_FLIGHT`] items
/// (returns how many it wrote); saves after each page, and mid-page after
/// the chunk when `stop` says time is up (a scan resumes after any key of
/// its segment).
async fn scan_part<A, F, Fut>(
    ctx: &Ctx<A>,
    (ckey, seed_ms): (&Attrs, i64),
    (part, table, consistent): (&str, &str, bool),
    (seg, segments): (i32, i32),
    key_names: &[String],
    stop: &dyn Fn() -> bool,
    chunk: F,
) -> Result<Ran>
where
    A: Aws,
    F: Fn(Vec<Attrs>) -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let Ok(mut prev) = read_part(ctx, ckey, (part, seed_ms)).await? else {
        return Ok(Ran::Gone);
    };
    let mut at = PartState::read(prev.as_ref());
    loop {
        let start = match &at.pos {
            Pos::Done => return Ok(Ran::Done),
            Pos::Start => None,
            Pos::After(k) => Some(
                serde_json::from_str::<Attrs>(k)
                    .with_context(|| format!("the checkpoint of {part} is damaged"))?,
            ),
        };
        if stop() {
            return Ok(Ran::Paused);
        }
        let (items, more) = ctx
            .aws
            .scan_page(table, seg, segments, start, consistent)
            .await
            .map_err(|e| explain(e, table))?;
        let mut next = at.clone();
        let chunks: Vec<&[Attrs]> = items.chunks(PUTS_IN_FLIGHT).collect();
        for (c, items) in chunks.iter().enumerate() {
            next.written += chunk(items.to_vec()).await?;
            next.items += items.len() as u64;
            if stop() && c + 1 < chunks.len() {
                if let Some(k) = items.last().and_then(|i| key_of(i, key_names)) {
                    next.pos = Pos::After(serde_json::to_string(&k).unwrap_or_default());
                    break;
                }
            }
        }
        if next.items == at.items + items.len() as u64 {
            next.pos = match &more {
                Some(k) => Pos::After(serde_json::to_string(k).unwrap_or_default()),
                None => Pos::Done,
            };
        }
        if !save_part(ctx, ckey, (part, seed_ms), &prev, &next).await? {
            return Ok(Ran::Lost);
        }
        prev = Some(next.to_attr());
        at = next;
    }
}

/// Copies one parallel-scan segment of the source from its checkpoint
/// (`seg_N`). `key_names`: the source's key.
pub async fn copy_segment<A: Aws>(
    ctx: &Ctx<A>,
    copier: &Copier<'_>,
    checkpoint: (&Attrs, i64),
    segment: (i32, i32),
    key_names: &[String],
    until: Option<tokio::time::Instant>,
) -> Result<Ran> {
    let stop = || past(until) || copier.would_wait_past(PUTS_IN_FLIGHT as u64, until);
    let source = &ctx.stack.source_table;
    let part = format!("seg_{}", segment.0);
    scan_part(
        ctx,
        checkpoint,
        (&part, source, false),
        segment,
        key_names,
        &stop,
        |items| async move { copier.put_all(ctx, &items).await },
    )
    .await
}

/// Deletes the tombstones of one scan segment of the target from its
/// checkpoint (`sweep_N`); a fanned-out sweep's part.
pub async fn sweep_segment<A: Aws>(
    ctx: &Ctx<A>,
    checkpoint: (&Attrs, i64),
    segment: (i32, i32),
    key_names: &[String],
    until: Option<tokio::time::Instant>,
) -> Result<Ran> {
    let stop = || past(until);
    let target = &ctx.stack.target_table;
    let part = format!("sweep_{}", segment.0);
    scan_part(
        ctx,
        checkpoint,
        (&part, target, true),
        segment,
        key_names,
        &stop,
        |items| async move { delete_page(ctx, &items, key_names, true, None).await },
    )
    .await
}

/// Items of a data file between two checkpoints (at least).
const FILE_CHECKPOINT_LINES: usize = 1000;

/// Conditional puts a part keeps in flight (one chunk of a page or file at
/// a time; a checkpoint falls only between chunks).
pub const PUTS_IN_FLIGHT: usize = 16;

/// Loads one data file of an export from its checkpoint (lines read so
/// far), saving the checkpoint every [`FILE_CHECKPOINT_LINES`] items; done
/// only when every item in it was written and the count matched the
/// manifest's.
pub async fn copy_file<A: Aws>(
    ctx: &Ctx<A>,
    copier: &Copier<'_>,
    (ckey, seed_ms): (&Attrs, i64),
    bucket: &str,
    (index, f): (usize, &DataFile),
    dir: &std::path::Path,
    until: Option<tokio::time::Instant>,
) -> Result<Ran> {
    let part = format!("file_{index}");
    let Ok(mut prev) = read_part(ctx, ckey, (&part, seed_ms)).await? else {
        return Ok(Ran::Gone);
    };
    let at = PartState::read(prev.as_ref());
    let skip = match &at.pos {
        Pos::Done => return Ok(Ran::Done),
        Pos::Start => 0,
        Pos::After(n) => n
            .parse::<usize>()
            .with_context(|| format!("the checkpoint of {part} is damaged"))?,
    };
    let path = dir.join(format!("file_{index}.json.gz"));
    ctx.aws
        .download(bucket, &f.key, &path)
        .await
        .map_err(|e| explain(e, &format!("s3://{bucket}/{}", f.key)))?;
    let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
    let lines = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
        std::io::BufReader::new(file),
    ))
    .lines();
    let mut next = at.clone();
    let mut line_no = 0;
    let mut ran = Ran::Done;
    let mut chunk = Vec::with_capacity(PUTS_IN_FLIGHT);
    let mut unsaved = 0;
    for line in lines {
        line_no += 1;
        let line = line.with_context(|| format!("{} is not a gzip file of text lines", f.key))?;
        if line_no <= skip || line.trim().is_empty() {
            continue;
        }
        chunk.push(export::parse_item(&f.key, line_no, &line)?);
        if chunk.len() < PUTS_IN_FLIGHT {
            continue;
        }
        next.written += copier.put_all(ctx, &chunk).await?;
        next.items += chunk.len() as u64;
        unsaved += chunk.len();
        chunk.clear();
        // Every line up to `line_no` is written: a checkpoint may say so,
        // every so often, and before time runs out.
        let out_of_time = past(until) || copier.would_wait_past(PUTS_IN_FLIGHT as u64, until);
        if unsaved >= FILE_CHECKPOINT_LINES || out_of_time {
            unsaved = 0;
            next.pos = Pos::After(line_no.to_string());
            if !save_part(ctx, ckey, (&part, seed_ms), &prev, &next).await? {
                ran = Ran::Lost;
                break;
            }
            prev = Some(next.to_attr());
            if out_of_time {
                ran = Ran::Paused;
                break;
            }
        }
    }
    std::fs::remove_file(&path).ok();
    if ran != Ran::Done {
        return Ok(ran);
    }
    next.written += copier.put_all(ctx, &chunk).await?;
    next.items += chunk.len() as u64;
    if next.items != f.item_count {
        return Err(export::ExportError::Count {
            file: f.key.clone(),
            got: next.items,
            want: f.item_count,
        }
        .into());
    }
    next.pos = Pos::Done;
    Ok(
        if save_part(ctx, ckey, (&part, seed_ms), &prev, &next).await? {
            Ran::Done
        } else {
            Ran::Lost
        },
    )
}

/// What an in-process run of a part (no deadline) ends with: done, or the
/// copy was replaced under it.
pub fn until_done(ran: Ran) -> Result<()> {
    match ran {
        Ran::Done | Ran::Paused | Ran::Lost => Ok(()),
        Ran::Gone => bail!(
            "the copy's checkpoint is gone or now belongs to another seed (a restart, or another operator): stopping"
        ),
    }
}

/// Loads every data file not yet done, `concurrency` at a time (the
/// in-process export load).
pub async fn copy_files<A: Aws>(
    ctx: &Ctx<A>,
    copier: &Copier<'_>,
    x: &Export,
    concurrency: i32,
    (ckey, seed_ms): (&Attrs, i64),
) -> Result<()> {
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    futures::stream::iter(x.files.iter().enumerate())
        .map(|(i, f)| {
            let dir = tmp.path();
            async move {
                // Another run moved the file on: go on from where it is.
                loop {
                    match copy_file(ctx, copier, (ckey, seed_ms), &x.bucket, (i, f), dir, None)
                        .await?
                    {
                        Ran::Lost => continue,
                        ran => return until_done(ran),
                    }
                }
            }
        })
        .buffer_unordered(concurrency.max(1) as usize)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
