//! `dlq stream-failures`: the stream failure queue's records (a shard and a
//! sequence range each, never an item), and `--clear`, which deletes those
//! the target is known to hold (`relay_core::failure`): a re-seed after the
//! failure covers it. Their changes never reached the queue, so nothing
//! else resolves them: `cutover` stays NO-GO and `finish` refuses while any
//! is left.
//!
//! **Invariant:** a failure record is deleted only when the whole current
//! seed's cutoff (while paused, the frontier if earlier) is after its
//! newest stream record, and only if the seed,
//! mode and finish read when the command began are still those of the
//! control item after it decided.
//!
//! **Invariant:** before the first delete, the control item's
//! `cleared_ms` is at or after the newest change of every record deleted,
//! and every later seed, restart or replay point must hold it
//! (`ReplayBounds::earliest_ms`), whatever the control item lost since.

use anyhow::{bail, Result};
use relay_aws::operator::{Aws, RawMessage};
use relay_core::control::ControlState;
use relay_core::failure::{covered_before, is_covered, FailureRecord};
use serde::Serialize;

use super::dlq::{drain, release};
use super::finish::refuse_partial_target;
use crate::ctx::{explain, rfc3339, Ctx};
use crate::repair::Fence;
use crate::report::{Report, EXIT_NO_GO};

/// How long the command holds the records it read (seconds).
const HOLD_S: i32 = 120;

#[derive(Debug, Serialize)]
pub struct Failure {
    pub id: String,
    pub sent_ms: Option<i64>,
    #[serde(flatten)]
    pub record: FailureRecord,
    /// The latest its newest change can have been made.
    pub newest_change_by_ms: Option<i64>,
    /// The target holds its changes (see `covered_before_ms`).
    pub covered: bool,
    /// Why the body could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StreamFailuresReport {
    pub stack: String,
    pub count: usize,
    /// The target holds every change before this time: the seed's cutoff,
    /// while paused the frontier if earlier (`None`: not known, for
    /// example while a re-seed or copy is unfinished).
    pub covered_before_ms: Option<i64>,
    /// Why nothing is known to be covered, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_whole: Option<String>,
    pub covered: usize,
    pub clear: bool,
    pub dry_run: bool,
    pub cleared: usize,
    /// Records read and not deleted (with `--dry-run`: not to be deleted).
    pub left: usize,
    /// `--max` records were read: the queue may hold more.
    pub more: bool,
    /// The queue's depth afterwards as SQS counts it (visible and in
    /// flight; approximate, it settles within about a minute).
    pub queue_depth: u64,
    pub failures: Vec<Failure>,
}

impl Report for StreamFailuresReport {
    fn text(&self) -> String {
        let t = |v: Option<i64>| v.map_or("?".to_string(), rfc3339);
        let mut text = format!(
            "stream failure queue of {}: {} record(s) read, {} covered (the seed holds every change before {})",
            self.stack,
            self.count,
            self.covered,
            t(self.covered_before_ms)
        );
        if let Some(why) = &self.not_whole {
            text.push_str(&format!("\nnothing is covered yet: {why}"));
        }
        for f in &self.failures {
            let r = &f.record;
            text.push_str(&format!(
                "\n- {} {} shard {} sequence {}..{} ({} records) arrived {} .. {}: {}",
                f.id,
                r.condition.as_deref().unwrap_or("?"),
                r.shard_id.as_deref().unwrap_or("?"),
                r.start_sequence.as_deref().unwrap_or("?"),
                r.end_sequence.as_deref().unwrap_or("?"),
                r.batch_size.map_or("?".into(), |n| n.to_string()),
                t(r.first_record_ms),
                t(f.newest_change_by_ms),
                if f.covered { "covered" } else { "NOT covered" }
            ));
            if let Some(why) = &f.unreadable {
                text.push_str(&format!(" ({why})"));
            }
        }
        if self.more {
            text.push_str(&format!(
                "\nonly the first {} record(s) were read: run it again for the rest",
                self.count
            ));
        }
        if self.clear {
            text.push_str(&format!(
                "\n{}cleared {}; {} read and left; the queue holds about {} (SQS's count, settling within a minute)",
                if self.dry_run {
                    "dry run: would have "
                } else {
                    ""
                },
                self.cleared,
                self.left,
                self.queue_depth
            ));
        } else if self.covered > 0 {
            text.push_str("\nDelete the covered ones: `ddb-relay dlq stream-failures --clear` (add --dry-run to preview)");
        }
        if self.count > self.covered {
            text.push_str("\nThe changes of a record NOT covered are not in the target, and no queue holds them: re-seed (`ddb-relay pause`, then `ddb-relay restart`; a finished migration: `resume` first), then `--clear` again. (A `verify --repair` brings the items to the source's state, but a change older than the lost one and still queued can move an item back after it: it does not clear a record.)");
        }
        text
    }

    fn exit_code(&self) -> i32 {
        if self.clear && !self.dry_run && (self.left > 0 || self.more) {
            EXIT_NO_GO
        } else {
            0
        }
    }
}

/// What must not move between deciding and deleting: the seed, the mode
/// and the finish (the repairs' fence).
fn same_footing(a: &ControlState, b: &ControlState) -> Option<String> {
    Fence::of(a).moved(b)
}

fn read(msg: &RawMessage, before: Option<i64>) -> Failure {
    let (record, unreadable) = match FailureRecord::parse(&msg.body) {
        Ok(r) => (r, None),
        Err(e) => (FailureRecord::default(), Some(e)),
    };
    // An unreadable body is never covered: its time is SQS's, but what it
    // stands for is unknown.
    let newest = record.newest_change_by_ms(msg.sent_ms);
    Failure {
        id: msg.id.clone(),
        sent_ms: msg.sent_ms,
        covered: unreadable.is_none() && is_covered(newest, before),
        newest_change_by_ms: newest,
        record,
        unreadable,
    }
}

pub async fn stream_failures<A: Aws>(
    ctx: &Ctx<A>,
    max: usize,
    clear: bool,
    dry_run: bool,
) -> Result<StreamFailuresReport> {
    let url = ctx.stack.stream_failure_url.as_str();
    let start = ctx.control().await?;
    let not_whole = match refuse_partial_target(ctx, &start, "then clear").await {
        Ok(()) => None,
        Err(e) if clear && !dry_run => return Err(e),
        Err(e) => Some(e.to_string()),
    };
    let before = not_whole
        .is_none()
        .then(|| covered_before(&start))
        .flatten();
    let msgs = drain(ctx, (url, "stream failure queue"), max, HOLD_S).await?;
    let failures: Vec<Failure> = msgs.iter().map(|m| read(m, before)).collect();
    let covered = failures.iter().filter(|f| f.covered).count();
    let mut cleared = 0;
    let mut left = Vec::new();
    if clear && !dry_run && covered > 0 {
        let now = ctx.control().await?;
        if let Some(moved) = same_footing(&start, &now) {
            release(ctx, url, &msgs).await;
            bail!(
                "{moved} while the records were read: nothing was deleted; run the command again"
            );
        }
        // Before the first delete, the floor every later seed must hold:
        // the record is then all that says the changes exist (helper-53
        // #1: a re-seed whose cutoff was lost with an interrupted restore
        // could otherwise start before them). Conditional on the version
        // read: a seed that began since moves it, and nothing is deleted.
        let newest = failures
            .iter()
            .filter(|f| f.covered)
            .filter_map(|f| f.newest_change_by_ms)
            .max();
        if let Some(floor) = newest.filter(|n| now.cleared_ms.is_none_or(|c| c < *n)) {
            let next = ControlState {
                cleared_ms: Some(floor),
                ..now.clone()
            };
            if let Err(e) = ctx.write_control(&now, next).await {
                release(ctx, url, &msgs).await;
                return Err(e.context("nothing was deleted"));
            }
        }
        for (i, (m, f)) in msgs.iter().zip(&failures).enumerate() {
            if !f.covered {
                left.push(m.clone());
                continue;
            }
            if let Err(e) = ctx.aws.delete_message(url, &m.receipt).await {
                left.extend(msgs[i..].iter().cloned());
                release(ctx, url, &left).await;
                return Err(explain(e, "stream failure queue"));
            }
            cleared += 1;
        }
    } else {
        left = msgs.clone();
    }
    release(ctx, url, &left).await;
    // Records past `--max` or held by another reader are not in `left`:
    // `more`, and the queue's (approximate) depth, say so.
    let q = ctx
        .aws
        .queue_attrs(url)
        .await
        .map_err(|e| explain(e, "stream failure queue"))?;
    Ok(StreamFailuresReport {
        stack: ctx.stack.name.clone(),
        count: failures.len(),
        covered_before_ms: before,
        not_whole,
        covered,
        clear,
        dry_run,
        cleared: if dry_run { covered } else { cleared },
        left: if dry_run {
            failures.len() - covered
        } else {
            left.len()
        },
        more: failures.len() >= max,
        queue_depth: q.visible + q.in_flight,
        failures,
    })
}
