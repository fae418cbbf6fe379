//! Packing: from the events of one stream batch to few, ordered FIFO messages.
//!
//! **Invariant:** events of one bucket appear in the messages of that bucket's
//! group in stream order, and the messages of a group are listed in the
//! order they must be sent.
//!
//! **Invariant:** no message body exceeds the size cap. An event too big for
//! the cap first has its old image shrunk to the transform's key sources
//! (what the applier needs to find a moved or deleted item's old target
//! key), then becomes a refetch marker (keys and those key sources); it is
//! never truncated and never dropped.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::envelope::{self, EventView, ImageRef};
use crate::event::ChangeEvent;
use crate::group::{bucket, group_id, Dedup};
use crate::item::{Attrs, CanonicalKey};
use crate::stream::RawImage;
use crate::transform::project;

/// An image the packer can write and, when an event is too big, shrink to
/// the transform's key sources.
pub trait Image: Serialize {
    /// The attributes named in `names`, or `None` when it holds none.
    fn project(&self, names: &BTreeSet<String>) -> Option<Attrs>;
}

impl Image for Attrs {
    fn project(&self, names: &BTreeSet<String>) -> Option<Attrs> {
        project(self, names)
    }
}

impl Image for RawImage<'_> {
    /// Parses the image only when there is something to keep.
    fn project(&self, names: &BTreeSet<String>) -> Option<Attrs> {
        if names.is_empty() {
            return None;
        }
        project(&self.to_attrs(), names)
    }
}

/// How the forwarder packs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackConfig {
    /// Number of FIFO groups (G).
    pub buckets: u32,
    /// Largest message body, in bytes.
    pub max_message_bytes: usize,
    /// Whether whole old images are forwarded (when they fit).
    pub forward_old_image: bool,
    /// Attributes of the old image that always travel, even when the old
    /// image does not: the transform's key sources (the applier completes
    /// them with the keys; empty when the target key comes from the keys).
    pub old_key_sources: BTreeSet<String>,
    /// The envelope version written (1 or 2, `envelope::VERSION` by
    /// default).
    pub envelope_version: u32,
}

/// One FIFO message, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutMessage {
    pub group_id: String,
    pub dedup_id: String,
    pub body: String,
    /// Position, in the stream batch, of the first record this message carries.
    pub first_record: usize,
    /// Number of events in the message.
    pub events: usize,
}

/// What packing did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackStats {
    pub events: u64,
    pub messages: u64,
    pub bytes: u64,
    pub old_images_dropped: u64,
    pub refetch_markers: u64,
}

/// The messages of one batch, by group, each group in send order.
#[derive(Clone, Debug, Default)]
pub struct Packed {
    pub groups: Vec<Vec<OutMessage>>,
    pub stats: PackStats,
}

/// Why packing failed: only a cap too small for an item's keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record at position {record} does not fit a {cap}-byte message even as a keys-only refetch marker ({needed} bytes); raise MAX_MESSAGE_BYTES")]
pub struct PackError {
    pub record: usize,
    pub cap: usize,
    pub needed: usize,
}

/// The smallest cap we accept: room for the largest possible key (2 KB
/// partition + 1 KB sort key, base64 and JSON overhead) as a refetch marker.
pub const MIN_MESSAGE_BYTES: usize = 16 * 1024;

struct Building {
    body: Vec<u8>,
    /// The dedup id so far, and the number of events.
    dedup: Dedup,
    events: usize,
    first_record: usize,
}

/// Packs `(record position, event)` pairs, given in stream order.
/// `invocation` is a number unique to the calling forwarder invocation; it
/// scopes the messages' dedup ids (see [`crate::group::dedup_id`]).
pub fn pack<I: Image>(
    src_table: &str,
    events: &[(usize, ChangeEvent<I>)],
    cfg: &PackConfig,
    invocation: u64,
) -> Result<Packed, PackError> {
    let header = envelope::header(cfg.envelope_version, src_table);
    let frame = header.len() + envelope::FOOTER.len();
    let room = cfg.max_message_bytes.saturating_sub(frame);

    let mut order: Vec<u32> = Vec::new();
    let mut groups: HashMap<u32, (Vec<OutMessage>, Option<Building>)> = HashMap::new();
    let mut stats = PackStats::default();

    // Events per group if the batch spreads evenly: a message's first size.
    let per_group = events
        .len()
        .div_ceil(events.len().clamp(1, cfg.buckets.max(1) as usize));
    // One encoding buffer for the whole batch: it grows to the largest
    // event once, instead of every event growing its own.
    let mut scratch: Vec<u8> = Vec::with_capacity(4096);
    // One buffer for the keys' canonical bytes too.
    let mut key = CanonicalKey::from_bytes(Vec::with_capacity(64));
    for (record, event) in events {
        let record = *record;
        key.set(&event.keys);
        let b = bucket(src_table, &key, cfg.buckets);
        let (done, open) = groups.entry(b).or_insert_with(|| {
            order.push(b);
            (Vec::new(), None)
        });
        // Most events go whole into their group's open message: written
        // there directly (no copy), when whole is what `encode_within`
        // would choose and it fits (then it fits `room` too: the message
        // holds a header). Otherwise the message is left as it was.
        if let Some(cur) = open.as_mut() {
            if cfg.forward_old_image || event.old_image.is_none() {
                let mark = cur.body.len();
                cur.body.extend_from_slice(envelope::SEPARATOR);
                let limit = cfg.max_message_bytes.saturating_sub(envelope::FOOTER.len());
                if envelope::append_event_within(&mut cur.body, event, limit) {
                    stats.refetch_markers += u64::from(event.refetch);
                    stats.events += 1;
                    cur.dedup.push(&event.event_id);
                    cur.events += 1;
                    continue;
                }
                cur.body.truncate(mark);
            }
        }
        let refetch = encode_within(event, room, cfg, &mut stats, &mut scratch);
        let encoded = &scratch;
        if encoded.len() > room {
            return Err(PackError {
                record,
                cap: cfg.max_message_bytes,
                needed: encoded.len() + frame,
            });
        }
        if refetch {
            stats.refetch_markers += 1;
        }
        stats.events += 1;

        if let Some(cur) = open {
            if cur.body.len() + envelope::SEPARATOR.len() + encoded.len() + envelope::FOOTER.len()
                > cfg.max_message_bytes
            {
                if let Some(full) = open.take() {
                    done.push(finish(b, full, cfg.envelope_version, &mut stats));
                }
            }
        }
        match open {
            Some(cur) => {
                cur.body.extend_from_slice(envelope::SEPARATOR);
                cur.body.extend_from_slice(encoded);
                cur.dedup.push(&event.event_id);
                cur.events += 1;
            }
            None => {
                // Room for a group's share of the batch in events like
                // this one (the batch is here: the guess is of what will
                // fill it); a message grows by doubling if that was short,
                // and gives back what it did not use (`finish`). A 64 KB
                // start for every message was most of the forwarder's
                // peak memory at small batches, and its page faults; a
                // 64 KB cap on the guess costs more peak at B = 1000 than
                // it saves (the allocation test).
                let hint = header.len()
                    + per_group * (encoded.len() + envelope::SEPARATOR.len())
                    + envelope::FOOTER.len();
                let mut body = Vec::with_capacity(hint.min(cfg.max_message_bytes));
                body.extend_from_slice(&header);
                body.extend_from_slice(encoded);
                *open = Some(Building {
                    body,
                    dedup: {
                        let mut d = Dedup::new(invocation);
                        d.push(&event.event_id);
                        d
                    },
                    events: 1,
                    first_record: record,
                });
            }
        }
    }

    let mut out = Vec::with_capacity(order.len());
    for b in order {
        if let Some((mut done, open)) = groups.remove(&b) {
            if let Some(last) = open {
                done.push(finish(b, last, cfg.envelope_version, &mut stats));
            }
            out.push(done);
        }
    }
    Ok(Packed { groups: out, stats })
}

/// Encodes one event into `out` so that it fits `room` bytes if it can: as
/// it is (with its old image, if wanted); else with the old image shrunk to
/// its key sources; else as a refetch marker (keys and those key sources).
/// Never clones the event. Returns whether it is a refetch marker.
fn encode_within<I: Image>(
    event: &ChangeEvent<I>,
    room: usize,
    cfg: &PackConfig,
    stats: &mut PackStats,
    out: &mut Vec<u8>,
) -> bool {
    let whole = cfg.forward_old_image || event.old_image.is_none();
    if whole {
        out.clear();
        envelope::append_event(out, event);
        if out.len() <= room {
            return event.refetch;
        }
    }
    let projected = event
        .old_image
        .as_ref()
        .and_then(|o| o.project(&cfg.old_key_sources));
    let mut view = EventView::of(event);
    view.old_image = projected.as_ref().map(ImageRef::Projected);
    if event.old_image.is_some() {
        stats.old_images_dropped += 1;
        out.clear();
        envelope::append_view(out, &view);
        if out.len() <= room {
            return event.refetch;
        }
    }
    view.refetch = true;
    view.new_image = None;
    out.clear();
    envelope::append_view(out, &view);
    true
}

fn finish(bucket: u32, mut m: Building, version: u32, stats: &mut PackStats) -> OutMessage {
    m.body.extend_from_slice(envelope::FOOTER);
    // With glibc's allocator (the Lambda runtime's), shrinking splits the
    // block in place; nothing is copied.
    m.body.shrink_to_fit();
    stats.messages += 1;
    stats.bytes += m.body.len() as u64;
    OutMessage {
        group_id: group_id(bucket),
        dedup_id: m.dedup.finish(),
        events: m.events,
        first_record: m.first_record,
        body: envelope::into_string(version, m.body),
    }
}

#[cfg(test)]
mod tests;
