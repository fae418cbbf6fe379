//! Failure planning for the forwarder's sends.
//!
//! `SendMessageBatch` can reject entry 3 and accept entries 4-10, so:
//!
//! **Invariant:** one call never carries two entries of the same group, and
//! a group's next message is offered only after its previous one was
//! accepted. A group whose message finally fails sends nothing more in this
//! invocation, and the invocation reports the earliest stream record that
//! was not accepted, so Lambda retries from there.
//!
//! The plan is a pure state machine: the forwarder asks for a round of calls,
//! performs them (concurrently), and records each entry's outcome.

use crate::pack::OutMessage;

/// SQS limits on one `SendMessageBatch` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_entries: usize,
    pub max_batch_bytes: usize,
    /// Attempts per message before its group is given up for this invocation.
    pub max_attempts: u32,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_entries: 10,
            max_batch_bytes: 1024 * 1024,
            max_attempts: 6,
        }
    }
}

/// How much of a round may be in flight at once: at most `calls` calls
/// and at most `bytes` of message bodies, except that one call always may
/// start alone, whatever its size.
///
/// **Invariant:** the forwarder starts a call only when the window admits
/// it, so the bodies it has handed to SQS stay within `bytes` (or one call,
/// if larger). Each body in flight is held about twice (the copy handed to
/// the SDK, then the SDK's serialised request), so the send phase of a
/// large batch holds the packed messages plus about twice `bytes`, not the
/// batch twice more (BENCHMARKS.md, "Cold start and peak memory of the
/// bootstraps").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub calls: usize,
    pub bytes: usize,
}

impl Window {
    /// Whether a call of `size` body bytes may start while `calls` calls
    /// holding `bytes` body bytes are in flight. With none in flight, any
    /// call may: one call is never held back, whatever its size.
    pub fn admits(&self, calls: usize, bytes: usize, size: usize) -> bool {
        calls == 0 || (calls < self.calls && bytes.saturating_add(size) <= self.bytes)
    }
}

/// One entry of a call: the head message of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef {
    pub group: usize,
    pub message: usize,
}

/// What SQS said about one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// Throttling, a server fault or a failed call: worth another attempt.
    Retryable,
    /// A sender fault (invalid body, too long): the group stops here.
    Permanent,
}

#[derive(Debug)]
struct Group {
    messages: Vec<OutMessage>,
    next: usize,
    attempts: u32,
    failed: bool,
}

/// The state of one invocation's sends.
#[derive(Debug)]
pub struct SendPlan {
    groups: Vec<Group>,
    limits: BatchLimits,
}

impl SendPlan {
    pub fn new(groups: Vec<Vec<OutMessage>>, limits: BatchLimits) -> Self {
        let groups = groups
            .into_iter()
            .map(|messages| Group {
                messages,
                next: 0,
                attempts: 0,
                failed: false,
            })
            .collect();
        SendPlan { groups, limits }
    }

    /// The calls of the next round. Each call has at most one entry per
    /// group, at most `max_entries` entries and `max_batch_bytes` of bodies.
    /// Empty when nothing is left to try.
    pub fn next_round(&self) -> Vec<Vec<EntryRef>> {
        let mut calls: Vec<Vec<EntryRef>> = Vec::new();
        let mut current: Vec<EntryRef> = Vec::new();
        let mut bytes = 0usize;
        for (gi, g) in self.groups.iter().enumerate() {
            if g.failed || g.next >= g.messages.len() {
                continue;
            }
            let size = g.messages[g.next].body.len();
            if !current.is_empty()
                && (current.len() >= self.limits.max_entries
                    || bytes + size > self.limits.max_batch_bytes)
            {
                calls.push(std::mem::take(&mut current));
                bytes = 0;
            }
            current.push(EntryRef {
                group: gi,
                message: g.next,
            });
            bytes += size;
        }
        if !current.is_empty() {
            calls.push(current);
        }
        calls
    }

    pub fn message(&self, e: EntryRef) -> &OutMessage {
        &self.groups[e.group].messages[e.message]
    }

    /// The body bytes of one call.
    pub fn call_bytes(&self, call: &[EntryRef]) -> usize {
        call.iter().map(|e| self.message(*e).body.len()).sum()
    }

    /// A call SQS refused as a whole for its total size (an endpoint whose
    /// batch limit is below `max_batch_bytes`): later calls of this
    /// invocation carry at most half its bytes (one entry is always
    /// allowed), so a retry fits instead of failing the same way until the
    /// stream gives up. Its entries are recorded as retryable.
    pub fn batch_too_long(&mut self, call: &[EntryRef]) {
        let half = (self.call_bytes(call) / 2).max(1);
        self.limits.max_batch_bytes = self.limits.max_batch_bytes.min(half);
    }

    /// Records one entry's outcome. An outcome for anything but the group's
    /// current head is ignored: it cannot advance a group out of order.
    pub fn record(&mut self, e: EntryRef, outcome: Outcome) {
        let max_attempts = self.limits.max_attempts;
        let Some(g) = self.groups.get_mut(e.group) else {
            return;
        };
        if g.failed || g.next != e.message {
            return;
        }
        match outcome {
            Outcome::Accepted => {
                g.next += 1;
                g.attempts = 0;
            }
            Outcome::Retryable => {
                g.attempts += 1;
                if g.attempts >= max_attempts {
                    g.failed = true;
                }
            }
            Outcome::Permanent => g.failed = true,
        }
    }

    /// The largest number of attempts any live group has used on its head;
    /// drives the backoff between rounds.
    pub fn max_attempts_in_flight(&self) -> u32 {
        self.groups
            .iter()
            .filter(|g| !g.failed && g.next < g.messages.len())
            .map(|g| g.attempts)
            .max()
            .unwrap_or(0)
    }

    /// Position of the earliest stream record not yet accepted by SQS, if
    /// any: the `batchItemFailures` entry to report.
    pub fn earliest_unsent(&self) -> Option<usize> {
        self.groups
            .iter()
            .filter(|g| g.next < g.messages.len())
            .map(|g| g.messages[g.next].first_record)
            .min()
    }

    /// Messages accepted so far, and their body bytes.
    pub fn accepted(&self) -> (u64, u64) {
        self.groups.iter().fold((0, 0), |(n, b), g| {
            let bytes: usize = g.messages[..g.next].iter().map(|m| m.body.len()).sum();
            (n + g.next as u64, b + bytes as u64)
        })
    }

    /// Groups given up in this invocation.
    pub fn failed_groups(&self) -> usize {
        self.groups.iter().filter(|g| g.failed).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(group: usize, first_record: usize, size: usize) -> OutMessage {
        OutMessage {
            group_id: format!("g{group}"),
            dedup_id: format!("d{first_record}"),
            body: "x".repeat(size),
            first_record,
            events: 1,
        }
    }

    fn plan(groups: &[&[usize]], limits: BatchLimits) -> SendPlan {
        SendPlan::new(
            groups
                .iter()
                .enumerate()
                .map(|(g, recs)| recs.iter().map(|&r| msg(g, r, 10)).collect())
                .collect(),
            limits,
        )
    }

    #[test]
    fn the_window_bounds_calls_and_bytes_but_never_holds_back_a_lone_call() {
        let w = Window {
            calls: 3,
            bytes: 1000,
        };
        // Nothing in flight: any call starts, even one over the budget.
        assert!(w.admits(0, 0, 5000));
        // Within both limits.
        assert!(w.admits(1, 400, 600));
        assert!(w.admits(2, 0, 1000));
        // Over the bytes, or at the call count.
        assert!(!w.admits(1, 400, 601));
        assert!(!w.admits(3, 0, 1));
        assert!(!w.admits(1, usize::MAX, 1));
        // The call count alone, as before the byte budget.
        let count_only = Window {
            calls: 2,
            bytes: usize::MAX,
        };
        assert!(count_only.admits(1, 1 << 40, 1 << 40));
        assert!(!count_only.admits(2, 0, 0));
    }

    #[test]
    fn call_bytes_are_the_bodies_of_its_entries() {
        let p = SendPlan::new(
            vec![
                vec![msg(0, 0, 100)],
                vec![msg(1, 1, 250)],
                vec![msg(2, 2, 7)],
            ],
            BatchLimits::default(),
        );
        let round = p.next_round();
        assert_eq!(p.call_bytes(&round[0]), 357);
        assert_eq!(p.call_bytes(&round[0][1..2]), 250);
    }

    #[test]
    fn a_call_never_holds_two_entries_of_one_group() {
        let p = plan(&[&[0, 3, 5], &[1, 2], &[4]], BatchLimits::default());
        let round = p.next_round();
        assert_eq!(round.len(), 1);
        let groups: Vec<usize> = round[0].iter().map(|e| e.group).collect();
        assert_eq!(groups, vec![0, 1, 2]);
        assert!(round[0].iter().all(|e| e.message == 0));
    }

    #[test]
    fn a_call_too_long_for_the_endpoint_is_split_on_the_retry() {
        let groups: Vec<Vec<OutMessage>> = (0..8).map(|g| vec![msg(g, g, 100)]).collect();
        let mut p = SendPlan::new(groups, BatchLimits::default());
        let round = p.next_round();
        assert_eq!(round.len(), 1, "one call of 800 bytes");
        p.batch_too_long(&round[0]);
        for e in &round[0] {
            p.record(*e, Outcome::Retryable);
        }
        let round = p.next_round();
        assert_eq!(round.len(), 2, "{round:?}");
        assert!(round.iter().all(|c| p.call_bytes(c) <= 400));
        // Down to one entry a call, never none.
        for _ in 0..12 {
            let call = p.next_round()[0].clone();
            p.batch_too_long(&call);
        }
        assert_eq!(p.next_round().len(), 8);
    }

    #[test]
    fn calls_respect_entry_and_byte_limits() {
        let groups: Vec<Vec<OutMessage>> = (0..25).map(|g| vec![msg(g, g, 100)]).collect();
        let p = SendPlan::new(
            groups,
            BatchLimits {
                max_entries: 10,
                max_batch_bytes: 450,
                max_attempts: 3,
            },
        );
        let round = p.next_round();
        assert!(round.iter().all(|c| c.len() <= 4));
        assert_eq!(round.iter().map(Vec::len).sum::<usize>(), 25);
    }

    #[test]
    fn a_failed_entry_holds_back_its_group_and_only_its_group() {
        let mut p = plan(&[&[0, 2], &[1, 3]], BatchLimits::default());
        for e in p.next_round().concat() {
            let o = if e.group == 0 {
                Outcome::Retryable
            } else {
                Outcome::Accepted
            };
            p.record(e, o);
        }
        let round = p.next_round().concat();
        assert_eq!(
            round,
            vec![
                EntryRef {
                    group: 0,
                    message: 0
                },
                EntryRef {
                    group: 1,
                    message: 1
                }
            ]
        );
        // An outcome for a message that is not the head is ignored.
        p.record(
            EntryRef {
                group: 0,
                message: 1,
            },
            Outcome::Accepted,
        );
        assert_eq!(p.earliest_unsent(), Some(0));
    }

    #[test]
    fn permanent_failure_reports_the_earliest_record_and_stops_the_group() {
        let mut p = plan(&[&[0, 4], &[1, 2], &[3]], BatchLimits::default());
        for e in p.next_round().concat() {
            let o = if e.group == 1 {
                Outcome::Permanent
            } else {
                Outcome::Accepted
            };
            p.record(e, o);
        }
        // group 1 is stopped; group 0 goes on.
        let next = p.next_round().concat();
        assert_eq!(
            next,
            vec![EntryRef {
                group: 0,
                message: 1
            }]
        );
        p.record(next[0], Outcome::Accepted);
        assert!(p.next_round().is_empty());
        assert_eq!(p.earliest_unsent(), Some(1));
        assert_eq!(p.failed_groups(), 1);
        assert_eq!(p.accepted().0, 3);
    }

    #[test]
    fn retries_are_bounded() {
        let mut p = plan(
            &[&[7]],
            BatchLimits {
                max_attempts: 3,
                ..BatchLimits::default()
            },
        );
        let mut rounds = 0;
        loop {
            let round = p.next_round();
            if round.is_empty() {
                break;
            }
            rounds += 1;
            for e in round.concat() {
                p.record(e, Outcome::Retryable);
            }
        }
        assert_eq!(rounds, 3);
        assert_eq!(p.earliest_unsent(), Some(7));
    }
}
