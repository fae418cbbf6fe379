//! The versioned message envelope: the wire contract between forwarder and applier.
//!
//! Version 1 is a JSON object:
//!
//! ```json
//! {"v":1,"src":"SourceTable","ev":[{"id":"…","sq":"…","t":1700000000000,"op":"INSERT","k":{…},"n":{…}}]}
//! ```
//!
//! Attribute values use DynamoDB JSON (`{"N":"1.5"}`, `{"B":"<base64>"}`, …),
//! so numbers stay decimal strings and every type round-trips losslessly.
//! It is also the stream's own form, so the forwarder copies images in as
//! the stream sent them ([`crate::stream::RawImage`]), spacing included.
//! The encoder escapes the few code points SQS refuses in a message body
//! (U+FFFE, U+FFFF; control characters are escaped by JSON itself).
//!
//! Version 2, which this build writes, is the same JSON object with `"v":2`
//! and every `"` byte exchanged with `'` and every `'` with `"`
//! ([`exchange_quotes`]):
//!
//! ```text
//! {'v':2,'src':'SourceTable','ev':[{'id':'…','sq':'…','t':1700000000000,'op':'INSERT','k':{…},'n':{…}}]}
//! ```
//!
//! A message body travels as a JSON string twice: in the SDK's
//! SendMessageBatch request and in the SQS event Lambda hands the applier.
//! Every `"` of a version 1 body is escaped on the way out (the SDK's
//! escaper, byte by byte, was ~⅔ of the SDK's cost of a send) and unescaped
//! on the way in (most of the applier's read of its event). A version 2
//! body has no `"` or `\` but where customer text had `'`, `"`, `\` or a
//! control character, so for most data both are copies (BENCHMARKS.md,
//! round 6). The exchange keeps the length, so the packer's sizes are the
//! body's, and it is its own inverse.
//!
//! The forwarder writes version 2 unless `ENVELOPE_VERSION=1`: an applier
//! of a release before version 2 reads only version 1, and a stack that may
//! roll back to one (a live migration upgraded from it) must not queue
//! version 2 until the upgrade has completed.
//!
//! **Invariant:** a reader never guesses: a body whose `v` it does not know is
//! an [`EnvelopeError::UnsupportedVersion`], never a best-effort parse; a
//! version 1 body is plain JSON and a version 2 body is exchanged, and either
//! in the other's form is malformed. A body is exchanged exactly when it
//! starts with `{'`, which no JSON text does.

use std::borrow::Cow;
use std::io;

use serde::{Deserialize, Serialize};

use crate::event::{ChangeEvent, Op};
use crate::item::{json, Attrs};

/// The envelope version this build writes by default. It reads it and
/// version 1, and writes either ([`header`], [`into_string`]).
pub const VERSION: u32 = 2;

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope {
    pub v: u32,
    /// The source table name.
    pub src: String,
    /// The events, in stream order.
    pub ev: Vec<ChangeEvent>,
}

#[derive(Serialize)]
struct EnvelopeRef<'a> {
    v: u32,
    src: &'a str,
    ev: &'a [ChangeEvent],
}

/// Why a message body could not be decoded. The text never quotes the body:
/// message bodies hold customer data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message body is not a JSON envelope ({0})")]
    NotJson(String),
    #[error("message envelope has no version field \"v\"")]
    MissingVersion,
    #[error("message envelope version {found} is not supported (this build reads versions 1 to {supported}); deploy a newer applier, then `ddb-relay dlq repair` the messages that reached the DLQ (never redrive them: newer changes of their items may have been applied since)")]
    UnsupportedVersion { found: u64, supported: u32 },
    #[error("message envelope v{version} is malformed ({detail})")]
    Malformed { version: u32, detail: String },
}

/// Describes a serde_json error by category and position only, so that no
/// item content reaches a log.
fn describe(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

#[derive(Deserialize)]
struct VersionProbe {
    v: Option<serde_json::Value>,
}

/// The first bytes of a version 1 body as this project wrote them, and of
/// a version 2 body once exchanged back: a body that starts with its
/// version's prefix skips the version probe (a second scan of the whole
/// body). Anything else takes the probe.
const V1_PREFIX: &str = "{\"v\":1,";
const V2_PREFIX: &str = "{\"v\":2,";

/// Exchanges every `"` byte with `'` and every `'` with `"`: version 2's
/// form of version 1's JSON, and back. Both are ASCII, so UTF-8 stays
/// UTF-8, and the length is kept.
pub fn exchange_quotes(bytes: &mut [u8]) {
    // b'"' ^ b'\'' == 5: one branch-free pass.
    for b in bytes {
        let swap = u8::from(*b == b'"' || *b == b'\'');
        *b ^= swap * 5;
    }
}

/// Decodes a message body, checking the version first. A body passed as a
/// `String` is exchanged back (version 2) in place; a `&str` is copied.
///
/// Items are read by [`json::Item`] (serde_dynamo's grammar and maps,
/// fewer allocations), not by [`Envelope`]'s derived reader.
pub fn decode<'a>(body: impl Into<Cow<'a, str>>) -> Result<Envelope, EnvelopeError> {
    let wire: WireEnvelope<json::Item> = decode_as(body.into())?;
    Ok(wire.into_envelope())
}

/// [`decode`] for a reader that never looks at old images (an applier
/// without a key-changing transform): every event's `o` is skipped, not
/// built, and `old_image` is `None`. Everything else is as [`decode`] reads
/// it, errors included, but `o` itself is not checked: a body whose only
/// fault is a malformed `o` is read (its keys and new image checked as
/// [`decode`] checks them), where [`decode`] refuses it. Such a reader never
/// uses `o`, so what it writes is the same either way.
pub fn decode_without_old_images<'a>(
    body: impl Into<Cow<'a, str>>,
) -> Result<Envelope, EnvelopeError> {
    let wire: WireEnvelope<Unread> = decode_as(body.into())?;
    Ok(wire.into_envelope())
}

/// The wire form of a [`ChangeEvent`], its old image read as `O`: an item,
/// or [`Unread`] (unknown fields are skipped, as [`ChangeEvent`]'s own
/// decoding skips them).
#[derive(Deserialize)]
#[serde(bound = "O: Deserialize<'de>")]
struct WireEvent<O> {
    id: String,
    sq: String,
    t: i64,
    op: Op,
    #[serde(default)]
    ttl: bool,
    #[serde(default)]
    rf: bool,
    k: json::Item,
    #[serde(default)]
    n: Option<json::Item>,
    #[serde(default)]
    o: Option<O>,
}

#[derive(Deserialize)]
#[serde(bound = "O: Old + Deserialize<'de>")]
struct WireEnvelope<O> {
    v: u32,
    src: String,
    ev: Events<O>,
}

impl<O> WireEnvelope<O> {
    fn into_envelope(self) -> Envelope {
        Envelope {
            v: self.v,
            src: self.src,
            ev: self.ev.0,
        }
    }
}

/// How a [`WireEvent`]'s old image is kept.
trait Old {
    fn image(self) -> Option<Attrs>;
}

impl Old for json::Item {
    fn image(self) -> Option<Attrs> {
        Some(self.0)
    }
}

impl Old for Unread {
    fn image(self) -> Option<Attrs> {
        None
    }
}

impl<O: Old> From<WireEvent<O>> for ChangeEvent {
    fn from(e: WireEvent<O>) -> Self {
        ChangeEvent {
            event_id: e.id,
            seq: e.sq,
            time_ms: e.t,
            op: e.op,
            ttl: e.ttl,
            refetch: e.rf,
            keys: e.k.0,
            new_image: e.n.map(|n| n.0),
            old_image: e.o.and_then(O::image),
        }
    }
}

/// The `ev` array, each event made a [`ChangeEvent`] as it is read (no
/// second array of wire events to copy from).
struct Events<O>(Vec<ChangeEvent>, std::marker::PhantomData<O>);

impl<'de, O: Old + Deserialize<'de>> Deserialize<'de> for Events<O> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<O>(std::marker::PhantomData<O>);
        impl<'de, O: Old + Deserialize<'de>> serde::de::Visitor<'de> for V<O> {
            type Value = Events<O>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of events")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<Events<O>, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = s.next_element::<WireEvent<O>>()? {
                    out.push(e.into());
                }
                Ok(Events(out, std::marker::PhantomData))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// Any JSON value, skipped unread (an old image nobody will use).
struct Unread;

impl<'de> Deserialize<'de> for Unread {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Unread)
    }
}

fn decode_as<T: serde::de::DeserializeOwned>(body: Cow<'_, str>) -> Result<T, EnvelopeError> {
    if !body.starts_with("{'") {
        return decode_json(&body, 1);
    }
    let mut bytes = body.into_owned().into_bytes();
    exchange_quotes(&mut bytes);
    // ASCII bytes exchanged for ASCII bytes: still UTF-8.
    let json = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    decode_json(&json, 2)
}

/// Decodes the JSON of a body whose form is `form`'s version (1: plain, 2:
/// exchanged).
fn decode_json<T: serde::de::DeserializeOwned>(json: &str, form: u32) -> Result<T, EnvelopeError> {
    let prefix = if form == 1 { V1_PREFIX } else { V2_PREFIX };
    if json.starts_with(prefix) {
        // `v` is `form` here; a second `v` makes the object malformed below.
        return full_decode(json, form);
    }
    let probe: VersionProbe =
        serde_json::from_str(json).map_err(|e| EnvelopeError::NotJson(describe(&e)))?;
    let version = match probe.v {
        None => return Err(EnvelopeError::MissingVersion),
        Some(v) => v.as_u64().ok_or(EnvelopeError::MissingVersion)?,
    };
    match version {
        1 | 2 if version != u64::from(form) => Err(EnvelopeError::Malformed {
            version: version as u32,
            detail: if form == 1 {
                "a version 2 body has its quotes exchanged, and this one is plain JSON".into()
            } else {
                "a version 1 body is plain JSON, and this one has its quotes exchanged".into()
            },
        }),
        1 | 2 => full_decode(json, form),
        _ => Err(EnvelopeError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        }),
    }
}

fn full_decode<T: serde::de::DeserializeOwned>(
    json: &str,
    version: u32,
) -> Result<T, EnvelopeError> {
    serde_json::from_str(json).map_err(|e| EnvelopeError::Malformed {
        version,
        detail: describe(&e),
    })
}

/// Encodes a whole message as version [`VERSION`] (used by tests and tools;
/// the forwarder packs with [`header`], [`encode_event`] and [`FOOTER`] to
/// know sizes as it goes).
pub fn encode(src: &str, events: &[ChangeEvent]) -> String {
    encode_as(VERSION, src, events)
}

/// [`encode`] as version `version` (1 or 2).
pub fn encode_as(version: u32, src: &str, events: &[ChangeEvent]) -> String {
    let mut out = Vec::new();
    write_json(
        &mut out,
        &EnvelopeRef {
            v: version,
            src,
            ev: events,
        },
    );
    into_string(version, out)
}

/// The bytes before the first event of a version `version` body:
/// `{"v":2,"src":"…","ev":[`, in plain JSON ([`into_string`] exchanges the
/// quotes of a whole version 2 body).
pub fn header(version: u32, src: &str) -> Vec<u8> {
    let mut out = format!("{{\"v\":{version},\"src\":").into_bytes();
    write_json(&mut out, &src);
    out.extend_from_slice(b",\"ev\":[");
    out
}

/// The bytes after the last event.
pub const FOOTER: &[u8] = b"]}";
/// The bytes between two events.
pub const SEPARATOR: &[u8] = b",";

/// One event as SQS-safe JSON.
pub fn encode_event<I: Serialize>(event: &ChangeEvent<I>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_json(&mut out, event);
    out
}

/// [`encode_event`] appended to `out`: the packer writes an event straight
/// into its message's body (or a buffer reused across events), so an event
/// costs no allocation and no copy.
pub fn append_event<I: Serialize>(out: &mut Vec<u8>, event: &ChangeEvent<I>) {
    write_json(out, event);
}

/// [`encode_view`] appended to `out`.
pub fn append_view<I: Serialize>(out: &mut Vec<u8>, view: &EventView<'_, I>) {
    write_json(out, view);
}

/// [`append_event`] if `out` stays within `limit` bytes: `false` when it
/// would not (`out` then holds part of the event, never more than `limit`
/// bytes: the caller truncates it).
pub fn append_event_within<I: Serialize>(
    out: &mut Vec<u8>,
    event: &ChangeEvent<I>,
    limit: usize,
) -> bool {
    /// A writer that refuses to take `out` past `limit` (so `out` never
    /// grows for an event that will not stay).
    struct Within<'a> {
        out: &'a mut Vec<u8>,
        limit: usize,
    }
    impl io::Write for Within<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.out.len() + buf.len() > self.limit {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut ser = serde_json::Serializer::with_formatter(Within { out, limit }, SqsSafe);
    event.serialize(&mut ser).is_ok()
}

/// A borrowed view of a [`ChangeEvent`] that serialises exactly like it, so
/// the packer can encode an event with a slimmer image (or as a refetch
/// marker) without cloning it.
#[derive(Debug, Serialize)]
pub struct EventView<'a, I = Attrs> {
    #[serde(rename = "id")]
    pub event_id: &'a str,
    #[serde(rename = "sq")]
    pub seq: &'a str,
    #[serde(rename = "t")]
    pub time_ms: i64,
    #[serde(rename = "op")]
    pub op: Op,
    #[serde(rename = "ttl", skip_serializing_if = "is_false")]
    pub ttl: bool,
    #[serde(rename = "rf", skip_serializing_if = "is_false")]
    pub refetch: bool,
    #[serde(rename = "k")]
    pub keys: &'a Attrs,
    #[serde(rename = "n", skip_serializing_if = "Option::is_none")]
    pub new_image: Option<&'a I>,
    #[serde(rename = "o", skip_serializing_if = "Option::is_none")]
    pub old_image: Option<ImageRef<'a, I>>,
}

/// An old image as the view writes it: the event's own, or a projection
/// the packer built (always parsed).
#[derive(Debug)]
pub enum ImageRef<'a, I> {
    Whole(&'a I),
    Projected(&'a Attrs),
}

impl<I: Serialize> Serialize for ImageRef<'_, I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ImageRef::Whole(i) => i.serialize(s),
            ImageRef::Projected(a) => a.serialize(s),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl<'a, I> EventView<'a, I> {
    /// The event as it is.
    pub fn of(e: &'a ChangeEvent<I>) -> Self {
        EventView {
            event_id: &e.event_id,
            seq: &e.seq,
            time_ms: e.time_ms,
            op: e.op,
            ttl: e.ttl,
            refetch: e.refetch,
            keys: &e.keys,
            new_image: e.new_image.as_ref(),
            old_image: e.old_image.as_ref().map(ImageRef::Whole),
        }
    }
}

/// One event view as SQS-safe JSON.
pub fn encode_view<I: Serialize>(view: &EventView<'_, I>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_json(&mut out, view);
    out
}

/// Turns bytes built from [`header`], [`encode_event`], [`SEPARATOR`] and
/// [`FOOTER`] into the body string of a version `version` body: for
/// version 2 its quotes exchanged ([`exchange_quotes`]), the same length.
pub fn into_string(version: u32, mut bytes: Vec<u8>) -> String {
    if version == 2 {
        exchange_quotes(&mut bytes);
    }
    // serde_json only writes UTF-8, and the framing bytes are ASCII.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut ser = serde_json::Serializer::with_formatter(out, SqsSafe);
    // Our types are plain data with string map keys: writing them into
    // memory has no failure mode.
    let written = value.serialize(&mut ser);
    debug_assert!(
        written.is_ok(),
        "serialising an envelope into memory failed"
    );
}

/// A compact JSON formatter that also escapes U+FFFE and U+FFFF, which are
/// valid in DynamoDB strings but refused by SQS in a message body, in
/// strings it writes and in raw JSON it copies (a stream image).
struct SqsSafe;

impl serde_json::ser::Formatter for SqsSafe {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_sqs_safe(writer, fragment)
    }

    /// Valid JSON holds U+FFFE and U+FFFF only inside strings, where the
    /// escape means the same character.
    fn write_raw_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_sqs_safe(writer, fragment)
    }
}

fn write_sqs_safe<W: ?Sized + io::Write>(writer: &mut W, text: &str) -> io::Result<()> {
    let bytes = text.as_bytes();
    // Both code points are EF BF BE / EF BF BF in UTF-8: only an EF byte
    // can start one, and most text has none (memchr skips it in bulk).
    // A match's other two bytes are never EF, so matches never overlap.
    let mut start = 0;
    for i in memchr::memchr_iter(0xEF, bytes) {
        if let Some([0xEF, 0xBF, last @ (0xBE | 0xBF)]) = bytes.get(i..i + 3) {
            writer.write_all(&bytes[start..i])?;
            writer.write_all(if *last == 0xBE {
                b"\\uFFFE"
            } else {
                b"\\uFFFF"
            })?;
            start = i + 3;
        }
    }
    writer.write_all(&bytes[start..])
}

#[cfg(test)]
mod tests;
