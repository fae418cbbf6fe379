//! The CLI on the local emulator: every command, through the real binary,
//! against a stack deployed from the real template. Needs MiniStack and a
//! `sam build`: `make e2e` runs these with `--ignored`.

use std::process::Output;
use std::time::Duration;

use anyhow::Result;
use relay_e2e::{preload, run_id, Local, Stack, Writer};
use serde_json::Value;

/// Runs `ddb-relay ARGS` against the emulator and stack.
fn cli(local: &Local, stack: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ddb-relay"));
    cmd.args(args)
        .env("AWS_ENDPOINT_URL", &local.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("DDB_RELAY_STACK")
        .env_remove("AWS_PROFILE");
    if let Some(s) = stack {
        cmd.env("DDB_RELAY_STACK", s);
    }
    cmd.output().expect("run ddb-relay")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs and expects exit code `code`; returns stdout parsed as JSON when
/// `--output json` was given, else stdout as a JSON string.
fn run(local: &Local, stack: &str, args: &[&str], code: i32) -> Value {
    let o = cli(local, Some(stack), args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "ddb-relay {args:?}: {}",
        text(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let json = serde_json::from_str(&out).unwrap_or(Value::String(out));
    if args.contains(&"json") {
        relay_e2e::readme::check(args, &json);
    }
    json
}

fn stderr_of(local: &Local, stack: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let o = cli(local, stack, args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

async fn setup(local: &Local, tag: &str, extra: &[(&str, &str)]) -> Result<Stack> {
    // A short applier timeout: a replay waits for it after the pause.
    let mut params = vec![
        ("CutoffMarginSeconds", "60"),
        ("ApplierTimeoutSeconds", "10"),
    ];
    params.extend_from_slice(extra);
    local
        .new_migration(&format!("cli-{tag}"), &params, true)
        .await
}

/// The whole migration through the CLI only: preflight, seed, resume, live
/// writes, pause, replay from a new point, resume, cutover GO, finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn a_whole_migration_runs_through_the_cli() -> Result<()> {
    let local = Local::connect().await?;
    let stack = setup(&local, "main", &[]).await?;
    let st = stack.name.as_str();
    preload(&local, &stack.source_table, 40).await?;
    let writer = Writer::start(&local, &stack.source_table, 60, 20, 100_000);

    let pre = run(&local, st, &["preflight", "--output", "json"], 0);
    assert_eq!(pre["ok"], true, "{pre:#}");

    let seed = run(
        &local,
        st,
        &["seed", "--method", "backup", "--output", "json"],
        0,
    );
    assert_eq!(seed["method"], "backup");
    assert_eq!(
        seed["cutoff_ms"].as_i64(),
        seed["seed_ms"].as_i64().map(|t| t - stack.margin_ms)
    );
    // Re-running is harmless.
    let again = run(
        &local,
        st,
        &["seed", "--method", "backup", "--output", "json"],
        0,
    );
    assert_eq!(again["already"], true);

    run(&local, st, &["resume"], 0);
    tokio::time::sleep(Duration::from_secs(5)).await;

    let paused = run(&local, st, &["pause", "--output", "json"], 0);
    let paused_at = paused["paused_at_ms"].as_i64().expect("paused_at_ms");
    let earliest = paused["earliest_replay_ms"].as_i64().expect("earliest");
    assert_eq!(earliest, paused_at + stack.margin_ms);
    // Changes keep coming while paused; they wait in the queue until the
    // earliest replay point has passed (PITR restores up to about now).
    while relay_e2e::now_ms() < earliest + 1_500 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Replay from a point before the earliest is refused with the number.
    let (code, err) = stderr_of(
        &local,
        Some(st),
        &["replay", "--from", &(earliest - 1).to_string()],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("earliest valid T is {earliest}")),
        "{err}"
    );
    let replay = run(
        &local,
        st,
        &[
            "replay",
            "--from",
            &earliest.to_string(),
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(replay["trigger"], "Enabled", "{replay:#}");
    assert_eq!(
        replay["cutoff_ms"].as_i64(),
        Some(earliest - stack.margin_ms)
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    let counts = writer.stop().await;
    assert!(counts.total() > 50, "{}", counts.summary());
    let (_, diff) = local
        .wait_converged(&stack, Duration::from_secs(120))
        .await?;
    assert!(diff.is_clean(), "not converged after replay: {diff:?}");

    // Not GO before a clean verify of this seed; GO after one.
    let nogo = run(
        &local,
        st,
        &["cutover", "--max-lag", "600", "--output", "json"],
        3,
    );
    assert!(nogo["reasons"].to_string().contains("verify"), "{nogo:#}");
    let v = run(&local, st, &["verify", "--output", "json"], 0);
    assert_eq!(v["clean"], true, "{v:#}");
    let go = run(
        &local,
        st,
        &["cutover", "--max-lag", "600", "--output", "json"],
        0,
    );
    assert_eq!(go["go"], true, "{go:#}");

    let report = std::env::temp_dir().join(format!("ddb-relay-report-{}.json", run_id()));
    let fin = run(
        &local,
        st,
        &[
            "finish",
            "--quiet",
            "3",
            "--timeout",
            "120",
            "--report",
            report.to_str().unwrap_or_default(),
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(fin["triggers"], "Disabled");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
    assert_eq!(saved["migration"], fin["migration"]);
    // The picture beside it, drawn from MiniStack's CloudWatch.
    let svg = std::fs::read_to_string(report.with_extension("svg"))?;
    assert_eq!(
        fin["picture"],
        report.with_extension("svg").display().to_string()
    );
    assert!(
        svg.starts_with("<svg") && svg.contains("changes applied"),
        "{svg}"
    );
    assert!(svg.contains("<polyline"), "no series drawn: {svg}");
    let status = run(&local, st, &["status", "--output", "json"], 0);
    assert_eq!(status["applier_trigger"], "Disabled");
    assert_eq!(status["forwarder_trigger"], "Disabled");

    let (items, diff) = local
        .compare(&stack.source_table, &stack.target_table)
        .await?;
    assert!(
        diff.is_clean(),
        "tables differ at the end ({items} items): {diff:?}"
    );
    Ok(())
}

/// Each unsafe or impossible request is refused with one line that names
/// the fix, and dry runs change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn commands_refuse_what_is_unsafe_and_dry_runs_change_nothing() -> Result<()> {
    let local = Local::connect().await?;

    let (code, err) = stderr_of(&local, None, &["status"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--stack"), "{err}");
    let (code, err) = stderr_of(&local, Some("no-such-stack"), &["status"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("stack no-such-stack not found"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let stack = setup(&local, "errs", &[]).await?;
    let st = stack.name.as_str();

    // Nothing may be applied before a cutoff exists.
    let (code, err) = stderr_of(&local, Some(st), &["resume"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no cutoff"), "{err}");
    // Replays need a pause first; times must parse.
    let (code, err) = stderr_of(&local, Some(st), &["replay", "--from", "now"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("ddb-relay pause"), "{err}");
    run(&local, st, &["pause"], 0);
    // A bad time is a usage error (exit 2) naming the flag, before any AWS call.
    let (code, err) = stderr_of(&local, Some(st), &["replay", "--from", "yesterday"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--from") && err.contains("RFC 3339"), "{err}");
    let plan = run(&local, st, &["restart", "--dry-run", "--output", "json"], 0);
    assert_eq!(plan["dry_run"], true, "{plan:#}");

    // Dry runs change nothing.
    let dry = run(
        &local,
        st,
        &[
            "seed",
            "--method",
            "backup",
            "--dry-run",
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(dry["dry_run"], true);
    assert!(local
        .ddb
        .describe_table()
        .table_name(&stack.target_table)
        .send()
        .await
        .is_err());
    run(&local, st, &["resume", "--dry-run"], 1);
    let export = run(
        &local,
        st,
        &[
            "seed",
            "--method",
            "export",
            "--print-import-spec",
            "--s3-bucket",
            "b",
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(
        export["ImportSourceSpecification"]["InputFormat"],
        "DYNAMODB_JSON"
    );
    // A missing flag is a usage error, before any AWS call.
    let (code, err) = stderr_of(&local, Some(st), &["seed", "--method", "export"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--s3-bucket"), "{err}");

    // A target that exists but was not seeded by ddb-relay is a blocker.
    local.create_source_table(&stack.target_table).await?;
    let pre = run(&local, st, &["preflight", "--output", "json"], 3);
    assert_eq!(pre["ok"], false);
    let failed: Vec<&str> = pre["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "fail")
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(failed, vec!["target table"], "{pre:#}");
    let (code, err) = stderr_of(&local, Some(st), &["seed", "--method", "backup"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already exists"), "{err}");

    // Two operators: a stale control-item write is refused.
    use relay_aws::operator::Tables;
    let ops = &local.ops;
    let current = ops
        .control(&stack.control_table, &stack.migration)
        .await?
        .expect("pause wrote the control item");
    let stale = relay_core::control::ControlState {
        cutoff_ms: Some(1),
        ..current.clone()
    };
    let first = ops
        .write_control(&stack.control_table, &stale, current.version)
        .await?;
    assert!(matches!(
        first,
        relay_aws::operator::ControlWrite::Written(_)
    ));
    let second = ops
        .write_control(&stack.control_table, &stale, current.version)
        .await?;
    assert_eq!(second, relay_aws::operator::ControlWrite::Conflict);
    Ok(())
}

/// status, watch and the DLQ: list shows keys and reasons; repair copies the
/// source state and deletes only what it repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn status_watch_and_dlq_repair() -> Result<()> {
    let local = Local::connect().await?;
    let stack = setup(&local, "dlq", &[]).await?;
    let st = stack.name.as_str();
    run(&local, st, &["seed", "--method", "backup"], 0);
    preload(&local, &stack.source_table, 5).await?;

    let status = run(&local, st, &["status", "--output", "json"], 0);
    for key in [
        "forwarder_trigger",
        "applier_trigger",
        "cutoff_ms",
        "queue_visible",
        "queue_in_flight",
        "dlq_depth",
        "replication_lag_ms",
        "errors",
    ] {
        assert!(status.get(key).is_some(), "status lacks {key}: {status:#}");
    }
    let watch = cli(
        &local,
        Some(st),
        &["watch", "--count", "2", "--interval", "1"],
    );
    assert!(watch.status.success(), "{}", text(&watch));
    // Not a terminal: snapshots one after another, no screen control.
    let out = String::from_utf8_lossy(&watch.stdout);
    assert_eq!(out.matches("migration ").count(), 2, "{out}");
    assert!(!out.contains('\x1b'), "{out}");
    // Not GO: the applier is paused (disabled) with changes queued.
    let nogo = run(&local, st, &["cutover", "--output", "json"], 3);
    assert_eq!(nogo["go"], false);

    // Two dead letters: a real change for a key the target lacks, and garbage.
    let src = local.scan(&stack.source_table).await?;
    let (_, item) = src.iter().next().expect("preloaded");
    let key = relay_core::item::Attrs::from([
        ("pk".to_string(), item["pk"].clone()),
        ("sk".to_string(), item["sk"].clone()),
    ]);
    let ev = relay_core::event::ChangeEvent {
        event_id: "e1".into(),
        seq: "1".into(),
        time_ms: 1,
        op: relay_core::event::Op::Insert,
        ttl: false,
        refetch: true,
        keys: key.clone(),
        new_image: None,
        old_image: None,
    };
    let body = relay_core::envelope::encode(&stack.source_table, &[ev]);
    for (i, b) in [body.as_str(), "not json"].iter().enumerate() {
        local
            .sqs
            .send_message()
            .queue_url(&stack.dlq_url)
            .message_group_id("b0001")
            .message_deduplication_id(format!("dl-{i}"))
            .message_body(*b)
            .send()
            .await?;
    }
    let list = run(&local, st, &["dlq", "list", "--output", "json"], 0);
    assert_eq!(list["count"], 2, "{list:#}");
    let listed = serde_json::to_string(&list)?;
    assert!(listed.contains("undecodable"), "{listed}");
    assert!(!listed.contains("naïve"), "item values must not be listed");

    let dry = run(
        &local,
        st,
        &["dlq", "repair", "--dry-run", "--output", "json"],
        0,
    );
    assert_eq!(dry["repaired"], 0);
    assert_eq!(
        local.queue_depth(&stack.dlq_url).await?.0 + local.queue_depth(&stack.dlq_url).await?.1,
        2
    );

    let fixed = run(&local, st, &["dlq", "repair", "--output", "json"], 0);
    assert_eq!(fixed["repaired"], 1, "{fixed:#}");
    assert_eq!(fixed["left"], 1);
    let tgt = local.scan(&stack.target_table).await?;
    assert_eq!(
        tgt.get(&relay_core::item::CanonicalKey::of(&key)),
        Some(item),
        "repair copies the source state"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left = run(&local, st, &["dlq", "list", "--output", "json"], 0);
    assert_eq!(left["count"], 1, "only the undecodable message is left");

    // The stream failure queue (a standard queue: Lambda's on-failure
    // records): one batch before the cutoff, which the seed holds, and one
    // after it, which it does not.
    let cutoff = status["cutoff_ms"].as_i64().expect("seeded");
    let t = ddb_relay::ctx::rfc3339;
    for (i, last) in [cutoff - 5_000, relay_e2e::now_ms()].iter().enumerate() {
        let body = format!(
            r#"{{"version":"1.0","timestamp":"{}","requestContext":{{"condition":"RetryAttemptsExhausted","approximateInvokeCount":3}},"DDBStreamBatchInfo":{{"shardId":"shardId-{i}","startSequenceNumber":"1","endSequenceNumber":"9","batchSize":2,"approximateArrivalOfFirstRecord":"{}","approximateArrivalOfLastRecord":"{}"}}}}"#,
            t(last + 1_000),
            t(last - 1_000),
            t(*last)
        );
        local
            .sqs
            .send_message()
            .queue_url(&stack.stream_failure_url)
            .message_body(body)
            .send()
            .await?;
    }
    let listed = run(
        &local,
        st,
        &["dlq", "stream-failures", "--output", "json"],
        0,
    );
    assert_eq!(
        (&listed["count"], &listed["covered"]),
        (&2.into(), &1.into()),
        "{listed:#}"
    );
    let dry = run(
        &local,
        st,
        &[
            "dlq",
            "stream-failures",
            "--clear",
            "--dry-run",
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(
        (&dry["cleared"], &dry["left"]),
        (&1.into(), &1.into()),
        "{dry:#}"
    );
    // One is left: exit 3.
    let cleared = run(
        &local,
        st,
        &["dlq", "stream-failures", "--clear", "--output", "json"],
        3,
    );
    assert_eq!(
        (&cleared["cleared"], &cleared["left"]),
        (&1.into(), &1.into()),
        "{cleared:#}"
    );
    let control = local
        .ddb
        .get_item()
        .table_name(&stack.control_table)
        .key(
            "migration",
            aws_sdk_dynamodb::types::AttributeValue::S(stack.migration.clone()),
        )
        .consistent_read(true)
        .send()
        .await?;
    let control = relay_core::control::ControlState::from_item(
        &relay_aws::convert::from_sdk_item(control.item().expect("control item"))?,
    )?;
    assert_eq!(control.cleared_ms, Some(cutoff - 5_000), "{control:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = run(
        &local,
        st,
        &["dlq", "stream-failures", "--output", "json"],
        0,
    );
    assert_eq!(
        (&after["count"], &after["covered"]),
        (&1.into(), &0.into()),
        "{after:#}"
    );
    Ok(())
}
