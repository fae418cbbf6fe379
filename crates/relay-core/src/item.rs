//! Items and keys: the data model shared by every stage.
//!
//! Items are `serde_dynamo`'s attribute values, which keep numbers as the
//! decimal strings DynamoDB sends (never `f64`) and binaries as bytes.

use std::collections::HashMap;

pub use serde_dynamo::AttributeValue;

/// One DynamoDB item (or key): attribute name to value.
pub type Attrs = HashMap<String, AttributeValue>;

/// A key in canonical byte form: equal keys have equal bytes, whatever the
/// attribute order or the spelling of their numbers (`1.50` and `15E-1`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CanonicalKey(Vec<u8>);

impl CanonicalKey {
    /// Encodes `key` canonically: attributes sorted by name, each value
    /// tagged by type and length-prefixed, numbers normalised.
    pub fn of(key: &Attrs) -> Self {
        let mut out = Vec::with_capacity(64);
        encode_map(key, &mut out);
        CanonicalKey(out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn put_len_prefixed(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn encode_map(map: &Attrs, out: &mut Vec<u8>) {
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    out.extend_from_slice(&(names.len() as u64).to_be_bytes());
    for name in names {
        put_len_prefixed(name.as_bytes(), out);
        encode_value(&map[name], out);
    }
}

fn encode_value(value: &AttributeValue, out: &mut Vec<u8>) {
    match value {
        AttributeValue::S(s) => {
            out.push(b'S');
            put_len_prefixed(s.as_bytes(), out);
        }
        AttributeValue::N(n) => {
            out.push(b'N');
            put_len_prefixed(canonical_number(n).as_bytes(), out);
        }
        AttributeValue::B(b) => {
            out.push(b'B');
            put_len_prefixed(b, out);
        }
        AttributeValue::Bool(b) => {
            out.push(b'T');
            out.push(u8::from(*b));
        }
        AttributeValue::Null(b) => {
            out.push(b'0');
            out.push(u8::from(*b));
        }
        AttributeValue::M(m) => {
            out.push(b'M');
            encode_map(m, out);
        }
        AttributeValue::L(l) => {
            out.push(b'L');
            out.extend_from_slice(&(l.len() as u64).to_be_bytes());
            for v in l {
                encode_value(v, out);
            }
        }
        AttributeValue::Ss(set) => {
            let mut v: Vec<&String> = set.iter().collect();
            v.sort();
            out.push(b's');
            out.extend_from_slice(&(v.len() as u64).to_be_bytes());
            for s in v {
                put_len_prefixed(s.as_bytes(), out);
            }
        }
        AttributeValue::Ns(set) => {
            let mut v: Vec<String> = set.iter().map(|n| canonical_number(n)).collect();
            v.sort();
            out.push(b'n');
            out.extend_from_slice(&(v.len() as u64).to_be_bytes());
            for s in v {
                put_len_prefixed(s.as_bytes(), out);
            }
        }
        AttributeValue::Bs(set) => {
            let mut v: Vec<&Vec<u8>> = set.iter().collect();
            v.sort();
            out.push(b'b');
            out.extend_from_slice(&(v.len() as u64).to_be_bytes());
            for b in v {
                put_len_prefixed(b, out);
            }
        }
    }
}

/// Normalises a DynamoDB number string so that equal numbers compare equal:
/// `-001.500e2` becomes `-15E1`, `0.0` becomes `0`. It never goes through a
/// float, so all 38 digits are kept. A string that is not a number is
/// returned unchanged (DynamoDB would have refused it; we still keep it).
pub fn canonical_number(raw: &str) -> String {
    let s = raw.trim();
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp_part) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut exponent: i64 = match exp_part {
        None => 0,
        Some(e) => match e.parse::<i64>() {
            Ok(v) => v,
            Err(_) => return raw.to_string(),
        },
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return raw.to_string();
    }
    let mut digits: String = format!("{int_part}{frac_part}");
    exponent -= frac_part.len() as i64;
    let trimmed_lead = digits.trim_start_matches('0');
    if trimmed_lead.is_empty() {
        return "0".to_string();
    }
    digits = trimmed_lead.to_string();
    let without_trailing = digits.trim_end_matches('0');
    exponent += (digits.len() - without_trailing.len()) as i64;
    let digits = without_trailing;
    let sign = if negative { "-" } else { "" };
    if exponent == 0 {
        format!("{sign}{digits}")
    } else {
        format!("{sign}{digits}E{exponent}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pairs: &[(&str, AttributeValue)]) -> Attrs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn numbers_normalise_without_floats() {
        assert_eq!(canonical_number("1.50"), "15E-1");
        assert_eq!(canonical_number("15E-1"), "15E-1");
        assert_eq!(canonical_number("-001.500e2"), "-15E1");
        assert_eq!(canonical_number("0.000"), "0");
        assert_eq!(canonical_number("-0"), "0");
        assert_eq!(canonical_number("100"), "1E2");
        assert_eq!(canonical_number("42"), "42");
        let big = "12345678901234567890123456789012345678";
        assert_eq!(canonical_number(big), big);
        assert_eq!(canonical_number("not a number"), "not a number");
    }

    #[test]
    fn canonical_key_ignores_order_and_number_spelling() {
        let a = key(&[
            ("pk", AttributeValue::S("a".into())),
            ("sk", AttributeValue::N("1.0".into())),
        ]);
        let b = key(&[
            ("sk", AttributeValue::N("1".into())),
            ("pk", AttributeValue::S("a".into())),
        ]);
        assert_eq!(CanonicalKey::of(&a), CanonicalKey::of(&b));
    }

    #[test]
    fn canonical_key_separates_types_and_boundaries() {
        let s = key(&[("pk", AttributeValue::S("1".into()))]);
        let n = key(&[("pk", AttributeValue::N("1".into()))]);
        assert_ne!(CanonicalKey::of(&s), CanonicalKey::of(&n));
        let ab = key(&[
            ("a", AttributeValue::S("bc".into())),
            ("x", AttributeValue::S("".into())),
        ]);
        let abc = key(&[
            ("a", AttributeValue::S("b".into())),
            ("x", AttributeValue::S("c".into())),
        ]);
        assert_ne!(CanonicalKey::of(&ab), CanonicalKey::of(&abc));
    }
}
