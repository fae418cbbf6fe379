//! The applier Lambda: FIFO SQS batch in, writes to the target table out.

use aws_lambda_events::event::sqs::SqsBatchResponse;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use relay_applier::{Applier, Messages};
use relay_aws::runtime::deadline_from_epoch_ms;
use relay_aws::sdk::{load_config, target_config, CloudWatchMetrics, DynamoTable};
use relay_core::config::ApplierConfig;

// One thread: Lambda runs one invocation at a time, the handler's calls are
// concurrent on it, and one thread keeps one allocator arena (peak RSS,
// BENCHMARKS.md "Cold start and peak memory").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // JSON logs and level from Lambda's logging controls (AWS_LAMBDA_LOG_FORMAT/LEVEL).
    lambda_runtime::tracing::init_default_subscriber();

    // Invariant: bad configuration stops the cold start with the variable's name.
    let config = ApplierConfig::from_env(&|k: &str| std::env::var(k).ok())?;
    let sdk = load_config().await;
    // The target's region and role, when it is elsewhere (else `sdk` as is).
    let target = target_config(&sdk, &config.target, &config.metrics.migration).await;
    let applier = Applier::new(
        config.clone(),
        DynamoTable::new(&target, &config.target_table),
        DynamoTable::new(&sdk, &config.source_table),
        DynamoTable::new(&sdk, &config.control_table),
        CloudWatchMetrics::new(&sdk),
    );
    let applier = &applier;

    // The SQS event is read for ids, groups and bodies only (`Messages`).
    run(service_fn(move |event: LambdaEvent<Messages>| async move {
        let deadline = deadline_from_epoch_ms(event.context.deadline);
        Ok::<SqsBatchResponse, Error>(applier.handle(event.payload, deadline).await)
    }))
    .await
}
