//! The real SDK clients (`relay_aws::sdk`) on a canned-response HTTP
//! connector: every request is built, serialised and signed (SigV4) as in
//! Lambda, every response parsed, but nothing goes on the network.
//!
//! The connector answers by `X-Amz-Target`: SendMessageBatch accepts every
//! entry (it echoes the entry ids it finds in the request body, a substring
//! scan that is counted in the rows), GetItem returns the control item,
//! BatchWriteItem leaves nothing unprocessed, UpdateItem, PutItem and
//! DeleteItem succeed. Anything
//! else panics: the bench must know every call the handlers make.

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

/// The control item of migration `bench`: version 1, cutoff 0 (nothing is
/// skipped), not paused.
const CONTROL: &str =
    r#"{"Item":{"migration":{"S":"bench"},"cutoff_ms":{"N":"0"},"version":{"N":"1"}}}"#;

/// Calls answered, by operation (the sanity checks read them).
#[derive(Debug, Default)]
pub struct Calls {
    pub send_batch: AtomicU64,
    pub entries: AtomicU64,
    pub get_item: AtomicU64,
    pub batch_write: AtomicU64,
    pub update_item: AtomicU64,
    pub put_or_delete: AtomicU64,
}

#[derive(Debug, Clone)]
struct Canned(Arc<Calls>);

/// `{"Successful":[{"Id":..},..],"Failed":[]}` for every `"Id":"..."` in
/// the request (message bodies are JSON strings inside it, so their own
/// quotes are escaped and never match).
fn send_batch_ok(body: &str, calls: &Calls) -> String {
    let mut out = String::from(r#"{"Successful":["#);
    let mut n = 0u64;
    for (at, _) in body.match_indices(r#""Id":""#) {
        let rest = &body[at + 6..];
        let id = &rest[..rest.find('"').unwrap_or(0)];
        if n > 0 {
            out.push(',');
        }
        out.push_str(r#"{"Id":""#);
        out.push_str(id);
        out.push_str(r#"","MessageId":"00000000-0000-0000-0000-000000000000","MD5OfMessageBody":"d41d8cd98f00b204e9800998ecf8427e","SequenceNumber":"1"}"#);
        n += 1;
    }
    out.push_str(r#"],"Failed":[]}"#);
    calls.entries.fetch_add(n, Ordering::Relaxed);
    out
}

impl HttpConnector for Canned {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let calls = &self.0;
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let body = match target {
            "AmazonSQS.SendMessageBatch" => {
                calls.send_batch.fetch_add(1, Ordering::Relaxed);
                let b = request.body().bytes().unwrap_or_default();
                send_batch_ok(std::str::from_utf8(b).expect("UTF-8 request"), calls)
            }
            "DynamoDB_20120810.GetItem" => {
                calls.get_item.fetch_add(1, Ordering::Relaxed);
                CONTROL.to_string()
            }
            "DynamoDB_20120810.BatchWriteItem" => {
                calls.batch_write.fetch_add(1, Ordering::Relaxed);
                r#"{"UnprocessedItems":{}}"#.to_string()
            }
            "DynamoDB_20120810.UpdateItem" => {
                calls.update_item.fetch_add(1, Ordering::Relaxed);
                "{}".to_string()
            }
            "DynamoDB_20120810.PutItem" | "DynamoDB_20120810.DeleteItem" => {
                calls.put_or_delete.fetch_add(1, Ordering::Relaxed);
                "{}".to_string()
            }
            other => panic!("the bench has no canned answer for {other:?}"),
        };
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
