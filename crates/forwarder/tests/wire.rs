//! What the forwarder puts on the wire: version 2 bodies, whose quotes are
//! exchanged so that neither the SDK's request nor the applier's SQS event
//! has to escape them (`relay_core::envelope`).

use std::sync::atomic::Ordering;

use relay_aws::fake::recorders::{NullMetrics, RecordingQueue};
use relay_aws::fake::workload::{forwarder_config, stream_json};
use relay_core::envelope::decode;
use relay_core::stream::StreamEvent;
use relay_forwarder::Forwarder;

#[tokio::test]
async fn bodies_are_version_2_with_no_character_json_must_escape() {
    let f = Forwarder {
        config: forwarder_config("emf"),
        queue: RecordingQueue::new(true),
        metrics: NullMetrics,
        clock: relay_aws::runtime::Clock::wall(),
    };
    // 300 changes of items of every type, no apostrophe, backslash or
    // control character in their data.
    let stream = stream_json(300, 3);
    let event: StreamEvent<'_> = serde_json::from_str(&stream).unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let out = f.handle(event, deadline).await;
    assert!(out.batch_item_failures.is_empty());
    let kept = f.queue.kept();
    assert!(f.queue.calls.load(Ordering::Relaxed) > 0 && !kept.is_empty());
    let mut events = 0;
    for (body, _group) in &kept {
        assert!(body.starts_with("{'v':2,'src':"), "{}", &body[..20]);
        // What a JSON string escapes: `"`, `\` and control characters.
        assert!(
            !body.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20),
            "a body holds a character JSON escapes"
        );
        let env = decode(body.as_str()).unwrap();
        assert_eq!(env.v, 2);
        events += env.ev.len();
    }
    assert_eq!(events, 300);
}
