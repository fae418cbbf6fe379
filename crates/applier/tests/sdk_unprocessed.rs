//! The SDK adapter's `BatchWriteItem`: the writes DynamoDB hands back
//! unprocessed are found among the batch by what they write, so only they
//! are retried; one it cannot place means every write is retried (safe).
//! The real `relay_aws::sdk::DynamoTable` on a connector that answers with
//! a chosen `UnprocessedItems`; nothing goes on the network.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::http::{
    http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use relay_aws::sdk::DynamoTable;
use relay_aws::{TargetWriter, Write};
use relay_core::item::{AttributeValue as V, Attrs};
use serde_json::Value;

/// Answers every call with `answer`.
#[derive(Debug, Clone)]
struct Answer {
    answer: Arc<String>,
}

impl HttpConnector for Answer {
    fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
        let mut response = HttpResponse::new(
            StatusCode::try_from(200).unwrap(),
            SdkBody::from(self.answer.as_str()),
        );
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(response))
    }
}

async fn table(answer: String) -> DynamoTable {
    let connector = Answer {
        answer: Arc::new(answer),
    };
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client_fn(move |_, _| {
            SharedHttpConnector::new(connector.clone())
        }))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .load()
        .await;
    DynamoTable::new(&config, "T")
}

/// An item of every type, told apart by `pk`.
fn item(pk: &str) -> Attrs {
    let mut m = Attrs::new();
    m.insert("n".into(), V::N("-1.50".into()));
    [
        ("pk", V::S(pk.into())),
        ("n", V::N("12345678901234567890.5".into())),
        ("b", V::B(vec![0, 255, 7])),
        ("t", V::Bool(true)),
        ("z", V::Null(true)),
        ("m", V::M(m)),
        ("l", V::L(vec![V::S(String::new()), V::N("0".into())])),
        ("ss", V::Ss(vec!["a".into(), "b".into()])),
        ("ns", V::Ns(vec!["1".into(), "2.5".into()])),
        ("bs", V::Bs(vec![vec![1], vec![2, 3]])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn key(pk: &str) -> Attrs {
    Attrs::from([("pk".to_string(), V::S(pk.into()))])
}

/// A put handed back unprocessed.
fn put_back(item: &Attrs) -> Value {
    serde_json::json!({ "PutRequest": { "Item": serde_json::to_value(item).unwrap() } })
}

/// A delete handed back unprocessed.
fn delete_back(key: &Attrs) -> Value {
    serde_json::json!({ "DeleteRequest": { "Key": serde_json::to_value(key).unwrap() } })
}

/// The positions `batch_write` says to retry when DynamoDB hands `back`
/// back unprocessed (sorted).
async fn left(writes: &[Write<'_>], back: Vec<Value>) -> Vec<usize> {
    let answer = serde_json::json!({ "UnprocessedItems": { "T": back } }).to_string();
    let mut left = table(answer).await.batch_write(writes).await.unwrap();
    left.sort_unstable();
    left
}

#[tokio::test]
async fn only_the_writes_handed_back_are_retried() {
    let (a, b, d, e) = (item("a"), item("b"), key("d"), item("e"));
    let writes = [
        Write::Put(&a),
        Write::Put(&b),
        Write::Delete(&d),
        Write::Put(&e),
    ];
    assert_eq!(
        left(&writes, vec![delete_back(&d), put_back(&b)]).await,
        vec![1, 2]
    );
    // Nothing handed back for this table.
    let none = serde_json::json!({ "UnprocessedItems": {} }).to_string();
    let retried = table(none).await.batch_write(&writes).await.unwrap();
    assert!(retried.is_empty());
}

#[tokio::test]
async fn a_put_and_a_delete_of_one_key_are_told_apart() {
    // The same attributes sent as a put and handed back as a delete (and
    // the other way round): not the write that was sent.
    let (k, other) = (key("k"), item("other"));
    let put = [Write::Put(&k), Write::Put(&other)];
    assert_eq!(left(&put, vec![delete_back(&k)]).await, vec![0, 1]);
    let delete = [Write::Delete(&k), Write::Put(&other)];
    assert_eq!(left(&delete, vec![put_back(&k)]).await, vec![0, 1]);
    // The right kind is found.
    assert_eq!(left(&delete, vec![delete_back(&k)]).await, vec![0]);
}

#[tokio::test]
async fn numbers_spelled_differently_are_the_same_write() {
    let sent = Attrs::from([
        ("pk".to_string(), V::S("a".into())),
        ("n".to_string(), V::N("1.50".into())),
        ("ns".to_string(), V::Ns(vec!["1".into(), "2".into()])),
    ]);
    let back = Attrs::from([
        ("pk".to_string(), V::S("a".into())),
        ("n".to_string(), V::N("15E-1".into())),
        ("ns".to_string(), V::Ns(vec!["2".into(), "1.0".into()])),
    ]);
    let other = item("b");
    let writes = [Write::Put(&other), Write::Put(&sent)];
    assert_eq!(left(&writes, vec![put_back(&back)]).await, vec![1]);
}

#[tokio::test]
async fn a_write_handed_back_that_matches_none_retries_them_all() {
    let (a, b) = (item("a"), item("b"));
    let writes = [Write::Put(&a), Write::Put(&b)];
    // A put of an item the batch did not send, and a delete of a key sent
    // as a put: neither can be placed.
    for back in [put_back(&item("x")), delete_back(&key("a"))] {
        assert_eq!(left(&writes, vec![back]).await, vec![0, 1]);
    }
}
