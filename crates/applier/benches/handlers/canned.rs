//! The real SDK clients (`relay_aws::sdk`) on a canned-response HTTP
//! connector: every request is built, serialised and signed (SigV4) as in
//! Lambda, every response parsed, but nothing goes on the network.
//!
//! The connector answers by `X-Amz-Target` with
//! `relay_aws::fake::workload::canned_answer` (SendMessageBatch echoes the
//! entry ids it finds in the request body, a substring scan that is counted
//! in the rows). Any other call panics: the bench knows every call the
//! handlers make.

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::http::{
    http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use relay_aws::fake::workload::canned_answer;

/// Calls answered, by operation (the sanity checks read them).
#[derive(Debug, Default)]
pub struct Calls {
    pub send_batch: AtomicU64,
    pub get_item: AtomicU64,
    pub batch_write: AtomicU64,
    pub update_item: AtomicU64,
    pub put_or_delete: AtomicU64,
}

#[derive(Debug, Clone)]
struct Canned(Arc<Calls>);

impl HttpConnector for Canned {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let calls = &self.0;
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let body =
            std::str::from_utf8(request.body().bytes().unwrap_or_default()).expect("UTF-8 request");
        let counter = match target {
            "AmazonSQS.SendMessageBatch" => &calls.send_batch,
            "DynamoDB_20120810.GetItem" => &calls.get_item,
            "DynamoDB_20120810.BatchWriteItem" => &calls.batch_write,
            "DynamoDB_20120810.UpdateItem" => &calls.update_item,
            _ => &calls.put_or_delete,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let body = canned_answer(target, body)
            .unwrap_or_else(|| panic!("the bench has no canned answer for {target:?}"));
        let mut response =
            HttpResponse::new(StatusCode::try_from(200).expect("200"), SdkBody::from(body));
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(response))
    }
}

/// The Lambda functions' SDK configuration (`lambda_sdk_settings`) with
/// static credentials, a region, and the canned connector.
pub async fn config(calls: Arc<Calls>) -> aws_config::SdkConfig {
    let (retry, timeout) = relay_aws::sdk::lambda_sdk_settings();
    let connector = Canned(calls);
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client_fn(move |_, _| {
            SharedHttpConnector::new(connector.clone())
        }))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDBENCH", "secret", None, None, "bench"))
        .retry_config(retry)
        .timeout_config(timeout)
        .load()
        .await
}
