//! The copy worker Lambda: work-queue tasks in (one scan segment, export
//! file, sweep segment or verify segment each), conditional writes to the
//! target out. The task code is the CLI's (`ddb_relay::worker`), so a copy
//! fanned out runs exactly what an in-process copy runs.

use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use ddb_relay::ctx::{Ctx, Output};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use relay_aws::operator::Sdk;
use relay_aws::runtime::{deadline_from_epoch_ms, emit_metrics, Clock};
use relay_aws::sdk::CloudWatchMetrics;
use relay_core::config::MetricsConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();

    // Invariant: bad configuration stops the cold start with the variable's name.
    let env = |k: &str| std::env::var(k).ok();
    let mut stack = ddb_relay::worker::deployment_from_env(&env)?;
    let metrics = MetricsConfig::from_env(&env)?;
    // The operator's SDK settings (standard retries): a worker runs for
    // minutes and rides out throttling like the CLI does.
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let publisher = CloudWatchMetrics::new(&sdk);
    // A target in another region or account gets a client of its own.
    let mut aws = Sdk::new(&sdk);
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    aws.route_target(&sdk, &mut stack, &region).await;
    let ctx = Ctx {
        aws,
        stack,
        clock: Clock::wall(),
        transform_file: None,
        output: Output::Json,
        quiet: true,
        poll: Duration::from_millis(500),
    };
    let (ctx, metrics, publisher) = (&ctx, &metrics, &publisher);

    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = deadline_from_epoch_ms(event.context.deadline);
        let (response, record) =
            ddb_relay::worker::handle_counted(ctx, event.payload, deadline).await;
        emit_metrics(metrics, &record, publisher, deadline).await;
        Ok::<SqsBatchResponse, Error>(response)
    }))
    .await
}
