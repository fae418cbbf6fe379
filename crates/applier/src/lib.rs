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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use futures::stream::{self, StreamExt};
use relay_aws::runtime::{bounded, emit_metrics, Clock};
use relay_aws::{
    AwsError, ControlStore, Fence, MetricsPublisher, SourceReader, TargetWriter, Write,
};
use relay_core::apply::{
    consumed_up_to, failed_messages, plan_with, refetch_keys, Fetched, Plan, PlanStats,
};
use relay_core::config::ApplierConfig;
use relay_core::control::{Applying, ControlState, Mode};
use relay_core::envelope::{decode, decode_without_old_images};
use relay_core::event::ChangeEvent;
use relay_core::item::{Attrs, CanonicalKey};
use relay_core::metrics::{names, MetricRecord, Unit};
use relay_core::transform::{Declarative, Transform, TransformError};

/// Time kept back from the deadline for answering.
pub const RESERVE: Duration = Duration::from_millis(1500);
/// Writes per `BatchWriteItem` call (the DynamoDB limit).
pub const BATCH_WRITE_MAX: usize = 25;
/// Plans per invocation: the first, and re-plans after operator changes.
pub const MAX_PLANS: usize = 3;

mod messages;
mod write;
pub use messages::{Message, Messages};
use write::{to_write, Writing};
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
                    state = Ok(next);
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

    /// Plans and writes the batch once under (`cutoff`, `mode`).
    async fn attempt(
        &self,
        decoded: &[(usize, Vec<ChangeEvent>)],
        groups: &[&str],
        undecodable: &[usize],
        cutoff: i64,
        mode: Mode,
        deadline: tokio::time::Instant,
    ) -> Attempt {
        let mut counters = Counters::default();
        // Messages that will fail anyway (undecodable, then refused) are
        // left out of the plan with every later message of their group:
        // nothing of a group is written past its first failure.
        let mut doomed = failed_messages(groups, undecodable.iter().copied());
        // Borrowed while no message is doomed (the common case): the
        // events are copied only to leave some out.
        let live = |doomed: &BTreeSet<usize>| -> std::borrow::Cow<'_, [(usize, Vec<ChangeEvent>)]> {
            if doomed.is_empty() {
                return std::borrow::Cow::Borrowed(decoded);
            }
            decoded
                .iter()
                .filter(|(i, _)| !doomed.contains(i))
                .cloned()
                .collect()
        };
        let messages = live(&doomed);

        // Refetch markers: read the source items they need, concurrently.
        let wanted = refetch_keys(&messages, cutoff);
        let reads: Vec<(Attrs, Result<Option<Attrs>, AwsError>, u64)> = stream::iter(wanted)
            .map(|keys| async move {
                let mut retries = 0;
                let r = self.read_source(&keys, deadline, &mut retries).await;
                (keys, r, retries)
            })
            .buffer_unordered(READ_CONCURRENCY)
            .collect()
            .await;
        let mut fetched = Fetched::new();
        for (keys, r, n) in reads {
            counters.retries += n;
            match r {
                Ok(item) => {
                    fetched.insert(CanonicalKey::of(&keys), item);
                }
                Err(e) => {
                    tracing::error!(error = %e, "refetch from the source failed; its message fails and is redelivered");
                }
            }
        }

        // The plan borrows the events it writes as they came: `retried`
        // (the batch without its doomed messages) outlives it.
        let retried;
        let mut planned = self.plan(&messages, cutoff, mode, &fetched);
        let mut failed_at: Vec<usize> = undecodable.to_vec();
        if !planned.refused.is_empty() {
            for (index, e) in &planned.refused {
                tracing::error!(error = %e, "a change cannot be applied; its message and the later ones of its group fail (they reach the DLQ after maxReceiveCount unless it clears)");
                failed_at.push(*index);
            }
            // Planned again without the failed groups' messages, until a
            // plan refuses nothing: a transform that answers differently
            // the next time (a custom one that fails now and then) can
            // refuse another change, whose message and its group's later
            // ones must fail too, with nothing of them written. Each round
            // fails at least one more message, so it ends.
            loop {
                doomed = failed_messages(groups, failed_at.iter().copied());
                let more: Vec<usize> = self
                    .plan(&live(&doomed), cutoff, mode, &fetched)
                    .refused
                    .into_iter()
                    .map(|(index, e)| {
                        tracing::error!(error = %e, "a change cannot be applied on a later plan; its message and the later ones of its group fail");
                        index
                    })
                    .collect();
                if more.is_empty() {
                    break;
                }
                failed_at.extend(more);
            }
            retried = live(&doomed);
            planned = self.plan(&retried, cutoff, mode, &fetched);
            // Should the last plan refuse yet another change (the transform
            // answered differently again), nothing is written: every
            // message fails and comes back, so no message is reported
            // complete unwritten and nothing of a failed group is written.
            if !planned.refused.is_empty() {
                for (_, e) in &planned.refused {
                    tracing::error!(error = %e, "a change cannot be applied on the last plan; the whole batch fails and comes back");
                }
                failed_at.extend(retried.iter().map(|(index, _)| *index));
                planned.writes.clear();
            }
        }

        // Unconditional writes in chunks of 25; the owned (conditional)
        // ones (under a transform whose keys pass between source items) and
        // writes of one target key by several source items one by one, in
        // plan order per target key; all of it concurrently.
        let ready: Vec<(usize, Write<'_>)> = planned
            .writes
            .iter()
            .enumerate()
            .map(|(i, w)| (i, to_write(&w.keys, &w.op)))
            .collect();
        let mut per_key: HashMap<&CanonicalKey, usize> = HashMap::new();
        let target_keys: Vec<CanonicalKey> = planned
            .writes
            .iter()
            .map(|w| CanonicalKey::of(&w.keys))
            .collect();
        for k in &target_keys {
            *per_key.entry(k).or_default() += 1;
        }
        let puts: Vec<bool> = ready.iter().map(|(_, w)| w.kind() == "put").collect();
        let mut singles: BTreeMap<&CanonicalKey, Vec<(usize, Write<'_>)>> = BTreeMap::new();
        let mut batched: Vec<(usize, Write<'_>)> = Vec::new();
        for (i, w) in ready {
            let k = &target_keys[i];
            if w.is_conditional() || per_key[k] > 1 {
                singles.entry(k).or_default().push((i, w));
            } else {
                batched.push((i, w));
            }
        }
        let mut jobs: Vec<(bool, Vec<(usize, Write<'_>)>)> = Vec::new();
        let mut batched = batched.into_iter().peekable();
        while batched.peek().is_some() {
            jobs.push((true, batched.by_ref().take(BATCH_WRITE_MAX).collect()));
        }
        jobs.extend(singles.into_values().map(|v| (false, v)));
        let writing = Writing {
            deadline,
            planned: &planned.writes,
            mode,
        };
        let results: Vec<(Vec<usize>, u64)> = stream::iter(jobs)
            .map(|(batch, writes)| {
                let writing = &writing;
                async move {
                    if batch {
                        self.write_chunk(writes, writing).await
                    } else {
                        self.isolate(writes, writing).await
                    }
                }
            })
            .buffer_unordered(self.config.write_concurrency)
            .collect()
            .await;
        let mut failed_writes: HashSet<usize> = HashSet::new();
        for (failed, retries) in results {
            counters.retries += retries;
            failed_writes.extend(failed);
        }
        for (i, put) in puts.into_iter().enumerate() {
            if failed_writes.contains(&i) {
                failed_at.push(planned.writes[i].first_message);
            } else if put {
                counters.puts += 1;
            } else {
                counters.deletes += 1;
            }
        }
        Attempt {
            failed: failed_messages(groups, failed_at),
            counters,
            stats: planned.stats,
        }
    }
}
