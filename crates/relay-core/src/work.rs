//! Fanned-out work (a copy, or a verify): the tasks the CLI puts on the
//! work queue for the worker Lambda, and the checkpoint state of each part
//! (a scan segment, an export data file, a sweep segment, a verify segment
//! of one table) that both sides read.
//!
//! **Invariant:** a part's state is one attribute of the checkpoint item,
//! holding its position *and* its counts, written only on the condition that
//! it still holds what the writer read. So a task that runs twice (a
//! redelivery, a worker that timed out while another took over) moves the
//! part forward at most once per page, and counts are never doubled.
//!
//! **Invariant:** a task names the seed it belongs to (`seed_ms`); a task of
//! an earlier seed (a restart, a finished copy) does nothing. A verify task
//! names its verify run (`run_ms`) the same way.

use serde::{Deserialize, Serialize};

use crate::item::{AttributeValue, Attrs};

/// The newest version of the task format this build reads and writes.
/// Each version is what a worker of an earlier release would do wrong, so
/// that it refuses the task instead:
/// - 3: a copy task (scan segment, export file, sweep) or a repairing
///   verify task: the copy's puts replace repair placeholders and its sweep
///   deletes them, and a repair marks its placeholders (helper-62 #2);
/// - 2: a verify task with `kept_ttl` (an earlier worker would report, and
///   repair, the items `TtlDeletes=skip` keeps);
/// - 1: every other task.
pub const TASK_VERSION: u32 = 3;
/// The oldest version this build reads.
pub const MIN_TASK_VERSION: u32 = 1;
/// The version a copy task (scan segment, export file, sweep) is written as.
pub const COPY_TASK_VERSION: u32 = 3;

/// The version a verify task is written as: a repairing one 3, one that
/// keeps what `TtlDeletes=skip` keeps 2, else 1.
pub fn verify_task_version(repair: bool, kept_ttl: bool) -> u32 {
    match (repair, kept_ttl) {
        (true, _) => 3,
        (false, true) => 2,
        (false, false) => MIN_TASK_VERSION,
    }
}

/// One unit of a fanned-out copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub v: u32,
    /// The seed the task belongs to (the checkpoint item's `seed_ms`).
    pub seed_ms: i64,
    /// This task's share of `--rate` (items/s, 0 = no limit).
    #[serde(default)]
    pub rate: u64,
    /// This task's share of `--max-wcu` (consumed WCU/s, 0 = no limit).
    #[serde(default)]
    pub max_wcu: u64,
    pub job: Job,
}

/// What a task does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Copy one parallel-scan segment of the source.
    Scan { segment: i32, segments: i32 },
    /// Load one data file of an export.
    File {
        index: usize,
        bucket: String,
        key: String,
        items: u64,
    },
    /// Delete the tombstones left in one scan segment of the target.
    Sweep { segment: i32, segments: i32 },
    /// Verify one scan segment of one table by lookups on the other (the
    /// fanned-out verify; its checkpoint item is the verify's, not the
    /// copy's).
    Verify {
        /// The verify run (its checkpoint item's `run_ms`).
        run_ms: i64,
        side: Side,
        segment: i32,
        segments: i32,
        /// Keys checked, in hundredths of a percent (10000 = all).
        sample_bp: u32,
        repair: bool,
        recheck_wait_s: u64,
        /// The source's TTL attribute under `TtlDeletes=skip`: a target
        /// item with no source item whose TTL has passed is kept on purpose
        /// (`relay_core::ttl`), not a difference.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kept_ttl: Option<String>,
    },
}

/// Which table a verify part scans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Source items through the transform, looked up in the target:
    /// missing and different items.
    Source,
    /// Target items, looked up at the source item they name: extra items.
    Target,
}

impl Job {
    /// The checkpoint attribute holding this part's state.
    pub fn part(&self) -> String {
        match self {
            Job::Scan { segment, .. } => format!("seg_{segment}"),
            Job::File { index, .. } => format!("file_{index}"),
            Job::Sweep { segment, .. } => format!("sweep_{segment}"),
            Job::Verify { side, segment, .. } => match side {
                Side::Source => format!("vsrc_{segment}"),
                Side::Target => format!("vtgt_{segment}"),
            },
        }
    }
}

/// A task that cannot be run, with why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TaskError {
    #[error("a work task is not JSON of a task: {0}")]
    Malformed(String),
    #[error("a work task has version {0}, this worker reads versions {MIN_TASK_VERSION} to {TASK_VERSION}: deploy the same release of the CLI and the stack")]
    Version(u32),
}

impl Task {
    pub fn new(seed_ms: i64, job: Job) -> Task {
        Task {
            v: match &job {
                Job::Scan { .. } | Job::File { .. } | Job::Sweep { .. } => COPY_TASK_VERSION,
                Job::Verify {
                    repair, kept_ttl, ..
                } => verify_task_version(*repair, kept_ttl.is_some()),
            },
            seed_ms,
            rate: 0,
            max_wcu: 0,
            job,
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a task; the version is checked before anything else.
    pub fn parse(body: &str) -> Result<Task, TaskError> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let v = serde_json::from_str::<Version>(body)
            .map_err(|e| TaskError::Malformed(e.to_string()))?
            .v;
        if !(MIN_TASK_VERSION..=TASK_VERSION).contains(&v) {
            return Err(TaskError::Version(v));
        }
        serde_json::from_str(body).map_err(|e| TaskError::Malformed(e.to_string()))
    }
}

/// Splits a limit over `parts` tasks running at once: their sum never
/// exceeds it (0 = no limit; a share is at least 1).
pub fn share(limit: u64, parts: u64) -> u64 {
    if limit == 0 {
        0
    } else {
        (limit / parts.max(1)).max(1)
    }
}

/// Where a part stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Pos {
    #[default]
    Start,
    /// Continue after this point: a scan's last evaluated key (JSON) or a
    /// file's line count.
    After(String),
    Done,
}

/// A part's checkpoint: where it stands and what it counted up to there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartState {
    pub pos: Pos,
    /// Items read up to `pos`.
    pub items: u64,
    /// Of those, items written (the rest were already there, or were not
    /// tombstones any more for a sweep).
    pub written: u64,
}

impl PartState {
    /// Reads a part's attribute (`items written position`, one string so
    /// that a conditional write can compare it whole); `None` (never
    /// started) is `Start`.
    pub fn read(v: Option<&AttributeValue>) -> PartState {
        let Some(AttributeValue::S(s)) = v else {
            return PartState::default();
        };
        // Checkpoints of the previous release: "done", or a scan key (JSON).
        if s == "done" || s.starts_with('{') {
            return PartState {
                pos: if s == "done" {
                    Pos::Done
                } else {
                    Pos::After(s.clone())
                },
                ..PartState::default()
            };
        }
        let mut f = s.splitn(3, ' ');
        let (items, written, pos) = (f.next(), f.next(), f.next());
        PartState {
            items: items.and_then(|n| n.parse().ok()).unwrap_or(0),
            written: written.and_then(|n| n.parse().ok()).unwrap_or(0),
            pos: match pos {
                None | Some("-") => Pos::Start,
                Some("done") => Pos::Done,
                Some(p) => Pos::After(p.to_string()),
            },
        }
    }

    pub fn to_attr(&self) -> AttributeValue {
        let pos = match &self.pos {
            Pos::Start => "-",
            Pos::After(s) => s,
            Pos::Done => "done",
        };
        AttributeValue::S(format!("{} {} {pos}", self.items, self.written))
    }

    pub fn done(&self) -> bool {
        self.pos == Pos::Done
    }
}

/// A copy's progress summed over its parts (`prefix`: `seg_`, `file_` or
/// `sweep_`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub done: u64,
    pub items: u64,
    pub written: u64,
}

pub fn totals(checkpoint: &Attrs, prefix: &str) -> Totals {
    checkpoint
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|(_, v)| PartState::read(Some(v)))
        .fold(Totals::default(), |t, p| Totals {
            done: t.done + u64::from(p.done()),
            items: t.items + p.items,
            written: t.written + p.written,
        })
}

/// Items per second and seconds left, from the items counted since
/// `started_ms` and the expected total (`None` when unknown or no rate yet).
pub fn rate_and_eta(
    items: u64,
    expected: Option<u64>,
    started_ms: i64,
    now_ms: i64,
) -> (Option<f64>, Option<f64>) {
    let secs = (now_ms - started_ms) as f64 / 1000.0;
    if secs <= 0.0 || items == 0 {
        return (None, None);
    }
    let rate = items as f64 / secs;
    let eta = expected.map(|e| e.saturating_sub(items) as f64 / rate);
    (Some(rate), eta)
}

/// What a verify counted (one part's, or all parts' summed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyCounts {
    /// Source items read.
    pub source_items: u64,
    /// Target items read.
    pub target_items: u64,
    /// Source keys compared (sampled and mappable).
    pub expected: u64,
    /// Target keys compared.
    pub actual: u64,
    pub unmappable: u64,
    /// First-pass mismatches.
    pub mismatched: u64,
    pub missing: u64,
    pub changed: u64,
    pub extra: u64,
    /// First-pass mismatches that still differed after the re-checks.
    pub still_mismatched: u64,
    pub repaired: u64,
    pub remaining: u64,
    pub unrepairable: u64,
    /// Target items with no source item that `TtlDeletes=skip` keeps on
    /// purpose (their TTL has passed): not differences.
    pub ttl_kept: u64,
}

impl std::ops::AddAssign for VerifyCounts {
    fn add_assign(&mut self, o: VerifyCounts) {
        self.source_items += o.source_items;
        self.target_items += o.target_items;
        self.expected += o.expected;
        self.actual += o.actual;
        self.unmappable += o.unmappable;
        self.mismatched += o.mismatched;
        self.missing += o.missing;
        self.changed += o.changed;
        self.extra += o.extra;
        self.still_mismatched += o.still_mismatched;
        self.repaired += o.repaired;
        self.remaining += o.remaining;
        self.unrepairable += o.unrepairable;
        self.ttl_kept += o.ttl_kept;
    }
}

/// Examples a verify part keeps (target keys), over all kinds: the report
/// shows 20 of each kind, and a part's state stays small (the CLI reads
/// every part's state at every poll).
pub const PART_EXAMPLES: usize = 2;

/// A verify part's checkpoint: where its scan stands, what it counted up
/// to there, and a few examples. Stored as one JSON string, so that a
/// conditional write can compare it whole (the invariant of this module).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyState {
    #[serde(with = "pos_string")]
    pub pos: Pos,
    pub n: VerifyCounts,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<Attrs>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<Attrs>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<Attrs>,
}

mod pos_string {
    use super::Pos;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Pos, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match p {
            Pos::Start => "-",
            Pos::After(k) => k,
            Pos::Done => "done",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Pos, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "-" => Pos::Start,
            "done" => Pos::Done,
            _ => Pos::After(s),
        })
    }
}

impl VerifyState {
    /// Reads a part's attribute; `None` (never started) is the start, and a
    /// damaged one is an error (counting it as zero would hide items).
    pub fn read(v: Option<&AttributeValue>) -> Result<VerifyState, String> {
        match v {
            None => Ok(VerifyState::default()),
            Some(AttributeValue::S(s)) => serde_json::from_str(s)
                .map_err(|e| format!("a verify part's checkpoint is damaged: {e}")),
            Some(_) => Err("a verify part's checkpoint is not a string".into()),
        }
    }

    pub fn to_attr(&self) -> AttributeValue {
        AttributeValue::S(serde_json::to_string(self).unwrap_or_default())
    }

    pub fn done(&self) -> bool {
        self.pos == Pos::Done
    }

    /// Examples kept so far (all kinds).
    pub fn examples(&self) -> usize {
        self.missing.len() + self.changed.len() + self.extra.len()
    }
}

/// A verify's parts (`vsrc_N`, `vtgt_N`) from the attributes the CLI reads
/// them into (one per part).
pub fn verify_parts(checkpoint: &Attrs) -> Result<Vec<VerifyState>, String> {
    checkpoint
        .iter()
        .filter(|(k, _)| {
            ["vsrc_", "vtgt_"].iter().any(|p| {
                k.strip_prefix(p)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .map(|(_, v)| VerifyState::read(Some(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_round_trips_and_an_unknown_version_is_named() {
        let t = Task::new(
            5,
            Job::File {
                index: 3,
                bucket: "b".into(),
                key: "k/data/x.json.gz".into(),
                items: 10,
            },
        );
        assert_eq!(Task::parse(&t.encode()), Ok(t));
        let e = Task::parse(r#"{"v":4,"seed_ms":1,"job":{"kind":"teleport"}}"#).unwrap_err();
        assert_eq!(e, TaskError::Version(4));
        assert!(e.to_string().contains("version 4"));
        assert!(matches!(Task::parse("nope"), Err(TaskError::Malformed(_))));
        assert!(matches!(
            Task::parse(r#"{"v":1,"seed_ms":1,"job":{"kind":"teleport"}}"#),
            Err(TaskError::Malformed(_))
        ));
    }

    #[test]
    fn part_states_round_trip_and_sum() {
        let a = PartState {
            pos: Pos::After("{\"k\":1}".into()),
            items: 7,
            written: 5,
        };
        let b = PartState {
            pos: Pos::Done,
            items: 3,
            written: 3,
        };
        assert_eq!(PartState::read(Some(&a.to_attr())), a);
        assert_eq!(PartState::read(Some(&b.to_attr())), b);
        assert_eq!(PartState::read(None), PartState::default());
        let spaced = PartState {
            pos: Pos::After("{\"k\": {\"S\": \"a b\"}}".into()),
            items: 1,
            written: 0,
        };
        assert_eq!(PartState::read(Some(&spaced.to_attr())), spaced);
        // A checkpoint the previous release wrote goes on where it was.
        assert!(PartState::read(Some(&AttributeValue::S("done".into()))).done());
        assert_eq!(
            PartState::read(Some(&AttributeValue::S("{\"pk\":{\"S\":\"a\"}}".into()))).pos,
            Pos::After("{\"pk\":{\"S\":\"a\"}}".into())
        );
        let c = Attrs::from([
            ("seg_0".to_string(), a.to_attr()),
            ("seg_1".to_string(), b.to_attr()),
            ("segments".to_string(), AttributeValue::N("2".into())),
            ("sweep_0".to_string(), b.to_attr()),
        ]);
        assert_eq!(
            totals(&c, "seg_"),
            Totals {
                done: 1,
                items: 10,
                written: 8
            }
        );
        assert_eq!(totals(&c, "sweep_").done, 1);
    }

    #[test]
    fn shares_never_sum_past_the_limit() {
        assert_eq!(share(0, 8), 0);
        assert_eq!(share(1000, 8), 125);
        assert_eq!(share(1000, 0), 1000);
        assert!(share(10, 3) * 3 <= 10);
        assert_eq!(rate_and_eta(0, Some(10), 0, 1000), (None, None));
        assert_eq!(
            rate_and_eta(50, Some(150), 0, 10_000),
            (Some(5.0), Some(20.0))
        );
    }

    #[test]
    fn verify_states_round_trip_sum_and_refuse_damage() {
        let a = VerifyState {
            pos: Pos::After("{\"pk\":{\"S\":\"a b\"}}".into()),
            n: VerifyCounts {
                source_items: 10,
                missing: 1,
                ..VerifyCounts::default()
            },
            missing: vec![Attrs::from([(
                "pk".to_string(),
                AttributeValue::S("x".into()),
            )])],
            ..VerifyState::default()
        };
        assert_eq!(VerifyState::read(Some(&a.to_attr())).unwrap(), a);
        let done = VerifyState {
            pos: Pos::Done,
            ..VerifyState::default()
        };
        assert!(VerifyState::read(Some(&done.to_attr())).unwrap().done());
        assert_eq!(VerifyState::read(None).unwrap().pos, Pos::Start);
        assert!(VerifyState::read(Some(&AttributeValue::S("7 7 done".into()))).is_err());
        let c = Attrs::from([
            ("vsrc_0".to_string(), a.to_attr()),
            ("vtgt_0".to_string(), done.to_attr()),
            ("run_ms".to_string(), AttributeValue::N("5".into())),
        ]);
        let parts = verify_parts(&c).unwrap();
        assert_eq!(parts.len(), 2);
        let mut sum = VerifyCounts::default();
        for p in &parts {
            sum += p.n;
        }
        assert_eq!((sum.source_items, sum.missing), (10, 1));
        let t = Task::new(
            1,
            Job::Verify {
                run_ms: 9,
                side: Side::Target,
                segment: 3,
                segments: 4,
                sample_bp: 10_000,
                repair: false,
                recheck_wait_s: 2,
                kept_ttl: Some("expires".into()),
            },
        );
        assert_eq!(Task::parse(&t.encode()), Ok(t.clone()));
        assert_eq!(t.job.part(), "vtgt_3");
        // A worker of an earlier release (version 1 only) refuses it rather
        // than ignore `kept_ttl`; one of version 2 refuses copy tasks and
        // repairs (placeholders); a plain verify stays version 1.
        assert_eq!(t.v, 2);
        let sweep = Job::Sweep {
            segment: 0,
            segments: 1,
        };
        assert_eq!(Task::new(1, sweep).v, 3);
        let verify = |repair: bool| Job::Verify {
            run_ms: 9,
            side: Side::Source,
            segment: 0,
            segments: 1,
            sample_bp: 10_000,
            repair,
            recheck_wait_s: 2,
            kept_ttl: None,
        };
        assert_eq!(Task::new(1, verify(false)).v, 1);
        assert_eq!(Task::new(1, verify(true)).v, 3);
        assert_eq!(
            Task::parse(&Task { v: 4, ..t }.encode()),
            Err(TaskError::Version(4))
        );
    }
}
