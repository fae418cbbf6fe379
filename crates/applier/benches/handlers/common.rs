//! What both handler benches (`handlers`: time; `instructions`: counts)
//! run: the handlers on the recorders and on the canned SDK, the naive
//! baselines, and the batch each row reads.

// Each bench uses its own part of what is here.
#![allow(dead_code)]

use std::sync::Arc;

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::sqs::SqsEvent;
use relay_applier::Applier;
use relay_aws::fake::recorders::{NullMetrics, NullTables, RecordingQueue};
use relay_aws::fake::workload::{applier_config, forwarder_config, sqs_json};
use relay_aws::sdk::{CloudWatchMetrics, DynamoTable, SqsQueue};
use relay_aws::{QueueSender, SendEntry, TargetWriter, Write};
use relay_core::envelope::{decode, encode};
use relay_core::event::from_stream_record;
use relay_core::group::dedup_id;
use relay_forwarder::Forwarder;

use crate::canned;

pub fn forwarder(keep: bool) -> Forwarder<RecordingQueue, NullMetrics> {
    Forwarder {
        config: forwarder_config("emf"),
        queue: RecordingQueue::new(keep),
        metrics: NullMetrics,
        clock: relay_aws::runtime::Clock::wall(),
    }
}

pub fn applier() -> Applier<NullTables, NullTables, NullTables, NullMetrics> {
    Applier::new(
        applier_config("emf"),
        NullTables::default(),
        NullTables::default(),
        NullTables::default(),
        NullMetrics,
    )
}

/// The handlers as `main.rs` builds them, on the canned connector.
pub struct Sdk {
    pub calls: Arc<canned::Calls>,
    pub forwarder: Forwarder<SqsQueue, CloudWatchMetrics>,
    pub applier: Applier<DynamoTable, DynamoTable, DynamoTable, CloudWatchMetrics>,
    pub queue: SqsQueue,
    pub target: DynamoTable,
    pub control: DynamoTable,
}

pub fn sdk(rt: &tokio::runtime::Runtime) -> Sdk {
    let calls = Arc::new(canned::Calls::default());
    let sdk = rt.block_on(canned::config(calls.clone()));
    let (f, a) = (forwarder_config("emf"), applier_config("emf"));
    let queue = SqsQueue::new(&sdk, f.queue_url.clone());
    let target = DynamoTable::new(&sdk, &a.target_table);
    Sdk {
        forwarder: Forwarder {
            queue: queue.clone(),
            metrics: CloudWatchMetrics::new(&sdk),
            clock: relay_aws::runtime::Clock::wall(),
            config: f,
        },
        applier: Applier::new(
            a.clone(),
            target.clone(),
            DynamoTable::new(&sdk, &a.source_table),
            DynamoTable::new(&sdk, &a.control_table),
            CloudWatchMetrics::new(&sdk),
        ),
        calls,
        queue,
        target,
        control: DynamoTable::new(&sdk, &a.control_table),
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// An event read as lambda_runtime 1.5 reads it before the handler runs:
/// `serde_path_to_error` over `serde_json::Deserializer::from_slice`, which
/// keeps every map key it passes (a `String` each) to name the path of an
/// error. The `parse` and `parse-ale` rows use `serde_json::from_str`.
pub fn as_runtime<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).expect("parse")
}

pub fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(600)
}

/// The naive forwarder: every event its own message and send call.
pub async fn naive_forward(q: &impl QueueSender, event: Event) -> usize {
    let mut sent = 0;
    for rec in event.records {
        let Ok(e) = from_stream_record(rec) else {
            continue;
        };
        let body = encode("Orders", std::slice::from_ref(&e));
        let entry = SendEntry {
            id: "0".into(),
            group_id: "g".into(),
            dedup_id: dedup_id(1, [e.event_id.as_str()]),
            body,
        };
        sent += q.send_batch(vec![entry]).await.map_or(0, |s| s.len());
    }
    sent
}

/// The naive applier: every event one PutItem or DeleteItem.
pub async fn naive_apply(t: &impl TargetWriter, event: SqsEvent) -> usize {
    let mut n = 0;
    for m in &event.records {
        let Ok(env) = decode(m.body.as_deref().unwrap_or_default()) else {
            continue;
        };
        for e in env.ev {
            let w = match &e.new_image {
                Some(img) => Write::Put(img),
                None => Write::Delete(&e.keys),
            };
            n += usize::from(t.write_one(&w).await.unwrap_or(false));
        }
    }
    n
}

/// One stream batch of `b` records and what each row reads of it: the
/// stream event's text, the messages the forwarder made of it (body,
/// group), those messages as the SQS events of the applier's invocations
/// (10 each, the FIFO maximum), and the naive baseline's messages (one per
/// event) as its SQS events. Checked whole before anything is measured.
pub struct Batch {
    pub stream: String,
    pub kept: Vec<(String, String)>,
    pub packed: Vec<String>,
    pub naive: Vec<String>,
}

pub fn batch(rt: &tokio::runtime::Runtime, b: usize) -> Batch {
    let stream = relay_aws::fake::workload::stream_json(b, 7);
    let f = forwarder(true);
    let r = rt
        .block_on(f.handle_body(stream.as_bytes(), deadline()))
        .expect("a stream batch");
    assert!(r.batch_item_failures.is_empty(), "forwarder failed records");
    assert!(
        f.queue.calls.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "nothing sent"
    );
    let kept = f.queue.kept();
    let packed = kept.chunks(10).map(sqs_json).collect();
    let naive_msgs: Vec<(String, String)> = {
        let ev: Event = serde_json::from_str(&stream).expect("stream event");
        ev.records
            .into_iter()
            .filter_map(|r| from_stream_record(r).ok())
            .map(|e| (encode("Orders", std::slice::from_ref(&e)), "g".to_string()))
            .collect()
    };
    let naive = naive_msgs.chunks(10).map(sqs_json).collect();
    Batch {
        stream,
        kept,
        packed,
        naive,
    }
}
