//! Items and keys: the data model shared by every stage.
//!
//! Items are `serde_dynamo`'s attribute values, which keep numbers as the
//! decimal strings DynamoDB sends (never `f64`) and binaries as bytes.

use std::collections::HashMap;

pub use serde_dynamo::AttributeValue;

pub mod json;

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

    /// Encodes `key` into this one's buffer (a caller that hashes a key per
    /// event keeps one buffer, not one per event).
    pub fn set(&mut self, key: &Attrs) {
        self.0.clear();
        encode_map(key, &mut self.0);
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key from bytes `as_bytes` returned (read back from a spill file).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        CanonicalKey(bytes)
    }
}

/// The DynamoDB type tag of a value (`S`, `N`, `SS`, ...), for error messages
/// that must not quote the value.
pub fn type_name(v: &AttributeValue) -> &'static str {
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

/// Whether two items are equal as DynamoDB sees them: same attributes, same
/// values, whatever the attribute order, set order or number spelling.
pub fn same_item(a: &Attrs, b: &Attrs) -> bool {
    let (mut x, mut y) = (Vec::with_capacity(256), Vec::with_capacity(256));
    encode_map(a, &mut x);
    encode_map(b, &mut y);
    x == y
}

fn put_len_prefixed(bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn encode_map(map: &Attrs, out: &mut Vec<u8>) {
    out.extend_from_slice(&(map.len() as u64).to_be_bytes());
    let mut put = |(name, value): (&String, &AttributeValue)| {
        put_len_prefixed(name.as_bytes(), out);
        encode_value(value, out);
    };
    // A key has one or two attributes: sorted without a list.
    if map.len() <= 2 {
        let mut it = map.iter();
        if let (Some(a), b) = (it.next(), it.next()) {
            match b {
                Some(b) if b.0 < a.0 => {
                    put(b);
                    put(a);
                }
                Some(b) => {
                    put(a);
                    put(b);
                }
                None => put(a),
            }
        }
        return;
    }
    let mut names: Vec<(&String, &AttributeValue)> = map.iter().collect();
    names.sort_unstable_by(|a, b| a.0.cmp(b.0));
    names.into_iter().for_each(put);
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

/// A decimal number as DynamoDB writes it: sign, significant digits (no
/// leading or trailing zeros; empty for zero) and the power of ten of the
/// last digit.
struct Decimal<'a> {
    negative: bool,
    digits: std::borrow::Cow<'a, str>,
    exponent: i64,
}

/// Parses `[+-]digits[.digits][(e|E)[+-]digits]` without going through a
/// float. `None` when the text is not a decimal number.
fn parse_decimal(raw: &str) -> Option<Decimal<'_>> {
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
        Some(e) => e.parse::<i64>().ok()?,
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    exponent = exponent.checked_sub(frac_part.len() as i64)?;
    let digits: std::borrow::Cow<'_, str> = if frac_part.is_empty() {
        int_part.into()
    } else {
        format!("{int_part}{frac_part}").into()
    };
    let lead = digits.len() - digits.trim_start_matches('0').len();
    let trail = digits.len() - digits.trim_end_matches('0').len();
    if lead == digits.len() {
        return Some(Decimal {
            negative: false,
            digits: "".into(),
            exponent: 0,
        });
    }
    exponent = exponent.checked_add(trail as i64)?;
    let digits = match digits {
        std::borrow::Cow::Borrowed(d) => std::borrow::Cow::Borrowed(&d[lead..d.len() - trail]),
        std::borrow::Cow::Owned(d) => d[lead..d.len() - trail].to_string().into(),
    };
    Some(Decimal {
        negative,
        digits,
        exponent,
    })
}

/// Normalises a DynamoDB number string so that equal numbers compare equal:
/// `-001.500e2` becomes `-15E1`, `0.0` becomes `0`. It never goes through a
/// float, so all 38 digits are kept. A string that is not a number is
/// returned unchanged (DynamoDB would have refused it; we still keep it).
pub fn canonical_number(raw: &str) -> String {
    let Some(d) = parse_decimal(raw) else {
        return raw.to_string();
    };
    if d.digits.is_empty() {
        return "0".to_string();
    }
    let sign = if d.negative { "-" } else { "" };
    if d.exponent == 0 {
        format!("{sign}{}", d.digits)
    } else {
        format!("{sign}{}E{}", d.digits, d.exponent)
    }
}

/// Why DynamoDB would refuse a number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("is not a decimal number (NaN, Infinity and hexadecimal are not numbers in DynamoDB)")]
    NotDecimal,
    #[error("has {0} significant digits; DynamoDB keeps at most 38")]
    TooPrecise(usize),
    #[error("is out of DynamoDB's range (magnitude 1E-130 to 9.99...E+125)")]
    OutOfRange,
}

/// Checks DynamoDB's number rules: a decimal with at most 38 significant
/// digits, zero or a magnitude from 1E-130 to 9.9999999999999999999999999999999999999E+125.
pub fn check_number(raw: &str) -> Result<(), NumberError> {
    let d = parse_decimal(raw).ok_or(NumberError::NotDecimal)?;
    if d.digits.is_empty() {
        return Ok(());
    }
    if d.digits.len() > 38 {
        return Err(NumberError::TooPrecise(d.digits.len()));
    }
    // The power of ten of the most significant digit.
    let top = d.exponent + d.digits.len() as i64 - 1;
    if !(-130..=125).contains(&top) {
        return Err(NumberError::OutOfRange);
    }
    Ok(())
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
    fn dynamodb_number_rules_are_enforced_without_floats() {
        for ok in [
            "0",
            "-0.000",
            "42",
            "1E-130",
            "-1e-130",
            "9.9999999999999999999999999999999999999E+125",
            "12345678901234567890123456789012345678",
            "0.00012345678901234567890123456789012345678",
            "+7",
            "1.5e2",
        ] {
            assert_eq!(check_number(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("NaN", NumberError::NotDecimal),
            ("inf", NumberError::NotDecimal),
            ("-Infinity", NumberError::NotDecimal),
            ("0x10", NumberError::NotDecimal),
            ("", NumberError::NotDecimal),
            ("1e", NumberError::NotDecimal),
            ("1e400", NumberError::OutOfRange),
            ("1E126", NumberError::OutOfRange),
            ("1E-131", NumberError::OutOfRange),
            (
                "123456789012345678901234567890123456789",
                NumberError::TooPrecise(39),
            ),
        ] {
            assert_eq!(check_number(bad), Err(why), "{bad}");
        }
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

    /// The encoding as it was first written: every name sorted in a list.
    fn by_sorted_names(map: &Attrs) -> Vec<u8> {
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        let mut out = (names.len() as u64).to_be_bytes().to_vec();
        for name in names {
            put_len_prefixed(name.as_bytes(), &mut out);
            encode_value(&map[name], &mut out);
        }
        out
    }

    #[test]
    fn maps_encode_in_name_order_whatever_their_size_and_iteration_order() {
        // Each map has its own hash seed, so its own iteration order: many
        // maps of each size, small (no list) and large (a list).
        let mut reused = CanonicalKey::from_bytes(Vec::new());
        for size in 0..6 {
            for round in 0..64 {
                let map: Attrs = (0..size)
                    .map(|i| {
                        (
                            format!("{}{round}", ["pk", "sk", "a", "Z", "pk2", ""][i]),
                            AttributeValue::N(i.to_string()),
                        )
                    })
                    .collect();
                let mut out = Vec::new();
                encode_map(&map, &mut out);
                assert_eq!(out, by_sorted_names(&map), "{size} attributes");
                reused.set(&map);
                assert_eq!(reused, CanonicalKey::of(&map));
            }
        }
    }
}
