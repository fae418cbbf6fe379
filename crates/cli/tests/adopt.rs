//! From `finish` to "the new table is in my stack, the old one is retired,
//! nothing was deleted by accident", on the local emulator: the source is
//! owned by the application's own CloudFormation stack, `preflight` warns,
//! `protect` protects, a migration runs, `adopt` prints the target's
//! definition and the runbook, and its CloudFormation and retirement commands run verbatim
//! (the AWS CLI from the project's virtualenv). Needs MiniStack and a
//! `sam build`: `make e2e` runs it with `--ignored`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use relay_aws::operator::Iac;
use relay_core::iac::TableSpec;
use relay_e2e::{preload, repo_root, run_id, sdk, Local, Writer};
use serde_json::{json, Value};

fn env_of(local: &Local, cmd: &mut std::process::Command) {
    let bin = Path::new(env!("CARGO_BIN_EXE_ddb-relay"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let venv = repo_root().join(".venv/bin");
    let path = format!(
        "{}:{}:{}:{}",
        bin.display(),
        aws_wrapper(&venv).display(),
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env("PATH", path)
        .env("AWS_ENDPOINT_URL", &local.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_PAGER", "")
        .env_remove("AWS_PROFILE")
        .env_remove("DDB_RELAY_STACK");
}

/// A directory with an `aws` that is the project's AWS CLI given
/// `--endpoint-url $AWS_ENDPOINT_URL`. AWS CLI v1 ignores AWS_ENDPOINT_URL
/// for SQS in us-east-1 (its `overridesslcommonname` customization points
/// it at queue.amazonaws.com unless `--endpoint-url` is on the command
/// line); the printed commands themselves run unchanged.
fn aws_wrapper(venv: &Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddb-relay-adopt-aws-{}", std::process::id()));
    let aws = dir.join("aws");
    if !aws.exists() {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            &aws,
            format!(
                "#!/usr/bin/env bash\nexec {} ${{AWS_ENDPOINT_URL:+--endpoint-url \"$AWS_ENDPOINT_URL\"}} \"$@\"\n",
                venv.join("aws").display()
            ),
        );
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&aws, std::fs::Permissions::from_mode(0o755));
    }
    dir
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `ddb-relay --stack STACK ARGS`, expecting exit `code`; stdout as JSON
/// when it parses.
fn relay(local: &Local, stack: &str, args: &[&str], code: i32) -> Value {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ddb-relay"));
    cmd.arg("--stack").arg(stack).args(args);
    env_of(local, &mut cmd);
    let o = cmd.output().expect("run ddb-relay");
    assert_eq!(
        o.status.code(),
        Some(code),
        "ddb-relay {args:?}: {}",
        show(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let v = serde_json::from_str(&out).unwrap_or(Value::String(out));
    if args.contains(&"json") {
        relay_e2e::readme::check(args, &v);
    }
    v
}

/// Runs one printed command verbatim in bash; returns stdout.
fn sh(local: &Local, command: &str) -> String {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c").arg(format!("set -eo pipefail; {command}"));
    env_of(local, &mut cmd);
    let o = cmd.output().expect("run bash");
    assert!(
        o.status.success(),
        "printed command failed: {command}\n{}",
        show(&o)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Runs one printed command verbatim in bash, which may fail: (success,
/// stdout and stderr).
fn sh_may_fail(local: &Local, command: &str) -> (bool, String) {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c").arg(format!("set -eo pipefail; {command}"));
    env_of(local, &mut cmd);
    let o = cmd.output().expect("run bash");
    (o.status.success(), show(&o))
}

/// The command of the step whose description contains `what`.
fn step<'a>(steps: &'a Value, what: &str) -> &'a str {
    steps
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["what"].as_str().is_some_and(|w| w.contains(what)))
        })
        .and_then(|s| s["command"].as_str())
        .unwrap_or_else(|| panic!("no step {what:?} with a command in {steps:#}"))
}

/// The application's template: the source table (no Retain policies) and a
/// queue beside it, which an import must leave alone.
fn app_template(source: &str, extra: &[(&str, Value)], orders: Option<Value>) -> String {
    let mut resources = serde_json::Map::new();
    if let Some(o) = orders {
        resources.insert("Orders".into(), o);
    }
    resources.insert("Jobs".into(), json!({"Type": "AWS::SQS::Queue"}));
    for (k, v) in extra {
        resources.insert((*k).into(), v.clone());
    }
    let _ = source;
    serde_json::to_string_pretty(&json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {"Env": {"Type": "String", "Default": "test"}},
        "Resources": resources,
    }))
    .unwrap_or_default()
}

fn orders(source: &str) -> Value {
    json!({
        "Type": "AWS::DynamoDB::Table",
        "Properties": {
            "TableName": source,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "N"},
                {"AttributeName": "kind", "AttributeType": "S"}
            ],
            "KeySchema": [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"}
            ],
            "GlobalSecondaryIndexes": [{
                "IndexName": "by-kind",
                "KeySchema": [{"AttributeName": "kind", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"}
            }],
            "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
            "Tags": [{"Key": "team", "Value": "payments"}]
        }
    })
}

async fn wait_stack(local: &Local, stack: &str, limit: Duration) -> Result<String> {
    let start = Instant::now();
    loop {
        let d = local
            .cfn
            .describe_stacks()
            .stack_name(stack)
            .send()
            .await
            .map_err(sdk)?;
        let status = d
            .stacks()
            .first()
            .and_then(|s| s.stack_status())
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if !status.ends_with("_IN_PROGRESS") {
            return Ok(status);
        }
        if start.elapsed() > limit {
            bail!("stack {stack} still {status}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn create_stack(local: &Local, stack: &str, template: &str) -> Result<()> {
    local
        .cfn
        .create_stack()
        .stack_name(stack)
        .template_body(template)
        .send()
        .await
        .map_err(sdk)?;
    let status = wait_stack(local, stack, Duration::from_secs(60)).await?;
    if status != "CREATE_COMPLETE" {
        bail!("stack {stack}: {status}");
    }
    Ok(())
}

async fn update_stack(local: &Local, stack: &str, template: &str) -> Result<()> {
    local
        .cfn
        .update_stack()
        .stack_name(stack)
        .template_body(template)
        .send()
        .await
        .map_err(sdk)?;
    let status = wait_stack(local, stack, Duration::from_secs(60)).await?;
    if status != "UPDATE_COMPLETE" {
        bail!("stack {stack}: {status}");
    }
    Ok(())
}

async fn exists(local: &Local, table: &str) -> Result<bool> {
    match local.ddb.describe_table().table_name(table).send().await {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(sdk(e)),
    }
}

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ddb-relay-adopt-{tag}-{}", run_id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn the_target_is_adopted_into_the_apps_stack_and_the_source_retired_without_loss(
) -> Result<()> {
    let local = Local::connect().await?;
    let run = run_id();
    let (app, source, target, relay_stack) = (
        format!("app-{run}"),
        format!("adopt-src-{run}"),
        format!("adopt-tgt-{run}"),
        format!("adopt-{run}"),
    );
    // The application's stack owns the source, with neither Retain policy.
    create_stack(
        &local,
        &app,
        &app_template(&source, &[], Some(orders(&source))),
    )
    .await?;
    // Settings MiniStack's CloudFormation does not provision, set as a
    // console user would: TTL and PITR.
    local
        .ddb
        .update_time_to_live()
        .table_name(&source)
        .time_to_live_specification(
            aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires")
                .build()?,
        )
        .send()
        .await
        .map_err(sdk)?;
    local.enable_pitr(&source).await?;
    let stream = local
        .ddb
        .describe_table()
        .table_name(&source)
        .send()
        .await
        .map_err(sdk)?
        .table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no stream"))?;
    let stack = local
        .deploy(
            &relay_stack,
            &[
                ("SourceTableName", source.as_str()),
                ("SourceStreamArn", stream.as_str()),
                ("TargetTableName", target.as_str()),
                ("StreamBatchingWindowSeconds", "0"),
                ("CutoffMarginSeconds", "60"),
                ("ApplierTimeoutSeconds", "10"),
            ],
        )
        .await?;
    let st = stack.name.as_str();
    preload(&local, &source, 30).await?;

    // 1. preflight names the owning stack and warns; it does not block.
    let pre = relay(&local, st, &["preflight", "--output", "json"], 0);
    let check = |pre: &Value| {
        pre["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "source protection"))
            .cloned()
            .unwrap_or_else(|| panic!("no source protection check: {pre:#}"))
    };
    let c = check(&pre);
    assert_eq!(c["status"], "warn", "{c:#}");
    let detail = c["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("owned by stack {app} as Orders")),
        "{detail}"
    );
    assert!(detail.contains("ddb-relay protect"), "{detail}");

    // 2. protect: a dry run changes nothing; then it is on, and a delete fails.
    let dry = relay(&local, st, &["protect", "--dry-run", "--output", "json"], 0);
    assert_eq!(dry["now"], false);
    assert!(
        !local
            .ops
            .table_spec(&source)
            .await?
            .expect("source")
            .deletion_protection
    );
    let p = relay(&local, st, &["protect", "--output", "json"], 0);
    assert_eq!(
        (p["was"].as_bool(), p["now"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(p["owner"]["stack"], app.as_str());
    assert_eq!(p["owner"]["logical_id"], "Orders");
    assert!(
        local
            .ddb
            .delete_table()
            .table_name(&source)
            .send()
            .await
            .is_err(),
        "a protected table was deleted"
    );
    assert_eq!(
        check(&relay(&local, st, &["preflight", "--output", "json"], 0))["status"],
        "pass"
    );

    // 3. A short live migration.
    relay(&local, st, &["seed", "--method", "backup"], 0);
    let writer = Writer::start(&local, &source, 30, 10, 1_000);
    relay(&local, st, &["resume"], 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    writer.stop().await;
    let (_, diff) = local
        .wait_converged(&stack, Duration::from_secs(120))
        .await?;
    assert!(diff.is_clean(), "{diff:?}");
    relay(
        &local,
        st,
        &["finish", "--quiet", "3", "--timeout", "120"],
        0,
    );
    let migrated = local.scan(&target).await?;

    // The source has a resource policy of its own, which the read-only
    // step must keep and the rollback must put back.
    let source_arn = local
        .ddb
        .describe_table()
        .table_name(&source)
        .send()
        .await
        .map_err(sdk)?
        .table()
        .and_then(|t| t.table_arn())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no arn"))?;
    let own_policy = json!({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "Reader", "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::000000000000:root"},
            "Action": "dynamodb:GetItem", "Resource": source_arn}]
    });
    local
        .ddb
        .put_resource_policy()
        .resource_arn(&source_arn)
        .policy(own_policy.to_string())
        .send()
        .await
        .map_err(sdk)?;
    let policy_now = || async {
        let p = local
            .ddb
            .get_resource_policy()
            .resource_arn(&source_arn)
            .send()
            .await
            .map_err(sdk)?;
        Ok::<Value, anyhow::Error>(serde_json::from_str(p.policy().unwrap_or("null"))?)
    };

    // 4. adopt: the gaps a restore leaves, each fixed by its printed command.
    let dir = tmp_dir("files");
    let d = dir.to_str().unwrap_or_default();
    let a = relay(&local, st, &["adopt", "--write", d, "--output", "json"], 0);
    assert_eq!(
        a["into_stack"],
        app.as_str(),
        "the source's stack receives it"
    );
    assert_eq!(a["source_owner"]["logical_id"], "Orders");
    let gaps: Vec<&str> = a["gaps"]
        .as_array()
        .map(|g| g.iter().filter_map(|x| x["setting"].as_str()).collect())
        .unwrap_or_default();
    for want in ["ttl", "pitr", "stream", "tags", "deletion_protection"] {
        assert!(gaps.contains(&want), "{want} not among {gaps:?}");
    }
    for g in a["gaps"].as_array().into_iter().flatten() {
        sh(&local, g["fix"].as_str().unwrap_or_default());
    }
    let a = relay(&local, st, &["adopt", "--write", d, "--output", "json"], 0);
    assert_eq!(a["gaps"], json!([]), "{:#}", a["gaps"]);
    let logical = a["logical_id"].as_str().unwrap_or_default().to_string();
    assert_eq!(logical, relay_core::iac::render::logical_id(&target));

    // The printed definition is the live table, setting for setting.
    let live = local.ops.table_spec(&target).await?.expect("target");
    let printed_yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("resource.yaml"))?)?;
    let printed = TableSpec::from_cfn(&printed_yaml["Resources"][logical.as_str()]["Properties"])
        .map_err(|e| anyhow!(e))?;
    assert_eq!(printed, live);
    assert_eq!(
        printed.gsis.len(),
        1,
        "the restore kept the index: {printed:?}"
    );
    assert!(printed.pitr && printed.deletion_protection && printed.ttl_attribute.is_some());

    // Round trip: a table created from the printed definition by
    // CloudFormation describes like the target. MiniStack's CloudFormation
    // does not provision TTL or PITR (compared above through the text).
    let rt = format!("{target}-rt");
    let mut res: Value = a["cloudformation"]["resource"].clone();
    res["Properties"]["TableName"] = json!(rt);
    res["Properties"]["DeletionProtectionEnabled"] = json!(false);
    create_stack(
        &local,
        &format!("rt-{run}"),
        &serde_json::to_string(&json!({"Resources": {"Rt": res}}))?,
    )
    .await?;
    let made = local.ops.table_spec(&rt).await?.expect("round-trip table");
    assert_eq!(
        made.differences(&live, &["ttl_attribute", "pitr", "deletion_protection"]),
        Vec::<String>::new(),
        "{made:#?}\n{live:#?}"
    );

    // 5. Import into the app's stack: the printed steps, verbatim.
    let steps = &a["cloudformation"]["steps"];
    assert!(std::fs::read_to_string(dir.join("import-template"))?.contains("\"Jobs\""));
    sh(&local, step(steps, "Create the IMPORT change set"));
    let listed = sh(&local, step(steps, "Wait for it"));
    let listed: Value = serde_json::from_str(&listed)?;
    assert_eq!(
        listed,
        json!([["Import", logical, target]]),
        "one change: the import of the table"
    );
    sh(&local, step(steps, "Execute it"));
    let drift = sh(&local, step(steps, "Check for drift"));
    assert!(
        drift.contains("matches the live table: no drift"),
        "{drift}"
    );
    // CloudFormation's drift detection: MiniStack refuses it in
    // IMPORT_COMPLETE, as the step says; after the next update it runs.
    let cfn_drift = step(steps, "CloudFormation's own drift detection").to_string();
    let (ok, said) = sh_may_fail(&local, &cfn_drift);
    assert!(
        (ok && said.contains("IN_SYNC")) || (!ok && said.contains("IMPORT_COMPLETE")),
        "{said}"
    );
    let held = local
        .cfn
        .describe_stack_resources()
        .stack_name(&app)
        .send()
        .await
        .map_err(sdk)?;
    assert!(held
        .stack_resources()
        .iter()
        .any(|r| r.logical_resource_id() == Some(logical.as_str())
            && r.physical_resource_id() == Some(target.as_str())));
    // Adopting again finds it in the stack: nothing to import.
    let again = relay(&local, st, &["adopt", "--output", "json"], 0);
    assert_eq!(again["already_in"]["stack"], app.as_str());
    assert_eq!(again["drift"], json!([]), "{again:#}");
    assert_eq!(
        again["cloudformation"]["steps"],
        json!([]),
        "nothing to import"
    );
    // A live change the stack does not declare is drift: adopt says which
    // setting and exits 3, so the printed `adopt && deploy` gate stops.
    let tag = format!("aws dynamodb tag-resource --resource-arn \"$(aws dynamodb describe-table --table-name {target} --query Table.TableArn --output text)\" --tags Key=drifted,Value=on");
    sh(&local, &tag);
    let drifted = relay(&local, st, &["adopt", "--output", "json"], 3);
    assert_eq!(drifted["drift"], json!(["tags"]), "{drifted:#}");
    let (ok, said) = sh_may_fail(&local, step(steps, "Check for drift"));
    assert!(!ok && said.contains("DRIFTED"), "{said}");
    sh(&local, &format!("aws dynamodb untag-resource --resource-arn \"$(aws dynamodb describe-table --table-name {target} --query Table.TableArn --output text)\" --tag-keys drifted"));
    relay(&local, st, &["adopt", "--output", "json"], 0);

    // 6. Retire the source: the runbook, verbatim where it is a command.
    let retire = &a["retire"];
    sh(&local, step(retire, "Keep"));
    sh(&local, step(retire, "Rollback window"));
    let read_only = policy_now().await?;
    let statements = read_only["Statement"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        statements.len(),
        2,
        "the table's own statement is kept: {read_only:#}"
    );
    assert_eq!(statements[0]["Sid"], "Reader");
    assert_eq!(statements[1]["Effect"], "Deny");
    // The rollback is apart from the steps, and puts the table's own
    // policy back.
    assert!(!retire.to_string().contains("delete-resource-policy"));
    sh(
        &local,
        a["rollback"]["command"].as_str().unwrap_or_default(),
    );
    assert_eq!(policy_now().await?, own_policy, "the rollback restores it");
    // The printed put was conditional on the revision adopt read: the
    // policy changed since, so it fails; adopt --write again reads it anew.
    let (ok, said) = sh_may_fail(&local, step(retire, "Rollback window"));
    assert!(!ok, "a stale read-only step must not overwrite: {said}");
    let fresh = relay(&local, st, &["adopt", "--write", d, "--output", "json"], 0);
    sh(&local, step(&fresh["retire"], "Rollback window"));
    assert_eq!(policy_now().await?["Statement"][1]["Effect"], "Deny");
    // adopt run again inside the window reads our Deny back: its rollback
    // still restores the table's own policy, not the read-only one.
    let inside = relay(&local, st, &["adopt", "--write", d, "--output", "json"], 0);
    sh(
        &local,
        inside["rollback"]["command"].as_str().unwrap_or_default(),
    );
    assert_eq!(
        policy_now().await?,
        own_policy,
        "the rollback lifts read-only"
    );
    let again = relay(&local, st, &["adopt", "--write", d, "--output", "json"], 0);
    sh(&local, step(&again["retire"], "Rollback window"));
    let adopted = a["cloudformation"]["resource"].clone();
    let mut retained = orders(&source);
    retained["DeletionPolicy"] = json!("Retain");
    retained["UpdateReplacePolicy"] = json!("Retain");
    update_stack(
        &local,
        &app,
        &app_template(
            &source,
            &[(logical.as_str(), adopted.clone())],
            Some(retained),
        ),
    )
    .await?;
    let says = sh(&local, step(retire, "set `DeletionPolicy: Retain`"));
    assert!(
        says.contains("DeletionPolicy Retain, UpdateReplacePolicy Retain"),
        "{says}"
    );
    // The stack was updated: CloudFormation's drift detection runs now.
    let (ok, said) = sh_may_fail(&local, &cfn_drift);
    assert!(ok && said.contains("IN_SYNC"), "{said}");
    update_stack(
        &local,
        &app,
        &app_template(&source, &[(logical.as_str(), adopted)], None),
    )
    .await?;
    let out = sh(&local, step(retire, "Remove Orders"));
    assert!(
        out.contains(&format!("Orders is out of stack {app}")) && out.contains("ACTIVE"),
        "out of the stack, still there: {out}"
    );
    sh(&local, step(retire, "Delete the ddb-relay stack"));
    sh(&local, step(retire, "the control table"));
    sh(&local, step(retire, "its three queues"));
    for q in [&stack.queue_url, &stack.dlq_url, &stack.stream_failure_url] {
        let (ok, said) = sh_may_fail(
            &local,
            &format!("aws sqs get-queue-attributes --queue-url {q} --attribute-names All"),
        );
        assert!(!ok, "the retained queue {q} went too: {said}");
    }
    let before = local.scan(&source).await?;
    assert_eq!(before, migrated, "the source still holds what was migrated");
    assert!(
        !exists(&local, &stack.control_table).await?,
        "the retained control table went too"
    );
    // The gate refuses a backup that is not the one just made, even with an
    // older AVAILABLE backup of the same name there (the old gate looked
    // backups up by name).
    local
        .ddb
        .create_backup()
        .table_name(&source)
        .backup_name(format!("{source}-retired"))
        .send()
        .await
        .map_err(sdk)?;
    let gate = step(retire, "turn deletion protection off and delete");
    std::fs::write(
        dir.join("retired-backup-arn"),
        format!("{source_arn}/backup/01234567890123-nothere\n"),
    )?;
    let (ok, said) = sh_may_fail(&local, gate);
    assert!(!ok, "{said}");
    assert!(exists(&local, &source).await?, "refused: the source stays");
    let arn = sh(&local, step(retire, "last on-demand backup"));
    assert_eq!(
        std::fs::read_to_string(dir.join("retired-backup-arn"))?.trim(),
        arn.trim()
    );
    sh(&local, gate);
    assert!(
        !exists(&local, &source).await?,
        "the source is deleted, on purpose, last"
    );
    let backups = local
        .ddb
        .list_backups()
        .table_name(&source)
        .send()
        .await
        .map_err(sdk)?;
    assert!(
        !backups.backup_summaries().is_empty(),
        "the last backup is kept"
    );
    assert_eq!(
        local.scan(&target).await?,
        migrated,
        "the target is untouched"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(aws_wrapper(&repo_root().join(".venv/bin")));
    local
        .cfn
        .delete_stack()
        .stack_name(format!("rt-{run}"))
        .send()
        .await
        .map_err(sdk)?;
    Ok(())
}
