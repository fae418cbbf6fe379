//! The control item: one per migration, in the control table the template
//! creates. It holds the cutoff, the mode, the pause (a fence) and the
//! restart bookkeeping, written by the operator, and the consumption
//! high-water mark, written by the applier.
//!
//! **Invariant:** the applier applies an event only if a cutoff exists and the
//! event's time is at or after the cutoff's second (event times are whole
//! seconds: [`crate::apply::applies`]). No cutoff means no write at all.
//!
//! **Invariant:** the queue holds every change newer than
//! [`ControlState::frontier`]. The applier raises `consumed_ms` (monotonic)
//! before any message it consumed can be deleted, and consumes nothing while
//! the item is paused or after the item's `version` moved past the version
//! it planned with (see [`Applying`]); so whoever stopped the applier, the
//! frontier read after a pause is final.

use crate::item::{type_name, AttributeValue, Attrs};

/// Partition key attribute of the control table.
pub const ATTR_MIGRATION: &str = "migration";
pub const ATTR_CUTOFF_MS: &str = "cutoff_ms";
pub const ATTR_MODE: &str = "mode";
pub const ATTR_PAUSED_AT_MS: &str = "paused_at_ms";
pub const ATTR_VERSION: &str = "version";
pub const ATTR_SEED_METHOD: &str = "seed_method";
pub const ATTR_SEED_MS: &str = "seed_ms";
pub const ATTR_LAST_VERIFY: &str = "last_verify";
/// When the full verify whose verdict is `last_verify` began.
pub const ATTR_VERIFY_MS: &str = "verify_ms";
pub const ATTR_UPDATED_MS: &str = "updated_ms";
/// Written by the applier only: the newest event time it has consumed.
pub const ATTR_CONSUMED_MS: &str = "consumed_ms";
/// After a pause: no applier invocation that started before the pause can
/// still write after this time (trigger disabled + the function's timeout).
pub const ATTR_STOPPED_BY_MS: &str = "stopped_by_ms";
/// Set by `finish`: the target went live then. Re-seeds are refused after
/// it (they would drop the application's writes to the target since);
/// `resume` clears it.
pub const ATTR_FINISHED_MS: &str = "finished_ms";
/// Set by `dlq stream-failures --clear`, raised only: the newest change of
/// any stream failure record it deleted. Those changes are in no queue, so
/// every later seed must hold them.
pub const ATTR_CLEARED_MS: &str = "cleared_ms";
/// Written by every take-back of a fence (a `pause` or `finish` whose
/// trigger update failed): the `paused_at_ms` of the fence taken back. A
/// `pause` that kept another's fence and finds it lifted pauses again only
/// when this names that fence; any other lift (a resume, or an earlier
/// release's take-back) stands.
pub const ATTR_TAKEN_BACK_MS: &str = "taken_back_ms";
/// Which table the seed wrote (DescribeTable's TableId), bound to the seed
/// (`<method>@<seed_ms>=<id>`; a record of another seed counts as none):
/// written by a restore seed (`pitr`, `backup`) once its restore call
/// returned, by a copy seed with its tombstone-mode record, and by an
/// import's seed with its cutoff. Every new seed record clears it. A
/// restore seed resumed over a table that is not that one is refused (an
/// empty table the IaC created after a failed restore would otherwise get
/// the restore's cutoff), and a target replaced after its seed is NO-GO.
pub const ATTR_SEED_TABLE: &str = "seed_table";

/// Default safety margin between the seed's time and the cutoff. An
/// on-demand backup taken at T may miss writes up to T-60 s and event times
/// are rounded down to the second, so 120 s leaves room.
pub const DEFAULT_MARGIN_MS: i64 = 120_000;

/// How the applier treats REMOVEs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Deletes delete.
    #[default]
    Normal,
    /// Deletes write tombstones (during a scan copy).
    Tombstone,
}

/// The control item, as the applier reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlState {
    pub migration: String,
    pub cutoff_ms: Option<i64>,
    pub mode: Mode,
    pub paused_at_ms: Option<i64>,
    /// Incremented by every change; the CLI writes conditionally on it.
    pub version: u64,
    /// How and when the target was seeded (backup, pitr, export, scan).
    pub seed_method: Option<String>,
    pub seed_ms: Option<i64>,
    /// The last full verify's verdict ("clean" or a summary) since the
    /// last seed; every seed and restart clears it.
    pub last_verify: Option<String>,
    /// When that verify began (`None` on items written before it was
    /// recorded: the verdict's age is unknown). Cleared with the verdict.
    pub verify_ms: Option<i64>,
    pub updated_ms: Option<i64>,
    /// The newest event time in any message the applier has consumed
    /// (reported successful, so SQS deletes it). Written only by the
    /// applier, monotonically; operator writes never touch it.
    pub consumed_ms: Option<i64>,
    /// Set by `pause` once the trigger is disabled: the time after which no
    /// invocation that started before the pause can still write.
    pub stopped_by_ms: Option<i64>,
    /// Set by `finish`, cleared by `resume`: while set, `restart` and
    /// `replay` refuse (the target is the application's table now).
    pub finished_ms: Option<i64>,
    /// Raised by `dlq stream-failures --clear` to the newest change of the
    /// records it deleted, never lowered (no seed, restart or reopen clears
    /// it): every later seed's cutoff must be after it
    /// ([`seed_holds_cleared`]).
    pub cleared_ms: Option<i64>,
    /// The fence a command last took back (see [`ATTR_TAKEN_BACK_MS`]).
    pub taken_back_ms: Option<i64>,
    /// The table a restore seed's restore created (see [`ATTR_SEED_TABLE`]).
    pub seed_table: Option<String>,
}

/// What the applier may do under a control item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applying {
    /// Apply events at or after `cutoff_ms` in `mode`; commit only while the
    /// item is still at `version`.
    Yes {
        cutoff_ms: i64,
        mode: Mode,
        version: u64,
    },
    /// No cutoff: the target is not seeded. Nothing is written.
    NoCutoff,
    /// Paused (a fence): nothing is consumed until `resume`.
    Paused,
}

/// Why a control item is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("control item attribute {attr} must be a number (N), found {found}")]
    NotANumber { attr: &'static str, found: String },
    #[error("control item attribute mode is {0:?}; expected \"normal\" or \"tombstone\"")]
    BadMode(String),
}

fn number(item: &Attrs, attr: &'static str) -> Result<Option<i64>, ControlError> {
    match item.get(attr) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(n)) => {
            n.parse::<i64>()
                .map(Some)
                .map_err(|_| ControlError::NotANumber {
                    attr,
                    found: format!("N {n:?}"),
                })
        }
        Some(other) => Err(ControlError::NotANumber {
            attr,
            found: type_name(other).to_string(),
        }),
    }
}

fn string(item: &Attrs, attr: &'static str) -> Option<String> {
    match item.get(attr) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    }
}

impl ControlState {
    pub fn from_item(item: &Attrs) -> Result<Self, ControlError> {
        let migration = match item.get(ATTR_MIGRATION) {
            Some(AttributeValue::S(s)) => s.clone(),
            _ => String::new(),
        };
        let mode = match item.get(ATTR_MODE) {
            None => Mode::Normal,
            Some(AttributeValue::S(s)) if s == "normal" => Mode::Normal,
            Some(AttributeValue::S(s)) if s == "tombstone" => Mode::Tombstone,
            Some(AttributeValue::S(s)) => return Err(ControlError::BadMode(s.clone())),
            Some(other) => return Err(ControlError::BadMode(type_name(other).to_string())),
        };
        Ok(ControlState {
            migration,
            cutoff_ms: number(item, ATTR_CUTOFF_MS)?,
            mode,
            paused_at_ms: number(item, ATTR_PAUSED_AT_MS)?,
            version: number(item, ATTR_VERSION)?.unwrap_or(0).max(0) as u64,
            seed_method: string(item, ATTR_SEED_METHOD),
            seed_ms: number(item, ATTR_SEED_MS)?,
            last_verify: string(item, ATTR_LAST_VERIFY),
            verify_ms: number(item, ATTR_VERIFY_MS)?,
            updated_ms: number(item, ATTR_UPDATED_MS)?,
            consumed_ms: number(item, ATTR_CONSUMED_MS)?,
            stopped_by_ms: number(item, ATTR_STOPPED_BY_MS)?,
            finished_ms: number(item, ATTR_FINISHED_MS)?,
            cleared_ms: number(item, ATTR_CLEARED_MS)?,
            taken_back_ms: number(item, ATTR_TAKEN_BACK_MS)?,
            seed_table: string(item, ATTR_SEED_TABLE),
        })
    }

    /// The attributes the operator owns, each with its value or `None`
    /// (to be removed). The CLI writes exactly these, conditionally on
    /// `version`, so it never overwrites the applier's `consumed_ms`.
    pub fn operator_attrs(&self) -> Vec<(&'static str, Option<AttributeValue>)> {
        let n = |v: Option<i64>| v.map(|v| AttributeValue::N(v.to_string()));
        let s = |v: &Option<String>| v.clone().map(AttributeValue::S);
        let mode = match self.mode {
            Mode::Normal => "normal",
            Mode::Tombstone => "tombstone",
        };
        vec![
            (ATTR_CUTOFF_MS, n(self.cutoff_ms)),
            (ATTR_PAUSED_AT_MS, n(self.paused_at_ms)),
            (ATTR_STOPPED_BY_MS, n(self.stopped_by_ms)),
            (ATTR_FINISHED_MS, n(self.finished_ms)),
            (ATTR_CLEARED_MS, n(self.cleared_ms)),
            (ATTR_TAKEN_BACK_MS, n(self.taken_back_ms)),
            (ATTR_MODE, Some(AttributeValue::S(mode.into()))),
            (ATTR_SEED_METHOD, s(&self.seed_method)),
            (ATTR_SEED_MS, n(self.seed_ms)),
            (ATTR_SEED_TABLE, s(&self.seed_table)),
            (ATTR_LAST_VERIFY, s(&self.last_verify)),
            (ATTR_VERIFY_MS, n(self.verify_ms)),
            (ATTR_UPDATED_MS, n(self.updated_ms)),
        ]
    }

    /// The whole item (tests and first writes).
    pub fn to_item(&self) -> Attrs {
        let mut item = Attrs::new();
        item.insert(
            ATTR_MIGRATION.into(),
            AttributeValue::S(self.migration.clone()),
        );
        for (name, value) in self.operator_attrs() {
            if let Some(v) = value {
                item.insert(name.into(), v);
            }
        }
        item.insert(
            ATTR_VERSION.into(),
            AttributeValue::N(self.version.to_string()),
        );
        if let Some(t) = self.consumed_ms {
            item.insert(ATTR_CONSUMED_MS.into(), AttributeValue::N(t.to_string()));
        }
        item
    }

    /// A copy without the last verify's verdict (and its time): every seed
    /// and restart clears it, and so does reopening a finished migration.
    pub fn without_verdict(&self) -> ControlState {
        ControlState {
            last_verify: None,
            verify_ms: None,
            ..self.clone()
        }
    }

    /// The base of a new seed's (or restart's) record: no verdict, and no
    /// restored table yet (the new restore records its own).
    pub fn for_new_seed(&self) -> ControlState {
        ControlState {
            seed_table: None,
            ..self.without_verdict()
        }
    }

    /// A copy seed (`scan` or `export`) with its cutoff: not a restore, and
    /// not a restart's pending state (which keeps the old seed's time and
    /// mode).
    pub fn is_copy_seed(&self) -> bool {
        matches!(self.seed_method.as_deref(), Some("scan" | "export")) && self.cutoff_ms.is_some()
    }

    /// Whether the copy seeded at `seed_ms` is still the one this item
    /// names, in `mode`.
    pub fn names_copy(&self, seed_ms: i64, mode: Mode) -> bool {
        self.is_copy_seed() && self.seed_ms == Some(seed_ms) && self.mode == mode
    }

    /// Whether a new seed must keep the replay rules (paused, its point
    /// after the earliest): something was consumed (the queue no longer
    /// holds it), or a stream failure was cleared (its changes are in no
    /// queue). A restore seed also counts an earlier cutoff.
    pub fn reseeding(&self) -> bool {
        self.consumed_ms.is_some() || self.cleared_ms.is_some()
    }

    /// What the applier may do.
    pub fn applying(&self) -> Applying {
        match (self.cutoff_ms, self.paused_at_ms) {
            (_, Some(_)) => Applying::Paused,
            (None, None) => Applying::NoCutoff,
            (Some(cutoff_ms), None) => Applying::Yes {
                cutoff_ms,
                mode: self.mode,
                version: self.version,
            },
        }
    }

    /// The queue holds every change newer than this point: the newest event
    /// the applier consumed, or the pause, whichever is later (`None`: the
    /// applier never consumed anything and is not paused).
    pub fn frontier(&self) -> Option<i64> {
        match (self.consumed_ms, self.paused_at_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The cutoff for a seed taken at `seed_time_ms`.
pub fn cutoff_for_seed(seed_time_ms: i64, margin_ms: i64) -> i64 {
    seed_time_ms - margin_ms
}

/// The earliest point a replay may re-seed at: the queue holds every change
/// newer than `frontier_ms`, so the new cutoff (T - margin) must not be
/// before it.
pub fn earliest_replay_point(frontier_ms: i64, margin_ms: i64) -> i64 {
    frontier_ms + margin_ms
}

/// Whether a seed at `seed_ms` holds a change made at `cleared_ms`: the
/// change is before the seed's cutoff, as the applier skips an event
/// ([`crate::apply::applies`]). A stream failure record is cleared only
/// under a seed that holds it, and no later seed may lack it.
pub fn seed_holds_cleared(seed_ms: i64, cleared_ms: i64, margin_ms: i64) -> bool {
    !crate::apply::applies(cleared_ms, cutoff_for_seed(seed_ms, margin_ms))
}

/// The earliest seed time that holds a change made at `cleared_ms`
/// ([`seed_holds_cleared`]; the applier compares whole seconds).
pub fn earliest_seed_after_cleared(cleared_ms: i64, margin_ms: i64) -> i64 {
    cleared_ms.div_euclid(1000) * 1000 + 1000 + margin_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_items_round_trip() {
        let s = ControlState {
            migration: "m".into(),
            cutoff_ms: Some(1_700_000_000_000),
            mode: Mode::Tombstone,
            paused_at_ms: None,
            version: 7,
            taken_back_ms: Some(1_700_000_100_000),
            seed_table: Some("table-id".into()),
            ..Default::default()
        };
        assert_eq!(ControlState::from_item(&s.to_item()).unwrap(), s);
    }

    #[test]
    fn the_cleared_floor_is_kept_and_every_later_seed_must_hold_it() {
        let s = ControlState {
            migration: "m".into(),
            cutoff_ms: Some(50_000),
            cleared_ms: Some(41_500),
            last_verify: Some("clean".into()),
            ..Default::default()
        };
        assert_eq!(ControlState::from_item(&s.to_item()).unwrap(), s);
        assert_eq!(s.without_verdict().cleared_ms, Some(41_500));
        let margin = 120_000;
        for cleared in [41_000, 41_500, 41_999, -1, 0] {
            let first = earliest_seed_after_cleared(cleared, margin);
            assert!(seed_holds_cleared(first, cleared, margin), "{cleared}");
            assert!(!seed_holds_cleared(first - 1, cleared, margin), "{cleared}");
        }
    }

    #[test]
    fn a_copy_seed_is_named_by_its_method_cutoff_time_and_mode() {
        let copy = ControlState {
            seed_method: Some("export".into()),
            seed_ms: Some(7),
            cutoff_ms: Some(5),
            mode: Mode::Tombstone,
            ..Default::default()
        };
        assert!(copy.is_copy_seed() && copy.names_copy(7, Mode::Tombstone));
        assert!(!copy.names_copy(8, Mode::Tombstone) && !copy.names_copy(7, Mode::Normal));
        // A restart's pending state keeps the time and mode.
        let pending = ControlState {
            seed_method: Some("scan-pending".into()),
            cutoff_ms: None,
            ..copy.clone()
        };
        assert!(!pending.is_copy_seed() && !pending.names_copy(7, Mode::Tombstone));
        let restored = ControlState {
            seed_method: Some("backup".into()),
            ..copy
        };
        assert!(!restored.is_copy_seed());
        assert!(!ControlState::default().reseeding());
        for s in [
            ControlState {
                consumed_ms: Some(1),
                ..Default::default()
            },
            ControlState {
                cleared_ms: Some(1),
                ..Default::default()
            },
        ] {
            assert!(s.reseeding());
        }
    }

    #[test]
    fn bad_control_items_name_the_attribute() {
        let mut item = ControlState::default().to_item();
        item.insert(ATTR_CUTOFF_MS.into(), AttributeValue::S("yesterday".into()));
        let err = ControlState::from_item(&item).unwrap_err().to_string();
        assert!(err.contains("cutoff_ms"), "{err}");
    }

    #[test]
    fn operator_writes_never_carry_the_applier_high_water_mark() {
        let s = ControlState {
            migration: "m".into(),
            cutoff_ms: Some(5),
            consumed_ms: Some(9),
            ..Default::default()
        };
        assert!(s
            .operator_attrs()
            .iter()
            .all(|(name, _)| *name != ATTR_CONSUMED_MS && *name != ATTR_VERSION));
        assert_eq!(ControlState::from_item(&s.to_item()).unwrap(), s);
    }

    #[test]
    fn the_frontier_is_the_later_of_consumption_and_pause() {
        let mut s = ControlState::default();
        assert_eq!(s.frontier(), None);
        s.consumed_ms = Some(100);
        assert_eq!(s.frontier(), Some(100));
        s.paused_at_ms = Some(90);
        assert_eq!(s.frontier(), Some(100));
        s.paused_at_ms = Some(120);
        assert_eq!(s.frontier(), Some(120));
        assert_eq!(s.applying(), Applying::Paused);
        s.paused_at_ms = None;
        assert_eq!(s.applying(), Applying::NoCutoff);
        s.cutoff_ms = Some(1);
        assert!(matches!(s.applying(), Applying::Yes { cutoff_ms: 1, .. }));
        // A pause wins over a cutoff: a paused applier consumes nothing.
        s.paused_at_ms = Some(130);
        assert_eq!(s.applying(), Applying::Paused);
    }

    #[test]
    fn replay_points_keep_the_margin() {
        assert_eq!(cutoff_for_seed(1_000_000, DEFAULT_MARGIN_MS), 880_000);
        let earliest = earliest_replay_point(500_000, DEFAULT_MARGIN_MS);
        assert!(cutoff_for_seed(earliest, DEFAULT_MARGIN_MS) >= 500_000);
    }
}
