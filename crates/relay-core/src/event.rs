//! The change event: one DynamoDB stream record, reduced to what replication needs.

use aws_lambda_events::event::dynamodb::EventRecord;
use serde::{Deserialize, Serialize};

use crate::item::Attrs;

/// What happened to the item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "INSERT")]
    Insert,
    #[serde(rename = "MODIFY")]
    Modify,
    #[serde(rename = "REMOVE")]
    Remove,
}

/// One change of one source item, as carried on the queue.
///
/// The field names on the wire are short because they repeat once per event;
/// see [`crate::envelope`] for the versioned message around them.
///
/// `I` is how the images are held: parsed [`Attrs`] (every reader, and
/// every writer that builds or changes images), or the forwarder's
/// [`crate::stream::RawImage`], the stream's own DynamoDB JSON copied onto
/// the queue unparsed. Both encode to the same wire form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent<I = Attrs> {
    /// The stream record's `eventID`.
    #[serde(rename = "id")]
    pub event_id: String,
    /// The stream record's `SequenceNumber` (decimal string).
    #[serde(rename = "sq")]
    pub seq: String,
    /// `ApproximateCreationDateTime` in epoch milliseconds. DynamoDB rounds it
    /// down to the second.
    #[serde(rename = "t")]
    pub time_ms: i64,
    #[serde(rename = "op")]
    pub op: Op,
    /// A REMOVE made by DynamoDB's TTL process (userIdentity is the service).
    #[serde(rename = "ttl", default, skip_serializing_if = "is_false")]
    pub ttl: bool,
    /// Keys only: the applier must read the source item with a consistent
    /// read and write its current state (oversized or unreadable records).
    #[serde(rename = "rf", default, skip_serializing_if = "is_false")]
    pub refetch: bool,
    #[serde(rename = "k")]
    pub keys: Attrs,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub new_image: Option<I>,
    /// The old image, or, when it did not fit a message, its projection onto
    /// the transform's key sources: the applier only derives the old target
    /// key from it (to delete a moved or removed item), never writes it.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub old_image: Option<I>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl<I> ChangeEvent<I> {
    /// True when the applier must read the source's current item: a refetch
    /// marker, or an INSERT/MODIFY without a new image.
    pub fn needs_refetch(&self) -> bool {
        self.refetch || (self.op != Op::Remove && self.new_image.is_none())
    }

    /// The event without its new image: the applier will refetch the
    /// item. The old image is kept for the packer to shrink to the key
    /// sources (a moved or deleted item's old target key needs them).
    pub fn into_refetch(mut self) -> Self {
        self.refetch = true;
        self.new_image = None;
        self
    }

    /// The same event with each image turned into another image type (the
    /// stream's JSON into maps, or back), everything else moved as is.
    pub fn map_images<J>(self, mut f: impl FnMut(I) -> J) -> ChangeEvent<J> {
        ChangeEvent {
            new_image: self.new_image.map(&mut f),
            old_image: self.old_image.map(&mut f),
            event_id: self.event_id,
            seq: self.seq,
            time_ms: self.time_ms,
            op: self.op,
            ttl: self.ttl,
            refetch: self.refetch,
            keys: self.keys,
        }
    }
}

/// Why a stream record could not be turned into a [`ChangeEvent`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("stream record {event_id} has no SequenceNumber")]
    MissingSequenceNumber { event_id: String },
    #[error(
        "stream record {event_id} (seq {seq}) has no Keys, so it cannot be replicated or refetched"
    )]
    MissingKeys { event_id: String, seq: String },
    #[error("stream record {event_id} (seq {seq}) has no ApproximateCreationDateTime, so the cutoff cannot place it; it is reported, never treated as older than the cutoff")]
    MissingCreationTime { event_id: String, seq: String },
}

impl RecordError {
    /// The record's sequence number, when it had one.
    pub fn seq(&self) -> Option<&str> {
        match self {
            RecordError::MissingSequenceNumber { .. } => None,
            RecordError::MissingKeys { seq, .. } | RecordError::MissingCreationTime { seq, .. } => {
                Some(seq)
            }
        }
    }
}

/// The principal DynamoDB's TTL process uses in stream records.
pub const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// Turns a stream record, as `aws_lambda_events` parses it, into a change
/// event (the forwarder itself reads [`crate::stream::StreamEvent`]; both
/// follow [`assemble`]'s rules).
pub fn from_stream_record(rec: EventRecord) -> Result<ChangeEvent, RecordError> {
    // By value: the images move into the event, nothing is copied.
    let EventRecord {
        change,
        event_id,
        event_name,
        user_identity,
        ..
    } = rec;
    let ttl = user_identity
        .as_ref()
        .is_some_and(|u| u.type_ == "Service" && u.principal_id == TTL_PRINCIPAL);
    let image = |i: serde_dynamo::Item| -> Option<Attrs> {
        // `into_inner`, not `into`: the map as parsed, not rebuilt and rehashed.
        let m: Attrs = i.into_inner();
        (!m.is_empty()).then_some(m)
    };
    assemble(Record {
        event_id,
        event_name: &event_name,
        seq: change.sequence_number,
        // aws_lambda_events defaults a missing time to the epoch.
        time_ms: change.approximate_creation_date_time.timestamp_millis(),
        ttl,
        keys: change.keys.into_inner(),
        new_image: image(change.new_image),
        old_image: image(change.old_image),
    })
}

/// The parts of a stream record a [`ChangeEvent`] is made of, whichever
/// parser read them. Empty images are `None`.
pub(crate) struct Record<'a, I> {
    pub event_id: String,
    pub event_name: &'a str,
    pub seq: Option<String>,
    /// Epoch milliseconds; 0 or less when the record has no time.
    pub time_ms: i64,
    pub ttl: bool,
    pub keys: Attrs,
    pub new_image: Option<I>,
    pub old_image: Option<I>,
}

/// Turns a stream record into a change event.
///
/// A record with keys but an unknown `eventName`, or an INSERT/MODIFY
/// without a new image, becomes a refetch marker: the applier will copy the
/// source item's current state, so nothing is lost. A record without keys,
/// sequence number or creation time is an error.
pub(crate) fn assemble<I>(rec: Record<'_, I>) -> Result<ChangeEvent<I>, RecordError> {
    let Record {
        event_id,
        event_name,
        seq,
        time_ms,
        ttl,
        keys,
        new_image,
        old_image,
    } = rec;
    let Some(seq) = seq else {
        return Err(RecordError::MissingSequenceNumber { event_id });
    };
    if keys.is_empty() {
        return Err(RecordError::MissingKeys { event_id, seq });
    }
    // Real records always carry a creation time. Treating a missing one as
    // the epoch would skip the change as "before the cutoff": refuse it.
    if time_ms <= 0 {
        return Err(RecordError::MissingCreationTime { event_id, seq });
    }
    let op = match event_name {
        "INSERT" => Some(Op::Insert),
        "MODIFY" => Some(Op::Modify),
        "REMOVE" => Some(Op::Remove),
        _ => None,
    };
    let event = ChangeEvent {
        event_id,
        seq,
        time_ms,
        op: op.unwrap_or(Op::Modify),
        ttl,
        refetch: false,
        keys,
        new_image,
        old_image,
    };
    let needs_refetch = match op {
        None => true,
        Some(Op::Insert | Op::Modify) => event.new_image.is_none(),
        Some(Op::Remove) => false,
    };
    Ok(if needs_refetch {
        event.into_refetch()
    } else {
        event
    })
}

/// The table name in a stream or table ARN
/// (`arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL`).
pub fn table_from_arn(arn: &str) -> Option<&str> {
    let rest = arn.split_once(":table/")?.1;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_come_from_stream_arns() {
        assert_eq!(
            table_from_arn("arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2024-01-01T00:00:00.000"),
            Some("Orders")
        );
        assert_eq!(
            table_from_arn("arn:aws:dynamodb:us-east-1:1:table/T"),
            Some("T")
        );
        assert_eq!(table_from_arn("arn:aws:sqs:us-east-1:1:q"), None);
    }
}
