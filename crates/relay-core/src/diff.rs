//! Table comparison: which target items are missing, different or extra,
//! compared by a canonical encoding (attribute order, set order and number
//! spelling do not count as differences).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::item::{same_item, Attrs, CanonicalKey};

/// The key attributes of `item`, or `None` if one is absent.
pub fn key_of(item: &Attrs, key_names: &[String]) -> Option<Attrs> {
    let mut key = Attrs::with_capacity(key_names.len());
    for name in key_names {
        key.insert(name.clone(), item.get(name)?.clone());
    }
    Some(key)
}

/// Items by canonical key.
pub type Keyed = BTreeMap<CanonicalKey, Attrs>;

/// Indexes items by their key attributes. Items without the key are counted
/// in the second value (they cannot exist in a real table).
pub fn index(items: impl IntoIterator<Item = Attrs>, key_names: &[String]) -> (Keyed, usize) {
    let mut out = Keyed::new();
    let mut keyless = 0;
    for item in items {
        match key_of(&item, key_names) {
            Some(k) => {
                out.insert(CanonicalKey::of(&k), item);
            }
            None => keyless += 1,
        }
    }
    (out, keyless)
}

/// What differs between an expected table and an actual one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableDiff {
    /// Compared keys that are equal on both sides.
    pub same: usize,
    /// In `expected`, not in `actual`.
    pub missing: Vec<CanonicalKey>,
    /// In `actual`, not in `expected`.
    pub extra: Vec<CanonicalKey>,
    /// On both sides, with different contents.
    pub changed: Vec<CanonicalKey>,
}

impl TableDiff {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }

    pub fn differences(&self) -> usize {
        self.missing.len() + self.extra.len() + self.changed.len()
    }
}

/// Compares two keyed tables.
pub fn diff(expected: &Keyed, actual: &Keyed) -> TableDiff {
    let mut d = TableDiff::default();
    for (k, want) in expected {
        match actual.get(k) {
            None => d.missing.push(k.clone()),
            Some(got) if !same_item(got, want) => d.changed.push(k.clone()),
            Some(_) => d.same += 1,
        }
    }
    d.extra = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .cloned()
        .collect();
    d
}

/// Which of `parts` partitions a key falls in, at a partitioning `level`
/// (each level hashes with another seed, so a partition too large for
/// memory splits evenly at the next level). FNV-1a: stable across runs and
/// platforms, which the spill files rely on.
pub fn partition_of(key: &CanonicalKey, level: u32, parts: u32) -> u32 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ u64::from(level).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in key.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    // Mix the high bits down: FNV's low bits are weak for short keys.
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 32;
    (h % u64::from(parts.max(1))) as u32
}

/// How many partitions `bytes` of spilled records need so that each one,
/// held in memory (about `expansion` times its bytes), fits in `budget`
/// bytes; at most `max`.
pub fn partitions_for(bytes: u64, expansion: u64, budget: u64, max: u32) -> u32 {
    let need = bytes.saturating_mul(expansion).div_ceil(budget.max(1));
    need.clamp(1, u64::from(max.max(1))) as u32
}

/// One side's record of a target key, as a bounded-memory verify spills it
/// (partitioned by target key, so both sides of a key meet in one
/// partition).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Seen {
    /// A source item through the transform, and its source key.
    Expected { item: Attrs, source: Option<Attrs> },
    /// A target item, and the source key it carries (when the transform
    /// keeps it).
    Actual { item: Attrs, names: Option<Attrs> },
}

/// A target key whose two sides differed on the first pass, or that several
/// source items mapped to: re-checked against the source items that may
/// own it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    pub target_key: Attrs,
    /// Every source item seen mapping to the key, and the one the target
    /// item names (under a key that passes between items, several).
    pub sources: Vec<Attrs>,
    /// The source side had the key (missing/changed), or only the target
    /// did (extra).
    pub expected: bool,
    /// The first pass found the sides different (not only contested).
    pub mismatched: bool,
}

/// What one partition's comparison (or one page's lookups) found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compared {
    pub expected: u64,
    pub actual: u64,
    /// First-pass differences (missing + changed + extra).
    pub mismatched: u64,
    pub suspects: Vec<Suspect>,
}

/// Compares the records of one partition: every record of a key must be in
/// the same call. Records of one side and one key: the last one wins (the
/// scan saw the key move between pages), and the key is a suspect.
pub fn compare(
    records: impl IntoIterator<Item = (CanonicalKey, Seen)>,
    tkeys: &[String],
) -> Compared {
    let mut expected = Keyed::new();
    let mut actual = Keyed::new();
    let mut origin: BTreeMap<CanonicalKey, Vec<Attrs>> = BTreeMap::new();
    let mut named: BTreeMap<CanonicalKey, Attrs> = BTreeMap::new();
    for (ck, seen) in records {
        match seen {
            Seen::Expected { item, source } => {
                let sources = origin.entry(ck.clone()).or_default();
                if let Some(sk) = source {
                    sources.push(sk);
                }
                expected.insert(ck, item);
            }
            Seen::Actual { item, names } => {
                if let Some(sk) = names {
                    named.insert(ck.clone(), sk);
                }
                actual.insert(ck, item);
            }
        }
    }
    let first = diff(&expected, &actual);
    let contested = origin
        .iter()
        .filter(|(_, sources)| sources.len() > 1)
        .map(|(ck, _)| ck);
    let differ: std::collections::BTreeSet<&CanonicalKey> = first
        .missing
        .iter()
        .chain(&first.changed)
        .chain(&first.extra)
        .collect();
    let mut keys: Vec<&CanonicalKey> = differ.iter().copied().chain(contested).collect();
    keys.sort();
    keys.dedup();
    let suspects = keys
        .into_iter()
        .filter_map(|ck| {
            let item = expected.get(ck).or_else(|| actual.get(ck))?;
            let target_key = key_of(item, tkeys)?;
            let mut sources = origin.get(ck).cloned().unwrap_or_default();
            if let Some(n) = named.get(ck) {
                let nk = CanonicalKey::of(n);
                if !sources.iter().any(|k| CanonicalKey::of(k) == nk) {
                    sources.push(n.clone());
                }
            }
            Some(Suspect {
                target_key,
                sources,
                expected: expected.contains_key(ck),
                mismatched: differ.contains(ck),
            })
        })
        .collect();
    Compared {
        expected: expected.len() as u64,
        actual: actual.len() as u64,
        mismatched: first.differences() as u64,
        suspects,
    }
}

/// A sample percentage in hundredths of a percent (10000 = every key).
/// A sample above 0 keeps at least one in 10,000 keys.
pub fn basis_points(percent: f64) -> u32 {
    let bp = (percent * 100.0).round().clamp(0.0, 10_000.0) as u32;
    if percent > 0.0 {
        bp.max(1)
    } else {
        bp
    }
}

/// Whether a verify sampling `bp` hundredths of a percent of keys checks
/// `key`: a stable hash, so both tables (and every worker) pick the same
/// keys.
pub fn sampled(key: &CanonicalKey, bp: u32) -> bool {
    if bp >= 10_000 {
        return true;
    }
    let h = key
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
    h % 10_000 < u64::from(bp)
}

/// A source item through the transform, for a comparison by lookup.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapped {
    pub key: CanonicalKey,
    pub target_key: Attrs,
    pub item: Attrs,
    /// The source item's key.
    pub source: Option<Attrs>,
}

/// Comparison by lookup, forward (the fanned-out verify): source items
/// through the transform against what the target holds at their keys
/// (`got`, read by key). A key that differs, is absent, or that several of
/// these items map to is a suspect, with every source that may own it (the
/// ones seen here, and the one the target item names: `named`).
pub fn check_forward(
    mapped: Vec<Mapped>,
    got: &Keyed,
    named: impl Fn(&Attrs) -> Option<Attrs>,
) -> Compared {
    let mut by_key: BTreeMap<CanonicalKey, (Attrs, Attrs, Vec<Attrs>)> = BTreeMap::new();
    for m in mapped {
        let e = by_key
            .entry(m.key)
            .or_insert_with(|| (m.target_key, Attrs::new(), Vec::new()));
        // The last one wins, as in `compare`; the key is contested anyway.
        e.1 = m.item;
        e.2.extend(m.source);
    }
    let mut c = Compared {
        expected: by_key.len() as u64,
        ..Compared::default()
    };
    for (ck, (target_key, item, mut sources)) in by_key {
        let here = got.get(&ck);
        c.actual += u64::from(here.is_some());
        let differs = here.is_none_or(|g| !same_item(g, &item));
        c.mismatched += u64::from(differs);
        if !differs && sources.len() <= 1 {
            continue;
        }
        if let Some(n) = here.and_then(&named) {
            let nk = CanonicalKey::of(&n);
            if !sources.iter().any(|k| CanonicalKey::of(k) == nk) {
                sources.push(n);
            }
        }
        c.suspects.push(Suspect {
            target_key,
            sources,
            expected: true,
            mismatched: differs,
        });
    }
    c
}

/// Comparison by lookup, in reverse: target items against the source items
/// they name (`sources`, read by the source key each target item carries,
/// keyed by its canonical form). A target item is extra when the source
/// item it names is gone or now maps to another key (`maps_to`), or when it
/// names none (`names` gives `None`: its source cannot be found, so it is
/// an extra nobody can repair). Target items whose source maps to them were
/// compared by the forward pass and count only in `actual`.
pub fn check_reverse(
    items: Vec<(CanonicalKey, Attrs)>,
    sources: &Keyed,
    tkeys: &[String],
    names: impl Fn(&Attrs) -> Option<Attrs>,
    maps_to: impl Fn(&Attrs) -> Option<CanonicalKey>,
) -> Compared {
    let mut c = Compared {
        actual: items.len() as u64,
        ..Compared::default()
    };
    for (ck, item) in items {
        let Some(target_key) = key_of(&item, tkeys) else {
            continue;
        };
        let named = names(&item);
        let owned = named
            .as_ref()
            .and_then(|sk| sources.get(&CanonicalKey::of(sk)))
            .and_then(&maps_to)
            .is_some_and(|k| k == ck);
        if owned {
            continue;
        }
        c.mismatched += 1;
        c.suspects.push(Suspect {
            target_key,
            sources: named.into_iter().collect(),
            expected: false,
            mismatched: true,
        });
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::AttributeValue as A;

    fn item(pk: &str, v: A) -> Attrs {
        Attrs::from([("pk".to_string(), A::S(pk.into())), ("v".to_string(), v)])
    }

    #[test]
    fn finds_missing_extra_and_changed_ignoring_set_order_and_number_spelling() {
        let keys = vec!["pk".to_string()];
        let (a, _) = index(
            [
                item("same", A::Ss(vec!["x".into(), "y".into()])),
                item("num", A::N("1.50".into())),
                item("missing", A::Bool(true)),
                item("changed", A::S("old".into())),
            ],
            &keys,
        );
        let (b, keyless) = index(
            [
                item("same", A::Ss(vec!["y".into(), "x".into()])),
                item("num", A::N("1.5".into())),
                item("changed", A::S("new".into())),
                item("extra", A::Null(true)),
                Attrs::new(),
            ],
            &keys,
        );
        assert_eq!(keyless, 1);
        let d = diff(&a, &b);
        assert_eq!(d.same, 2);
        assert_eq!((d.missing.len(), d.extra.len(), d.changed.len()), (1, 1, 1));
        assert!(!d.is_clean());
        assert!(diff(&a, &a).is_clean());
    }

    fn keyed(pk: &str) -> CanonicalKey {
        CanonicalKey::of(&Attrs::from([("pk".to_string(), A::S(pk.into()))]))
    }

    #[test]
    fn partitions_are_stable_spread_and_differ_by_level() {
        let keys: Vec<CanonicalKey> = (0..4000).map(|i| keyed(&format!("k{i}"))).collect();
        let mut counts = [0usize; 16];
        for k in &keys {
            let p = partition_of(k, 0, 16);
            assert_eq!(p, partition_of(k, 0, 16));
            counts[p as usize] += 1;
        }
        // Even enough: every partition within 40% of the mean (250).
        assert!(counts.iter().all(|c| (150..350).contains(c)), "{counts:?}");
        // A partition split at the next level spreads again.
        let first: Vec<&CanonicalKey> = keys
            .iter()
            .filter(|k| partition_of(k, 0, 16) == 3)
            .collect();
        let mut sub = [0usize; 4];
        for k in &first {
            sub[partition_of(k, 1, 4) as usize] += 1;
        }
        assert!(sub.iter().all(|c| *c > 0), "{sub:?}");
        assert_eq!(partition_of(&keys[0], 5, 1), 0);
    }

    #[test]
    fn partitions_for_fits_the_budget() {
        assert_eq!(partitions_for(0, 4, 100, 256), 1);
        assert_eq!(partitions_for(100, 4, 100, 256), 4);
        assert_eq!(partitions_for(101, 4, 100, 256), 5);
        assert_eq!(partitions_for(u64::MAX, 4, 1, 256), 256);
    }

    #[test]
    fn compare_finds_what_diff_finds_and_names_every_candidate_owner() {
        let keys = vec!["pk".to_string()];
        let src = |s: &str| Some(Attrs::from([("id".to_string(), A::S(s.into()))]));
        let exp = |pk: &str, v: &str, from: &str| {
            (
                keyed(pk),
                Seen::Expected {
                    item: item(pk, A::S(v.into())),
                    source: src(from),
                },
            )
        };
        let act = |pk: &str, v: &str, from: Option<&str>| {
            (
                keyed(pk),
                Seen::Actual {
                    item: item(pk, A::S(v.into())),
                    names: from.and_then(src),
                },
            )
        };
        let c = compare(
            [
                exp("same", "1", "a"),
                act("same", "1", Some("a")),
                exp("missing", "1", "b"),
                exp("changed", "1", "c"),
                act("changed", "2", Some("z")),
                act("extra", "1", Some("d")),
                act("orphan", "1", None),
                // Two source items mapped to one key (one moved away between
                // pages): a suspect even though the last one agrees.
                exp("moved", "1", "e"),
                exp("moved", "2", "f"),
                act("moved", "2", Some("f")),
            ],
            &keys,
        );
        assert_eq!((c.expected, c.actual, c.mismatched), (4, 5, 4));
        let find = |pk: &str| {
            c.suspects
                .iter()
                .find(|s| s.target_key == Attrs::from([("pk".to_string(), A::S(pk.into()))]))
                .cloned()
        };
        assert!(find("same").is_none());
        assert!(find("missing").unwrap().expected);
        assert_eq!(
            find("changed").unwrap().sources,
            vec![src("c").unwrap(), src("z").unwrap()]
        );
        let extra = find("extra").unwrap();
        assert!(!extra.expected);
        assert_eq!(extra.sources, vec![src("d").unwrap()]);
        assert!(find("orphan").unwrap().sources.is_empty());
        assert_eq!(
            find("moved").unwrap().sources,
            vec![src("e").unwrap(), src("f").unwrap()]
        );
        assert!(!find("moved").unwrap().mismatched && find("changed").unwrap().mismatched);
        assert_eq!(c.suspects.len(), 5);
    }

    #[test]
    fn lookups_find_missing_changed_contested_and_extra_items() {
        let tkeys = vec!["pk".to_string()];
        let src = |n: &str| Attrs::from([("id".to_string(), A::S(n.into()))]);
        let mapped = |pk: &str, v: &str, from: &str| Mapped {
            key: keyed(pk),
            target_key: Attrs::from([("pk".to_string(), A::S(pk.into()))]),
            item: item(pk, A::S(v.into())),
            source: Some(src(from)),
        };
        let mut with_owner = item("changed", A::S("old".into()));
        with_owner.insert("id".into(), A::S("s9".into()));
        let (got, _) = index(
            [
                item("same", A::S("a".into())),
                with_owner,
                item("both", A::S("x".into())),
            ],
            &tkeys,
        );
        let c = check_forward(
            vec![
                mapped("same", "a", "s1"),
                mapped("missing", "b", "s2"),
                mapped("changed", "new", "s3"),
                mapped("both", "x", "s4"),
                mapped("both", "x", "s5"),
            ],
            &got,
            |g| {
                g.get("id")
                    .map(|v| Attrs::from([("id".to_string(), v.clone())]))
            },
        );
        assert_eq!((c.expected, c.actual, c.mismatched), (4, 3, 2));
        let by: BTreeMap<String, &Suspect> = c
            .suspects
            .iter()
            .map(|x| (format!("{:?}", x.target_key.get("pk")), x))
            .collect();
        assert_eq!(by.len(), 3, "{by:?}");
        let changed = by[&format!("{:?}", Some(A::S("changed".into())))];
        // The target item's own source is a candidate owner too.
        assert_eq!(changed.sources, vec![src("s3"), src("s9")]);
        let both = by[&format!("{:?}", Some(A::S("both".into())))];
        assert!(!both.mismatched && both.sources.len() == 2);

        // In reverse: one item owned by its source, one whose source moved
        // to another key, one whose source is gone, one naming none.
        let named = |pk: &str, from: Option<&str>| {
            let mut i = item(pk, A::Null(true));
            if let Some(f) = from {
                i.insert("id".into(), A::S(f.into()));
            }
            (keyed(pk), i)
        };
        let (sources, _) = index(
            [
                Attrs::from([
                    ("id".to_string(), A::S("s1".into())),
                    ("to".to_string(), A::S("owned".into())),
                ]),
                Attrs::from([
                    ("id".to_string(), A::S("s2".into())),
                    ("to".to_string(), A::S("elsewhere".into())),
                ]),
            ],
            &["id".to_string()],
        );
        let r = check_reverse(
            vec![
                named("owned", Some("s1")),
                named("moved", Some("s2")),
                named("orphan", Some("s3")),
                named("unnamed", None),
            ],
            &sources,
            &tkeys,
            |i| {
                i.get("id")
                    .map(|v| Attrs::from([("id".to_string(), v.clone())]))
            },
            |s| match s.get("to") {
                Some(A::S(to)) => Some(keyed(to)),
                _ => None,
            },
        );
        assert_eq!((r.actual, r.mismatched), (4, 3));
        assert!(r.suspects.iter().all(|x| !x.expected));
        let sources_of: Vec<usize> = r.suspects.iter().map(|x| x.sources.len()).collect();
        assert_eq!(sources_of, vec![1, 1, 0]);
    }
}
