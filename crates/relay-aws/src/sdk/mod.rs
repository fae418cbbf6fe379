//! The trait implementations on the AWS SDK.
//!
//! Every client is built from one `SdkConfig`, so `AWS_ENDPOINT_URL` (or an
//! explicit endpoint) points all of them at an emulator or at AWS alike.

use std::collections::HashMap;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use relay_core::metrics::{MetricRecord, Unit};

use crate::{AwsError, EntryStatus, MetricsPublisher, QueueSender, SendEntry};

mod dynamo;
pub use dynamo::{fence_from, DynamoTable};

/// The SDK settings of the Lambda functions: the handlers own their retries
/// (with backoff, within the invocation's deadline), so the SDK makes one
/// attempt per call; every attempt has a timeout, and the handlers bound
/// each call by the time left (`runtime::bounded`).
pub fn lambda_sdk_settings() -> (
    aws_config::retry::RetryConfig,
    aws_config::timeout::TimeoutConfig,
) {
    (
        aws_config::retry::RetryConfig::standard().with_max_attempts(1),
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(3))
            .operation_attempt_timeout(std::time::Duration::from_secs(20))
            .build(),
    )
}

/// Loads the shared SDK configuration (region, credentials, endpoint) from
/// the environment, as the AWS CLI does, with [`lambda_sdk_settings`].
pub async fn load_config() -> aws_config::SdkConfig {
    let (retry, timeout) = lambda_sdk_settings();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeout)
        .load()
        .await
}

/// The configuration of a client for a target elsewhere: `base` with the
/// target's region, and credentials of the target role (assumed with STS
/// on first use and refreshed before they expire) when there is one. STS is
/// called on `base`'s endpoint and region.
pub async fn target_config(
    base: &aws_config::SdkConfig,
    place: &relay_core::place::TargetPlace,
    session: &str,
) -> aws_config::SdkConfig {
    let mut b = base.to_builder();
    if let Some(r) = &place.region {
        b.set_region(Some(aws_config::Region::new(r.clone())));
    }
    if let Some(role) = &place.role_arn {
        // Session names: 2-64 of [\w+=,.@-].
        let session: String = format!("ddb-relay-{session}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        let mut p = aws_config::sts::AssumeRoleProvider::builder(role.clone())
            .session_name(session)
            .configure(base);
        if let Some(x) = &place.external_id {
            p = p.external_id(x.clone());
        }
        b.set_credentials_provider(Some(
            aws_credential_types::provider::SharedCredentialsProvider::new(p.build().await),
        ));
    }
    b.build()
}

/// Service error codes that mean "try again later": the SDK's own lists
/// (throttling and transient codes, `aws_runtime::retries::classifiers`),
/// plus server faults some services name without a 5xx status.
pub fn is_retryable_code(code: &str) -> bool {
    use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
    THROTTLING_ERRORS.contains(&code)
        || TRANSIENT_ERRORS.contains(&code)
        || matches!(
            code,
            "InternalServerError"
                | "InternalFailure"
                | "InternalError"
                | "ServiceUnavailable"
                | "KMS.ThrottlingException"
        )
}

/// Classifies an SDK error. Transport failures and timeouts are retryable;
/// service errors are retryable when their code or HTTP status says so.
pub fn classify<E, R>(operation: &'static str, err: &SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: HasStatus + std::fmt::Debug,
{
    let chain = aws_smithy_types::error::display::DisplayErrorContext(err).to_string();
    classify_kind(operation, err, &chain).with_chain(chain)
}

fn classify_kind<E, R>(operation: &'static str, err: &SdkError<E, R>, chain: &str) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error,
    R: HasStatus,
{
    match err {
        // No credentials anywhere: the request is never sent. Say so, not
        // "cannot reach AWS".
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
            if chain.contains("credentials") || chain.contains("Credentials") =>
        {
            // Loading them includes assuming a target role with STS: a
            // throttled STS is worth another try. (Not "timeout" or
            // "connection": the chain of a machine with no credentials at
            // all names the instance metadata service timing out.)
            let transient = chain.contains("Throttling");
            if transient {
                AwsError::retryable(
                    operation,
                    "CredentialsUnavailable",
                    "credentials could not be loaded for now (STS or the credential source did not answer)",
                )
            } else {
                AwsError::permanent(
                    operation,
                    "NoCredentials",
                    "no AWS credentials were found, or the target role (TargetRoleArn) could not be assumed",
                )
            }
        }
        SdkError::ConstructionFailure(_) => AwsError::permanent(
            operation,
            "ConstructionFailure",
            "request could not be built",
        ),
        SdkError::TimeoutError(_) => AwsError::retryable(operation, "Timeout", "request timed out"),
        SdkError::DispatchFailure(e) => {
            let what = if e.is_io() {
                "connection failed"
            } else if e.is_timeout() {
                "connection timed out"
            } else {
                "request could not be sent"
            };
            AwsError::retryable(operation, "DispatchFailure", what)
        }
        SdkError::ResponseError(e) => {
            let status = e.raw().status_code();
            let kind_ok = status >= 500 || status == 429;
            let msg = format!("unreadable response (HTTP {status})");
            if kind_ok || status == 200 {
                AwsError::retryable(operation, "ResponseError", &msg)
            } else {
                AwsError::permanent(operation, "ResponseError", &msg)
            }
        }
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or("Unknown");
            // A response the SDK could not read has no code or message:
            // describe the error itself (never the raw body).
            let described;
            let message = match e.err().message() {
                Some(m) => m,
                None => {
                    described =
                        aws_smithy_types::error::display::DisplayErrorContext(e.err()).to_string();
                    described.as_str()
                }
            };
            let status = e.raw().status_code();
            if is_retryable_code(code) || status >= 500 || status == 429 {
                AwsError::retryable(operation, code, message)
            } else {
                AwsError::permanent(operation, code, message)
            }
        }
        _ => AwsError::retryable(operation, "Unknown", "unclassified SDK error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fence;
    use relay_core::control::ControlState;

    #[test]
    fn the_sdk_own_throttling_and_transient_codes_are_retryable() {
        for code in [
            "ThrottledException",
            "LimitExceededException",
            "RequestTimeout",
            "RequestTimeoutException",
            "ProvisionedThroughputExceededException",
            "TooManyRequestsException",
            "SlowDown",
            "InternalServerError",
        ] {
            assert!(is_retryable_code(code), "{code}");
        }
        for code in [
            "ValidationException",
            "AccessDeniedException",
            "ConditionalCheckFailedException",
            "ResourceNotFoundException",
        ] {
            assert!(!is_retryable_code(code), "{code}");
        }
    }

    #[test]
    fn lambda_clients_make_one_attempt_with_timeouts() {
        let (retry, timeout) = lambda_sdk_settings();
        assert_eq!(retry.max_attempts(), 1);
        assert!(timeout.connect_timeout().is_some());
        assert!(timeout.operation_attempt_timeout().is_some());
    }

    #[test]
    fn the_fence_holds_only_at_the_planned_version() {
        let at = |version, consumed| ControlState {
            version,
            consumed_ms: consumed,
            ..ControlState::default()
        };
        assert_eq!(fence_from(Some(at(3, Some(10))), 3, Some(10)), Fence::Held);
        assert_eq!(fence_from(Some(at(3, Some(12))), 3, Some(10)), Fence::Held);
        assert_eq!(fence_from(Some(at(3, None)), 3, None), Fence::Held);
        assert!(matches!(
            fence_from(Some(at(4, Some(12))), 3, Some(10)),
            Fence::Moved(_)
        ));
        assert!(matches!(
            fence_from(Some(at(3, Some(9))), 3, Some(10)),
            Fence::Moved(_)
        ));
        assert!(matches!(fence_from(None, 3, None), Fence::Moved(None)));
    }
}

/// The HTTP status of a raw response, for [`classify`].
pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_dynamodb::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The FIFO queue.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(config: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        SqsQueue {
            client: aws_sdk_sqs::Client::new(config),
            queue_url: queue_url.into(),
        }
    }
}

impl QueueSender for SqsQueue {
    async fn send_batch(
        &self,
        entries: Vec<SendEntry>,
    ) -> Result<HashMap<String, EntryStatus>, AwsError> {
        const OP: &str = "SendMessageBatch";
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let mut request = Vec::with_capacity(entries.len());
        for e in entries {
            let entry = SendMessageBatchRequestEntry::builder()
                .id(e.id)
                .message_body(e.body)
                .message_group_id(e.group_id)
                .message_deduplication_id(e.dedup_id)
                .build()
                .map_err(|_| AwsError::permanent(OP, "ConstructionFailure", "invalid entry"))?;
            request.push(entry);
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(request))
            .send()
            .await
            .map_err(|e| classify(OP, &e))?;
        let mut status: HashMap<String, EntryStatus> = HashMap::new();
        for ok in out.successful() {
            status.insert(ok.id().to_string(), EntryStatus::Accepted);
        }
        for bad in out.failed() {
            status.insert(
                bad.id().to_string(),
                EntryStatus::Failed {
                    retryable: !bad.sender_fault(),
                    code: bad.code().to_string(),
                },
            );
        }
        for id in ids {
            status.entry(id).or_insert(EntryStatus::Failed {
                retryable: true,
                code: "NoResultForEntry".into(),
            });
        }
        Ok(status)
    }
}

/// CloudWatch `PutMetricData`.
#[derive(Clone, Debug)]
pub struct CloudWatchMetrics {
    client: aws_sdk_cloudwatch::Client,
}

impl CloudWatchMetrics {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        CloudWatchMetrics {
            client: aws_sdk_cloudwatch::Client::new(config),
        }
    }
}

impl MetricsPublisher for CloudWatchMetrics {
    async fn publish(
        &self,
        namespace: &str,
        migration: &str,
        record: &MetricRecord,
    ) -> Result<(), AwsError> {
        let dims = [
            Dimension::builder()
                .name("Migration")
                .value(migration)
                .build(),
            Dimension::builder()
                .name("Function")
                .value(record.function)
                .build(),
        ];
        let data: Vec<MetricDatum> = record
            .values
            .iter()
            .map(|(name, value, unit)| {
                MetricDatum::builder()
                    .metric_name(*name)
                    .value(*value)
                    .unit(match unit {
                        Unit::Count => StandardUnit::Count,
                        Unit::Bytes => StandardUnit::Bytes,
                        Unit::Milliseconds => StandardUnit::Milliseconds,
                    })
                    .set_dimensions(Some(dims.to_vec()))
                    .build()
            })
            .collect();
        // PutMetricData takes up to 1000 data per call; a record has ~20.
        self.client
            .put_metric_data()
            .namespace(namespace)
            .set_metric_data(Some(data))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("PutMetricData", &e))
    }
}
