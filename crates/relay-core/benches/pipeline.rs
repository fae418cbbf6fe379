//! Per-event CPU of the forwarder's encode+pack and the applier's
//! decode+coalesce+plan, against a naive one-message-per-event /
//! one-PutItem-per-event baseline measured in the same run.
//!
//! `cargo bench -p relay-core --bench pipeline`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay_core::apply::{plan, TtlPolicy};
use relay_core::envelope::{decode, encode};
use relay_core::group::dedup_id;
use relay_core::pack::{pack, PackConfig};

mod common;

const BATCH: usize = 1000;

fn forwarder(c: &mut Criterion) {
    let evs = common::events(BATCH, 200, 1024, 7);
    let indexed: Vec<_> = evs.iter().cloned().enumerate().collect();
    let cfg = PackConfig {
        buckets: 32,
        max_message_bytes: 256 * 1024,
        forward_old_image: true,
        old_key_sources: Default::default(),
        envelope_version: relay_core::envelope::VERSION,
    };
    let mut g = c.benchmark_group("forwarder_encode_pack_1KB");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(BenchmarkId::new("packed", "G=32"), |b| {
        b.iter(|| black_box(pack("Orders", &indexed, &cfg, 1)))
    });
    g.bench_function(BenchmarkId::new("naive", "1 msg/event"), |b| {
        b.iter(|| {
            let msgs: Vec<(String, String)> = evs
                .iter()
                .map(|e| {
                    let body = encode("Orders", std::slice::from_ref(e));
                    (body, dedup_id(1, [e.event_id.as_str()]))
                })
                .collect();
            black_box(msgs)
        })
    });
    g.finish();
}

fn applier(c: &mut Criterion) {
    let evs = common::events(BATCH, 200, 1024, 7);
    let indexed: Vec<_> = evs.iter().cloned().enumerate().collect();
    let cfg = PackConfig {
        buckets: 1,
        max_message_bytes: 256 * 1024,
        forward_old_image: true,
        old_key_sources: Default::default(),
        envelope_version: relay_core::envelope::VERSION,
    };
    let packed: Vec<String> = pack("Orders", &indexed, &cfg, 1)
        .expect("pack")
        .groups
        .into_iter()
        .flatten()
        .map(|m| m.body)
        .collect();
    let naive: Vec<String> = evs
        .iter()
        .map(|e| encode("Orders", std::slice::from_ref(e)))
        .collect();
    let mut g = c.benchmark_group("applier_decode_coalesce_plan_1KB");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(BenchmarkId::new("packed", "coalesced"), |b| {
        b.iter(|| {
            let decoded: Vec<_> = packed
                .iter()
                .enumerate()
                .map(|(i, body)| (i, decode(body).expect("decode").ev))
                .collect();
            let (writes, _) = plan(&decoded, 0, TtlPolicy::Replicate, common::T0_MS);
            black_box(writes.chunks(25).count())
        })
    });
    g.bench_function(BenchmarkId::new("naive", "1 PutItem/event"), |b| {
        b.iter(|| {
            let puts: Vec<_> = naive
                .iter()
                .flat_map(|body| decode(body).expect("decode").ev)
                .map(|e| e.new_image.unwrap_or(e.keys))
                .collect();
            black_box(puts)
        })
    });
    g.finish();
}

criterion_group!(benches, forwarder, applier);
criterion_main!(benches);
