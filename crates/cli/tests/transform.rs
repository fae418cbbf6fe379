//! Transforms, the scan copy and verify on the local emulator, through the
//! real CLI and a stack deployed from the real template with a TransformSpec.
//! Needs MiniStack and a `sam build`: `make e2e` runs these with `--ignored`.

use std::collections::HashMap;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use relay_core::apply::TOMBSTONE_ATTR;
use relay_e2e::{preload, run_id, Local, Stack, View};
use serde_json::Value;

/// The seed 003 transform: the new key is UUIDv5(Name).
const UUID_OF_NAME: &str = r#"{"key":[{"attribute":"UUID","uuidv5":{"from":["Name"]}}]}"#;
/// A wrong one: another namespace, so every UUID differs.
const WRONG: &str = r#"{"key":[{"attribute":"UUID","uuidv5":{"namespace":"6ba7b811-9dad-11d1-80b4-00c04fd430c8","from":["Name"]}}]}"#;

fn spec_file(text: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let p = std::env::temp_dir().join(format!(
        "ddb-relay-transform-{}-{}-{}.json",
        std::process::id(),
        run_id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&p, text).expect("write spec");
    p.to_string_lossy().to_string()
}

fn cli(local: &Local, stack: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ddb-relay"))
        .args(args)
        .env("AWS_ENDPOINT_URL", &local.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("DDB_RELAY_STACK", stack)
        .env_remove("DDB_RELAY_TRANSFORM")
        .output()
        .expect("run ddb-relay")
}

fn stderr_of(local: &Local, stack: &str, args: &[&str]) -> (Option<i32>, String) {
    let o = cli(local, stack, args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

fn run(local: &Local, stack: &str, args: &[&str], code: i32) -> Value {
    let o = cli(local, stack, args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "ddb-relay {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// A source keyed on Name with a `view` stream, a target keyed on UUID (as
/// the user's IaC would create it), and the stack, with `spec` if given.
async fn name_to_uuid(
    local: &Local,
    tag: &str,
    view: View,
    spec: Option<&str>,
    items: u32,
) -> Result<Stack> {
    name_to_uuid_with(local, tag, view, spec, items, &[]).await
}

/// [`name_to_uuid`] with more template parameters.
async fn name_to_uuid_with(
    local: &Local,
    tag: &str,
    view: View,
    spec: Option<&str>,
    items: u32,
    extra: &[(&str, &str)],
) -> Result<Stack> {
    let run = run_id();
    let (source, target, name) = (
        format!("t5-{tag}-src-{run}"),
        format!("t5-{tag}-tgt-{run}"),
        format!("t5-{tag}-{run}"),
    );
    let stream = local
        .create_table_keyed(&source, "Name", Some(view))
        .await?
        .expect("stream");
    local.create_table_keyed(&target, "UUID", None).await?;
    put_people(local, &source, items).await?;
    let mut params = vec![
        ("SourceTableName", source.as_str()),
        ("SourceStreamArn", stream.as_str()),
        ("TargetTableName", target.as_str()),
        ("StreamBatchingWindowSeconds", "0"),
        ("CutoffMarginSeconds", "60"),
        // A restart waits for the applier timeout after the pause.
        ("ApplierTimeoutSeconds", "10"),
    ];
    if let Some(spec) = spec {
        params.push(("TransformSpec", spec));
    }
    params.extend_from_slice(extra);
    local.deploy(&name, &params).await
}

fn person(i: u32, version: u64) -> HashMap<String, Av> {
    HashMap::from([
        ("Name".to_string(), Av::S(format!("person-{i:03}"))),
        ("Age".to_string(), Av::N((20 + i % 50).to_string())),
        ("Email".to_string(), Av::S(format!("p{i}@example.com"))),
        ("Version".to_string(), Av::N(version.to_string())),
    ])
}

/// Writes people `0..n` (version 0) with BatchWriteItem, 8 requests at a
/// time, retrying what the table leaves unprocessed.
async fn put_people(local: &Local, table: &str, n: u32) -> Result<()> {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    use futures::stream::{self, StreamExt, TryStreamExt};
    let chunks: Vec<Vec<u32>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(25)
        .map(<[u32]>::to_vec)
        .collect();
    stream::iter(chunks)
        .map(|chunk| async move {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|&i| {
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(person(i, 0)))
                                .build()
                                .expect("item"),
                        )
                        .build()
                })
                .collect();
            for _ in 0..20 {
                if requests.is_empty() {
                    return Ok(());
                }
                let out = local
                    .ddb
                    .batch_write_item()
                    .request_items(table, requests)
                    .send()
                    .await
                    .map_err(relay_e2e::sdk)?;
                requests = out
                    .unprocessed_items()
                    .and_then(|u| u.get(table))
                    .cloned()
                    .unwrap_or_default();
            }
            anyhow::ensure!(
                requests.is_empty(),
                "{} puts left unprocessed",
                requests.len()
            );
            Ok::<(), anyhow::Error>(())
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn put_person(local: &Local, table: &str, i: u32, version: u64) -> Result<()> {
    let item = person(i, version);
    local
        .ddb
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .send()
        .await
        .map_err(relay_e2e::sdk)?;
    Ok(())
}

/// Puts, updates and deletes on Name keys until stopped, including deletes
/// of items the scan has not reached yet.
fn live_writes(
    local: &Local,
    table: &str,
    keys: u32,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    tokio::task::JoinHandle<Result<()>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let (local, table, stop2, ops2) = (local.clone(), table.to_string(), stop.clone(), ops.clone());
    let h = tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut n = 0u64;
        while !stop2.load(Ordering::Relaxed) && n < 20_000 {
            n += 1;
            let i = rng.u32(0..keys);
            if rng.u8(0..10) < 3 {
                local
                    .ddb
                    .delete_item()
                    .table_name(&table)
                    .key("Name", Av::S(format!("person-{i:03}")))
                    .send()
                    .await
                    .map_err(relay_e2e::sdk)?;
            } else {
                put_person(&local, &table, i, n).await?;
            }
            ops2.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        Ok(())
    });
    (stop, ops, h)
}

async fn tombstones(local: &Local, table: &str) -> Result<usize> {
    let r = local
        .ddb
        .scan()
        .table_name(table)
        .filter_expression("attribute_exists(#t)")
        .expression_attribute_names("#t", TOMBSTONE_ATTR)
        .consistent_read(true)
        .send()
        .await
        .map_err(relay_e2e::sdk)?;
    Ok(r.items().len())
}

/// Verify, retried while the applier drains (bounded).
async fn verify_until_clean(local: &Local, st: &str, spec: &str) -> Value {
    verify_until_clean_with(local, st, spec, &[]).await
}

/// [`verify_until_clean`] with more `verify` flags.
async fn verify_until_clean_with(local: &Local, st: &str, spec: &str, flags: &[&str]) -> Value {
    let start = Instant::now();
    let mut args = vec!["--transform", spec, "verify", "--output", "json"];
    args.extend_from_slice(flags);
    loop {
        let o = cli(local, st, &args);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        if v["clean"] == true || start.elapsed() > Duration::from_secs(90) {
            return v;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Seed 003: Name -> UUID = UUIDv5(Name) by scan copy while puts, updates
/// and deletes run (some deletes race the scan); verify is clean and no
/// tombstone is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn a_key_change_by_scan_copy_under_live_writes_verifies_clean() -> Result<()> {
    let local = Local::connect().await?;
    let stack = name_to_uuid(
        &local,
        "main",
        View::NewAndOldImages,
        Some(UUID_OF_NAME),
        150,
    )
    .await?;
    let st = stack.name.as_str();
    let spec = spec_file(UUID_OF_NAME);

    let pre = run(
        &local,
        st,
        &[
            "--transform",
            &spec,
            "preflight",
            "--method",
            "scan",
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(pre["ok"], true, "{pre:#}");

    let (stop, ops, writer) = live_writes(&local, &stack.source_table, 180);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seed = run(
        &local,
        st,
        &[
            "--transform",
            &spec,
            "seed",
            "--method",
            "scan",
            "--segments",
            "3",
            "--output",
            "json",
        ],
        0,
    );
    assert!(seed["copied"].as_u64().unwrap_or(0) > 0, "{seed:#}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await??;
    assert!(ops.load(Ordering::Relaxed) > 50);

    let v = verify_until_clean(&local, st, &spec).await;
    assert_eq!(v["clean"], true, "{v:#}");
    assert!(v["compared"].as_u64().unwrap_or(0) > 0);
    assert_eq!(tombstones(&local, &stack.target_table).await?, 0);
    // Every target item is keyed by the UUID of its Name.
    let target = local
        .ddb
        .scan()
        .table_name(&stack.target_table)
        .send()
        .await?;
    for item in target.items() {
        let (Some(Av::S(name)), Some(Av::S(id))) = (item.get("Name"), item.get("UUID")) else {
            panic!("target item without Name/UUID");
        };
        let want = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string();
        assert_eq!(id, &want);
    }
    Ok(())
}

/// Writes `items` to S3 as a DynamoDB export consistent to `at_ms`, in the
/// documented layout (MiniStack's export API completes without writing any
/// object): `manifest-summary.json`, `manifest-files.json`, and gzip data
/// files of DynamoDB JSON lines. Returns the `--from-export` URI.
async fn fabricate_export(
    local: &Local,
    bucket: &str,
    id: &str,
    items: &[relay_core::item::Attrs],
    at_ms: i64,
    files: usize,
) -> Result<String> {
    use std::io::Write;
    let s3 = &local.ops.s3;
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(relay_e2e::sdk)?;
    let put = |key: String, body: Vec<u8>| async move {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .map_err(relay_e2e::sdk)
    };
    let dir = format!("exports/AWSDynamoDB/{id}");
    let mut manifest = String::new();
    for (i, chunk) in items.chunks(items.len().div_ceil(files).max(1)).enumerate() {
        let key = format!("{dir}/data/{i:04}.json.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(relay_core::export::data_lines(chunk).as_bytes())?;
        put(key.clone(), gz.finish()?).await?;
        manifest.push_str(&format!(
            "{{\"itemCount\":{},\"md5Checksum\":\"-\",\"etag\":\"-\",\"dataFileS3Key\":\"{key}\"}}\n",
            chunk.len()
        ));
    }
    put(format!("{dir}/manifest-files.json"), manifest.into_bytes()).await?;
    let at = chrono::DateTime::from_timestamp_millis(at_ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let summary = format!(
        "{{\"version\":\"2020-06-30\",\"exportArn\":\"arn:aws:dynamodb:us-east-1:000000000000:table/t/export/{id}\",\"exportTime\":\"{at}\",\"s3Bucket\":\"{bucket}\",\"s3Prefix\":\"exports\",\"manifestFilesS3Key\":\"{dir}/manifest-files.json\",\"itemCount\":{},\"outputFormat\":\"DYNAMODB_JSON\"}}",
        items.len()
    );
    put(format!("{dir}/manifest-summary.json"), summary.into_bytes()).await?;
    Ok(format!("s3://{bucket}/{dir}"))
}

/// The export path of a key change (Name -> UUIDv5(Name)) under live puts,
/// updates and deletes: an export (fabricated in DynamoDB's layout, taken
/// while writes run) loaded through the transform by
/// `seed --method export --from-export`; verify is clean and no tombstone is
/// left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn a_key_change_by_export_load_under_live_writes_verifies_clean() -> Result<()> {
    let local = Local::connect().await?;
    let stack = name_to_uuid(
        &local,
        "export",
        View::NewAndOldImages,
        Some(UUID_OF_NAME),
        150,
    )
    .await?;
    let st = stack.name.as_str();
    let spec = spec_file(UUID_OF_NAME);
    // An export needs point-in-time recovery on the source.
    local.enable_pitr(&stack.source_table).await?;
    let pre = run(
        &local,
        st,
        &[
            "--transform",
            &spec,
            "preflight",
            "--method",
            "export",
            "--load",
            "--output",
            "json",
        ],
        0,
    );
    assert!(
        pre["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == "target table" && c["status"] == "pass"),
        "{pre:#}"
    );

    let (stop, ops, writer) = live_writes(&local, &stack.source_table, 180);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The export: every item as read at or after `at` (a scan that starts
    // after it), as an export consistent to `at` would hold it or older.
    let at = relay_e2e::now_ms();
    let items = local.scan_items(&stack.source_table).await?;
    let uri = fabricate_export(
        &local,
        &format!("exp-{}", run_id()),
        "0001-e2e",
        &items,
        at,
        3,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let args = [
        "--transform",
        &spec,
        "seed",
        "--method",
        "export",
        "--from-export",
        &uri,
        "--segments",
        "2",
        "--output",
        "json",
    ];
    let seed = run(&local, st, &args, 0);
    relay_e2e::readme::check(&args[2..], &seed);
    assert_eq!(seed["method"], "export", "{seed:#}");
    assert_eq!(
        seed["copied"].as_u64().unwrap_or(0) + seed["skipped_existing"].as_u64().unwrap_or(0),
        items.len() as u64,
        "{seed:#}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await??;
    assert!(ops.load(Ordering::Relaxed) > 50);

    let v = verify_until_clean(&local, st, &spec).await;
    assert_eq!(v["clean"], true, "{v:#}");
    assert_eq!(tombstones(&local, &stack.target_table).await?, 0);
    Ok(())
}

/// A wrong transform is caught by verify, then fixed by redeploying the
/// corrected TransformSpec and `restart --method scan`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn a_wrong_transform_is_caught_by_verify_and_fixed_by_a_restart() -> Result<()> {
    let local = Local::connect().await?;
    let stack = name_to_uuid(&local, "wrong", View::NewAndOldImages, Some(WRONG), 40).await?;
    let st = stack.name.as_str();
    let (wrong, right) = (spec_file(WRONG), spec_file(UUID_OF_NAME));
    run(
        &local,
        st,
        &["--transform", &wrong, "seed", "--method", "scan"],
        0,
    );

    // The right spec is not what the stack runs: refused, and a blocker.
    let (code, err) = stderr_of(
        &local,
        st,
        &["--transform", &right, "verify", "--recheck-wait", "0"],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("differs from stack"), "{err}");
    let pre = run(
        &local,
        st,
        &[
            "--transform",
            &right,
            "preflight",
            "--method",
            "scan",
            "--output",
            "json",
        ],
        3,
    );
    assert!(pre.to_string().contains("differs from stack"), "{pre:#}");
    let nogo = run(&local, st, &["cutover", "--output", "json"], 3);
    assert!(nogo["reasons"].to_string().contains("verify"), "{nogo:#}");

    // Fix: the corrected transform in the stack, then a fresh copy.
    let redeployed = local
        .deploy(
            st,
            &[
                ("SourceTableName", stack.source_table.as_str()),
                (
                    "SourceStreamArn",
                    local
                        .ddb
                        .describe_table()
                        .table_name(&stack.source_table)
                        .send()
                        .await?
                        .table()
                        .and_then(|t| t.latest_stream_arn())
                        .unwrap_or_default(),
                ),
                ("TargetTableName", stack.target_table.as_str()),
                ("StreamBatchingWindowSeconds", "0"),
                ("CutoffMarginSeconds", "60"),
                ("ApplierTimeoutSeconds", "10"),
                ("TransformSpec", UUID_OF_NAME),
            ],
        )
        .await?;
    assert_eq!(redeployed.name, st);
    run(&local, st, &["pause"], 0);
    run(
        &local,
        st,
        &["--transform", &right, "restart", "--method", "scan"],
        0,
    );
    put_person(&local, &stack.source_table, 7, 99).await?;
    let v = verify_until_clean(&local, st, &right).await;
    assert_eq!(v["clean"], true, "{v:#}");
    assert_eq!(v["compared"], 40);
    Ok(())
}

/// Injected divergence (a missing, an extra and a changed item) is found by
/// verify and fixed by `verify --repair`; cutover then sees a clean verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn verify_finds_injected_divergence_and_repair_fixes_it() -> Result<()> {
    let local = Local::connect().await?;
    let stack = local
        .new_migration("t5-div", &[("CutoffMarginSeconds", "60")], false)
        .await?;
    let st = stack.name.as_str();
    preload(&local, &stack.source_table, 30).await?;
    run(&local, st, &["seed", "--method", "backup"], 0);
    run(&local, st, &["resume"], 0);
    let (_, d) = local
        .wait_converged(&stack, Duration::from_secs(60))
        .await?;
    assert!(d.is_clean());

    let target = local.scan(&stack.target_table).await?;
    let mut it = target.values();
    let (gone, changed) = (it.next().expect("item"), it.next().expect("item"));
    let key = |i: &relay_core::item::Attrs| {
        HashMap::from([
            ("pk".to_string(), relay_aws::convert::to_sdk(&i["pk"])),
            ("sk".to_string(), relay_aws::convert::to_sdk(&i["sk"])),
        ])
    };
    local
        .ddb
        .delete_item()
        .table_name(&stack.target_table)
        .set_key(Some(key(gone)))
        .send()
        .await?;
    let mut c = relay_aws::convert::to_sdk_item(changed);
    c.insert("name".into(), Av::S("tampered".into()));
    local
        .ddb
        .put_item()
        .table_name(&stack.target_table)
        .set_item(Some(c))
        .send()
        .await?;
    local
        .ddb
        .put_item()
        .table_name(&stack.target_table)
        .item("pk", Av::S("intruder".into()))
        .item("sk", Av::N("9".into()))
        .send()
        .await?;

    let v = run(
        &local,
        st,
        &["verify", "--recheck-wait", "1", "--output", "json"],
        3,
    );
    assert_eq!(
        (
            v["missing"].as_u64(),
            v["changed"].as_u64(),
            v["extra"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{v:#}"
    );
    let fixed = run(&local, st, &["verify", "--repair", "--output", "json"], 0);
    assert_eq!(fixed["repaired"], 3, "{fixed:#}");
    let again = run(&local, st, &["verify", "--output", "json"], 0);
    assert_eq!(again["clean"], true);
    let (_, d) = local
        .compare(&stack.source_table, &stack.target_table)
        .await?;
    assert!(d.is_clean());
    let go = run(
        &local,
        st,
        &["cutover", "--max-lag", "600", "--output", "json"],
        0,
    );
    assert!(
        go["checks"]
            .to_string()
            .contains("clean since the last seed"),
        "{go:#}"
    );
    Ok(())
}

/// A key derived from a non-key attribute needs old images for deletes:
/// preflight refuses it on a NEW_IMAGE stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn preflight_rejects_a_key_derivation_the_stream_cannot_support() -> Result<()> {
    let local = Local::connect().await?;
    let by_email_spec = r#"{"key":[{"attribute":"UUID","uuidv5":{"from":["Email"]}}]}"#;
    let stack = name_to_uuid(&local, "view", View::NewImage, Some(by_email_spec), 0).await?;
    let name = stack.name;
    let blockers = |pre: &Value| -> Vec<String> {
        pre["checks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "fail")
            .map(|c| format!("{}: {}", c["name"], c["detail"]))
            .collect()
    };
    // The deployed spec derives the key from Email: deletes need old images.
    let pre = run(
        &local,
        &name,
        &["preflight", "--method", "scan", "--output", "json"],
        3,
    );
    let failed = blockers(&pre);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].contains("transform key derivation") && failed[0].contains("NEW_AND_OLD_IMAGES"),
        "{failed:?}"
    );
    // Derived from the key alone, the same stream would be fine, but a
    // --transform that is not what the stack runs is itself a blocker.
    let by_name = spec_file(UUID_OF_NAME);
    let pre = run(
        &local,
        &name,
        &[
            "--transform",
            &by_name,
            "preflight",
            "--method",
            "scan",
            "--output",
            "json",
        ],
        3,
    );
    let failed = blockers(&pre);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("differs from stack"), "{failed:?}");
    Ok(())
}

/// A scan copy that stopped halfway continues from its checkpoints (same
/// cutoff) instead of starting over: segments marked done are not copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn a_stopped_scan_copy_resumes_from_its_checkpoints() -> Result<()> {
    let local = Local::connect().await?;
    let stack = name_to_uuid(
        &local,
        "resume",
        View::NewAndOldImages,
        Some(UUID_OF_NAME),
        60,
    )
    .await?;
    let st = stack.name.as_str();
    let spec = spec_file(UUID_OF_NAME);

    // The state a crash leaves: tombstone mode, a cutoff, and checkpoints
    // where segment 0 of 2 is done and segment 1 has not started.
    let seed_ms = relay_e2e::now_ms();
    let control = relay_core::control::ControlState {
        migration: stack.migration.clone(),
        cutoff_ms: Some(seed_ms - 3000),
        mode: relay_core::control::Mode::Tombstone,
        seed_method: Some("scan".into()),
        seed_ms: Some(seed_ms),
        version: 1,
        ..Default::default()
    };
    local
        .ddb
        .put_item()
        .table_name(&stack.control_table)
        .set_item(Some(relay_aws::convert::to_sdk_item(&control.to_item())))
        .send()
        .await?;
    local
        .ddb
        .put_item()
        .table_name(&stack.control_table)
        .item("migration", Av::S(format!("{}#scan", stack.migration)))
        .item("seed_ms", Av::N(seed_ms.to_string()))
        .item("segments", Av::N("2".into()))
        .item("seg_0", Av::S("done".into()))
        .send()
        .await?;

    let out = run(
        &local,
        st,
        &[
            "--transform",
            &spec,
            "seed",
            "--method",
            "scan",
            "--segments",
            "2",
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(out["resumed"], true, "{out:#}");
    assert_eq!(
        out["cutoff_ms"].as_i64(),
        Some(seed_ms - 3000),
        "the cutoff is kept"
    );
    let copied = out["copied"].as_u64().unwrap_or(0);
    assert!(
        copied > 0 && copied < 60,
        "only segment 1 was copied: {out:#}"
    );
    // The checkpoints are gone once the copy finished.
    let ck = local
        .ddb
        .get_item()
        .table_name(&stack.control_table)
        .key("migration", Av::S(format!("{}#scan", stack.migration)))
        .send()
        .await?;
    assert!(ck.item().is_none());
    Ok(())
}

/// How many items the fanned-out tests copy: `RELAY_E2E_ITEMS` (`make
/// e2e-scale` sets 200,000), else 3,000.
fn scale_items() -> u32 {
    std::env::var("RELAY_E2E_ITEMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000)
}

/// Runs a fanned-out seed (`args` after `--transform SPEC`) under live
/// writes on the first 300 people, then verifies with 16 MiB of memory:
/// clean, every copied item counted once, no tombstone left.
async fn fanned_out_seed_verifies_clean(
    local: &Local,
    stack: &Stack,
    spec: &str,
    args: &[&str],
    expect_read: Option<u64>,
) -> Result<()> {
    let st = stack.name.as_str();
    let (stop, ops, writer) = live_writes(local, &stack.source_table, 300);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut all = vec!["--transform", spec];
    all.extend_from_slice(args);
    let seed = run(local, st, &all, 0);
    relay_e2e::readme::check(args, &seed);
    let read =
        seed["copied"].as_u64().unwrap_or(0) + seed["skipped_existing"].as_u64().unwrap_or(0);
    if let Some(n) = expect_read {
        assert_eq!(read, n, "{seed:#}");
    }
    assert!(read > 0, "{seed:#}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await??;
    assert!(ops.load(Ordering::Relaxed) > 50);
    // At scale the applier has the source's initial load to skip first (the
    // forwarder starts at the stream's start): wait for the queue to empty.
    let limit = Duration::from_secs(120 + u64::from(scale_items()) / 200);
    let start = Instant::now();
    let mut empty = 0;
    while empty < 3 && start.elapsed() < limit {
        let s = run(local, st, &["status", "--output", "json"], 0);
        let queued =
            s["queue_visible"].as_u64().unwrap_or(1) + s["queue_in_flight"].as_u64().unwrap_or(1);
        empty = if queued == 0 { empty + 1 } else { 0 };
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let v = verify_until_clean_with(local, st, spec, &["--memory-mb", "16"]).await;
    assert_eq!(v["clean"], true, "{v:#}");
    assert!(
        v["compared"].as_u64().unwrap_or(0) + 300 >= u64::from(scale_items()),
        "{v:#}"
    );
    assert_eq!(tombstones(local, &stack.target_table).await?, 0);
    eprintln!(
        "fanned-out seed: {} items read, {:.0} items/s; verify compared {} in {:.1} s",
        read,
        seed["items_per_s"].as_f64().unwrap_or(0.0),
        v["compared"],
        v["seconds"].as_f64().unwrap_or(0.0)
    );
    fanned_out_verify_finds_and_repairs(local, stack, spec).await
}

/// `verify --fan-out` on the worker Lambda: clean on the migrated tables;
/// then, with one target item deleted, one tampered with and one whose
/// source never existed, it finds exactly those three, and `--repair` on
/// the workers fixes them.
async fn fanned_out_verify_finds_and_repairs(
    local: &Local,
    stack: &Stack,
    spec: &str,
) -> Result<()> {
    let st = stack.name.as_str();
    let fan = [
        "--transform",
        spec,
        "verify",
        "--fan-out",
        "--segments",
        "8",
        "--output",
        "json",
    ];
    let v = run(local, st, &fan, 0);
    relay_e2e::readme::check(&fan[2..], &v);
    assert_eq!(
        (v["clean"].as_bool(), v["fanned_out"].as_u64()),
        (Some(true), Some(16)),
        "{v:#}"
    );
    assert!(
        v["compared"].as_u64().unwrap_or(0) + 300 >= u64::from(scale_items()),
        "{v:#}"
    );
    eprintln!(
        "fanned-out verify: {} compared in {:.1} s ({:.0} items/s read)",
        v["compared"],
        v["seconds"].as_f64().unwrap_or(0.0),
        v["items_per_s"].as_f64().unwrap_or(0.0)
    );
    let (first, _) = local
        .ddb
        .scan()
        .table_name(&stack.target_table)
        .limit(2)
        .send()
        .await
        .map(|r| (r.items().to_vec(), ()))?;
    let [gone, tampered] = first.as_slice() else {
        anyhow::bail!("the target has fewer than 2 items");
    };
    local
        .ddb
        .delete_item()
        .table_name(&stack.target_table)
        .key("UUID", gone["UUID"].clone())
        .send()
        .await?;
    let mut t = tampered.clone();
    t.insert("tampered".into(), Av::Bool(true));
    local
        .ddb
        .put_item()
        .table_name(&stack.target_table)
        .set_item(Some(t))
        .send()
        .await?;
    local
        .ddb
        .put_item()
        .table_name(&stack.target_table)
        .item("UUID", Av::S(format!("intruder-{}", run_id())))
        .item("Name", Av::S("nobody-by-this-name".into()))
        .send()
        .await?;
    let v = run(local, st, &fan, 3);
    assert_eq!(
        (
            v["missing"].as_u64(),
            v["changed"].as_u64(),
            v["extra"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{v:#}"
    );
    let mut repair = fan.to_vec();
    repair.push("--repair");
    let fixed = run(local, st, &repair, 0);
    assert_eq!(fixed["repaired"], 3, "{fixed:#}");
    let again = run(local, st, &fan, 0);
    assert_eq!(again["clean"], true, "{again:#}");
    Ok(())
}

/// Issue 10's scan path on workers: Name -> UUIDv5(Name), `seed --method
/// scan --fan-out` (8 segments, one task each, on the stack's worker
/// Lambda) under live writes; verify in bounded memory is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn a_key_change_by_fanned_out_scan_under_live_writes_verifies_clean() -> Result<()> {
    let local = Local::connect().await?;
    let n = scale_items();
    let stack = name_to_uuid(
        &local,
        "fanscan",
        View::NewAndOldImages,
        Some(UUID_OF_NAME),
        n,
    )
    .await?;
    let spec = spec_file(UUID_OF_NAME);
    let args = [
        "seed",
        "--method",
        "scan",
        "--segments",
        "8",
        "--fan-out",
        "--output",
        "json",
    ];
    fanned_out_seed_verifies_clean(&local, &stack, &spec, &args, None).await
}

/// Issue 10's export path on workers: an export (fabricated in DynamoDB's
/// layout, 8 data files) loaded through the transform by the worker Lambda,
/// one task per file, under live writes; verify in bounded memory is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn a_key_change_by_fanned_out_export_load_under_live_writes_verifies_clean() -> Result<()> {
    let local = Local::connect().await?;
    let n = scale_items();
    let bucket = format!("fanexp-{}", run_id());
    let stack = name_to_uuid_with(
        &local,
        "fanexp",
        View::NewAndOldImages,
        Some(UUID_OF_NAME),
        n,
        &[("ExportBucketName", bucket.as_str())],
    )
    .await?;
    let spec = spec_file(UUID_OF_NAME);
    local.enable_pitr(&stack.source_table).await?;
    let at = relay_e2e::now_ms();
    let items = local.scan_items(&stack.source_table).await?;
    let uri = fabricate_export(&local, &bucket, "0002-fan", &items, at, 8).await?;
    let args = [
        "seed",
        "--method",
        "export",
        "--from-export",
        &uri,
        "--fan-out",
        "--output",
        "json",
    ];
    fanned_out_seed_verifies_clean(&local, &stack, &spec, &args, Some(items.len() as u64)).await
}
