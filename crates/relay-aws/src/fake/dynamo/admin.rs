//! The fake's control-plane and conditional operations, for `FakeAws`:
//! describe, conditional writes, point-in-time state, backups, restores and
//! scans.

use std::collections::{BTreeMap, HashSet};

use relay_core::item::{Attrs, CanonicalKey};

use super::{holds, key_attrs_of, key_of, mutate, not_found, Check, DbStateRef, Table};
use crate::AwsError;

/// What the fake's DescribeTable tells.
pub(crate) struct Described {
    pub status: String,
    pub key_names: Vec<String>,
    pub count: i64,
    pub stream: bool,
    pub id: u64,
    pub restored: bool,
}

impl DbStateRef<'_> {
    pub(crate) fn now_ms(&self) -> i64 {
        self.0.clock.now_ms()
    }

    pub(crate) fn describe(&self, name: &str) -> Option<Described> {
        let now = self.0.clock.now_ms();
        self.0.tables.get(name).map(|t| Described {
            status: if now >= t.ready_at_ms {
                "ACTIVE"
            } else {
                "CREATING"
            }
            .to_string(),
            key_names: t.key_attrs.clone(),
            count: t.items.len() as i64,
            stream: t.stream.is_some(),
            id: t.id,
            restored: t.restored,
        })
    }

    pub(crate) fn pitr(&self, name: &str) -> Option<bool> {
        self.0.tables.get(name).map(|t| t.pitr)
    }

    pub(crate) fn get(&self, table: &str, key: &Attrs) -> Result<Option<Attrs>, AwsError> {
        let t = self
            .0
            .tables
            .get(table)
            .ok_or_else(|| not_found("GetItem"))?;
        let ck = key_of(&t.key_attrs, key, "GetItem")?;
        Ok(t.items.get(&ck).cloned())
    }

    /// Writes `new` (or deletes, with `None`) at the key of `key_source` if
    /// `check` holds on the stored item. Returns whether it wrote.
    pub(crate) fn write_if(
        &mut self,
        table: &str,
        op: &'static str,
        key_source: &Attrs,
        new: impl FnOnce(Option<&Attrs>) -> Option<Attrs>,
        check: &Check,
    ) -> Result<bool, AwsError> {
        let t = self.0.tables.get(table).ok_or_else(|| not_found(op))?;
        let ck = key_of(&t.key_attrs, key_source, op)?;
        let current = t.items.get(&ck);
        if !holds(check, current) {
            return Ok(false);
        }
        let next = new(current);
        if next.is_none() && current.is_none() {
            return Ok(true);
        }
        mutate(self.0, table, op, key_source, next, false)?;
        Ok(true)
    }

    pub(crate) fn delete_table(&mut self, name: &str) {
        self.0.tables.remove(name);
    }

    /// Creates `target` with `items` and the key schema of `like`, ACTIVE
    /// after the restore delay.
    pub(crate) fn create_from(
        &mut self,
        like: &str,
        target: &str,
        items: BTreeMap<CanonicalKey, Attrs>,
        op: &'static str,
    ) -> Result<u64, AwsError> {
        if self.0.tables.contains_key(target) {
            return Err(AwsError::permanent(
                op,
                "TableAlreadyExistsException",
                "Table already exists",
            ));
        }
        let key_attrs = self
            .0
            .tables
            .get(like)
            .map(|t| t.key_attrs.clone())
            .ok_or_else(|| not_found(op))?;
        let ready_at_ms = self.0.clock.now_ms() + self.0.restore_ms;
        self.0.next_table_id += 1;
        let id = self.0.next_table_id;
        self.0.tables.insert(
            target.to_string(),
            Table {
                key_attrs,
                items,
                ready_at_ms,
                id,
                restored: true,
                ..Table::default()
            },
        );
        Ok(id)
    }

    /// The table's items as they were at `at_ms` (from its history).
    pub(crate) fn state_at(
        &self,
        table: &str,
        at_ms: i64,
    ) -> Result<BTreeMap<CanonicalKey, Attrs>, AwsError> {
        let t = self
            .0
            .tables
            .get(table)
            .ok_or_else(|| not_found("RestoreTableToPointInTime"))?;
        let mut out = BTreeMap::new();
        for (time, ck, item) in &t.history {
            if *time > at_ms {
                break;
            }
            match item {
                Some(i) => out.insert(ck.clone(), i.clone()),
                None => out.remove(ck),
            };
        }
        Ok(out)
    }

    /// Starts a backup of `table` now; returns (ARN, time).
    pub(crate) fn create_backup(&mut self, table: &str) -> Result<(String, i64), AwsError> {
        if !self.0.tables.contains_key(table) {
            return Err(not_found("CreateBackup"));
        }
        let now = self.0.clock.now_ms();
        let arn = format!(
            "arn:aws:dynamodb:us-east-1:123456789012:table/{table}/backup/{}",
            self.0.backups.len() + 1
        );
        let ready_at_ms = now + self.0.backup_fuzz_ms;
        self.0.backups.insert(
            arn.clone(),
            super::Backup {
                table: table.to_string(),
                created_ms: now,
                ready_at_ms,
                snapshot: None,
            },
        );
        Ok((arn, now))
    }

    /// A backup's status; on becoming AVAILABLE its snapshot is taken: each
    /// item as it was at its own random time within the fuzz window (a
    /// backup is not causally consistent).
    pub(crate) fn backup_status(&mut self, arn: &str) -> Result<String, AwsError> {
        let now = self.0.clock.now_ms();
        let fuzz = self.0.backup_fuzz_ms;
        let (table, created, ready, done) = match self.0.backups.get(arn) {
            Some(b) => (
                b.table.clone(),
                b.created_ms,
                b.ready_at_ms,
                b.snapshot.is_some(),
            ),
            None => return Err(not_found("DescribeBackup")),
        };
        if done {
            return Ok("AVAILABLE".into());
        }
        if now < ready {
            return Ok("CREATING".into());
        }
        let history = self
            .0
            .tables
            .get(&table)
            .map(|t| t.history.clone())
            .unwrap_or_default();
        let keys: HashSet<CanonicalKey> = history.iter().map(|(_, k, _)| k.clone()).collect();
        let mut keys: Vec<CanonicalKey> = keys.into_iter().collect();
        keys.sort();
        let mut snapshot = BTreeMap::new();
        for ck in keys {
            let at = match self.0.rng.as_mut() {
                Some(r) if fuzz > 0 => created - fuzz + r.i64(0..=2 * fuzz),
                _ => created,
            };
            let state = history
                .iter()
                .rfind(|(t, k, _)| *t <= at && *k == ck)
                .and_then(|(_, _, i)| i.clone());
            if let Some(item) = state {
                snapshot.insert(ck, item);
            }
        }
        if let Some(b) = self.0.backups.get_mut(arn) {
            b.snapshot = Some(snapshot);
        }
        Ok("AVAILABLE".into())
    }

    pub(crate) fn backup(&self, arn: &str) -> Option<(String, BTreeMap<CanonicalKey, Attrs>)> {
        self.0
            .backups
            .get(arn)
            .and_then(|b| Some((b.table.clone(), b.snapshot.clone()?)))
    }

    /// Items of one scan segment after `start`, at most `limit`, and the
    /// key to continue from.
    pub(crate) fn scan(
        &self,
        table: &str,
        segment: i32,
        total: i32,
        start: Option<&Attrs>,
        limit: usize,
    ) -> Result<(Vec<Attrs>, Option<Attrs>), AwsError> {
        let t = self.0.tables.get(table).ok_or_else(|| not_found("Scan"))?;
        let after = match start {
            Some(k) => Some(key_of(&t.key_attrs, k, "Scan")?),
            None => None,
        };
        let in_segment = |ck: &CanonicalKey| {
            let h = ck.as_bytes().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
            });
            (h % total.max(1) as u64) as i32 == segment
        };
        let mut items = Vec::new();
        let mut last = None;
        for (ck, item) in &t.items {
            if after.as_ref().is_some_and(|a| ck <= a) || !in_segment(ck) {
                continue;
            }
            if items.len() == limit {
                return Ok((items, last));
            }
            items.push(item.clone());
            last = Some(key_attrs_of(&t.key_attrs, item));
        }
        Ok((items, None))
    }
}
