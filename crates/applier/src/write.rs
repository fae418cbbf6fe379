//! The applier's I/O with retries: source reads for refetch markers,
//! `BatchWriteItem` chunks with unprocessed items and throttling, single
//! writes (owned writes, and isolating an item DynamoDB refuses), and the
//! settling of a contested target key. Every call is bounded by the
//! invocation's time left.

use std::collections::HashSet;
use std::time::Duration;

use relay_aws::runtime::{bounded, remaining};
use relay_aws::{AwsError, ControlStore, MetricsPublisher, SourceReader, TargetWriter, Write};
use relay_core::apply::{is_tombstone, settle, PlannedWrite, Read, WriteOp, TOKEN_ATTR};
use relay_core::control::Mode;
use relay_core::item::{AttributeValue, Attrs, CanonicalKey};
use relay_core::retry::backoff_ms;

use crate::{Applier, RESERVE};

/// The adapter's write for a planned one (`keys`: the target key),
/// borrowing the plan's attributes: no item is copied on its way out.
pub(crate) fn to_write<'a>(keys: &'a Attrs, op: &'a WriteOp<'_>) -> Write<'a> {
    match op {
        WriteOp::Put(item) => Write::Put(item),
        WriteOp::Delete(keys) => Write::Delete(keys),
        WriteOp::DeleteOwned { keys, owner } => Write::DeleteOwned { keys, owner },
        WriteOp::PutOwned { item, owner } => Write::PutOwned {
            item,
            owner,
            key_attr: keys.keys().min().map(String::as_str).unwrap_or_default(),
        },
    }
}

impl<T, S, C, M> Applier<T, S, C, M>
where
    T: TargetWriter,
    S: SourceReader,
    C: ControlStore,
    M: MetricsPublisher,
{
    pub(crate) async fn read_source(
        &self,
        keys: &Attrs,
        deadline: tokio::time::Instant,
        retries: &mut u64,
    ) -> Result<Option<Attrs>, AwsError> {
        self.call(deadline, retries, "GetItem", || {
            self.source.get_consistent(keys)
        })
        .await
    }

    /// Sleeps before retry `attempt`; false if the budget does not allow it.
    pub(crate) async fn pause(&self, attempt: u32, deadline: tokio::time::Instant) -> bool {
        let delay = Duration::from_millis(backoff_ms(attempt, 50, 5_000, fastrand::f64()));
        if delay >= remaining(deadline, RESERVE) {
            return false;
        }
        tokio::time::sleep(delay).await;
        true
    }

    /// Writes one chunk: `BatchWriteItem`, retrying unprocessed items and
    /// retryable errors with backoff; on a permanent error, single writes
    /// find the item DynamoDB refuses. Returns the plan indices that failed
    /// and the retries made.
    pub(crate) async fn write_chunk(
        &self,
        chunk: Vec<(usize, Write<'_>)>,
        w: &Writing<'_>,
    ) -> (Vec<usize>, u64) {
        // Plan indices and writes apart: the writes go to the call as they
        // are, never copied.
        let (mut idx, mut writes): (Vec<usize>, Vec<Write<'_>>) = chunk.into_iter().unzip();
        let mut attempt = 0;
        let mut retries = 0;
        loop {
            match bounded(
                w.deadline,
                RESERVE,
                "BatchWriteItem",
                self.target.batch_write(&writes),
            )
            .await
            {
                Ok(unprocessed) if unprocessed.is_empty() => return (Vec::new(), retries),
                Ok(unprocessed) => {
                    let keep: HashSet<usize> = unprocessed.into_iter().collect();
                    (idx, writes) = idx
                        .into_iter()
                        .zip(writes)
                        .enumerate()
                        .filter(|(i, _)| keep.contains(i))
                        .map(|(_, w)| w)
                        .unzip();
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, writes = writes.len(), "BatchWriteItem failed; retrying");
                }
                Err(e) => {
                    tracing::warn!(error = %e, writes = writes.len(), "BatchWriteItem refused; isolating with single writes");
                    let (failed, r) = self.isolate(idx.into_iter().zip(writes).collect(), w).await;
                    return (failed, retries + r);
                }
            }
            attempt += 1;
            retries += 1;
            if !self.pause(attempt, w.deadline).await {
                return (idx, retries);
            }
        }
    }

    /// Writes one by one, in order: owned (conditional) writes, writes of
    /// one target key by several source items, or a refused batch's writes
    /// (to find the one DynamoDB refuses). Returns the plan indices that
    /// failed and the retries made.
    pub(crate) async fn isolate(
        &self,
        writes: Vec<(usize, Write<'_>)>,
        w: &Writing<'_>,
    ) -> (Vec<usize>, u64) {
        let mut failed = Vec::new();
        let mut retries = 0;
        for (i, write) in writes {
            let r = self
                .call(w.deadline, &mut retries, op_name(&write), || {
                    self.target.write_one(&write)
                })
                .await;
            let done = match r {
                // Another source item's item holds a live item's key: only
                // the source can tell whose it is now.
                Ok(false) if contested(&write) => match w.planned.get(i) {
                    Some(p) => self.settle(p, w, &mut retries).await,
                    None => Ok(true),
                },
                // A delete or a tombstone that found another item's: not ours.
                Ok(_) => Ok(true),
                Err(e) => Err(e),
            };
            match done {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("a contested target key kept changing; its message is retried");
                    failed.push(i);
                }
                Err(e) => {
                    if !e.is_retryable() {
                        tracing::error!(error = %e, kind = write.kind(), "target refused a write; its message will reach the DLQ after maxReceiveCount (repair with `ddb-relay dlq repair`)");
                    }
                    failed.push(i);
                }
            }
        }
        (failed, retries)
    }

    /// Settles the target key of planned write `p` (a live item's owned put
    /// that found another source item's item there): marks the item there,
    /// reads both source items fresh, and writes what they say
    /// ([`settle`]) on the condition the mark is still there. A write that
    /// lands meanwhile drops the mark, and the settling starts over, so it
    /// never overwrites a change it did not read. `Ok(false)`: the key kept
    /// changing.
    async fn settle(
        &self,
        p: &PlannedWrite<'_>,
        w: &Writing<'_>,
        retries: &mut u64,
    ) -> Result<bool, AwsError> {
        let Some(t) = self.transform.as_deref() else {
            return Ok(true);
        };
        let names: Vec<String> = p.source_keys.keys().cloned().collect();
        let mine = CanonicalKey::of(&p.source_keys);
        for _ in 0..SETTLE_ATTEMPTS {
            let there = self
                .call(w.deadline, retries, "GetItem", || {
                    self.target.get_consistent(&p.keys)
                })
                .await?;
            let Some(there) = there else {
                // Gone meanwhile: the owned put again.
                let put = to_write(&p.keys, &p.op);
                if self
                    .call(w.deadline, retries, "PutItem", || {
                        self.target.write_one(&put)
                    })
                    .await?
                {
                    return Ok(true);
                }
                continue;
            };
            let occupant = t
                .source_key_of(&there, &names)
                .filter(|k| CanonicalKey::of(k) != mine);
            // Whose item to mark: the occupant's, or (unknown) any item there.
            let held_by = occupant
                .as_ref()
                .and_then(|k| t.owner_attrs(k))
                .unwrap_or_else(|| p.keys.clone());
            let token = format!("{:016x}", fastrand::u64(..));
            let marked = self
                .call(w.deadline, retries, "UpdateItem", || {
                    self.target.mark(&p.keys, &held_by, &token)
                })
                .await;
            let settled = match marked {
                Ok(false) => continue,
                Ok(true) => {
                    self.settle_marked(p, w, retries, (t, occupant.as_ref(), &token))
                        .await
                }
                // The mark may have landed though its answer did not.
                Err(e) => Err(e),
            };
            match settled {
                Ok(Some(written)) => return Ok(written),
                Ok(None) => continue,
                Err(e) => {
                    self.take_back(&p.keys, &token, w.deadline).await;
                    return Err(e);
                }
            }
        }
        Ok(false)
    }

    /// Our mark must not stay on another item when a settling fails
    /// (helper-55 #3): taken back while half the time kept for the answer
    /// is left (helper-58 #2).
    async fn take_back(&self, keys: &Attrs, token: &str, deadline: tokio::time::Instant) {
        let by = deadline.checked_sub(RESERVE / 2).unwrap_or(deadline);
        let undone = tokio::time::timeout_at(by, self.target.unmark(keys, token));
        if !matches!(undone.await, Ok(Ok(_))) {
            tracing::warn!("a failed settling could not take its mark back; the next write of the item removes it");
        }
    }

    /// The rest of [`Self::settle`] once the item at the key carries our
    /// mark `token`. `Ok(None)`: another write replaced the mark, start
    /// over; `Ok(Some(true))`: written.
    async fn settle_marked(
        &self,
        p: &PlannedWrite<'_>,
        w: &Writing<'_>,
        retries: &mut u64,
        (t, occupant, token): (&dyn relay_core::transform::Transform, Option<&Attrs>, &str),
    ) -> Result<Option<bool>, AwsError> {
        {
            // The item as marked (what a "keep" writes back).
            let held = self
                .call(w.deadline, retries, "GetItem", || {
                    self.target.get_consistent(&p.keys)
                })
                .await?;
            let marked = AttributeValue::S(token.to_string());
            let Some(held) = held.filter(|h| h.get(TOKEN_ATTR) == Some(&marked)) else {
                return Ok(None);
            };
            let claimant = self
                .read_source(&p.source_keys, w.deadline, retries)
                .await?;
            let theirs = match occupant {
                Some(k) => Some(self.read_source(k, w.deadline, retries).await?),
                None => None,
            };
            let op = settle(
                t,
                &p.keys,
                Read {
                    key: &p.source_keys,
                    current: claimant.as_ref(),
                },
                occupant.map(|k| {
                    (
                        Read {
                            key: k,
                            current: theirs.as_ref().and_then(Option::as_ref),
                        },
                        &held,
                    )
                }),
            )
            .map_err(|e| AwsError::permanent("Transform", "TransformError", &e.to_string()))?;
            let op = op.in_mode(w.mode);
            let write = to_write(&p.keys, &op);
            Ok(self
                .call(w.deadline, retries, op_name(&write), || {
                    self.target.write_marked(&write, token)
                })
                .await?
                .then_some(true))
        }
    }

    /// One call, bounded by the deadline, retried with backoff while it
    /// fails retryably and the deadline allows.
    pub(crate) async fn call<R, F, Fut>(
        &self,
        deadline: tokio::time::Instant,
        retries: &mut u64,
        op: &'static str,
        f: F,
    ) -> Result<R, AwsError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<R, AwsError>>,
    {
        let mut attempt = 0;
        loop {
            match bounded(deadline, RESERVE, op, f()).await {
                Err(e) if e.is_retryable() => {
                    attempt += 1;
                    *retries += 1;
                    if !self.pause(attempt, deadline).await {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }
}

/// What the writes of one plan share.
pub(crate) struct Writing<'a> {
    pub deadline: tokio::time::Instant,
    pub planned: &'a [PlannedWrite<'a>],
    pub mode: Mode,
}

/// Attempts to settle one contested key before its message is retried.
const SETTLE_ATTEMPTS: usize = 4;

fn op_name(write: &Write<'_>) -> &'static str {
    match write.kind() {
        "put" => "PutItem",
        _ => "DeleteItem",
    }
}

/// A live item's owned put: when it finds another item's, the key is settled.
fn contested(write: &Write<'_>) -> bool {
    matches!(write, Write::PutOwned { item, .. } if !is_tombstone(item))
}
