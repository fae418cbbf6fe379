use super::*;
use lambda_runtime::service_fn;
use serde_json::json;

fn invocation(request_id: &str, body: &'static [u8]) -> LambdaInvocation {
    let mut context = lambda_runtime::Context::default();
    context.request_id = request_id.to_string();
    LambdaInvocation {
        parts: http::Response::new(()).into_parts().0,
        body: Bytes::from_static(body),
        context,
    }
}

#[tokio::test]
async fn the_layer_hands_the_runtime_null_and_the_handler_the_body() {
    let raw = RawBody::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let inner = {
        let seen = seen.clone();
        service_fn(move |inv: LambdaInvocation| {
            seen.lock().unwrap().push(inv.body);
            async { Ok::<(), lambda_runtime::Error>(()) }
        })
    };
    let mut svc = raw.layer(inner);
    svc.call(invocation("r-1", b"{\"Records\":[]}"))
        .await
        .unwrap();
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [Bytes::from_static(b"null")]
    );
    // Only to the invocation it came with, and once.
    assert_eq!(raw.take("r-0"), None);
    assert_eq!(raw.take("r-1").as_deref(), Some(&b"{\"Records\":[]}"[..]));
    assert_eq!(raw.take("r-1"), None);
    // Shown, it is its request id and length, never its bytes.
    svc.call(invocation("r-9", b"{\"secret\":424242}"))
        .await
        .unwrap();
    assert_eq!(format!("{raw:?}"), "RawBody(r-9: 17 bytes)");
    assert!(!format!("{svc:?}").contains("424242"));
    // The next invocation's body replaces one never taken.
    svc.call(invocation("r-2", b"2")).await.unwrap();
    svc.call(invocation("r-3", b"3")).await.unwrap();
    assert_eq!(raw.take("r-2"), None);
    assert_eq!(raw.take("r-3").as_deref(), Some(&b"3"[..]));
}

fn batch(dynamodb: serde_json::Value) -> Vec<u8> {
    json!({"Records": [{
        "eventID": "e1",
        "eventName": "MODIFY",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/T/stream/x",
        "dynamodb": dynamodb,
    }]})
    .to_string()
    .into_bytes()
}

#[test]
fn a_batch_is_read_in_place() {
    let body = batch(json!({
        "ApproximateCreationDateTime": 1,
        "Keys": {"pk": {"S": "a"}},
        "NewImage": {"pk": {"S": "a"}, "n": {"N": "1"}},
        "SequenceNumber": "1",
    }));
    let event = read_body(&body).unwrap();
    let image = event.records[0].change.new_image.unwrap().get();
    assert_eq!(image, r#"{"n":{"N":"1"},"pk":{"S":"a"}}"#);
    // Names and the source are read where they are, as the images are.
    let rec = &event.records[0];
    assert!(matches!(
        rec.event_name,
        std::borrow::Cow::Borrowed("MODIFY")
    ));
    assert!(matches!(
        rec.event_source_arn,
        Some(std::borrow::Cow::Borrowed(_))
    ));
    // The image is the body's own bytes, not a copy.
    let at = image.as_ptr() as usize - body.as_ptr() as usize;
    assert!(at < body.len());
}

/// A body the one-pass reader leaves to serde_json is read by it, in
/// place too: bytes that are not UTF-8 in a field neither reads (serde_json
/// skips a string without checking it), an escaped field name.
#[test]
fn a_body_the_one_pass_reader_is_not_sure_of_is_read_by_serde_json() {
    let body = batch(json!({
        "ApproximateCreationDateTime": 1,
        "Keys": {"pk": {"S": "a"}},
        "NewImage": {"pk": {"S": "a"}},
        "SequenceNumber": "1",
    }));
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(relay_core::stream::read(&text).is_some());
    let mut latin1 = body.clone();
    latin1.splice(1..1, *b"\"x\":\"caf\xe9\",");
    assert!(std::str::from_utf8(&latin1).is_err());
    let event = read_body(&latin1).unwrap();
    assert_eq!(
        event.records[0].change.new_image.unwrap().get(),
        r#"{"pk":{"S":"a"}}"#
    );
    let escaped = text.replacen("\"eventName\"", "\"\\u0065ventName\"", 1);
    assert!(relay_core::stream::read(&escaped).is_none());
    let event = read_body(escaped.as_bytes()).unwrap();
    assert_eq!(event.records[0].event_name, "MODIFY");
    let image = event.records[0].change.new_image.unwrap().get();
    let at = image.as_ptr() as usize - escaped.as_ptr() as usize;
    assert!(at < escaped.len());
}

#[test]
fn a_body_that_is_not_a_batch_says_where_and_names_no_value() {
    let cases = [
        (
            batch(json!({"Keys": {"pk": {"S": "a"}}, "NewImage": {"pk": {"S": 424242}}})),
            "[Records[0].dynamodb.NewImage] ",
        ),
        (
            batch(json!({"Keys": {"pk": {"S": 424242}}})),
            "[Records[0].dynamodb.Keys",
        ),
        // The keys' type tags are schema, but a wrong one is customer text:
        // it is refused after it is read, so no path ends with it.
        (
            batch(json!({"Keys": {"pk": {"424242": "a"}}})),
            "[Records[0].dynamodb.Keys",
        ),
        (
            batch(json!({"Keys": {"pk": {"S": "a", "424242": "b"}}})),
            "[Records[0].dynamodb.Keys",
        ),
        (
            batch(json!({"Keys": {"pk": {"B": "424242!"}}})),
            "[Records[0].dynamodb.Keys",
        ),
        (
            batch(json!({"ApproximateCreationDateTime": "424242"})),
            "[Records[0].dynamodb.ApproximateCreationDateTime] ",
        ),
        (b"{\"Records\": [424242".to_vec(), "[Records[0]] "),
        (b"{\"Records\": 1}".to_vec(), "[Records] "),
    ];
    for (body, at) in cases {
        let error = read_body(&body).unwrap_err();
        let e = error.to_string();
        assert!(
            e.starts_with("the invocation is not a DynamoDB stream batch"),
            "{e}"
        );
        assert!(e.contains(at), "{e}");
        // Nor any other way it is shown: lambda_runtime logs a handler's
        // error with `Debug`, and posts its `Diagnostic`.
        let debug = format!("{error:?}");
        let d = lambda_runtime::Diagnostic::from(error);
        assert_eq!(d.error_type, "InvalidStreamBatch");
        for shown in [&e, &debug, &d.error_message, &format!("{d:?}")] {
            assert!(!shown.contains("424242"), "{shown}");
        }
    }
    let e = read_body(b"{\"Records\": [{\"eventName\": \"INSERT\"}]}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing field `eventID`"), "{e}");
}
