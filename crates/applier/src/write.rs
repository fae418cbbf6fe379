//! The applier's I/O with retries: source reads for refetch markers, and
//! `BatchWriteItem` chunks with unprocessed items, throttling and single
//! writes to isolate an item DynamoDB refuses. Every call is bounded by the
//! invocation's time left.

use std::collections::HashSet;
use std::time::Duration;

use relay_aws::runtime::{bounded, remaining};
use relay_aws::{AwsError, ControlStore, MetricsPublisher, SourceReader, TargetWriter, Write};
use relay_core::item::Attrs;
use relay_core::retry::backoff_ms;

use crate::{Applier, RESERVE};

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
        let mut attempt = 0;
        loop {
            match bounded(
                deadline,
                RESERVE,
                "GetItem",
                self.source.get_consistent(keys),
            )
            .await
            {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    attempt += 1;
                    *retries += 1;
                    if !self.pause(attempt, deadline).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
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
        chunk: Vec<(usize, Write)>,
        deadline: tokio::time::Instant,
    ) -> (Vec<usize>, u64) {
        let mut pending = chunk;
        let mut attempt = 0;
        let mut retries = 0;
        loop {
            let writes: Vec<Write> = pending.iter().map(|(_, w)| w.clone()).collect();
            match bounded(
                deadline,
                RESERVE,
                "BatchWriteItem",
                self.target.batch_write(&writes),
            )
            .await
            {
                Ok(unprocessed) if unprocessed.is_empty() => return (Vec::new(), retries),
                Ok(unprocessed) => {
                    let keep: HashSet<usize> = unprocessed.into_iter().collect();
                    pending = pending
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| keep.contains(i))
                        .map(|(_, w)| w)
                        .collect();
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, writes = pending.len(), "BatchWriteItem failed; retrying");
                }
                Err(e) => {
                    tracing::warn!(error = %e, writes = pending.len(), "BatchWriteItem refused; isolating with single writes");
                    let (failed, r) = self.isolate(pending, deadline).await;
                    return (failed, retries + r);
                }
            }
            attempt += 1;
            retries += 1;
            if !self.pause(attempt, deadline).await {
                return (pending.into_iter().map(|(i, _)| i).collect(), retries);
            }
        }
    }

    async fn isolate(
        &self,
        writes: Vec<(usize, Write)>,
        deadline: tokio::time::Instant,
    ) -> (Vec<usize>, u64) {
        let mut failed = Vec::new();
        let mut retries = 0;
        for (i, w) in writes {
            let mut attempt = 0;
            loop {
                match bounded(deadline, RESERVE, "PutItem", self.target.write_one(&w)).await {
                    Ok(()) => break,
                    Err(e) if e.is_retryable() => {
                        attempt += 1;
                        retries += 1;
                        if !self.pause(attempt, deadline).await {
                            failed.push(i);
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, kind = match w { Write::Put(_) => "put", Write::Delete(_) => "delete" }, "target refused a write; its message will reach the DLQ after maxReceiveCount (repair with `ddb-relay dlq repair`)");
                        failed.push(i);
                        break;
                    }
                }
            }
        }
        (failed, retries)
    }
}
