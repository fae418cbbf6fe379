//! Key rules that can map two source items to one target key while the
//! transform does not count as reusing keys (every part is a source key
//! attribute, so no owner is checked): `convert` to N ("7" and "007" are
//! one number) and `concat` or `uuidv5` over several parts (`("a#b", "c")`
//! and `("a", "b#c")` join alike). The applier then writes both items'
//! changes to one key: the later replaces the other, and a delete of one
//! removes the other's row. `verify` may not see it (it settles a shared
//! key against one of the items); `preflight` warns.

use super::{Declarative, Derivation, Scalar, Transform};

/// Why two source items can share a target key under `t`, if they can.
pub(super) fn why(t: &Declarative) -> Option<String> {
    if t.reuses_keys(&mut t.source_keys.iter()) {
        // Owned writes: a key's item is settled from the source.
        return None;
    }
    let reasons: Vec<String> = t
        .rules
        .iter()
        .filter_map(|(name, d)| match d {
            Derivation::Convert(from, Scalar::N) => Some(format!(
                "{name} converts {from} to a number: strings such as \"7\" and \"007\" become one number"
            )),
            Derivation::Concat(from, sep) | Derivation::Uuid(_, from, sep) if from.len() > 1 => {
                Some(format!(
                    "{name} joins {} with {sep:?}: parts that contain {sep:?} can join alike (\"a{sep}b\" + \"c\" and \"a\" + \"b{sep}c\")",
                    from.join(", ")
                ))
            }
            _ => None,
        })
        .collect();
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Declarative {
        Declarative::parse(text, &["pk".to_string(), "sk".to_string()]).unwrap()
    }

    #[test]
    fn rules_that_can_join_two_items_on_one_key_are_named() {
        let n =
            spec("key: [{attribute: id, convert: {from: pk, to: N}}, {attribute: s, copy: sk}]");
        assert!(n.key_collisions().unwrap().contains("\"007\""));
        let joined = spec("key: [{attribute: id, concat: {from: [pk, sk]}}]");
        let why = joined.key_collisions().unwrap();
        assert!(why.contains("pk, sk") && why.contains("\"#\""), "{why}");
        let hashed = spec("key: [{attribute: id, uuidv5: {from: [pk, sk], separator: '|'}}]");
        assert!(hashed.key_collisions().is_some());
        // One part, a copy, a conversion to S: one item per key.
        for safe in [
            "key: [{attribute: id, concat: {from: [pk]}}, {attribute: s, copy: sk}]",
            "key: [{attribute: id, convert: {from: pk, to: S}}, {attribute: s, copy: sk}]",
            "rename: {v: value}",
        ] {
            assert_eq!(spec(safe).key_collisions(), None, "{safe}");
        }
        // A key from a non-key attribute reuses keys: its writes are owned.
        let by_email = spec("key: [{attribute: id, concat: {from: [email, pk]}}]");
        assert_eq!(by_email.key_collisions(), None);
    }
}
