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

        key.set(&event.keys);
        let b = bucket(src_table, &key, cfg.buckets);
        let (done, open) = groups.entry(b).or_insert_with(|| {
            order.push(b);
            (Vec::new(), None)
        });
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
        envelope::encode_event_into(out, event);
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
        envelope::encode_view_into(out, &view);
        if out.len() <= room {
            return event.refetch;
        }
    }
    view.refetch = true;
    view.new_image = None;
    envelope::encode_view_into(out, &view);
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
mod tests {
    use super::*;
    use crate::envelope::decode;
    use crate::event::Op;
    use crate::item::{AttributeValue as V, Attrs};

    fn ev(i: usize, pk: &str, payload: usize) -> ChangeEvent {
        let keys: Attrs = [("pk".to_string(), V::S(pk.into()))].into();
        let mut image = keys.clone();
        image.insert("blob".into(), V::S("x".repeat(payload)));
        ChangeEvent {
            event_id: format!("e{i}"),
            seq: format!("{:020}", i),
            time_ms: 0,
            op: Op::Modify,
            ttl: false,
            refetch: false,
            keys,
            new_image: Some(image.clone()),
            old_image: Some(image),
        }
    }

    fn cfg(buckets: u32, cap: usize) -> PackConfig {
        PackConfig {
            buckets,
            max_message_bytes: cap,
            forward_old_image: true,
            old_key_sources: BTreeSet::new(),
            envelope_version: envelope::VERSION,
        }
    }

    #[test]
    fn one_bucket_packs_in_order_under_the_cap() {
        let events: Vec<_> = (0..50)
            .map(|i| (i, ev(i, &format!("k{}", i % 7), 900)))
            .collect();
        let packed = pack("T", &events, &cfg(1, MIN_MESSAGE_BYTES), 1).unwrap();
        assert_eq!(packed.groups.len(), 1);
        let msgs = &packed.groups[0];
        assert!(msgs.len() > 1 && msgs.len() < 10, "{} messages", msgs.len());
        let mut ids = Vec::new();
        for m in msgs {
            assert!(m.body.len() <= MIN_MESSAGE_BYTES);
            let env = decode(&m.body).unwrap();
            assert_eq!(m.first_record, env.ev[0].seq.parse::<usize>().unwrap());
            // The id built as the message grew is the one of its events.
            assert_eq!(
                m.dedup_id,
                crate::group::dedup_id(1, env.ev.iter().map(|e| e.event_id.as_str()))
            );
            assert_eq!(m.events, env.ev.len());
            ids.extend(env.ev.into_iter().map(|e| e.event_id));
        }
        let want: Vec<_> = (0..50).map(|i| format!("e{i}")).collect();
        assert_eq!(ids, want);
        assert_eq!(packed.stats.events, 50);
        assert_eq!(packed.stats.messages, msgs.len() as u64);
    }

    #[test]
    fn same_key_same_group() {
        let events: Vec<_> = (0..40)
            .map(|i| (i, ev(i, &format!("k{}", i % 5), 10)))
            .collect();
        let packed = pack("T", &events, &cfg(16, 256 * 1024), 1).unwrap();
        let mut seen: HashMap<String, String> = HashMap::new();
        for g in &packed.groups {
            for m in g {
                for e in decode(&m.body).unwrap().ev {
                    let pk = format!("{:?}", e.keys["pk"]);
                    let prev = seen.insert(pk, m.group_id.clone());
                    assert!(prev.is_none_or(|p| p == m.group_id));
                }
            }
        }
    }

    #[test]
    fn oversized_events_drop_old_image_then_become_refetch_markers() {
        let cap = MIN_MESSAGE_BYTES;
        let events = vec![
            (0, ev(0, "a", cap / 2)), // fits only without its old image
            (1, ev(1, "b", cap)),     // fits only as keys
        ];
        let packed = pack("T", &events, &cfg(1, cap), 1).unwrap();
        let all: Vec<ChangeEvent> = packed.groups[0]
            .iter()
            .flat_map(|m| decode(&m.body).unwrap().ev)
            .collect();
        assert_eq!(all.len(), 2, "nothing dropped");
        assert!(all[0].old_image.is_none() && all[0].new_image.is_some() && !all[0].refetch);
        assert!(all[1].refetch && all[1].new_image.is_none() && all[1].old_image.is_none());
        assert_eq!(all[1].keys, ev(1, "b", 0).keys);
        assert_eq!(packed.stats.refetch_markers, 1);
        assert_eq!(packed.stats.old_images_dropped, 2);
    }

    #[test]
    fn what_a_key_transform_needs_from_the_old_image_always_travels() {
        let cap = MIN_MESSAGE_BYTES;
        let mut c = cfg(1, cap);
        c.old_key_sources = ["email".to_string()].into();
        let with_email = |mut e: ChangeEvent| {
            if let Some(o) = e.old_image.as_mut() {
                o.insert("email".into(), V::S("old@x".into()));
            }
            e
        };
        let events = vec![
            (0, with_email(ev(0, "a", cap / 2))), // fits only without its old image
            (1, with_email(ev(1, "b", cap))),     // fits only as a marker
        ];
        let packed = pack("T", &events, &c, 1).unwrap();
        let all: Vec<ChangeEvent> = packed.groups[0]
            .iter()
            .flat_map(|m| decode(&m.body).unwrap().ev)
            .collect();
        let projection: Attrs = [("email".to_string(), V::S("old@x".into()))].into();
        assert!(all[0].new_image.is_some() && !all[0].refetch);
        assert_eq!(all[0].old_image.as_ref(), Some(&projection));
        assert!(all[1].refetch && all[1].new_image.is_none());
        assert_eq!(all[1].old_image.as_ref(), Some(&projection));
        // Even when old images are not forwarded at all.
        c.forward_old_image = false;
        let packed = pack("T", &events[..1], &c, 1).unwrap();
        let e = &decode(&packed.groups[0][0].body).unwrap().ev[0];
        assert_eq!(e.old_image.as_ref(), Some(&projection));
    }

    #[test]
    fn stream_images_are_copied_and_shrunk_like_parsed_ones() {
        // The forwarder packs the stream's JSON (`RawImage`): the same
        // bodies as parsed images give, when whole, shrunk or a marker.
        fn raw(text: &str) -> RawImage<'_> {
            serde_json::from_str(text).unwrap()
        }
        let cap = MIN_MESSAGE_BYTES;
        let mut c = cfg(1, cap);
        c.old_key_sources = ["email".to_string()].into();
        let mut parsed = vec![
            (0, ev(0, "a", 10)),
            (1, ev(1, "b", cap / 2)), // fits only without its old image
            (2, ev(2, "c", cap)),     // fits only as a marker
        ];
        for (_, e) in &mut parsed[1..] {
            if let Some(o) = e.old_image.as_mut() {
                o.insert("email".into(), V::S("old@x".into()));
            }
        }
        // The images as text, which the copied events borrow.
        let texts: Vec<ChangeEvent<String>> = parsed
            .iter()
            .map(|(_, e)| e.clone().map_images(|a| serde_json::to_string(&a).unwrap()))
            .collect();
        let copied: Vec<(usize, ChangeEvent<RawImage<'_>>)> = parsed
            .iter()
            .zip(&texts)
            .map(|((i, _), t)| {
                let text = |x: &String| -> &str {
                    [&t.new_image, &t.old_image]
                        .into_iter()
                        .flatten()
                        .find(|y| *y == x)
                        .unwrap()
                };
                (*i, t.clone().map_images(|x| raw(text(&x))))
            })
            .collect();
        let read = |p: Packed| -> Vec<ChangeEvent> {
            p.groups[0]
                .iter()
                .flat_map(|m| decode(&m.body).unwrap().ev)
                .collect()
        };
        let a = pack("T", &parsed, &c, 1).unwrap();
        let b = pack("T", &copied, &c, 1).unwrap();
        assert_eq!(a.stats, b.stats);
        let (a, b) = (read(a), read(b));
        assert_eq!(a, b);
        assert!(b[0].old_image.is_some() && !b[0].refetch);
        assert!(b[2].refetch && b[2].old_image.as_ref().unwrap().contains_key("email"));
    }

    #[test]
    fn cap_too_small_for_keys_is_an_error_not_a_drop() {
        let err = pack("T", &[(3, ev(3, &"k".repeat(500), 1))], &cfg(1, 200), 1).unwrap_err();
        assert_eq!(err.record, 3);
        assert!(err.to_string().contains("MAX_MESSAGE_BYTES"));
    }

    #[test]
    fn old_images_are_not_forwarded_when_disabled() {
        let mut c = cfg(1, 256 * 1024);
        c.forward_old_image = false;
        let packed = pack("T", &[(0, ev(0, "a", 10))], &c, 1).unwrap();
        let e = &decode(&packed.groups[0][0].body).unwrap().ev[0];
        assert!(e.old_image.is_none() && e.new_image.is_some());
    }
}
