//! Table comparison: which target items are missing, different or extra,
//! compared by a canonical encoding (attribute order, set order and number
//! spelling do not count as differences).

use std::collections::BTreeMap;

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
}
