//! A stream batch read in one pass over its text.
//!
//! Read with serde_json, every image is gone over twice: serde_json skips
//! it to capture it (`&RawValue`), then [`check`](super::check) reads it
//! again. [`read`] walks the batch's structure itself and checks each image
//! where it stands ([`Cursor::item`], the check's own fast path), so an
//! image is read once. The small values around the images (ids, keys,
//! times, sequence numbers) are found by [`Cursor::skip`], then read by
//! serde_json with the very `Deserialize` code the derived reader uses.
//!
//! **Invariant:** [`read`] returns `Some(event)` only for text that
//! `serde_json::from_str::<StreamEvent>` reads as `Ok`, with an equal
//! event. Anything it is not sure of (an escaped field name, a field twice,
//! a missing one, a control character in a string, a value nested deeper
//! than [`SKIP_NESTING`], any error at all) is `None`, and the caller reads
//! the text with serde_json, which gives the answer and the error. So this
//! path can make reading faster, never more permissive; its errors are
//! serde_json's. (A `\u` escape is skipped as serde_json skips it, any four
//! hex digits; a value read by serde_json is then decoded by it, and an
//! image with one goes to the whole check.)

use serde::Deserialize;
use serde_json::Deserializer;

use super::fast::{Cursor, Walk};
use super::{nullish, seconds_to_ms, text, Change, RawImage, StreamEvent, StreamRecord};
use super::{UserIdentity, MAX_NESTING};
use crate::item::Attrs;
use std::borrow::Cow;

/// How many JSON containers deep [`Cursor::skip`] goes from the value it
/// starts at; deeper is not sure. It is as deep as an image the check
/// accepts can be (each of DynamoDB's [`MAX_NESTING`] levels is two
/// containers, `{"M":{…}}` or `{"L":[…]}`; the item, the innermost
/// attribute and a set's array in it are three more), so an image the fast
/// pass is not sure of is still found. serde_json counts its limit of 128
/// from the batch's top, and a value read again from its own text starts at
/// most 4 levels down (batch, `Records`, record, `dynamodb`), so what this
/// reader accepts serde_json reads too.
pub(super) const SKIP_NESTING: u32 = 2 * MAX_NESTING + 3;

const _: () = assert!(4 + SKIP_NESTING < 128);

/// The batch in `text`, if this reader is sure of it (the module's
/// invariant); `None` means: read it with serde_json.
pub fn read(text: &str) -> Option<StreamEvent<'_>> {
    let mut c = Reader {
        text,
        c: Cursor {
            b: text.as_bytes(),
            i: 0,
        },
    };
    let mut records = None;
    c.object(|c, name| match name {
        b"Records" => once(&mut records, c.records()?),
        _ => c.skip(),
    })?;
    c.c.ws();
    (c.c.i == text.len()).then_some(StreamEvent { records: records? })
}

/// Sets `slot` unless it was set: a field named twice is not sure (the
/// derived reader refuses it).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

struct Reader<'a> {
    text: &'a str,
    c: Cursor<'a>,
}

impl<'a> Walk<'a> for Reader<'a> {
    fn cursor(&mut self) -> &mut Cursor<'a> {
        &mut self.c
    }
}

impl<'a> Reader<'a> {
    /// `{"name": value, …}`, each value read by `field` (which is handed
    /// the name as it is in the text; a name with an escape is not sure).
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.list(b'{', b'}', |r| {
            let name = r.c.string()?;
            if name.escaped {
                return None;
            }
            r.c.eat(b':')?;
            field(r, name.raw)
        })
        .map(drop)
    }

    /// The `Records` array.
    fn records(&mut self) -> Option<Vec<StreamRecord<'a>>> {
        let mut records = Vec::new();
        self.list(b'[', b']', |r| {
            records.push(r.record()?);
            Some(())
        })?;
        Some(records)
    }

    fn record(&mut self) -> Option<StreamRecord<'a>> {
        let (mut id, mut name, mut arn, mut table, mut user, mut change) =
            (None, None, None, None, None, None);
        self.object(|r, field| match field {
            b"eventID" => once(&mut id, r.value::<String>()?),
            b"eventName" => once(&mut name, r.value::<Borrowed<'a>>()?.0),
            b"eventSourceARN" => once(&mut arn, r.value::<Text<'a>>()?.0),
            b"tableName" => once(&mut table, r.value::<Text<'a>>()?.0),
            b"userIdentity" => once(&mut user, r.value::<Option<UserIdentity>>()?),
            b"dynamodb" => once(&mut change, r.change()?),
            _ => r.skip(),
        })?;
        Some(StreamRecord {
            event_id: id?,
            event_name: name?,
            event_source_arn: arn.flatten(),
            table_name: table.flatten(),
            user_identity: user.flatten(),
            change: change?,
        })
    }

    fn change(&mut self) -> Option<Change<'a>> {
        let (mut time, mut keys, mut new, mut old, mut seq) = (None, None, None, None, None);
        self.object(|r, field| match field {
            b"ApproximateCreationDateTime" => once(&mut time, r.value::<Seconds>()?.0),
            b"Keys" => once(&mut keys, r.value::<Keys>()?.0),
            b"NewImage" => once(&mut new, r.image()?),
            b"OldImage" => once(&mut old, r.image()?),
            b"SequenceNumber" => once(&mut seq, r.value::<Option<String>>()?),
            _ => r.skip(),
        })?;
        Some(Change {
            time_ms: time.unwrap_or_default(),
            keys: keys.unwrap_or_default(),
            new_image: new.flatten(),
            old_image: old.flatten(),
            sequence_number: seq.flatten(),
        })
    }

    /// An image, checked as it is read: [`Cursor::item`] is the check's
    /// fast path. What it is not sure of is found by [`Cursor::skip`] and
    /// handed to the whole check; `null` is no image.
    fn image(&mut self) -> Option<Option<RawImage<'a>>> {
        if self.c.peek()? != b'{' {
            return self.value::<Option<RawImage<'a>>>();
        }
        let from = self.c.i;
        if let Some(n) = self.c.item(0) {
            let json = self.text.get(from..self.c.i)?;
            return Some(Some(RawImage {
                json,
                empty: n == 0,
            }));
        }
        #[cfg(test)]
        tests::WHOLE_CHECKS.with(|n| n.set(n.get() + 1));
        self.c.i = from;
        self.skip()?;
        let json = self.text.get(from..self.c.i)?;
        Some(Some(RawImage::new(json).ok()?))
    }

    /// The next value, read by serde_json as `T` from exactly its text
    /// (found by [`Cursor::skip`]).
    fn value<T: Deserialize<'a>>(&mut self) -> Option<T> {
        self.c.ws();
        let from = self.c.i;
        self.skip()?;
        let json = self.text.get(from..self.c.i)?;
        let mut de = Deserializer::from_str(json);
        let value = T::deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(value)
    }

    /// Moves past one value, nested at most [`SKIP_NESTING`] levels.
    fn skip(&mut self) -> Option<()> {
        self.c.skip(0)
    }
}

impl Cursor<'_> {
    /// Moves past one JSON value in serde_json's grammar, `depth` levels
    /// below where skipping started; `None` when not sure (see the module's
    /// invariant).
    pub(super) fn skip(&mut self, depth: u32) -> Option<()> {
        let below = || (depth < SKIP_NESTING).then_some(depth + 1);
        match self.peek()? {
            b'"' => self.any_string(),
            b'{' => {
                let below = below()?;
                self.list(b'{', b'}', |c| {
                    c.any_string()?;
                    c.eat(b':')?;
                    c.skip(below)
                })
                .map(drop)
            }
            b'[' => {
                let below = below()?;
                self.array(|c| c.skip(below))
            }
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => self.number(),
        }
    }

    /// A string as serde_json skips one: any escape JSON has, `\u` with
    /// any four hex digits (a skipped string is never decoded, so a lone
    /// surrogate is no error); a control character is not sure.
    fn any_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.skip_plain();
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => match self.b.get(self.i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    b'u' => {
                        let hex = self.b.get(self.i + 2..self.i + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        self.i += 6;
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
    }

    /// A number in JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)?
    /// ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let digits = |c: &mut Self| {
            let from = c.i;
            while c.b.get(c.i).is_some_and(u8::is_ascii_digit) {
                c.i += 1;
            }
            (c.i > from).then_some(())
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => digits(self)?,
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            digits(self)?;
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            digits(self)?;
        }
        Some(())
    }
}

/// `eventName`: borrowed from the text unless escaped, as the derived
/// reader's `#[serde(borrow)]` reads it.
#[derive(Deserialize)]
struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);

/// `eventSourceARN`, `tableName`: the derived reader's `text`.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text(d).map(Text)
    }
}

/// `ApproximateCreationDateTime`: the derived reader's `seconds_to_ms`.
struct Seconds(i64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        seconds_to_ms(d).map(Seconds)
    }
}

/// `Keys`: the derived reader's `nullish`.
struct Keys(Attrs);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        nullish(d).map(Keys)
    }
}

#[cfg(test)]
mod tests;
