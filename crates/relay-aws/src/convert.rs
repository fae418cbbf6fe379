//! Conversions between core items and the SDK's attribute values.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as Sdk;
use relay_core::item::{AttributeValue as Core, Attrs};
use std::collections::HashMap;

pub fn to_sdk(v: &Core) -> Sdk {
    match v {
        Core::S(s) => Sdk::S(s.clone()),
        Core::N(n) => Sdk::N(n.clone()),
        Core::B(b) => Sdk::B(Blob::new(b.clone())),
        Core::Bool(b) => Sdk::Bool(*b),
        Core::Null(b) => Sdk::Null(*b),
        Core::M(m) => Sdk::M(to_sdk_item(m)),
        Core::L(l) => Sdk::L(l.iter().map(to_sdk).collect()),
        Core::Ss(s) => Sdk::Ss(s.clone()),
        Core::Ns(s) => Sdk::Ns(s.clone()),
        Core::Bs(s) => Sdk::Bs(s.iter().map(|b| Blob::new(b.clone())).collect()),
    }
}

pub fn to_sdk_item(item: &Attrs) -> HashMap<String, Sdk> {
    item.iter().map(|(k, v)| (k.clone(), to_sdk(v))).collect()
}

/// The SDK's `Unknown` variant (a type newer than this build) is an error:
/// copying it as anything else would change the item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attribute {0:?} has a DynamoDB type this build does not know")]
pub struct UnknownType(pub String);

pub fn from_sdk(v: &Sdk, name: &str) -> Result<Core, UnknownType> {
    Ok(match v {
        Sdk::S(s) => Core::S(s.clone()),
        Sdk::N(n) => Core::N(n.clone()),
        Sdk::B(b) => Core::B(b.as_ref().to_vec()),
        Sdk::Bool(b) => Core::Bool(*b),
        Sdk::Null(b) => Core::Null(*b),
        Sdk::M(m) => Core::M(from_sdk_item(m)?),
        Sdk::L(l) => Core::L(
            l.iter()
                .map(|x| from_sdk(x, name))
                .collect::<Result<_, _>>()?,
        ),
        Sdk::Ss(s) => Core::Ss(s.clone()),
        Sdk::Ns(s) => Core::Ns(s.clone()),
        Sdk::Bs(s) => Core::Bs(s.iter().map(|b| b.as_ref().to_vec()).collect()),
        _ => return Err(UnknownType(name.to_string())),
    })
}

pub fn from_sdk_item(item: &HashMap<String, Sdk>) -> Result<Attrs, UnknownType> {
    item.iter()
        .map(|(k, v)| Ok((k.clone(), from_sdk(v, k)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips() {
        let mut inner = Attrs::new();
        inner.insert("n".into(), Core::N("-1.5E-130".into()));
        let item: Attrs = [
            ("s", Core::S("é😀\u{0}".into())),
            (
                "n",
                Core::N("12345678901234567890123456789012345678".into()),
            ),
            ("b", Core::B(vec![0, 255, 1])),
            ("t", Core::Bool(true)),
            ("z", Core::Null(true)),
            ("m", Core::M(inner)),
            (
                "l",
                Core::L(vec![Core::S(String::new()), Core::N("0".into())]),
            ),
            ("ss", Core::Ss(vec!["a".into(), "b".into()])),
            ("ns", Core::Ns(vec!["1".into(), "2.5".into()])),
            ("bs", Core::Bs(vec![vec![1], vec![2, 3]])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(from_sdk_item(&to_sdk_item(&item)).unwrap(), item);
    }
}
