use super::*;
use crate::testgen::{apply, edit, item, near_dynamo_json, nested, nested_lists, REFUSED_EDGES};
use proptest::prelude::*;

/// What serde_dynamo makes of a text (the reader [`Item`] replaces).
fn dynamo(text: &str) -> Result<Attrs, serde_json::Error> {
    serde_json::from_str(text)
}

fn ours(text: &str) -> Result<Attrs, serde_json::Error> {
    serde_json::from_str::<Item>(text).map(Item::into_inner)
}

/// The module's invariant on one text: both refuse it, or both read the
/// same map.
fn agrees(text: &str) -> Result<(), TestCaseError> {
    match (dynamo(text), ours(text)) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", text),
        (Err(_), Err(_)) => {}
        (a, b) => prop_assert!(
            false,
            "serde_dynamo {:?}, ours {:?}: {}",
            a.is_ok(),
            b.is_ok(),
            text
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Valid items of every type, compact and pretty, then edited a few
    /// characters at a time (structure, escapes, tags, literals, base64).
    #[test]
    fn items_read_as_serde_dynamo_reads_them(
        image in item(),
        pretty in any::<bool>(),
        edits in prop::collection::vec(edit(), 0..4),
    ) {
        let text = if pretty {
            serde_json::to_string_pretty(&image).unwrap()
        } else {
            serde_json::to_string(&image).unwrap()
        };
        prop_assert_eq!(ours(&text).unwrap(), image);
        agrees(&apply(&text, &edits))?;
    }

    /// JSON around the grammar: every kind where a value goes, foreign and
    /// repeated tags, base64 that does not decode.
    #[test]
    fn texts_near_the_grammar_read_as_serde_dynamo_reads_them(
        image in near_dynamo_json(),
        edits in prop::collection::vec(edit(), 0..3),
    ) {
        let text = image.to_string();
        agrees(&text)?;
        agrees(&apply(&text, &edits))?;
    }
}

#[test]
fn grammar_edges_read_as_serde_dynamo_reads_them() {
    let accepted = [
        r#"{}"#,
        r#"{"a":{"\u0053":"escaped tag"}}"#,
        r#"{"a":{"B":"QUF\u0042"}}"#,
        " { \"a\" : { \"M\" : { } } } ",
        r#"{"a":{"L":[]},"b":{"SS":[]},"c":{"BS":["AAE=", ""]}}"#,
        r#"{"a":{"S":"x"},"a":{"N":"1"}}"#,
        r#"{"a":{"M":{"b":{"S":"x"},"b":{"BOOL":true}}}}"#,
        r#"{"a":{"NULL":false},"b":{"NULL":true},"c":{"BOOL":false}}"#,
        r#"{"a":{"N":"not a number"},"b":{"NS":["1","1"]},"c":{"SS":["x","x"]}}"#,
        r#"{"a":{"B":""},"b":{"BS":[]}}"#,
    ];
    for text in accepted {
        assert!(ours(text).is_ok(), "{text}");
        agrees(text).unwrap();
    }
    for text in REFUSED_EDGES.into_iter().chain([
        r#"{"a":{"S":"x","S":"y"}}"#,
        r#"{"a":{"B":"AAE"}}"#,
        r#"{"a":{"BOOL":"true"}}"#,
        r#"{"a":{"NULL":null}}"#,
        r#"{"a":{"SS":"x"}}"#,
        r#"{"a":{"M":[]}}"#,
        r#"{"a":{"L":{}}}"#,
        r#"{"a":null}"#,
        r#"{"a":{"s":"x"}}"#,
    ]) {
        assert!(ours(text).is_err(), "{text}");
        agrees(text).unwrap();
    }
}

#[test]
fn nesting_is_limited_where_serde_dynamo_is_limited() {
    // serde_json's recursion limit is the only one: both readers meet it
    // at the same depth, for maps and for lists.
    let mut deepest_read = None;
    for levels in (0..=80).step_by(4).chain(56..=72) {
        for text in [
            nested(levels),
            nested_lists(levels, false),
            nested_lists(levels, true),
        ] {
            agrees(&text).unwrap();
            if ours(&text).is_ok() {
                deepest_read = deepest_read.max(Some(levels));
            }
        }
    }
    let deepest = deepest_read.unwrap();
    assert!((32..80).contains(&deepest), "{deepest}");
}

#[test]
fn its_own_errors_quote_no_value() {
    // serde_json's type errors quote what they found (so the envelope
    // reports errors by category and position only); this reader's own
    // errors, for a tag and for base64, quote nothing.
    for text in [
        r#"{"a":{"secret-value-42":"x"}}"#,
        r#"{"a":{"B":"secret-value-42"}}"#,
        r#"{"a":{"BS":["secret-value-42"]}}"#,
    ] {
        let err = ours(text).unwrap_err().to_string();
        assert!(!err.contains("secret-value-42"), "{err}");
    }
}

#[test]
fn reused_buffers_stay_bounded_and_reads_stay_right() {
    // A map wider than what is kept, then one nested deeper than the
    // buffers kept: what stays per thread is bounded whatever was read.
    let wide: String = {
        let names: Vec<String> = (0..2 * scratch::KEEP)
            .map(|i| format!(r#""a{i}":{{"N":"{i}"}}"#))
            .collect();
        format!("{{{}}}", names.join(","))
    };
    let read = ours(&wide).unwrap();
    assert_eq!(read.len(), 2 * scratch::KEEP);
    agrees(&wide).unwrap();
    let deep = nested(scratch::DEPTH as u32 + 8);
    agrees(&deep).unwrap();
    ours(&deep).unwrap();
    let (kept, widest) = scratch::kept();
    assert!(kept <= scratch::DEPTH, "{kept} buffers kept");
    assert!(widest <= scratch::KEEP, "a buffer of {widest} entries kept");
    // A read that fails midway leaves nothing behind that a later read
    // sees: a duplicate name still resolves to its last value.
    assert!(ours(r#"{"a":{"N":"1"},"b":{"M":{"c":{"S":"x"}"#).is_err());
    let again = ours(r#"{"a":{"N":"1"},"a":{"N":"2"}}"#).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again["a"], AttributeValue::N("2".into()));
    assert!(ours(r#"{"x":{"N":"1"},"y":{"S":"#).is_err());
    let other = ours(r#"{"z":{"BOOL":true}}"#).unwrap();
    assert_eq!(other.len(), 1, "an entry of a failed read came back");
}
