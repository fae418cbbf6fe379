//! The forwarder Lambda: DynamoDB stream in, FIFO SQS messages out.

use lambda_runtime::{layers::TracingLayer, service_fn, Error, LambdaEvent, Runtime};
use relay_aws::runtime::Clock;
use relay_aws::sdk::{load_config, CloudWatchMetrics, SqsQueue};
use relay_core::config::ForwarderConfig;
use relay_forwarder::{Forwarder, RawBody};

// One thread: Lambda runs one invocation at a time, the handler's calls are
// concurrent on it, and one thread keeps one allocator arena (peak RSS,
// BENCHMARKS.md "Cold start and peak memory").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // JSON logs and level from Lambda's logging controls (AWS_LAMBDA_LOG_FORMAT/LEVEL).
    lambda_runtime::tracing::init_default_subscriber();

    // Invariant: bad configuration stops the cold start with the variable's name.
    let config = ForwarderConfig::from_env(&|k: &str| std::env::var(k).ok())?;
    let sdk = load_config().await;
    let forwarder = Forwarder {
        queue: SqsQueue::new(&sdk, config.queue_url.clone()),
        metrics: CloudWatchMetrics::new(&sdk),
        clock: Clock::wall(),
        config,
    };
    let (forwarder, raw) = (&forwarder, &RawBody::default());

    // The batch is read in place from the invocation's body (`RawBody`).
    let handler = service_fn(move |event: LambdaEvent<()>| forwarder.invoke(raw, event));
    let layer = raw.clone();
    Runtime::new(handler)
        .layer(TracingLayer::new())
        .layer(layer)
        .run()
        .await
}
