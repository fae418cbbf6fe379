//! One attempt at a batch: plan under the control item's cutoff and mode
//! (again without the messages that fail), write, and say which messages
//! failed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures::stream::{self, StreamExt};
use relay_aws::{AwsError, ControlStore, MetricsPublisher, SourceReader, TargetWriter, Write};
use relay_core::apply::{failed_messages, refetch_keys, Fetched};
use relay_core::control::Mode;
use relay_core::event::ChangeEvent;
use relay_core::item::{Attrs, CanonicalKey};

use crate::write::{to_write, Writing};
use crate::{Applier, Attempt, Counters, BATCH_WRITE_MAX, READ_CONCURRENCY};

impl<T, S, C, M> Applier<T, S, C, M>
where
    T: TargetWriter,
    S: SourceReader,
    C: ControlStore,
    M: MetricsPublisher,
{
    /// Plans and writes the batch once under (`cutoff`, `mode`).
    pub(crate) async fn attempt(
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
                failed_at.extend(planned.writes[i].messages());
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
