//! What the SDK adapters put on the wire where the in-memory fakes cannot
//! tell: every read of the control item and of the source is consistent,
//! and the applier's commit and the operator's control write are
//! conditional on the version. The fakes are always consistent and check
//! versions in Rust, so without these only an emulator run would notice a
//! dropped `ConsistentRead` or `#v = :v`. The real adapters run on a
//! connector that records each request and answers from a script; nothing
//! goes on the network.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::http::{
    http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use relay_aws::operator::{ControlWrite, Sdk, Tables};
use relay_aws::sdk::DynamoTable;
use relay_aws::{ControlStore, Fence, SourceReader};
use relay_core::control::{ControlState, ATTR_CONSUMED_MS, ATTR_VERSION};
use relay_core::item::{AttributeValue as V, Attrs};
use serde_json::{json, Value};

/// The `Date` every scripted answer carries: AWS's clock.
const AWS_DATE: &str = "Sun, 01 Nov 2026 00:00:01 GMT";
const AWS_DATE_MS: i64 = 1_793_491_201_000;

/// Records every request as (operation, JSON body) and answers each with
/// the next scripted (status, body).
#[derive(Debug, Clone, Default)]
struct Script {
    sent: Arc<Mutex<Vec<(String, Value)>>>,
    answers: Arc<Mutex<VecDeque<(u16, String)>>>,
}

impl HttpConnector for Script {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let op = request
            .headers()
            .get("x-amz-target")
            .unwrap_or_default()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_string();
        let body = serde_json::from_slice(request.body().bytes().unwrap()).unwrap();
        self.sent.lock().unwrap().push((op, body));
        let (status, answer) = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .expect("a scripted answer for every request");
        let mut response =
            HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(answer));
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        response.headers_mut().insert("date", AWS_DATE);
        HttpConnectorFuture::ready(Ok(response))
    }
}

impl Script {
    fn answer(&self, status: u16, body: Value) -> &Self {
        self.answers
            .lock()
            .unwrap()
            .push_back((status, body.to_string()));
        self
    }

    fn sent(&self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.sent.lock().unwrap())
    }

    async fn config(&self) -> aws_config::SdkConfig {
        let connector = self.clone();
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client_fn(move |_, _| {
                SharedHttpConnector::new(connector.clone())
            }))
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            // One attempt: a scripted throttle is an answer, not a retry.
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await
    }
}

fn conditional_check_failed() -> Value {
    json!({
        "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
        "message": "The conditional request failed"
    })
}

fn control(version: u64, consumed_ms: Option<i64>) -> ControlState {
    ControlState {
        migration: "m".into(),
        cutoff_ms: Some(1_000),
        version,
        consumed_ms,
        ..ControlState::default()
    }
}

fn item_json(item: &Attrs) -> Value {
    json!({ "Item": serde_json::to_value(item).unwrap() })
}

#[tokio::test]
async fn the_applier_reads_the_source_and_the_control_item_consistently() {
    let script = Script::default();
    let table = DynamoTable::new(&script.config().await, "T");
    let key = Attrs::from([("pk".to_string(), V::S("a".into()))]);
    script.answer(200, item_json(&key));
    assert_eq!(table.get_consistent(&key).await.unwrap(), Some(key));
    script.answer(200, item_json(&control(3, None).to_item()));
    assert_eq!(table.load("m").await.unwrap(), Some(control(3, None)));
    let sent = script.sent();
    assert_eq!(sent.len(), 2);
    for (op, body) in sent {
        assert_eq!(op, "GetItem");
        assert_eq!(body["ConsistentRead"], json!(true), "{body}");
        assert_eq!(body["TableName"], json!("T"));
    }
}

#[tokio::test]
async fn the_applier_commits_only_at_the_version_it_planned_with() {
    let script = Script::default();
    let table = DynamoTable::new(&script.config().await, "T");
    script.answer(200, json!({}));
    assert_eq!(
        table.commit("m", 7, Some(5_000)).await.unwrap(),
        Fence::Held
    );
    let sent = script.sent();
    let (op, body) = &sent[0];
    assert_eq!(op, "UpdateItem");
    assert_eq!(body["Key"], json!({ "migration": { "S": "m" } }));
    assert_eq!(body["UpdateExpression"], json!("SET #c = :t"));
    // The version guard and the monotonic raise, on the right attributes.
    assert_eq!(
        body["ConditionExpression"],
        json!("#v = :v AND (attribute_not_exists(#c) OR #c < :t)")
    );
    assert_eq!(
        body["ExpressionAttributeNames"],
        json!({ "#v": ATTR_VERSION, "#c": ATTR_CONSUMED_MS })
    );
    assert_eq!(
        body["ExpressionAttributeValues"],
        json!({ ":v": { "N": "7" }, ":t": { "N": "5000" } })
    );

    // A failed condition is told apart by a consistent read: an operator
    // moved the item (fenced) ...
    script.answer(400, conditional_check_failed());
    script.answer(200, item_json(&control(8, Some(4_000)).to_item()));
    assert_eq!(
        table.commit("m", 7, Some(5_000)).await.unwrap(),
        Fence::Moved(Some(Box::new(control(8, Some(4_000)))))
    );
    // ... or another batch already raised it past ours (held).
    script.answer(400, conditional_check_failed());
    script.answer(200, item_json(&control(7, Some(6_000)).to_item()));
    assert_eq!(
        table.commit("m", 7, Some(5_000)).await.unwrap(),
        Fence::Held
    );
    let sent = script.sent();
    let ops: Vec<&str> = sent.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops, ["UpdateItem", "GetItem", "UpdateItem", "GetItem"]);
    for (_, read) in sent.iter().filter(|(op, _)| op == "GetItem") {
        assert_eq!(read["ConsistentRead"], json!(true), "{read}");
    }
    // Nothing to raise: the consistent read alone is the fence.
    script.answer(200, item_json(&control(7, None).to_item()));
    assert_eq!(table.commit("m", 7, None).await.unwrap(), Fence::Held);
    let sent = script.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "GetItem");
    assert_eq!(sent[0].1["ConsistentRead"], json!(true));
}

#[tokio::test]
async fn the_operator_reads_consistently_and_writes_the_control_item_at_its_version() {
    let script = Script::default();
    let sdk = Sdk::new(&script.config().await);
    script.answer(200, item_json(&control(4, Some(9)).to_item()));
    assert_eq!(
        sdk.control("C", "m").await.unwrap(),
        Some(control(4, Some(9)))
    );
    let sent = script.sent();
    assert_eq!(sent[0].0, "GetItem");
    assert_eq!(sent[0].1["ConsistentRead"], json!(true));
    // A scan reads the way its caller asks (the in-process verify asks for
    // consistent reads).
    for consistent in [true, false] {
        script.answer(200, json!({ "Items": [] }));
        sdk.scan_page("C", 1, 4, None, consistent).await.unwrap();
        let sent = script.sent();
        assert_eq!(sent[0].0, "Scan");
        assert_eq!(sent[0].1["ConsistentRead"], json!(consistent));
        assert_eq!(
            (&sent[0].1["Segment"], &sent[0].1["TotalSegments"]),
            (&json!(1), &json!(4))
        );
    }

    // A change at version 4 is written only while the item is at 4, and
    // leaves the applier's consumed_ms alone.
    let next = ControlState {
        paused_at_ms: Some(77),
        ..control(4, Some(9))
    };
    script.answer(
        200,
        json!({ "Attributes": serde_json::to_value(control(5, Some(9)).to_item()).unwrap() }),
    );
    assert!(matches!(
        sdk.write_control("C", &next, 4).await.unwrap(),
        ControlWrite::Written(_)
    ));
    script.answer(400, conditional_check_failed());
    assert!(matches!(
        sdk.write_control("C", &next, 4).await.unwrap(),
        ControlWrite::Conflict
    ));
    let sent = script.sent();
    for (op, body) in &sent {
        assert_eq!(op, "UpdateItem");
        assert_eq!(body["ConditionExpression"], json!("#ver = :expected"));
        assert_eq!(
            body["ExpressionAttributeNames"]["#ver"],
            json!(ATTR_VERSION)
        );
        assert_eq!(
            body["ExpressionAttributeValues"][":expected"],
            json!({ "N": "4" })
        );
        assert_eq!(
            body["ExpressionAttributeValues"][":ver"],
            json!({ "N": "5" })
        );
        let names = body["ExpressionAttributeNames"].as_object().unwrap();
        assert!(
            names.values().all(|n| n != ATTR_CONSUMED_MS),
            "an operator write names consumed_ms: {body}"
        );
    }
    // The first write creates the item, or finds it at version 0.
    script.answer(200, json!({}));
    sdk.write_control("C", &control(0, None), 0).await.unwrap();
    let sent = script.sent();
    assert_eq!(
        sent[0].1["ConditionExpression"],
        json!("attribute_not_exists(#ver) OR #ver = :zero")
    );
}

/// The operator's clients read AWS's clock from every response's `Date`,
/// whatever this machine's clock says; the commands follow it
/// (`Clock::following`).
#[tokio::test]
async fn the_operators_clients_read_aws_clock_from_its_responses() {
    let script = Script::default();
    let sdk = Sdk::new(&script.config().await);
    assert_eq!(sdk.server_time().now_ms(), None, "no response yet");
    script.answer(200, json!({ "Items": [] }));
    sdk.scan_page("C", 0, 1, None, true).await.unwrap();
    let aws = sdk.server_time().now_ms().unwrap();
    assert!(
        (AWS_DATE_MS..AWS_DATE_MS + 5_000).contains(&aws),
        "AWS's time {aws}, its Date said {AWS_DATE_MS}"
    );
    let clock =
        relay_aws::runtime::Clock::following(relay_aws::runtime::Clock::wall(), sdk.server_time());
    assert!((AWS_DATE_MS..AWS_DATE_MS + 5_000).contains(&clock.now_ms()));
}

/// DescribeTable tells which table this is (its TableId, or its creation
/// time where an engine gives none) and whether it was restored (its
/// RestoreSummary): a restore seed's cutoff is set only on its own table.
#[tokio::test]
async fn describe_tells_which_table_it_is_and_whether_it_was_restored() {
    let script = Script::default();
    let sdk = Sdk::new(&script.config().await);
    let table = |more: Value| {
        let mut t = json!({
            "TableName": "T",
            "TableStatus": "ACTIVE",
            "KeySchema": [{ "AttributeName": "pk", "KeyType": "HASH" }],
            "CreationDateTime": 1_700_000_000.25,
        });
        for (k, v) in more.as_object().unwrap() {
            t[k] = v.clone();
        }
        json!({ "Table": t })
    };
    script.answer(
        200,
        table(json!({
            "TableId": "4f1c-id",
            "RestoreSummary": { "RestoreDateTime": 1_700_000_000, "RestoreInProgress": false },
        })),
    );
    let t = sdk.describe("T").await.unwrap().unwrap();
    assert_eq!(t.id.as_deref(), Some("4f1c-id"));
    assert!(t.restored);
    // No TableId (moto): its creation time stands in; no RestoreSummary
    // (MiniStack, or a table not restored).
    script.answer(200, table(json!({})));
    let t = sdk.describe("T").await.unwrap().unwrap();
    assert_eq!(t.id.as_deref(), Some("created:1700000000.250000000"));
    assert!(!t.restored);
    assert_eq!(script.sent()[0].0, "DescribeTable");
    // The restores tell the TableId of the table they create, from their
    // answer; without one (moto), nothing: DescribeTable's id (its creation
    // time) is the one every later look compares with.
    let described = |t: Value| json!({ "TableDescription": t["Table"].clone() });
    script.answer(200, described(table(json!({ "TableId": "5a2e-id" }))));
    let id = sdk.restore_backup("arn:backup", "T").await.unwrap();
    assert_eq!(id.as_deref(), Some("5a2e-id"));
    script.answer(200, described(table(json!({}))));
    let id = sdk.restore_pitr("S", "T", 1_700_000_000_000).await.unwrap();
    assert_eq!(id, None);
    let sent = script.sent();
    assert_eq!(
        (sent[0].0.as_str(), sent[1].0.as_str()),
        ("RestoreTableFromBackup", "RestoreTableToPointInTime")
    );
}
