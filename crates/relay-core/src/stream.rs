//! The forwarder's own reading of a DynamoDB stream event.
//!
//! Lambda hands the forwarder a stream batch as JSON. `aws_lambda_events`
//! parses every image in it into maps; the forwarder never looks inside an
//! image, it only copies it onto the queue. [`StreamEvent`] parses the keys
//! (they choose the FIFO group) and keeps each image as the DynamoDB JSON
//! the stream sent ([`RawImage`]), checked but not built, borrowed from the
//! batch's text (read it with `serde_json::from_slice`/`from_str`).
//!
//! **Invariant:** a [`RawImage`] holds exactly what `serde_dynamo` would
//! accept as an item nested at most [`MAX_NESTING`] levels (DynamoDB's own
//! limit): the check is the same grammar, so such an image is one
//! `aws_lambda_events` accepts, and the applier can always decode what the
//! forwarder copied. (Record fields the forwarder does not read, such as
//! `awsRegion` and `SizeBytes`, are not required here.)

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::event::{assemble, ChangeEvent, Record, RecordError, TTL_PRINCIPAL};
use crate::item::json::{self, Tag};
use crate::item::Attrs;

/// A DynamoDB stream event as Lambda delivers it to the forwarder; its
/// images borrow from the text it was read from.
#[derive(Debug, Deserialize)]
pub struct StreamEvent<'a> {
    #[serde(rename = "Records", borrow)]
    pub records: Vec<StreamRecord<'a>>,
}

/// One record of a [`StreamEvent`]. Fields the forwarder does not use are
/// skipped; the ones `aws_lambda_events` requires and the forwarder reads
/// are required here too.
#[derive(Debug, Deserialize)]
pub struct StreamRecord<'a> {
    #[serde(rename = "eventID")]
    pub event_id: String,
    // Read, not kept: borrowed from the text unless escaped.
    #[serde(rename = "eventName", borrow)]
    pub event_name: Cow<'a, str>,
    #[serde(rename = "eventSourceARN", default, borrow, deserialize_with = "text")]
    pub event_source_arn: Option<Cow<'a, str>>,
    #[serde(rename = "tableName", default, borrow, deserialize_with = "text")]
    pub table_name: Option<Cow<'a, str>>,
    #[serde(rename = "userIdentity", default)]
    pub user_identity: Option<UserIdentity>,
    #[serde(rename = "dynamodb", borrow)]
    pub change: Change<'a>,
}

/// Who made the change (DynamoDB's TTL process, for expiry deletes).
#[derive(Debug, Default, Deserialize)]
pub struct UserIdentity {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(rename = "principalId", default)]
    pub principal_id: String,
}

/// The `dynamodb` part of a record.
#[derive(Debug, Deserialize)]
pub struct Change<'a> {
    /// Epoch seconds, as `aws_lambda_events` reads them: a fraction is
    /// dropped (DynamoDB rounds this time down to the second); missing is 0.
    /// (Accepted up to 10^15 s, past chrono's range; DynamoDB never sends
    /// such a time.)
    #[serde(
        rename = "ApproximateCreationDateTime",
        default,
        deserialize_with = "seconds_to_ms"
    )]
    pub time_ms: i64,
    #[serde(rename = "Keys", default, deserialize_with = "nullish")]
    pub keys: Attrs,
    #[serde(rename = "NewImage", default, borrow)]
    pub new_image: Option<RawImage<'a>>,
    #[serde(rename = "OldImage", default, borrow)]
    pub old_image: Option<RawImage<'a>>,
    #[serde(rename = "SequenceNumber", default)]
    pub sequence_number: Option<String>,
}

/// Turns a record into a change event whose images are the stream's JSON.
pub fn from_raw_record(rec: StreamRecord<'_>) -> Result<ChangeEvent<RawImage<'_>>, RecordError> {
    fn image(i: Option<RawImage<'_>>) -> Option<RawImage<'_>> {
        i.filter(|i| !i.empty)
    }
    let StreamRecord {
        event_id,
        event_name,
        user_identity,
        change,
        ..
    } = rec;
    let ttl = user_identity
        .as_ref()
        .is_some_and(|u| u.type_ == "Service" && u.principal_id == TTL_PRINCIPAL);
    assemble(Record {
        event_id,
        event_name: &event_name,
        seq: change.sequence_number,
        time_ms: change.time_ms,
        ttl,
        keys: change.keys,
        new_image: image(change.new_image),
        old_image: image(change.old_image),
    })
}

/// An item as the stream's DynamoDB JSON, checked to be one (see the
/// module's invariant), and written onto the queue as it came: borrowed
/// from the batch's text, not copied.
#[derive(Clone, Copy, Debug)]
pub struct RawImage<'a> {
    json: &'a str,
    empty: bool,
}

impl<'a> RawImage<'a> {
    /// Checks `json` (the whole text is the image) and keeps it.
    pub fn new(json: &'a str) -> Result<Self, serde_json::Error> {
        let n = check(json)?;
        Ok(RawImage {
            json,
            empty: n == 0,
        })
    }

    /// The JSON as the stream sent it.
    pub fn get(&self) -> &'a str {
        self.json
    }

    /// The item, parsed (a slow path: the packer's old-image projection).
    ///
    /// # Panics
    /// Never for an image `new` accepted (serde_dynamo's grammar, within
    /// [`MAX_NESTING`]). Were it to fail, an empty item would silently drop
    /// the key sources a moved item's delete needs: a panic instead fails
    /// the invocation, and Lambda retries the batch.
    pub fn to_attrs(&self) -> Attrs {
        // Category and position only (serde's own message quotes values).
        #[allow(clippy::panic)]
        serde_json::from_str(self.json).unwrap_or_else(|e| {
            panic!(
                "an image the check accepted is not one serde_dynamo reads ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })
    }
}

impl PartialEq for RawImage<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// serde_json's name for a raw fragment: a struct of this name with one
/// field of this name is how `serde_json::value::RawValue` serializes
/// itself, and serde_json's serializer writes that field's text as it is.
/// (A `RawValue` cannot be made from borrowed text without reading it
/// again, and [`read`] has read it once already.) Pinned by
/// `an_image_is_written_as_it_came`.
const RAW_FRAGMENT: &str = "$serde_json::private::RawValue";

impl Serialize for RawImage<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // serde_json writes it as a raw fragment; the envelope's formatter
        // escapes the code points SQS refuses on the way.
        let mut raw = s.serialize_struct(RAW_FRAGMENT, 1)?;
        raw.serialize_field(RAW_FRAGMENT, self.json)?;
        raw.end()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawImage<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = <&'a RawValue>::deserialize(d)?;
        // Category and position only: an image is customer data.
        RawImage::new(json.get()).map_err(|e| {
            de::Error::custom(format_args!(
                "an image is not DynamoDB JSON ({:?} error at line {} column {} of the image)",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }
}

/// Checks that `json` is an item in serde_dynamo's grammar, nested at most
/// [`MAX_NESTING`] levels, building nothing: [`RawImage::new`]'s check.
/// Returns its number of attributes.
///
/// A byte-level pass ([`fast`]) answers first; what it is not sure of, and
/// every error, is serde_json's walk of the grammar ([`check_with_serde`]).
pub fn check(json: &str) -> Result<usize, serde_json::Error> {
    match fast::count(json) {
        Some(n) => Ok(n),
        None => check_with_serde(json),
    }
}

/// [`check`] by serde_json alone: the grammar as visitors (`Shape`, `Attr`),
/// the reference the fast path is tested against.
pub fn check_with_serde(json: &str) -> Result<usize, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let n = Shape { depth: 0 }.deserialize(&mut de)?;
    de.end()?;
    Ok(n)
}

fn seconds_to_ms<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Seconds;
    impl Visitor<'_> for Seconds {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a unix timestamp in seconds")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v)
                .ok()
                .and_then(|s| s.checked_mul(1000))
                .ok_or_else(|| E::custom("timestamp out of range"))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            v.checked_mul(1000)
                .ok_or_else(|| E::custom("timestamp out of range"))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            // The whole seconds, as aws_lambda_events keeps them.
            let s = v.trunc();
            if s.is_finite() && s.abs() < 1e15 {
                Ok(s as i64 * 1000)
            } else {
                Err(E::custom("timestamp out of range"))
            }
        }
    }
    d.deserialize_f64(Seconds)
}

/// An optional string, borrowed from the text unless escaped (serde's own
/// `Option<Cow<str>>` always copies).
fn text<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Text<'a>>::deserialize(d)?.map(|t| t.0))
}

fn nullish<'de, D: Deserializer<'de>>(d: D) -> Result<Attrs, D::Error> {
    // The keys read as the applier reads items (no tag kept, no copy of a
    // binary's text).
    Ok(Option::<json::Item>::deserialize(d)?.unwrap_or_default().0)
}

/// Nesting levels DynamoDB allows in an item (maps and lists within one
/// another). The check refuses deeper images: serde_dynamo alone would
/// read a little deeper, but an applier reads an image three levels down
/// in its envelope, so near serde_json's recursion limit the two readers
/// would disagree. DynamoDB never sends such an item.
pub const MAX_NESTING: u32 = 32;

/// An item in serde_dynamo's grammar, counted, not built: a map of names
/// to [`Attr`]s, `depth` levels of maps and lists down.
struct Shape {
    depth: u32,
}

impl<'de> DeserializeSeed<'de> for Shape {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Shape {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a DynamoDB item")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while m.next_key::<Text>()?.is_some() {
            m.next_value_seed(Attr { depth: self.depth })?;
            n += 1;
        }
        Ok(n)
    }
}

/// One attribute value: an object with exactly one known type tag.
#[derive(Clone, Copy)]
struct Attr {
    depth: u32,
}

impl Attr {
    /// The level below this value (an `M`'s item, an `L`'s elements).
    fn below<E: de::Error>(self) -> Result<u32, E> {
        if self.depth >= MAX_NESTING {
            return Err(E::custom(format_args!(
                "an item nests deeper than DynamoDB's {MAX_NESTING} levels"
            )));
        }
        Ok(self.depth + 1)
    }
}

impl<'de> DeserializeSeed<'de> for Attr {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Attr {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object with a single key "N", "S", "BOOL", "B", "NULL", "M", "L", "SS", "NS", or "BS""#)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let Some(tag) = m.next_key::<Tag>()? else {
            return Err(de::Error::custom(
                "Expected exactly one key in the object, found none",
            ));
        };
        match tag {
            Tag::Unknown => {
                return Err(de::Error::custom("not a known DynamoDB type tag"));
            }
            Tag::N | Tag::S => {
                m.next_value::<Text>()?;
            }
            Tag::Bool | Tag::Null => {
                m.next_value::<bool>()?;
            }
            Tag::B => {
                m.next_value::<json::Binary>()?;
            }
            Tag::M => {
                m.next_value_seed(Shape {
                    depth: self.below()?,
                })?;
            }
            Tag::L => {
                m.next_value_seed(List(Attr {
                    depth: self.below()?,
                }))?;
            }
            Tag::Ss | Tag::Ns => {
                m.next_value::<Seq<Text>>()?;
            }
            Tag::Bs => {
                m.next_value::<Seq<json::Binary>>()?;
            }
        }
        if m.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(
                "Expected exactly one key in the object, found multiple keys",
            ));
        }
        Ok(())
    }
}

/// An `L`'s elements.
struct List(Attr);

impl<'de> DeserializeSeed<'de> for List {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for List {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
        while s.next_element_seed(self.0)?.is_some() {}
        Ok(())
    }
}

/// Any string (a name, an `S` or `N` value), not kept.
struct Text;

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Text, E> {
                Ok(Text)
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON array of `T`s, not kept.
struct Seq<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Seq<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Seq<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Seq<T>, A::Error> {
                while s.next_element::<T>()?.is_some() {}
                Ok(Seq(std::marker::PhantomData))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

mod fast;
mod read;

pub use read::read;

#[cfg(test)]
mod tests;
