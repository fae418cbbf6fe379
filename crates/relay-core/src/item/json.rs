//! Reading DynamoDB JSON into [`Attrs`] as `serde_dynamo` reads it, with
//! fewer allocations.
//!
//! `serde_dynamo`'s reader takes each value's type tag (`"S"`, `"N"`, …)
//! as an owned `String`, and each binary as a `String` before decoding it:
//! one or two allocations per attribute value that the item never keeps.
//! [`Item`] reads the tag as a borrowed `&str` and decodes base64 from the
//! text, and builds the same map.
//!
//! **Invariant:** [`Item`] accepts exactly the texts `serde_dynamo`'s
//! `HashMap<String, AttributeValue>` accepts and builds the same map from
//! them: a later duplicate name wins, `NULL` keeps its boolean, numbers stay
//! unparsed strings, nothing limits nesting but serde_json's own recursion
//! limit. Only error texts differ; the envelope reports a decode error by
//! category and position only, never by text.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{AttributeValue, Attrs};

/// An item (or key) read from DynamoDB JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item(pub Attrs);

impl Item {
    pub fn into_inner(self) -> Attrs {
        self.0
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MapOf).map(Item)
    }
}

/// A map of names to values: an item, or an `M`'s value.
struct MapOf;

impl<'de> Visitor<'de> for MapOf {
    type Value = Attrs;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Attrs, A::Error> {
        // serde_json gives no size, and a map grown one insert at a time
        // reallocates and hashes every name again at each growth. The
        // entries are read into a reused buffer first, and the map is made
        // at its size once: each name hashed once, one allocation.
        let mut entries = scratch::take();
        while let Some(name) = m.next_key::<String>()? {
            let Value(v) = m.next_value()?;
            entries.push((name, v));
        }
        let mut out = HashMap::with_capacity(entries.len());
        // In order, so a later duplicate name wins, as serde's map reader.
        out.extend(entries.drain(..));
        scratch::give(entries);
        Ok(out)
    }
}

/// Reused entry buffers for [`MapOf`], one per map being read (maps nest),
/// kept per thread. A buffer is returned empty; one grown past
/// [`scratch::KEEP`] entries, or one more than [`scratch::DEPTH`] kept,
/// is dropped, so what stays is bounded whatever the input: at most
/// 32 × 1,024 entries of ~80 bytes, ~2.5 MiB a thread, and only after 32
/// maps of 1,024 names were read nested. A read that fails drops its
/// buffer.
mod scratch {
    use std::cell::RefCell;

    use super::AttributeValue;

    pub(super) type Entries = Vec<(String, AttributeValue)>;

    /// Largest buffer kept (entries).
    pub(super) const KEEP: usize = 1024;
    /// Buffers kept per thread.
    pub(super) const DEPTH: usize = 32;

    thread_local! {
        static FREE: RefCell<Vec<Entries>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn take() -> Entries {
        FREE.with(|f| f.borrow_mut().pop()).unwrap_or_default()
    }

    pub(super) fn give(entries: Entries) {
        debug_assert!(entries.is_empty());
        if entries.capacity() > KEEP {
            return;
        }
        FREE.with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < DEPTH {
                f.push(entries);
            }
        });
    }

    #[cfg(test)]
    pub(super) fn kept() -> (usize, usize) {
        FREE.with(|f| {
            let f = f.borrow();
            (f.len(), f.iter().map(Vec::capacity).max().unwrap_or(0))
        })
    }
}

/// One attribute value: an object with exactly one known type tag.
struct Value(AttributeValue);

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ValueOf).map(Value)
    }
}

struct ValueOf;

impl<'de> Visitor<'de> for ValueOf {
    type Value = AttributeValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object with a single key "N", "S", "BOOL", "B", "NULL", "M", "L", "SS", "NS", or "BS""#)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<AttributeValue, A::Error> {
        let Some(tag) = m.next_key::<Tag>()? else {
            return Err(de::Error::custom(
                "Expected exactly one key in the object, found none",
            ));
        };
        let value = match tag {
            // Refused here, after the key was read, not while reading it:
            // a reader that records paths (the forwarder's error report)
            // would otherwise end its path with the tag's text.
            Tag::Unknown => return Err(de::Error::custom("not a known DynamoDB type tag")),
            Tag::N => AttributeValue::N(m.next_value()?),
            Tag::S => AttributeValue::S(m.next_value()?),
            Tag::Bool => AttributeValue::Bool(m.next_value()?),
            Tag::Null => AttributeValue::Null(m.next_value()?),
            Tag::B => AttributeValue::B(m.next_value::<Binary>()?.0),
            Tag::M => AttributeValue::M(m.next_value::<Item>()?.0),
            Tag::L => AttributeValue::L(m.next_value::<Seq<Value>>()?.0),
            Tag::Ss => AttributeValue::Ss(m.next_value()?),
            Tag::Ns => AttributeValue::Ns(m.next_value()?),
            Tag::Bs => AttributeValue::Bs(m.next_value::<Seq<Binary>>()?.0),
        };
        if m.next_key::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(
                "Expected exactly one key in the object, found multiple keys",
            ));
        }
        Ok(value)
    }
}

/// A DynamoDB type tag, read without keeping it. An unknown tag is read
/// (as `Unknown`) and refused by the caller.
pub(crate) enum Tag {
    Unknown,
    N,
    S,
    Bool,
    B,
    Null,
    M,
    L,
    Ss,
    Ns,
    Bs,
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Tag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a DynamoDB type tag")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Tag, E> {
                Ok(match v {
                    "N" => Tag::N,
                    "S" => Tag::S,
                    "BOOL" => Tag::Bool,
                    "B" => Tag::B,
                    "NULL" => Tag::Null,
                    "M" => Tag::M,
                    "L" => Tag::L,
                    "SS" => Tag::Ss,
                    "NS" => Tag::Ns,
                    "BS" => Tag::Bs,
                    _ => Tag::Unknown,
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// Standard base64, as serde_dynamo decodes binaries, decoded from the
/// text (no `String` first). The image check reads binaries with it too.
pub(crate) struct Binary(Vec<u8>);

impl<'de> Deserialize<'de> for Binary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Binary;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Binary, E> {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map(Binary)
                    .map_err(|_| E::custom("Failed to decode base64"))
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON array of `T`s, kept as what each `T` holds.
struct Seq<T: Unwrap>(Vec<T::Inner>);

/// A reader's newtype and what it holds.
trait Unwrap {
    type Inner;
    fn unwrap(self) -> Self::Inner;
}

impl Unwrap for Value {
    type Inner = AttributeValue;
    fn unwrap(self) -> AttributeValue {
        self.0
    }
}

impl Unwrap for Binary {
    type Inner = Vec<u8>;
    fn unwrap(self) -> Vec<u8> {
        self.0
    }
}

impl<'de, T: Unwrap + Deserialize<'de>> Deserialize<'de> for Seq<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Unwrap + Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Seq<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Seq<T>, A::Error> {
                // serde's `Vec` reader starts empty too (serde_json gives no size).
                let mut out = Vec::new();
                while let Some(t) = s.next_element::<T>()? {
                    out.push(t.unwrap());
                }
                Ok(Seq(out))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests;
