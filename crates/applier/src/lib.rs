//! The applier: an SQS FIFO batch in, writes to the target table out.
//!
//! Decode, cutoff, TTL policy and coalescing are `relay_core::apply`; this
//! crate performs the writes (refetches, `BatchWriteItem` with retries, single
//! writes to isolate a refused item) and answers with the messages to retry.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures::stream::{self, StreamExt};
use relay_aws::runtime::{emit_metrics, now_ms, remaining};
use relay_aws::{AwsError, ControlReader, MetricsPublisher, SourceReader, TargetWriter, Write};
use relay_core::apply::{failure_point, plan_with, tombstone, WriteOp};
use relay_core::config::ApplierConfig;
use relay_core::control::{ControlState, Mode};
use relay_core::envelope::decode;
use relay_core::event::ChangeEvent;
use relay_core::metrics::{names, MetricRecord, Unit};
use relay_core::retry::backoff_ms;
use relay_core::transform::{Declarative, Transform};

/// Time kept back from the deadline for answering.
pub const RESERVE: Duration = Duration::from_millis(1500);
/// A transform spec that did not parse: every change is refused.
#[derive(Debug)]
struct Broken(String);

impl Transform for Broken {
    fn item(
        &self,
        _: &relay_core::item::Attrs,
    ) -> Result<relay_core::item::Attrs, relay_core::transform::TransformError> {
        Err(relay_core::transform::TransformError::Missing(format!(
            "(invalid TRANSFORM: {})",
            self.0
        )))
    }
    fn key_sources(&self) -> std::collections::BTreeSet<String> {
        std::collections::BTreeSet::new()
    }
    fn target_key_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn key_only(
        &self,
        image: &relay_core::item::Attrs,
    ) -> Result<relay_core::item::Attrs, relay_core::transform::TransformError> {
        self.item(image)
    }
}

/// Writes per `BatchWriteItem` call (the DynamoDB limit).
pub const BATCH_WRITE_MAX: usize = 25;

/// The applier with its dependencies.
#[derive(Debug)]
pub struct Applier<T, S, C, M> {
    pub config: ApplierConfig,
    pub target: T,
    pub source: S,
    pub control: C,
    pub metrics: M,
    /// The transform (declarative from `TRANSFORM`, or custom via
    /// [`Applier::with_transform`]); `None` copies items unchanged.
    pub transform: Option<Box<dyn Transform>>,
    cache: Mutex<Option<(tokio::time::Instant, ControlState)>>,
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub response: SqsBatchResponse,
    pub metrics: MetricRecord,
}

#[derive(Default)]
struct Counters {
    puts: u64,
    deletes: u64,
    refetches: u64,
    retries: u64,
}

fn respond(ids: &[String], from: Option<usize>) -> SqsBatchResponse {
    let mut r = SqsBatchResponse::default();
    if let Some(from) = from {
        for id in &ids[from.min(ids.len())..] {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id.clone();
            r.batch_item_failures.push(f);
        }
    }
    r
}

impl<T, S, C, M> Applier<T, S, C, M>
where
    T: TargetWriter,
    S: SourceReader,
    C: ControlReader,
    M: MetricsPublisher,
{
    pub fn new(config: ApplierConfig, target: T, source: S, control: C, metrics: M) -> Self {
        // The spec was validated by `ApplierConfig::from_env`; a spec set by
        // hand that does not parse fails every change instead of guessing.
        let transform = config.transform.as_deref().map(|t| {
            Declarative::parse(t, &[])
                .map(|d| Box::new(d) as Box<dyn Transform>)
                .unwrap_or_else(|e| Box::new(Broken(e.to_string())))
        });
        Applier {
            config,
            target,
            source,
            control,
            metrics,
            transform,
            cache: Mutex::new(None),
        }
    }

    /// Uses a custom transform (see the crate's `examples/custom_transform.rs`).
    pub fn with_transform(mut self, transform: Box<dyn Transform>) -> Self {
        self.transform = Some(transform);
        self
    }

    /// Handles one SQS batch and delivers its metrics.
    pub async fn handle(
        &self,
        event: SqsEvent,
        deadline: tokio::time::Instant,
    ) -> SqsBatchResponse {
        let out = self.apply(event, deadline).await;
        emit_metrics(&self.config.metrics, &out.metrics, &self.metrics).await;
        out.response
    }

    /// The control item, from a cache at most `control_cache_ms` old.
    async fn control_state(&self) -> Result<Option<ControlState>, AwsError> {
        let ttl = Duration::from_millis(self.config.control_cache_ms);
        let cached = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(|(at, _)| at.elapsed() < ttl);
        if let Some((_, state)) = cached {
            return Ok(Some(state));
        }
        let loaded = self.control.load(&self.config.metrics.migration).await?;
        if let (Some(state), Ok(mut c)) = (&loaded, self.cache.lock()) {
            *c = Some((tokio::time::Instant::now(), state.clone()));
        }
        Ok(loaded)
    }

    /// Handles one SQS batch; returns the response and the metrics.
    pub async fn apply(&self, event: SqsEvent, deadline: tokio::time::Instant) -> Applied {
        let mut metrics = MetricRecord::new("applier");
        let ids: Vec<String> = event
            .records
            .iter()
            .map(|m| m.message_id.clone().unwrap_or_default())
            .collect();
        if ids.iter().any(String::is_empty) {
            // Without ids we cannot say which to retry: fail them all (an
            // empty identifier makes Lambda retry the whole batch).
            tracing::error!("SQS record without messageId; failing the whole batch");
            return Applied {
                response: respond(&ids, Some(0)),
                metrics,
            };
        }

        // 1. Decode, up to the first message that cannot be read.
        let mut decoded: Vec<(usize, Vec<ChangeEvent>)> = Vec::with_capacity(ids.len());
        let mut undecodable: Option<usize> = None;
        for (i, m) in event.records.iter().enumerate() {
            match decode(m.body.as_deref().unwrap_or_default()) {
                Ok(env) => decoded.push((i, env.ev)),
                Err(e) => {
                    tracing::error!(message_id = %ids[i], error = %e, "message cannot be decoded; it and every later message are reported failed (it reaches the DLQ after maxReceiveCount)");
                    undecodable = Some(i);
                    break;
                }
            }
        }
        metrics.count(
            names::UNDECODABLE_MESSAGES,
            u64::from(undecodable.is_some()),
        );

        // 2. The cutoff. Without one nothing is written.
        let (cutoff, mode) = match self.control_state().await {
            Ok(Some(ControlState {
                cutoff_ms: Some(c),
                mode,
                ..
            })) => (c, mode),
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    _ => format!(
                        "no cutoff for migration {:?} in control table {:?}; seed the target first (the applier trigger should stay disabled until then)",
                        self.config.metrics.migration, self.config.control_table
                    ),
                };
                tracing::error!(reason = %why, messages = ids.len(), "failing the whole batch: no cutoff");
                metrics
                    .count(names::CUTOFF_MISSING, 1)
                    .count(names::FAILED_MESSAGES, ids.len() as u64);
                return Applied {
                    response: respond(&ids, Some(0)),
                    metrics,
                };
            }
        };

        // 3. Plan: cutoff, TTL policy, coalescing.
        let planned = plan_with(
            &decoded,
            cutoff,
            self.config.ttl_policy,
            now_ms(),
            self.transform.as_deref(),
            mode,
        );
        let (writes, stats) = (planned.writes, planned.stats);

        // 4. Refetch markers become puts or deletes of the source's current state.
        let mut counters = Counters::default();
        let mut failed_messages: Vec<usize> = Vec::new();
        for (index, e) in &planned.refused {
            tracing::error!(message_id = %ids[*index], error = %e, "the transform cannot map a change; the message fails (it reaches the DLQ after maxReceiveCount)");
            failed_messages.push(*index);
        }
        let mut ready: Vec<(usize, Write)> = Vec::with_capacity(writes.len());
        for (i, w) in writes.iter().enumerate() {
            match &w.op {
                WriteOp::Put(item) => ready.push((i, Write::Put(item.clone()))),
                WriteOp::Delete(keys) => ready.push((i, Write::Delete(keys.clone()))),
                WriteOp::Refetch(keys) => {
                    counters.refetches += 1;
                    match self.refetch(keys, deadline, &mut counters).await {
                        Ok(Some(item)) => match self.target_item(&item) {
                            Ok(item) => ready.push((i, Write::Put(item))),
                            Err(e) => {
                                tracing::error!(error = %e, first_message = %ids[w.first_message], "the transform cannot map the refetched item");
                                failed_messages.push(w.first_message);
                            }
                        },
                        Ok(None) if mode == Mode::Tombstone => {
                            ready.push((i, Write::Put(tombstone(&w.keys))))
                        }
                        Ok(None) => ready.push((i, Write::Delete(w.keys.clone()))),
                        Err(e) => {
                            tracing::error!(error = %e, first_message = %ids[w.first_message], "refetch from the source failed");
                            failed_messages.push(w.first_message);
                        }
                    }
                }
            }
        }

        // 5. Write in chunks of 25, chunks concurrently.
        let chunks: Vec<Vec<(usize, Write)>> =
            ready.chunks(BATCH_WRITE_MAX).map(<[_]>::to_vec).collect();
        let results: Vec<(Vec<usize>, u64)> = stream::iter(chunks)
            .map(|chunk| self.write_chunk(chunk, deadline))
            .buffer_unordered(self.config.write_concurrency)
            .collect()
            .await;
        let mut failed_writes: HashSet<usize> = HashSet::new();
        for (failed, retries) in results {
            counters.retries += retries;
            failed_writes.extend(failed);
        }
        for (i, w) in &ready {
            if failed_writes.contains(i) {
                failed_messages.push(writes[*i].first_message);
            } else {
                match w {
                    Write::Put(_) => counters.puts += 1,
                    Write::Delete(_) => counters.deletes += 1,
                }
            }
        }

        // 6. Report the first failed message and every later one.
        let fail_at = failure_point(undecodable, failed_messages);
        if let Some(f) = fail_at {
            tracing::warn!(first_failed = %ids[f], failed = ids.len() - f, "reporting batch item failures");
        }
        metrics
            .count(names::APPLIED_PUTS, counters.puts)
            .count(names::APPLIED_DELETES, counters.deletes)
            .count(names::SKIPPED_BEFORE_CUTOFF, stats.skipped_before_cutoff)
            .count(names::SKIPPED_TTL, stats.skipped_ttl)
            .count(names::COALESCED, stats.coalesced)
            .count(names::REFETCHES, counters.refetches)
            .count(names::WRITE_RETRIES, counters.retries)
            .count(
                names::FAILED_MESSAGES,
                fail_at.map_or(0, |f| (ids.len() - f) as u64),
            );
        if stats.events > stats.skipped_before_cutoff + stats.skipped_ttl {
            metrics.add(
                names::REPLICATION_LAG_MS,
                stats.max_lag_ms as f64,
                Unit::Milliseconds,
            );
        }
        Applied {
            response: respond(&ids, fail_at),
            metrics,
        }
    }

    /// The target item for a source item.
    fn target_item(
        &self,
        item: &relay_core::item::Attrs,
    ) -> Result<relay_core::item::Attrs, relay_core::transform::TransformError> {
        match &self.transform {
            Some(t) => t.item(item),
            None => Ok(item.clone()),
        }
    }

    async fn refetch(
        &self,
        keys: &relay_core::item::Attrs,
        deadline: tokio::time::Instant,
        counters: &mut Counters,
    ) -> Result<Option<relay_core::item::Attrs>, AwsError> {
        let mut attempt = 0;
        loop {
            match self.source.get_consistent(keys).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    attempt += 1;
                    counters.retries += 1;
                    if !self.pause(attempt, deadline).await {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sleeps before retry `attempt`; false if the budget does not allow it.
    async fn pause(&self, attempt: u32, deadline: tokio::time::Instant) -> bool {
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
    async fn write_chunk(
        &self,
        chunk: Vec<(usize, Write)>,
        deadline: tokio::time::Instant,
    ) -> (Vec<usize>, u64) {
        let mut pending = chunk;
        let mut attempt = 0;
        let mut retries = 0;
        loop {
            let writes: Vec<Write> = pending.iter().map(|(_, w)| w.clone()).collect();
            match self.target.batch_write(&writes).await {
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
                match self.target.write_one(&w).await {
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
