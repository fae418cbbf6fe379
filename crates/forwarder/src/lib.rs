//! The forwarder: a DynamoDB stream batch in, ordered FIFO messages out.
//!
//! The decisions (events, packing, send rounds, what to report) are made in
//! `relay_core`; this crate performs them against a [`QueueSender`] within
//! the invocation's time budget.

use std::time::Duration;

use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use futures::stream::{FuturesUnordered, StreamExt};
use relay_aws::runtime::{bounded, deadline_from_epoch_ms, emit_metrics, remaining, Clock};
use relay_aws::{EntryStatus, MetricsPublisher, QueueSender, SendEntry};
use relay_core::config::ForwarderConfig;
use relay_core::event::{table_from_arn, ChangeEvent};
use relay_core::metrics::{names, MetricRecord, Unit};
use relay_core::pack::{pack, Packed};
use relay_core::retry::backoff_ms;
use relay_core::send_plan::{EntryRef, Outcome, SendPlan, Window};
use relay_core::stream::{from_raw_record, RawImage, StreamEvent};

mod body;
pub use body::{no_body, read_body, BodyError, RawBody};

/// Time kept back from the deadline: no new round starts inside it.
pub const RESERVE: Duration = Duration::from_millis(1500);

/// The forwarder with its dependencies.
#[derive(Debug)]
pub struct Forwarder<Q, M> {
    pub config: ForwarderConfig,
    pub queue: Q,
    pub metrics: M,
    /// Where "now" comes from (lag metrics); the wall clock in Lambda.
    pub clock: Clock,
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarded {
    pub response: DynamoDbEventResponse,
    pub metrics: MetricRecord,
}

fn failure(seq: Option<&str>) -> DynamoDbEventResponse {
    let mut f = DynamoDbBatchItemFailure::default();
    // An empty identifier makes Lambda retry the whole batch: safe, never lossy.
    f.item_identifier = Some(seq.unwrap_or_default().to_string());
    let mut r = DynamoDbEventResponse::default();
    r.batch_item_failures.push(f);
    r
}

/// A batch read and packed: what the sends and the report need, and
/// nothing of the records or their text.
struct Prepared {
    packed: Packed,
    /// Each packed record's position and sequence number.
    seqs: Vec<(usize, String)>,
    /// The first record that cannot be forwarded, and its sequence number.
    first_bad: Option<usize>,
    bad_seq: Option<String>,
    oldest_ms: Option<i64>,
}

impl<Q: QueueSender, M: MetricsPublisher> Forwarder<Q, M> {
    /// Handles one stream batch as Lambda delivers it (the invocation's
    /// body, JSON): reads it in place (the images are not copied out of
    /// it), packs it, lets go of the text, sends, and delivers the metrics.
    /// A body that is not a stream batch is an error: the invocation fails
    /// (lambda_runtime logs it and posts it), and Lambda retries the batch
    /// and, past its retry limit, sends it to the on-failure destination.
    pub async fn handle_body<B: AsRef<[u8]>>(
        &self,
        body: B,
        deadline: tokio::time::Instant,
    ) -> Result<DynamoDbEventResponse, BodyError> {
        let prepared = self.prepare(read_body(body.as_ref())?);
        drop(body);
        let out = self.send(prepared, deadline).await;
        emit_metrics(&self.config.metrics, &out.metrics, &self.metrics, deadline).await;
        Ok(out.response)
    }

    /// One invocation as `main.rs` runs it: the body [`RawBody`] took for
    /// it, handled by [`Forwarder::handle_body`] within its deadline.
    pub async fn invoke(
        &self,
        raw: &RawBody,
        event: lambda_runtime::LambdaEvent<()>,
    ) -> Result<DynamoDbEventResponse, lambda_runtime::Diagnostic> {
        let body = raw.take(&event.context.request_id).ok_or_else(no_body)?;
        let deadline = deadline_from_epoch_ms(event.context.deadline);
        Ok(self.handle_body(body, deadline).await?)
    }

    /// Handles one stream batch already read, and delivers its metrics.
    pub async fn handle(
        &self,
        event: StreamEvent<'_>,
        deadline: tokio::time::Instant,
    ) -> DynamoDbEventResponse {
        let out = self.forward(event, deadline).await;
        emit_metrics(&self.config.metrics, &out.metrics, &self.metrics, deadline).await;
        out.response
    }

    /// Handles one stream batch; returns the response and the metrics.
    pub async fn forward(
        &self,
        event: StreamEvent<'_>,
        deadline: tokio::time::Instant,
    ) -> Forwarded {
        let prepared = self.prepare(event);
        self.send(prepared, deadline).await
    }

    /// Records to events, packed into messages.
    fn prepare(&self, event: StreamEvent<'_>) -> Prepared {
        let records = event.records;
        let src = records
            .first()
            .and_then(|r| {
                r.event_source_arn
                    .as_deref()
                    .and_then(table_from_arn)
                    .map(str::to_string)
                    .or_else(|| r.table_name.as_deref().map(str::to_string))
            })
            .unwrap_or_default();

        // 1. Records to events, up to the first one that cannot be replicated.
        //    The records are consumed: their images, the stream's JSON
        //    unparsed (borrowed from the body), move into the events.
        let mut events: Vec<(usize, ChangeEvent<RawImage<'_>>)> = Vec::with_capacity(records.len());
        let mut first_bad: Option<(usize, Option<String>)> = None;
        for (i, rec) in records.into_iter().enumerate() {
            match from_raw_record(rec) {
                Ok(e) => events.push((i, e)),
                Err(e) => {
                    tracing::error!(position = i, error = %e, "stream record cannot be forwarded; reporting it failed so Lambda retries it and, past its retry limit, sends it to the on-failure destination");
                    first_bad = Some((i, e.seq().map(str::to_string)));
                    break;
                }
            }
        }
        let mut bad_seq = first_bad.as_ref().and_then(|(_, s)| s.clone());
        let mut first_bad: Option<usize> = first_bad.map(|(i, _)| i);
        let oldest_ms = events.iter().map(|(_, e)| e.time_ms).min();

        // 2. Pack. A cap too small for some record's keys stops there. Dedup
        //    ids are scoped to this invocation: a batch Lambda retries is
        //    packed anew and must never match an earlier invocation's message.
        let cfg = &self.config;
        let invocation = fastrand::u64(..);
        let packed = loop {
            match pack(&src, &events, &cfg.pack, invocation) {
                Ok(p) => break p,
                Err(e) => {
                    tracing::error!(error = %e, "record does not fit a message");
                    if first_bad.is_none_or(|b| e.record < b) {
                        first_bad = Some(e.record);
                        bad_seq = events
                            .iter()
                            .find(|(i, _)| *i == e.record)
                            .map(|(_, ev)| ev.seq.clone());
                    }
                    events.retain(|(i, _)| *i < e.record);
                }
            }
        };

        // The images are in the messages now: keep only what the failure
        // report needs (each record's sequence number), so the batch is not
        // held twice while the sends are in flight.
        let seqs: Vec<(usize, String)> = events.into_iter().map(|(i, e)| (i, e.seq)).collect();
        Prepared {
            packed,
            seqs,
            first_bad,
            bad_seq,
            oldest_ms,
        }
    }

    /// Sends a prepared batch and reports the earliest record not sent.
    async fn send(&self, prepared: Prepared, deadline: tokio::time::Instant) -> Forwarded {
        let Prepared {
            packed,
            seqs,
            first_bad,
            bad_seq,
            oldest_ms,
        } = prepared;
        let cfg = &self.config;
        let mut metrics = MetricRecord::new("forwarder");

        // 3. Send in rounds: one entry per group per call, heads only.
        let mut plan = SendPlan::new(packed.groups, cfg.limits);
        let mut retries = 0u64;
        let mut out_of_time = false;
        loop {
            let round = plan.next_round();
            if round.is_empty() {
                break;
            }
            if remaining(deadline, RESERVE).is_zero() {
                out_of_time = true;
                break;
            }
            let results = self.send_round(&plan, round, deadline).await;
            let mut any_retry = false;
            for (call, outcomes, too_long) in results {
                if too_long {
                    plan.batch_too_long(&call);
                }
                for (e, o) in call.into_iter().zip(outcomes) {
                    if o == Outcome::Retryable {
                        any_retry = true;
                        retries += 1;
                    }
                    plan.record(e, o);
                }
            }
            if any_retry {
                let delay = Duration::from_millis(backoff_ms(
                    plan.max_attempts_in_flight(),
                    50,
                    2_000,
                    fastrand::f64(),
                ));
                if delay >= remaining(deadline, RESERVE) {
                    out_of_time = !plan.next_round().is_empty();
                    break;
                }
                tokio::time::sleep(delay).await;
            }
        }

        // 4. Report the earliest record not accepted.
        let unsent = plan.earliest_unsent();
        let fail_at = match (unsent, first_bad) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if out_of_time {
            tracing::warn!("time budget exhausted before every message was sent");
        }
        let response = match fail_at {
            None => DynamoDbEventResponse::default(),
            Some(i) => {
                // The record's sequence number: an event's, or the bad
                // record's (kept when it was refused).
                let seq = match seqs.binary_search_by_key(&i, |(j, _)| *j) {
                    Ok(at) => Some(seqs[at].1.as_str()),
                    Err(_) => bad_seq.as_deref(),
                };
                tracing::warn!(
                    position = i,
                    sequence_number = seq.unwrap_or(""),
                    failed_groups = plan.failed_groups(),
                    "reporting batch item failure; Lambda retries from this record"
                );
                failure(seq)
            }
        };

        let (sent, bytes) = plan.accepted();
        let stats = packed.stats;
        metrics
            .count(names::FORWARDED, stats.events)
            .count(names::MESSAGES_SENT, sent)
            .add(names::BYTES_SENT, bytes as f64, Unit::Bytes)
            .count(names::REFETCH_MARKERS, stats.refetch_markers)
            .count(names::OLD_IMAGES_DROPPED, stats.old_images_dropped)
            .count(names::SEND_RETRIES, retries)
            .count(names::SEND_FAILURES, u64::from(fail_at.is_some()))
            .count(names::BAD_RECORDS, u64::from(first_bad.is_some()));
        if let Some(t) = oldest_ms {
            metrics.add(
                names::REPLICATION_LAG_MS,
                (self.clock.now_ms() - t).max(0) as f64,
                Unit::Milliseconds,
            );
        }
        Forwarded { response, metrics }
    }

    /// One round's calls, concurrently within the send window (calls and
    /// body bytes in flight); every call's entries get their outcomes.
    async fn send_round(
        &self,
        plan: &SendPlan,
        round: Vec<Vec<EntryRef>>,
        deadline: tokio::time::Instant,
    ) -> Vec<(Vec<EntryRef>, Vec<Outcome>, bool)> {
        let window = Window {
            calls: self.config.send_concurrency,
            bytes: self.config.send_in_flight_bytes,
        };
        let mut results = Vec::with_capacity(round.len());
        let mut waiting = round.into_iter().peekable();
        let mut running = FuturesUnordered::new();
        let mut in_flight = 0usize;
        loop {
            while let Some(call) = waiting.peek() {
                let size = plan.call_bytes(call);
                if !window.admits(running.len(), in_flight, size) {
                    break;
                }
                let Some(call) = waiting.next() else { break };
                in_flight += size;
                running.push(async move { (size, self.send_call(plan, call, deadline).await) });
            }
            match running.next().await {
                Some((size, done)) => {
                    in_flight -= size;
                    results.push(done);
                }
                None => return results,
            }
        }
    }

    /// One `SendMessageBatch` call; every entry gets an outcome, and the
    /// call says whether SQS refused it for its total size.
    async fn send_call(
        &self,
        plan: &SendPlan,
        call: Vec<EntryRef>,
        deadline: tokio::time::Instant,
    ) -> (Vec<EntryRef>, Vec<Outcome>, bool) {
        let entries: Vec<SendEntry> = call
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let m = plan.message(*e);
                SendEntry {
                    id: i.to_string(),
                    body: m.body.clone(),
                    group_id: m.group_id.clone(),
                    dedup_id: m.dedup_id.clone(),
                }
            })
            .collect();
        // Bounded by the time left: an abandoned call is ambiguous, and is
        // retried in this invocation with the same deduplication ids, so SQS
        // drops a duplicate.
        let sent = bounded(
            deadline,
            RESERVE,
            "SendMessageBatch",
            self.queue.send_batch(entries),
        )
        .await;
        let mut too_long = false;
        let outcomes = match sent {
            Ok(status) => (0..call.len())
                .map(|i| match status.get(&i.to_string()) {
                    Some(EntryStatus::Accepted) => Outcome::Accepted,
                    Some(EntryStatus::Failed { retryable: false, code }) => {
                        tracing::error!(code = %code, group = %plan.message(call[i]).group_id, "SQS refused a message (sender fault)");
                        Outcome::Permanent
                    }
                    _ => Outcome::Retryable,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, entries = call.len(), "SendMessageBatch call failed");
                // Too long as a whole (an endpoint with a lower batch
                // limit): retried in smaller calls, not given up.
                too_long = e.code.ends_with("BatchRequestTooLong") && call.len() > 1;
                let o = if e.is_retryable() || too_long {
                    Outcome::Retryable
                } else {
                    Outcome::Permanent
                };
                vec![o; call.len()]
            }
        };
        (call, outcomes, too_long)
    }
}
