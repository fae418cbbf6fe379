//! The control item: one per migration, in the control table the template
//! creates. It holds the cutoff, the mode and the restart bookkeeping.
//!
//! **Invariant:** the applier applies an event only if a cutoff exists and the
//! event's time is at or after it. No cutoff means no write at all.

use crate::item::{AttributeValue, Attrs};

/// Partition key attribute of the control table.
pub const ATTR_MIGRATION: &str = "migration";
pub const ATTR_CUTOFF_MS: &str = "cutoff_ms";
pub const ATTR_MODE: &str = "mode";
pub const ATTR_PAUSED_AT_MS: &str = "paused_at_ms";
pub const ATTR_VERSION: &str = "version";
pub const ATTR_SEED_METHOD: &str = "seed_method";
pub const ATTR_SEED_MS: &str = "seed_ms";
pub const ATTR_LAST_VERIFY: &str = "last_verify";
pub const ATTR_UPDATED_MS: &str = "updated_ms";

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
    /// The last verify's verdict ("clean" or a summary).
    pub last_verify: Option<String>,
    pub updated_ms: Option<i64>,
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

fn type_name(v: &AttributeValue) -> &'static str {
    match v {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::M(_) => "M",
        AttributeValue::L(_) => "L",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Bs(_) => "BS",
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
            updated_ms: number(item, ATTR_UPDATED_MS)?,
        })
    }

    pub fn to_item(&self) -> Attrs {
        let mut item = Attrs::new();
        item.insert(
            ATTR_MIGRATION.into(),
            AttributeValue::S(self.migration.clone()),
        );
        if let Some(c) = self.cutoff_ms {
            item.insert(ATTR_CUTOFF_MS.into(), AttributeValue::N(c.to_string()));
        }
        if let Some(p) = self.paused_at_ms {
            item.insert(ATTR_PAUSED_AT_MS.into(), AttributeValue::N(p.to_string()));
        }
        let mode = match self.mode {
            Mode::Normal => "normal",
            Mode::Tombstone => "tombstone",
        };
        item.insert(ATTR_MODE.into(), AttributeValue::S(mode.into()));
        item.insert(
            ATTR_VERSION.into(),
            AttributeValue::N(self.version.to_string()),
        );
        if let Some(m) = &self.seed_method {
            item.insert(ATTR_SEED_METHOD.into(), AttributeValue::S(m.clone()));
        }
        if let Some(t) = self.seed_ms {
            item.insert(ATTR_SEED_MS.into(), AttributeValue::N(t.to_string()));
        }
        if let Some(v) = &self.last_verify {
            item.insert(ATTR_LAST_VERIFY.into(), AttributeValue::S(v.clone()));
        }
        if let Some(t) = self.updated_ms {
            item.insert(ATTR_UPDATED_MS.into(), AttributeValue::N(t.to_string()));
        }
        item
    }
}

/// The cutoff for a seed taken at `seed_time_ms`.
pub fn cutoff_for_seed(seed_time_ms: i64, margin_ms: i64) -> i64 {
    seed_time_ms - margin_ms
}

/// The earliest point a replay may re-seed at: the queue holds every event
/// since the pause, so the new cutoff (T - margin) must not be before it.
pub fn earliest_replay_point(paused_at_ms: i64, margin_ms: i64) -> i64 {
    paused_at_ms + margin_ms
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
            ..Default::default()
        };
        assert_eq!(ControlState::from_item(&s.to_item()).unwrap(), s);
    }

    #[test]
    fn bad_control_items_name_the_attribute() {
        let mut item = ControlState::default().to_item();
        item.insert(ATTR_CUTOFF_MS.into(), AttributeValue::S("yesterday".into()));
        let err = ControlState::from_item(&item).unwrap_err().to_string();
        assert!(err.contains("cutoff_ms"), "{err}");
    }

    #[test]
    fn replay_points_keep_the_margin() {
        assert_eq!(cutoff_for_seed(1_000_000, DEFAULT_MARGIN_MS), 880_000);
        let earliest = earliest_replay_point(500_000, DEFAULT_MARGIN_MS);
        assert!(cutoff_for_seed(earliest, DEFAULT_MARGIN_MS) >= 500_000);
    }
}
