//! Workloads shared by the benchmarks.
#![allow(dead_code)]

use relay_core::event::{ChangeEvent, Op};
use relay_core::item::{AttributeValue as V, Attrs};

/// Start of the synthetic stream, in epoch ms.
pub const T0_MS: i64 = 1_793_750_400_000;

/// `n` changes over `keys` items, ~`item_bytes` each, in stream order.
/// Keys are drawn from a fixed-seed generator, so every run sees the same stream.
pub fn events(n: usize, keys: u64, item_bytes: usize, seed: u64) -> Vec<ChangeEvent> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|i| {
            let k = rng.u64(0..keys);
            let key: Attrs = [
                ("pk".to_string(), V::S(format!("customer#{k:08}"))),
                ("sk".to_string(), V::N((k % 97).to_string())),
            ]
            .into();
            let mut image = key.clone();
            image.insert("version".into(), V::N(i.to_string()));
            image.insert("status".into(), V::S("active".into()));
            image.insert("tags".into(), V::Ss(vec!["a".into(), "b".into()]));
            // Pad so that the event (keys + image) is about item_bytes of JSON.
            image.insert(
                "payload".into(),
                V::S("x".repeat(item_bytes.saturating_sub(220))),
            );
            ChangeEvent {
                event_id: format!("{i:032x}"),
                seq: format!("{:021}", 1_000_000 + i),
                time_ms: T0_MS + (i as i64),
                op: if i % 10 == 9 { Op::Remove } else { Op::Modify },
                ttl: false,
                refetch: false,
                keys: key,
                new_image: (i % 10 != 9).then_some(image),
                old_image: None,
            }
        })
        .collect()
}
