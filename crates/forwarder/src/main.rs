//! The forwarder Lambda: DynamoDB stream in, FIFO SQS messages out.

use aws_lambda_events::event::streams::DynamoDbEventResponse;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use relay_aws::runtime::{deadline_from_epoch_ms, Clock};
use relay_aws::sdk::{load_config, CloudWatchMetrics, SqsQueue};
use relay_core::config::ForwarderConfig;
use relay_core::stream::StreamEvent;
use relay_forwarder::Forwarder;

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
    let forwarder = &forwarder;

    run(service_fn(
        move |event: LambdaEvent<StreamEvent>| async move {
            let deadline = deadline_from_epoch_ms(event.context.deadline);
            Ok::<DynamoDbEventResponse, Error>(forwarder.handle(event.payload, deadline).await)
        },
    ))
    .await
}
