//! Test inputs shared by the readers' tests: DynamoDB JSON near and in
//! the grammar, valid items of every type, edits, nesting.

use proptest::prelude::*;
use serde_json::{json, Value as Json};

use crate::item::{AttributeValue as V, Attrs};

/// A JSON tree in (and around) DynamoDB JSON's grammar: type tags, a
/// foreign key, every JSON kind, base64 that decodes and that does not.
pub(crate) fn near_dynamo_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(json!("AAE=")),
        Just(json!("not base64!")),
        Just(json!("1.5")),
        Just(json!("")),
        Just(json!(7)),
        Just(json!(true)),
        Just(json!(null)),
    ];
    leaf.prop_recursive(5, 40, 4, |inner| {
        let tag = prop_oneof![
            Just("S"),
            Just("N"),
            Just("B"),
            Just("BOOL"),
            Just("NULL"),
            Just("M"),
            Just("L"),
            Just("SS"),
            Just("NS"),
            Just("BS"),
            Just("x"),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Json::Array),
            prop::collection::vec((tag, inner), 0..3).prop_map(|kv| {
                Json::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// A valid item of every type.
pub(crate) fn item() -> impl Strategy<Value = Attrs> {
    let scalar = prop_oneof![
        any::<String>().prop_map(V::S),
        any::<i64>().prop_map(|n| V::N(n.to_string())),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(V::B),
        any::<bool>().prop_map(V::Bool),
        Just(V::Null(true)),
        prop::collection::vec("[a-z\u{FFFE}\u{FFFF}]{1,4}", 1..3).prop_map(V::Ss),
        prop::collection::vec(any::<i32>().prop_map(|n| n.to_string()), 1..3).prop_map(V::Ns),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..4), 1..3).prop_map(V::Bs),
    ];
    let value = scalar.prop_recursive(3, 20, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(V::L),
            prop::collection::hash_map("[a-z]{1,3}", inner, 0..3).prop_map(V::M),
        ]
    });
    prop::collection::hash_map("[a-zA-Z_\u{e9}]{1,6}", value, 0..6)
}

/// Texts serde_dynamo refuses, at the grammar's edges: no tag, two tags,
/// a tag's value of the wrong kind, bad base64, an unknown tag, not an
/// object, not closed.
pub(crate) const REFUSED_EDGES: [&str; 11] = [
    r#"{"a":{}}"#,
    r#"{"a":{"S":"x","N":"1"}}"#,
    r#"{"a":{"S":1}}"#,
    r#"{"a":{"N":null}}"#,
    r#"{"a":{"B":"@@"}}"#,
    r#"{"a":{"BS":["AAE", "AAE="]}}"#,
    r#"{"a":{"X":"1"}}"#,
    r#"{"a":{"L":[{"S":"x"},{"Q":1}]}}"#,
    r#"[]"#,
    r#""x""#,
    r#"{"a":{"S":"x"}"#,
];

/// `{"a": {"M": {"a": … {"S":"x"}}}}` with `levels` maps in all.
pub(crate) fn nested(levels: u32) -> String {
    let mut v = json!({"S": "x"});
    for _ in 0..levels {
        v = json!({"M": {"a": v}});
    }
    json!({ "a": v }).to_string()
}

/// Bytes that move text in and out of the grammar: structure, whitespace,
/// escapes, tag letters, literals' letters, base64's alphabet and padding.
pub(crate) const MUTATION_BYTES: &[u8] =
    b"{}[]:,\" \t\n\r\\/u0aSNBLMOUTtrufalsen=+\x00\x01\x0b\x0c\x1f\x7f";

/// One edit of a text: insert, remove or replace one character.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Replace(prop::sample::Index, u8),
}

pub(crate) fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop::sample::select(MUTATION_BYTES);
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Remove),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
    ]
}

pub(crate) fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        match *e {
            Edit::Insert(i, b) => chars.insert(i.index(chars.len() + 1), char::from(b)),
            Edit::Remove(i) if !chars.is_empty() => {
                chars.remove(i.index(chars.len()));
            }
            Edit::Replace(i, b) if !chars.is_empty() => {
                let at = i.index(chars.len());
                chars[at] = char::from(b);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// `{"a": …}` with `levels` lists (`L`), or maps and lists in turn, in all.
pub(crate) fn nested_lists(levels: u32, mixed: bool) -> String {
    let mut v = json!({"S": "x"});
    for i in 0..levels {
        v = if mixed && i % 2 == 1 {
            json!({"M": {"a": v}})
        } else {
            json!({"L": [v]})
        };
    }
    json!({ "a": v }).to_string()
}
