//! Golden tests of the wire envelope: version 2, which this build writes
//! (fixtures/envelope-v2.txt), and version 1, which it still reads
//! (fixtures/envelope-v1.json: messages an earlier release queued).
//!
//! If this test fails, the wire format changed: appliers already deployed
//! would misread new messages. Bump the envelope version instead.

use relay_core::envelope::{decode, encode, exchange_quotes, EnvelopeError};
use relay_core::event::{ChangeEvent, Op};
use relay_core::item::{AttributeValue as V, Attrs};

const GOLDEN: &str = include_str!("../../../fixtures/envelope-v1.json");
const GOLDEN_V2: &str = include_str!("../../../fixtures/envelope-v2.txt");

/// A version 2 body's plain JSON.
fn exchanged_back(body: &str) -> serde_json::Value {
    let mut b = body.as_bytes().to_vec();
    exchange_quotes(&mut b);
    serde_json::from_slice(&b).unwrap_or_default()
}

fn s(x: &str) -> V {
    V::S(x.into())
}
fn n(x: &str) -> V {
    V::N(x.into())
}
fn m(pairs: Vec<(&str, V)>) -> Attrs {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
fn with_keys(keys: &Attrs, more: Vec<(&str, V)>) -> Attrs {
    let mut out = keys.clone();
    out.extend(m(more));
    out
}

fn expected() -> Vec<ChangeEvent> {
    let keys = m(vec![("pk", s("k#1")), ("sk", V::B(vec![0x00, 0xFF, 0x01]))]);
    let first = with_keys(
        &keys,
        vec![
            ("n38", n("12345678901234567890123456789012345678")),
            ("nneg", n("-0.000000000000000000000000000000000000012345")),
            ("nbig", n("9.9999999999999999999999999999999999999E+125")),
            ("empty", s("")),
            ("uni", s("é 中文 😀 \u{1}\u{1f}\t\n \"q\" \\ \u{FFFD}")),
            ("nc", s("a\u{FFFF}b")),
            ("bin", V::B(vec![0, 1, 42, 65])),
            ("emptybin", V::B(vec![])),
            ("ss", V::Ss(vec!["a".into(), "😀".into(), "".into()])),
            ("ns", V::Ns(vec!["1".into(), "-2.5".into(), "1E+10".into()])),
            ("bs", V::Bs(vec![vec![0, 1, 42, 65], vec![65, 42, 1, 0]])),
            ("nul", V::Null(true)),
            ("yes", V::Bool(true)),
            ("no", V::Bool(false)),
            (
                "list",
                V::L(vec![
                    s("x"),
                    n("1"),
                    V::L(vec![]),
                    V::M(Attrs::new()),
                    V::Null(true),
                ]),
            ),
            (
                "map",
                V::M(m(vec![
                    (
                        "inner",
                        V::M(m(vec![(
                            "deep",
                            V::L(vec![V::Bool(false), V::Ss(vec!["z".into()])]),
                        )])),
                    ),
                    ("", s("empty name")),
                ])),
            ),
        ],
    );
    let ev = |id: &str, seq: &str, t: i64, op: Op| ChangeEvent {
        event_id: id.into(),
        seq: seq.into(),
        time_ms: t,
        op,
        ttl: false,
        refetch: false,
        keys: keys.clone(),
        new_image: None,
        old_image: None,
    };
    vec![
        ChangeEvent {
            new_image: Some(first),
            ..ev(
                "e-1",
                "100000000000000000001",
                1_793_750_400_000,
                Op::Insert,
            )
        },
        ChangeEvent {
            new_image: Some(with_keys(&keys, vec![("v", n("2"))])),
            old_image: Some(with_keys(&keys, vec![("v", n("1"))])),
            ..ev(
                "e-2",
                "100000000000000000002",
                1_793_750_401_000,
                Op::Modify,
            )
        },
        ChangeEvent {
            ttl: true,
            old_image: Some(with_keys(&keys, vec![("v", n("2"))])),
            ..ev(
                "e-3",
                "100000000000000000003",
                1_793_750_402_000,
                Op::Remove,
            )
        },
        ChangeEvent {
            refetch: true,
            ..ev(
                "e-4",
                "100000000000000000004",
                1_793_750_403_000,
                Op::Modify,
            )
        },
    ]
}

#[test]
fn golden_fixtures_decode_to_the_expected_events() {
    for (golden, v) in [(GOLDEN, 1), (GOLDEN_V2.trim_end(), 2)] {
        let env = decode(golden).expect("golden fixture decodes");
        assert_eq!(env.v, v);
        assert_eq!(env.src, "Orders");
        assert_eq!(env.ev, expected());
    }
}

#[test]
fn encoding_the_expected_events_gives_the_version_2_golden_fixture() {
    let body = encode("Orders", &expected());
    assert!(body.starts_with("{'v':2,'src':'Orders','ev':[{"), "{body}");
    assert!(exchanged_back(&body).is_object(), "{body}");
    assert_eq!(exchanged_back(&body), exchanged_back(GOLDEN_V2.trim_end()));
    // Version 2 is version 1's JSON, its quotes exchanged, with "v":2.
    let mut v1: serde_json::Value = serde_json::from_str(GOLDEN).unwrap();
    v1["v"] = 2.into();
    assert_eq!(exchanged_back(&body), v1);
}

#[test]
fn numbers_are_never_floats_on_the_wire() {
    let body = encode("Orders", &expected());
    assert!(body.contains("'N':'12345678901234567890123456789012345678'"));
    assert!(body.contains("'N':'-0.000000000000000000000000000000000000012345'"));
}

#[test]
fn the_same_body_with_another_version_is_refused() {
    let v3 = GOLDEN.replacen("\"v\": 1", "\"v\": 3", 1);
    let v3x = GOLDEN_V2.replacen("'v':2", "'v':3", 1);
    assert_ne!(v3, GOLDEN, "fixture layout changed; update this test");
    assert_ne!(v3x, GOLDEN_V2, "fixture layout changed; update this test");
    for body in [v3, v3x] {
        assert_eq!(
            decode(&body).unwrap_err(),
            EnvelopeError::UnsupportedVersion {
                found: 3,
                supported: 2
            }
        );
    }
}
