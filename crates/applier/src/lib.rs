//! The applier: an SQS FIFO batch in, writes to the target table out.
//!
//! Decode, cutoff, TTL policy, refetch resolution, coalescing and failure
//! planning are `relay_core::apply`; this crate reads what the plan needs
//! (refetched source items, the control item), performs the writes
//! (`BatchWriteItem` with retries, single writes to isolate a refused item),
//! commits the batch on the control item, and answers with the messages to
//! retry.
//!
//! **Invariant:** a message is reported complete (and so deleted by SQS)
//! only after the control item's commit held: the item was still at the
//! version the batch was planned with, and `consumed_ms` covers the batch.
//! If an operator changed it meanwhile (pause, mode switch, new cutoff), the
//! batch is planned and written again under the new state, or, paused,
//! every message fails and stays queued.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use relay_aws::runtime::{bounded, emit_metrics, Clock};
use relay_aws::{AwsError, ControlStore, Fence, MetricsPublisher, SourceReader, TargetWriter};
use relay_core::apply::{consumed_up_to, plan_with, Fetched, Plan, PlanStats};
use relay_core::config::ApplierConfig;
use relay_core::control::{Applying, ControlState, Mode};
use relay_core::envelope::{decode, decode_without_old_images};
use relay_core::event::ChangeEvent;
use relay_core::item::Attrs;
use relay_core::metrics::{names, MetricRecord, Unit};
use relay_core::transform::{Declarative, Transform, TransformError};

/// Time kept back from the deadline for answering.
pub const RESERVE: Duration = Duration::from_millis(1500);
/// Writes per `BatchWriteItem` call (the DynamoDB limit).
pub const BATCH_WRITE_MAX: usize = 25;
/// Plans per invocation: the first, and re-plans after operator changes.
pub const MAX_PLANS: usize = 3;

mod attempt;
mod messages;
mod write;
pub use messages::{Message, Messages};
/// Source reads in flight for refetch markers.
const READ_CONCURRENCY: usize = 8;

/// A transform spec that did not parse: every change is refused.
#[derive(Debug)]
struct Broken(String);

impl Transform for Broken {
    fn item(&self, _: &Attrs) -> Result<Attrs, TransformError> {
        Err(TransformError::Missing(format!(
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
    fn key_only(&self, image: &Attrs) -> Result<Attrs, TransformError> {
        self.item(image)
    }
}

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
    /// Where "now" comes from (lag metrics); the wall clock in Lambda.
    pub clock: Clock,
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
    retries: u64,
}

/// One plan, written: which messages failed, and what was done.
struct Attempt {
    failed: BTreeSet<usize>,
    counters: Counters,
    stats: PlanStats,
}

fn respond(ids: &[String], failed: &BTreeSet<usize>) -> SqsBatchResponse {
    let mut r = SqsBatchResponse::default();
    for &i in failed {
        if let Some(id) = ids.get(i) {
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
    C: ControlStore,
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
            clock: Clock::wall(),
        }
    }

    /// Reads the time from `clock` (simulations).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Uses a custom transform (see the crate's `examples/custom_transform.rs`).
    pub fn with_transform(mut self, transform: Box<dyn Transform>) -> Self {
        self.transform = Some(transform);
        self
    }

    /// Handles one SQS batch (as [`Messages`], or an `SqsEvent`) and
    /// delivers its metrics.
    pub async fn handle(
        &self,
        event: impl Into<Messages>,
        deadline: tokio::time::Instant,
    ) -> SqsBatchResponse {
        let out = Box::pin(self.apply(event, deadline)).await;
        emit_metrics(&self.config.metrics, &out.metrics, &self.metrics, deadline).await;
        out.response
    }

    /// The control item, read consistently. Never from a cache: a warm
    /// instance that kept a state from before a pause would plan a batch
    /// with the old cutoff after a re-seed and write images older than the
    /// new seed before its commit could notice. Throttling and transient
    /// errors are retried, as every other call of the batch: every
    /// invocation reads this one item, and a failed read fails the batch.
    async fn control_state(
        &self,
        deadline: tokio::time::Instant,
        retries: &mut u64,
    ) -> Result<Option<ControlState>, AwsError> {
        let migration = &self.config.metrics.migration;
        self.call(deadline, retries, "GetItem(control)", || {
            self.control.load(migration)
        })
        .await
    }

    /// Handles one SQS batch; returns the response and the metrics.
    pub async fn apply(
        &self,
        event: impl Into<Messages>,
        deadline: tokio::time::Instant,
    ) -> Applied {
        let mut metrics = MetricRecord::new("applier");
        let mut event: Messages = event.into();
        let ids: Vec<String> = event
            .records
            .iter_mut()
            .map(|m| std::mem::take(&mut m.id))
            .collect();
        let all: BTreeSet<usize> = (0..ids.len()).collect();
        if ids.iter().any(String::is_empty) {
            // Without ids we cannot say which to retry: fail them all (an
            // empty identifier makes Lambda retry the whole batch).
            tracing::error!("SQS record without messageId; failing the whole batch");
            return Applied {
                response: respond(&ids, &all),
                metrics,
            };
        }
        let groups: Vec<String> = event
            .records
            .iter_mut()
            .map(|m| std::mem::take(&mut m.group))
            .collect();
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();

        // 1. Decode every message; one that cannot be read fails its group
        //    from there on. Old images matter only to a key-changing
        //    transform: without one they are skipped, not built.
        let mut decoded: Vec<(usize, Vec<ChangeEvent>)> = Vec::with_capacity(ids.len());
        let mut undecodable: Vec<usize> = Vec::new();
        let identity = self.transform.as_ref().is_none_or(|t| t.is_identity_key());
        let decode = if !identity {
            decode
        } else {
            decode_without_old_images
        };
        // Each body is taken, not copied: a version 2 body is exchanged back
        // in place.
        for (i, m) in event.records.iter_mut().enumerate() {
            match decode(std::mem::take(&mut m.body)) {
                Ok(env) => decoded.push((i, env.ev)),
                Err(e) => {
                    tracing::error!(message_id = %ids[i], error = %e, "message cannot be decoded; it and every later message of its group are reported failed (it reaches the DLQ after maxReceiveCount)");
                    undecodable.push(i);
                }
            }
        }
        metrics.count(names::UNDECODABLE_MESSAGES, undecodable.len() as u64);

        // 2. Plan, write and commit under the control item; plan again if
        //    an operator changed it meanwhile.
        let mut replanned = 0u64;
        let mut retries = 0u64;
        let mut state = self.control_state(deadline, &mut retries).await;
        for _ in 0..MAX_PLANS {
            let (cutoff, mode, version) = match &state {
                Ok(Some(s)) => match s.applying() {
                    Applying::Yes {
                        cutoff_ms,
                        mode,
                        version,
                    } => (cutoff_ms, mode, version),
                    Applying::Paused => {
                        tracing::warn!(messages = ids.len(), "the migration is paused: failing the batch, nothing is consumed until `ddb-relay resume`");
                        // Not a failure: the messages wait for `resume`.
                        metrics.count(names::PAUSED_BATCHES, 1);
                        return Applied {
                            response: respond(&ids, &all),
                            metrics,
                        };
                    }
                    Applying::NoCutoff => return self.no_cutoff(&ids, None, metrics),
                },
                Ok(None) => return self.no_cutoff(&ids, None, metrics),
                Err(e) => return self.no_cutoff(&ids, Some(e), metrics),
            };
            // Boxed: the write path nests many futures (bounded calls in
            // buffered streams); boxing keeps the handler's future shallow,
            // so binaries embedding it need no raised recursion limit.
            let attempt =
                Box::pin(self.attempt(&decoded, &groups, &undecodable, cutoff, mode, deadline))
                    .await;
            retries += attempt.counters.retries;
            let failed = attempt.failed;
            if failed.len() == ids.len() {
                return self.finish(
                    &ids,
                    failed,
                    attempt.counters,
                    attempt.stats,
                    retries,
                    replanned,
                    metrics,
                );
            }
            let consumed = consumed_up_to(&decoded, &failed);
            match self.commit(version, consumed, deadline, &mut retries).await {
                Ok(Fence::Held) => {
                    return self.finish(
                        &ids,
                        failed,
                        attempt.counters,
                        attempt.stats,
                        retries,
                        replanned,
                        metrics,
                    );
                }
                Ok(Fence::Moved(next)) => {
                    tracing::info!(planned_version = version, "the control item changed while this batch was applied; planning it again under the new state");
                    replanned += 1;
                    state = Ok(next.map(|n| *n));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot commit the batch on the control item; failing it (it is applied again on redelivery)");
                    return self.finish(
                        &ids,
                        all,
                        attempt.counters,
                        attempt.stats,
                        retries,
                        replanned,
                        metrics,
                    );
                }
            }
        }
        tracing::warn!(
            plans = MAX_PLANS,
            "the control item kept changing; failing the batch for redelivery"
        );
        self.finish(
            &ids,
            all,
            Counters::default(),
            PlanStats::default(),
            retries,
            replanned,
            metrics,
        )
    }

    fn no_cutoff(
        &self,
        ids: &[String],
        err: Option<&AwsError>,
        mut metrics: MetricRecord,
    ) -> Applied {
        let why = match err {
            Some(e) => e.to_string(),
            None => format!(
                "no cutoff for migration {:?} in control table {:?}; seed the target first (the applier trigger should stay disabled until then)",
                self.config.metrics.migration, self.config.control_table
            ),
        };
        tracing::error!(reason = %why, messages = ids.len(), "failing the whole batch: no cutoff");
        metrics
            .count(names::CUTOFF_MISSING, u64::from(err.is_none()))
            .count(names::FAILED_MESSAGES, ids.len() as u64);
        Applied {
            response: respond(ids, &(0..ids.len()).collect()),
            metrics,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        ids: &[String],
        failed: BTreeSet<usize>,
        counters: Counters,
        stats: PlanStats,
        retries: u64,
        replanned: u64,
        mut metrics: MetricRecord,
    ) -> Applied {
        if !failed.is_empty() {
            tracing::warn!(
                failed = failed.len(),
                of = ids.len(),
                "reporting batch item failures (their groups only)"
            );
        }
        metrics
            .count(names::APPLIED_PUTS, counters.puts)
            .count(names::APPLIED_DELETES, counters.deletes)
            .count(names::SKIPPED_BEFORE_CUTOFF, stats.skipped_before_cutoff)
            .count(names::SKIPPED_TTL, stats.skipped_ttl)
            .count(names::COALESCED, stats.coalesced)
            .count(names::REFETCHES, stats.refetched)
            .count(names::WRITE_RETRIES, retries)
            .count(names::REPLANNED, replanned)
            .count(names::FAILED_MESSAGES, failed.len() as u64);
        if stats.events > stats.skipped_before_cutoff + stats.skipped_ttl
            && failed.len() < ids.len()
        {
            metrics.add(
                names::REPLICATION_LAG_MS,
                stats.max_lag_ms as f64,
                Unit::Milliseconds,
            );
        }
        Applied {
            response: respond(ids, &failed),
            metrics,
        }
    }

    /// Commits the batch on the control item, retrying throttling within
    /// the deadline.
    async fn commit(
        &self,
        version: u64,
        consumed: Option<i64>,
        deadline: tokio::time::Instant,
        retries: &mut u64,
    ) -> Result<Fence, AwsError> {
        let migration = &self.config.metrics.migration;
        let mut attempt = 0;
        loop {
            let r = bounded(
                deadline,
                RESERVE,
                "UpdateItem(control)",
                self.control.commit(migration, version, consumed),
            )
            .await;
            match r {
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

    /// The plan of `messages` under (`cutoff`, `mode`).
    fn plan<'m>(
        &self,
        messages: &'m [(usize, Vec<ChangeEvent>)],
        cutoff: i64,
        mode: Mode,
        fetched: &Fetched,
    ) -> Plan<'m> {
        plan_with(
            messages,
            cutoff,
            self.config.ttl_policy,
            self.clock.now_ms(),
            self.transform.as_deref(),
            mode,
            fetched,
        )
    }
}
