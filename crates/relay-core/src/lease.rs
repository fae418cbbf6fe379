//! The lease an in-process copy run holds on its copy's checkpoint.
//!
//! A copy seed run by the CLI itself (not by the copy workers, which Lambda
//! stops at their timeout) can be left behind: a second terminal, a
//! suspended laptop, a run still finishing a page when another operator's
//! `restart` or `replay` replaces the copy. Its puts landing after the
//! restart's clear would hold older images that the new copy then skips
//! (it puts only where the key is absent), and its tombstone deletes would
//! remove the new copy's tombstones. So every in-process run records a
//! lease in the checkpoint (`lease_<run>`: the time, on AWS's clock, until
//! which it may write), renews it while it works, and starts a write only
//! while the lease holds by its own clocks; whoever retires or ends a copy
//! waits until every recorded lease has passed.
//!
//! **Invariant:** a run starts a write only within [`LEASE_MS`] −
//! [`MARGIN_MS`] of sending the renewal that recorded its lease, by the
//! monotonic clock and by the wall clock (a suspended machine's monotonic
//! clock stops), and abandons the write at that point; the lease it
//! recorded is the AWS time it read before sending plus [`LEASE_MS`]. A
//! waiter goes on only when its own AWS time (a lower bound) is past the
//! latest lease plus [`SLACK_MS`]. Every write of a run therefore started
//! at least `MARGIN_MS + SLACK_MS` minus the run's clock error (a second
//! plus a response's latency) before the waiter goes on.

use std::time::Duration;

use crate::item::{AttributeValue, Attrs};

/// How long a recorded lease lasts after the renewal that recorded it.
pub const LEASE_MS: i64 = 60_000;
/// How often a run renews its lease.
pub const RENEW: Duration = Duration::from_secs(10);
/// The part of a lease a run does not use: its writes end this long before
/// the lease it recorded (the room for its clock's error and a write's
/// latency).
pub const MARGIN_MS: i64 = 20_000;
/// How long a waiter waits past the latest lease.
pub const SLACK_MS: i64 = 5_000;

// A run keeps part of its lease, and renews well inside what it keeps.
const _: () = assert!(MARGIN_MS > 0 && SLACK_MS > 0 && MARGIN_MS < LEASE_MS);
const _: () = assert!((RENEW.as_millis() as i64) * 2 < LEASE_MS - MARGIN_MS);

/// The checkpoint attribute of a run's lease.
pub const PREFIX: &str = "lease_";

/// The attribute of run `run`'s lease.
pub fn attr(run: &str) -> String {
    format!("{PREFIX}{run}")
}

/// The lease a renewal sent at AWS time `now_ms` records.
pub fn expiry(now_ms: i64) -> i64 {
    now_ms + LEASE_MS
}

/// How much longer a run may write, `mono` and `wall` after it sent the
/// renewal that recorded its lease (`wall`: `None` when the wall clock went
/// back; the monotonic clock then decides). Zero: the lease has lapsed for
/// this run, which starts nothing more.
pub fn left(mono: Duration, wall: Option<Duration>) -> Duration {
    let usable = Duration::from_millis((LEASE_MS - MARGIN_MS) as u64);
    usable.saturating_sub(mono.max(wall.unwrap_or_default()))
}

/// When every run that recorded a lease in `checkpoint` has stopped
/// writing (its latest lease plus [`SLACK_MS`]); `None`: no lease recorded.
pub fn all_stopped_by(checkpoint: &Attrs) -> Option<i64> {
    checkpoint
        .iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .filter_map(|(_, v)| match v {
            AttributeValue::N(n) => n.parse::<i64>().ok(),
            _ => None,
        })
        .max()
        .map(|l| l + SLACK_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_writes_for_the_lease_less_its_margin_by_either_clock() {
        let s = Duration::from_secs;
        assert_eq!(left(s(0), Some(s(0))), s(40));
        assert_eq!(left(s(30), Some(s(1))), s(10));
        // A suspended machine: the monotonic clock stood still.
        assert_eq!(left(s(1), Some(s(3600))), Duration::ZERO);
        // The wall clock went back: the monotonic clock decides.
        assert_eq!(left(s(39), None), s(1));
        assert_eq!(left(s(40), None), Duration::ZERO);
    }

    #[test]
    fn a_waiter_waits_for_the_latest_lease_and_its_slack() {
        let mut c = Attrs::new();
        c.insert("seed_ms".into(), AttributeValue::N("1".into()));
        c.insert("seg_0".into(), AttributeValue::S("1 1 done".into()));
        assert_eq!(all_stopped_by(&c), None);
        c.insert(attr("a"), AttributeValue::N(expiry(1_000).to_string()));
        c.insert(attr("b"), AttributeValue::N(expiry(7_000).to_string()));
        c.insert(attr("c"), AttributeValue::S("damaged".into()));
        assert_eq!(all_stopped_by(&c), Some(7_000 + LEASE_MS + SLACK_MS));
    }
}
