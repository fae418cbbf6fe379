//! The lost-write paths of issue 9, through the real CLI binary against a
//! stack deployed from the real template on the local emulator (MiniStack),
//! with live writes: replay points before what a scan restart consumed
//! (finding 1), repairs beside a running applier and through the transform
//! (finding 3), and cutover/finish that say GO only when it is true
//! (finding 5). `make e2e` runs these with `--ignored`.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::Result;
use aws_sdk_dynamodb::types::AttributeValue as Av;
use relay_aws::operator::Triggers;
use relay_e2e::{preload, Local, Stack, Writer};
use serde_json::Value;

fn cli(local: &Local, stack: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ddb-relay"))
        .args(args)
        .env("AWS_ENDPOINT_URL", &local.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("DDB_RELAY_STACK", stack)
        .env_remove("AWS_PROFILE")
        .env_remove("DDB_RELAY_TRANSFORM")
        .output()
        .expect("run ddb-relay")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs with `--output json`, expects exit `code`, returns the document.
fn run(local: &Local, stack: &str, args: &[&str], code: i32) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let o = cli(local, stack, &all);
    assert_eq!(
        o.status.code(),
        Some(code),
        "ddb-relay {args:?}: {}",
        text(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// Runs and expects exit 1; returns stderr.
fn refused(local: &Local, stack: &str, args: &[&str]) -> String {
    let o = cli(local, stack, args);
    assert_eq!(o.status.code(), Some(1), "ddb-relay {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stderr).to_string()
}

async fn migration(local: &Local, tag: &str, extra: &[(&str, &str)]) -> Result<Stack> {
    let mut params = vec![
        ("CutoffMarginSeconds", "60"),
        ("ApplierTimeoutSeconds", "10"),
        ("GroupBuckets", "8"),
    ];
    params.extend_from_slice(extra);
    local
        .new_migration(&format!("nlw-{tag}"), &params, true)
        .await
}

/// Finding 1: pause at P0, `restart --method scan` (the applier drains to
/// P1), pause: `replay --from T` with P0 + margin <= T < P1 is refused,
/// naming the earliest valid T, and changes nothing; that T works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn a_replay_point_before_what_a_scan_restart_consumed_is_refused() -> Result<()> {
    let local = Local::connect().await?;
    let stack = migration(&local, "replay", &[]).await?;
    let st = stack.name.as_str();
    preload(&local, &stack.source_table, 20).await?;
    let writer = Writer::start(&local, &stack.source_table, 30, 10, 100_000);
    run(&local, st, &["seed", "--method", "backup"], 0);
    run(&local, st, &["resume"], 0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let p0 = run(&local, st, &["pause"], 0)["paused_at_ms"]
        .as_i64()
        .unwrap();
    let restart = run(&local, st, &["restart", "--method", "scan"], 0);
    assert_eq!(restart["method"], "scan", "{restart:#}");
    // The applier consumes what was queued since P0, and live changes.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let second = run(&local, st, &["pause"], 0);
    let p1 = second["paused_at_ms"].as_i64().unwrap();
    let earliest = second["earliest_replay_ms"].as_i64().unwrap();
    assert!(earliest >= p1 + stack.margin_ms, "{second:#}");
    let before = run(&local, st, &["status"], 0);
    for t in [p0 + stack.margin_ms, p1 - 1_000] {
        let err = refused(&local, st, &["replay", "--from", &t.to_string()]);
        assert!(
            err.contains(&format!("earliest valid T is {earliest}")),
            "{err}"
        );
    }
    let after = run(&local, st, &["status"], 0);
    assert_eq!(
        before["paused_at_ms"], after["paused_at_ms"],
        "a refused replay changes nothing"
    );
    assert_eq!(before["cutoff_ms"], after["cutoff_ms"]);
    while relay_e2e::now_ms() < earliest + 1_500 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run(&local, st, &["replay", "--from", &earliest.to_string()], 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    writer.stop().await;
    let (_, diff) = local
        .wait_converged(&stack, Duration::from_secs(120))
        .await?;
    assert!(diff.is_clean(), "{diff:?}");
    Ok(())
}

/// Finding 3: `verify --repair` beside a running applier and live writes
/// to the very item it repairs never leaves the target behind the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn verify_repair_beside_live_writes_never_moves_the_target_back() -> Result<()> {
    let local = Local::connect().await?;
    let stack = migration(&local, "repair", &[]).await?;
    let st = stack.name.as_str();
    preload(&local, &stack.source_table, 10).await?;
    run(&local, st, &["seed", "--method", "backup"], 0);
    run(&local, st, &["resume"], 0);
    let (_, diff) = local
        .wait_converged(&stack, Duration::from_secs(60))
        .await?;
    assert!(diff.is_clean());
    // Divergence for verify to repair: a stale copy of one item.
    let src = local.scan(&stack.source_table).await?;
    let item = src.values().next().unwrap().clone();
    let key = [("pk", item["pk"].clone()), ("sk", item["sk"].clone())];
    let stale: std::collections::HashMap<String, Av> = key
        .iter()
        .map(|(k, v)| (k.to_string(), relay_aws::convert::to_sdk(v)))
        .chain([("stale".to_string(), Av::Bool(true))])
        .collect();
    local
        .ddb
        .put_item()
        .table_name(&stack.target_table)
        .set_item(Some(stale))
        .send()
        .await?;
    // That item keeps changing while verify repairs it.
    let ddb = local.ddb.clone();
    let table = stack.source_table.clone();
    let (pk, sk) = (
        relay_aws::convert::to_sdk(&item["pk"]),
        relay_aws::convert::to_sdk(&item["sk"]),
    );
    let changer = tokio::spawn(async move {
        for v in 0..40 {
            let _ = ddb
                .put_item()
                .table_name(&table)
                .item("pk", pk.clone())
                .item("sk", sk.clone())
                .item("v", Av::N(v.to_string()))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    let _ = cli(&local, st, &["verify", "--repair", "--recheck-wait", "1"]);
    changer.await?;
    let (_, diff) = local
        .wait_converged(&stack, Duration::from_secs(60))
        .await?;
    assert!(
        diff.is_clean(),
        "the target ends on the source's newest state: {diff:?}"
    );
    let v = run(&local, st, &["verify"], 0);
    assert_eq!(v["clean"], true, "{v:#}");
    Ok(())
}

/// Finding 3: `dlq repair` writes through the transform: a change the
/// applier could not map (a key derived by converting a non-number) is
/// dead-lettered; once the source is fixed, the repair writes the renamed
/// item at its derived key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn dlq_repair_writes_through_the_transform() -> Result<()> {
    let local = Local::connect().await?;
    let spec = r#"{"key":[{"attribute":"id","convert":{"from":"code","to":"N"}}],"rename":{"name":"title"}}"#;
    let run_id = relay_e2e::run_id();
    let target = format!("nlw-dlq-tgt-{run_id}");
    local.create_target_table(&target, &[("id", "N")]).await?;
    let source = format!("nlw-dlq-src-{run_id}");
    let stream = local.create_source_table(&source).await?;
    let stack = local
        .deploy(
            &format!("nlw-dlq-{run_id}"),
            &[
                ("SourceTableName", source.as_str()),
                ("SourceStreamArn", stream.as_str()),
                ("TargetTableName", target.as_str()),
                ("StreamBatchingWindowSeconds", "0"),
                ("CutoffMarginSeconds", "60"),
                ("ApplierTimeoutSeconds", "3"),
                ("MaxReceiveCount", "2"),
                ("TransformSpec", spec),
            ],
        )
        .await?;
    let st = stack.name.as_str();
    run(&local, st, &["seed", "--method", "scan"], 0);
    let put = |code: &str| {
        local
            .ddb
            .put_item()
            .table_name(&source)
            .item("pk", Av::S("a".into()))
            .item("sk", Av::N("1".into()))
            .item("code", Av::S(code.into()))
            .item("name", Av::S("Ann".into()))
            .send()
    };
    put("not a number").await?;
    let start = Instant::now();
    while local.queue_depth(&stack.dlq_url).await? == (0, 0) {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    put("42").await?;
    let list = run(&local, st, &["dlq", "list"], 0);
    assert!(list["count"].as_u64() >= Some(1), "{list:#}");
    let fixed = run(&local, st, &["dlq", "repair"], 0);
    assert_eq!(fixed["left"], 0, "{fixed:#}");
    let start = Instant::now();
    loop {
        let tgt = local.scan_raw(&target).await?;
        if tgt.len() == 1 && tgt[0].get("id") == Some(&Av::N("42".into())) {
            assert_eq!(tgt[0].get("title"), Some(&Av::S("Ann".into())), "{tgt:?}");
            assert!(!tgt[0].contains_key("name"), "renamed: {tgt:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "target: {tgt:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Finding 5: cutover is NO-GO with the forwarder disabled and without a
/// clean verify (the waiver says so); finish refuses a disabled forwarder;
/// after writes stop, finish drains with the forwarder caught up. Prints how
/// long writes were paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn cutover_and_finish_say_go_only_when_true() -> Result<()> {
    let local = Local::connect().await?;
    let stack = migration(&local, "cutover", &[]).await?;
    let st = stack.name.as_str();
    preload(&local, &stack.source_table, 20).await?;
    let writer = Writer::start(&local, &stack.source_table, 30, 10, 100_000);
    run(&local, st, &["seed", "--method", "backup"], 0);
    run(&local, st, &["resume"], 0);
    // The backup waited until the new stream was a minute old: let the
    // applier drain what queued meanwhile (the writes go on).
    let start = Instant::now();
    loop {
        let (visible, in_flight) = local.queue_depth(&stack.queue_url).await?;
        if visible + in_flight <= 10 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "never drained: {visible} queued"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let lenient = [
        "cutover",
        "--max-lag",
        "60",
        "--max-backlog",
        "1000",
        "--window",
        "60",
    ];
    let nogo = run(&local, st, &lenient, 3);
    assert!(nogo["reasons"].to_string().contains("verify"), "{nogo:#}");
    let mut waived = lenient.to_vec();
    waived.push("--no-verify");
    let w = run(&local, st, &waived, 0);
    assert!(w["checks"].to_string().contains("waived"), "{w:#}");
    let v = run(&local, st, &["verify", "--recheck-wait", "2"], 0);
    assert_eq!(v["clean"], true, "{v:#}");
    run(&local, st, &lenient, 0);

    // The forwarder disabled: NO-GO, and finish cannot prove the drain.
    let fwd = local
        .ops
        .mapping(&stack.forwarder, "arn:aws:dynamodb:")
        .await?;
    Triggers::set_mapping(&local.ops, &fwd.uuid, false).await?;
    let nogo = run(&local, st, &lenient, 3);
    assert!(
        nogo["reasons"].to_string().contains("forwarder"),
        "{nogo:#}"
    );
    let err = refused(&local, st, &["finish", "--quiet", "2", "--timeout", "30"]);
    assert!(err.contains("forwarder trigger is Disabled"), "{err}");
    Triggers::set_mapping(&local.ops, &fwd.uuid, true).await?;

    // The runbook: stop writes, finish, then switch.
    let counts = writer.stop().await;
    let stopped = Instant::now();
    let done = run(
        &local,
        st,
        &["finish", "--quiet", "3", "--timeout", "180"],
        0,
    );
    eprintln!(
        "writes paused {:.1} s for the switch ({}); finish report drained_s {}",
        stopped.elapsed().as_secs_f64(),
        counts.summary(),
        done["drained_s"]
    );
    assert_eq!(done["triggers"], "Disabled");
    let (items, diff) = local
        .compare(&stack.source_table, &stack.target_table)
        .await?;
    assert!(diff.is_clean(), "{items} items: {diff:?}");
    Ok(())
}
