//! A set of tables migrated with one plan on the local emulator: three live
//! tables, one into a target in the stack's region, one into a second
//! region, one into another account through an assumed role; deployed with
//! `ddb-relay --plan FILE deploy` (`sam deploy` per pair) and driven with
//! `--plan` only. MiniStack keeps regions apart and takes a 12-digit access
//! key id as the account (STS AssumeRole returns credentials of the role's
//! account), so the two foreign targets are really elsewhere: same table
//! name as their source, unreachable with the stack's own client.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use relay_e2e::{preload, repo_root, run_id, Local, Writer};
use serde_json::Value;

const OTHER_ACCOUNT: &str = "222222222222";

fn plan_cli(local: &Local, args: &[&str]) -> Output {
    let root = repo_root();
    let path = format!(
        "{}:{}",
        root.join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new(env!("CARGO_BIN_EXE_ddb-relay"))
        .args(args)
        .env("AWS_ENDPOINT_URL", &local.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("SAM_CLI_TELEMETRY", "0")
        .env("PATH", path)
        .env_remove("DDB_RELAY_STACK")
        .env_remove("DDB_RELAY_PLAN")
        .env_remove("AWS_PROFILE")
        .current_dir(&root)
        .output()
        .expect("run ddb-relay")
}

/// `ddb-relay --plan FILE --output json ARGS`, expecting exit `code`.
fn plan_json(local: &Local, plan: &Path, args: &[&str], code: i32) -> Value {
    let mut all = vec![
        "--plan",
        plan.to_str().unwrap_or_default(),
        "--output",
        "json",
    ];
    all.extend_from_slice(args);
    let o = plan_cli(local, &all);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        o.status.code(),
        Some(code),
        "ddb-relay {all:?}\nstdout:\n{out}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::String(out));
    relay_e2e::readme::check(&["--plan"], &v);
    v
}

fn pair<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["pairs"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pair"] == name))
        .unwrap_or(&Value::Null)
}

struct Pair<'a> {
    name: &'static str,
    source: String,
    target: String,
    /// Clients where the target is.
    at: &'a Local,
}

/// Waits until every pair's target equals its source.
async fn wait_all_converged(local: &Local, pairs: &[Pair<'_>], limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let mut left = Vec::new();
        for p in pairs {
            let s = local.scan(&p.source).await?;
            let t = p.at.scan(&p.target).await?;
            let d = relay_core::diff::diff(&s, &t);
            if !d.is_clean() {
                left.push(format!("{}: {d:?}", p.name));
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("not converged after {limit:?}: {}", left.join("; "));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn three_tables_one_plan_another_region_and_another_account() -> Result<()> {
    let local = Local::connect().await?;
    let west = Local::connect_as("us-west-2", None).await?;
    let other = Local::connect_as("us-east-1", Some(OTHER_ACCOUNT)).await?;
    let run = run_id();
    let name = format!("plan-{run}");
    let (a, b, c) = (
        format!("{name}-here"),
        format!("{name}-west"),
        format!("{name}-acct"),
    );
    let keys = [("pk", "S"), ("sk", "N")];
    for t in [&a, &b, &c] {
        local.create_source_table(t).await?;
        preload(&local, t, 30).await?;
    }
    // The targets your IaC created: one here, one in us-west-2 and one in
    // the other account, both with their source's name.
    local.create_target_table(&format!("{a}-v2"), &keys).await?;
    west.create_target_table(&b, &keys).await?;
    other.create_target_table(&c, &keys).await?;
    let pairs = [
        Pair {
            name: "here",
            source: a.clone(),
            target: format!("{a}-v2"),
            at: &local,
        },
        Pair {
            name: "west",
            source: b.clone(),
            target: b.clone(),
            at: &west,
        },
        Pair {
            name: "acct",
            source: c.clone(),
            target: c.clone(),
            at: &other,
        },
    ];

    let dir = tempfile::tempdir()?;
    let plan: PathBuf = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            r#"version: 1
name: {name}
region: us-east-1
parallel: 3
# The local deploy's settings (infra/local/deploy.sh says why).
parameters:
  Architecture: x86_64
  MetricsMode: putmetricdata
  ApplierMaxConcurrency: "0"
  ParallelizationFactor: "1"
  WorkerConcurrency: "0"
  WorkerTimeoutSeconds: "30"
  CutoffMarginSeconds: "60"
  ApplierTimeoutSeconds: "10"
pairs:
  - name: here
    source: {a}
    target: {a}-v2
    seed: scan
  - name: west
    source: {b}
    target: {b}
    seed: scan
    # On the stack's copy workers: they reach us-west-2 too.
    seed_args: [--segments, "2", --fan-out]
    target_region: us-west-2
  - name: acct
    source: {c}
    target: {c}
    seed: scan
    target_role_arn: arn:aws:iam::{OTHER_ACCOUNT}:role/ddb-relay-target
    target_external_id: {name}
"#
        ),
    )?;

    // A plan that cannot run is refused before any AWS call, naming the field.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&plan)?.replacen(
            "    seed: scan\n    target_role_arn",
            "    seed: backup\n    target_role_arn",
            1,
        ),
    )?;
    let o = plan_cli(
        &local,
        &["--plan", bad.to_str().unwrap_or_default(), "preflight"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pairs[2].seed: backup cannot seed a target in another account"),
        "{err}"
    );

    let template = repo_root().join(".aws-sam/build/template.yaml");
    let dep = plan_json(
        &local,
        &plan,
        &[
            "deploy",
            "--template-file",
            template.to_str().unwrap_or_default(),
        ],
        0,
    );
    assert_eq!(dep["verdict"], "OK", "{dep:#}");
    assert_eq!(
        dep["pairs"].as_array().map(Vec::len),
        Some(4),
        "3 stacks and the dashboard: {dep:#}"
    );
    for p in &pairs {
        // MiniStack leaves a disabled trigger polling: as infra/local/deploy.sh does.
        let st = format!("{name}-{}", p.name);
        let o = std::process::Command::new(repo_root().join(".venv/bin/python"))
            .arg(repo_root().join("infra/local/after_deploy.py"))
            .arg(&st)
            .env("AWS_ENDPOINT_URL", &local.endpoint)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .output()?;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let stack = local.stack(&format!("{name}-west")).await?;
    assert_eq!(stack.target.region.as_deref(), Some("us-west-2"));

    let writers: Vec<Writer> = pairs
        .iter()
        .map(|p| Writer::start(&local, &p.source, 40, 15, 100_000))
        .collect();

    let pre = plan_json(&local, &plan, &["preflight"], 0);
    assert_eq!(pre["verdict"], "OK", "{pre:#}");
    let place = pair(&pre, "acct")["result"]["checks"].to_string();
    assert!(
        place.contains(&format!("{c}@us-east-1/{OTHER_ACCOUNT}")),
        "{place}"
    );

    let seed = plan_json(&local, &plan, &["seed"], 0);
    for p in &pairs {
        let r = &pair(&seed, p.name)["result"];
        assert_eq!(r["method"], "scan", "{seed:#}");
        // The writers race the copy: an item the applier put first is skipped.
        let seen = r["copied"].as_u64().unwrap_or(0) + r["skipped_existing"].as_u64().unwrap_or(0);
        assert!(seen > 0, "{}: {r:#}", p.name);
    }

    tokio::time::sleep(Duration::from_secs(5)).await;
    for w in writers {
        let counts = w.stop().await;
        assert!(counts.total() > 20, "{}", counts.summary());
    }
    wait_all_converged(&local, &pairs, Duration::from_secs(180)).await?;

    // Not GO before a clean verify of each pair: the set is NO-GO.
    let nogo = plan_json(&local, &plan, &["cutover", "--max-lag", "600"], 3);
    assert_eq!(nogo["verdict"], "NO-GO", "{nogo:#}");
    let v = plan_json(&local, &plan, &["verify"], 0);
    for p in &pairs {
        assert_eq!(pair(&v, p.name)["result"]["clean"], true, "{v:#}");
    }
    // The workers' verify reaches the foreign targets as well.
    let vf = plan_json(
        &local,
        &plan,
        &["verify", "--fan-out", "--segments", "2"],
        0,
    );
    for p in &pairs {
        let r = &pair(&vf, p.name)["result"];
        assert_eq!(r["clean"], true, "{vf:#}");
        assert!(r["compared"].as_u64().unwrap_or(0) > 0, "{}: {r:#}", p.name);
    }
    let go = plan_json(&local, &plan, &["cutover", "--max-lag", "600"], 0);
    assert_eq!(go["verdict"], "GO", "{go:#}");

    let pol = plan_json(&local, &plan, &["iam-policy"], 0);
    assert!(
        pair(&pol, "here")["result"]["policies"].is_null(),
        "{pol:#}"
    );
    let trust =
        &pair(&pol, "acct")["result"]["policies"]["target_role_trust_policy"]["Statement"][0];
    assert_eq!(
        trust["Condition"]["StringEquals"]["sts:ExternalId"],
        name.as_str(),
        "{pol:#}"
    );

    // An import by the target account's IaC names the bucket's owner.
    let o = plan_cli(
        &local,
        &[
            "--stack",
            &format!("{name}-acct"),
            "--output",
            "json",
            "seed",
            "--method",
            "export",
            "--print-import-spec",
            "--s3-bucket",
            "exports",
        ],
    );
    let spec: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(
        spec["ImportSourceSpecification"]["S3BucketSource"]["S3BucketOwner"],
        "000000000000",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let fin = plan_json(
        &local,
        &plan,
        &["finish", "--quiet", "3", "--timeout", "120"],
        0,
    );
    assert_eq!(fin["verdict"], "OK", "{fin:#}");
    for p in &pairs {
        let s = local.scan(&p.source).await?;
        let t = p.at.scan(&p.target).await?;
        let d = relay_core::diff::diff(&s, &t);
        assert!(d.is_clean(), "{}: tables differ at the end: {d:?}", p.name);
        assert!(!s.is_empty(), "{}: nothing migrated", p.name);
    }
    Ok(())
}
