//! The CLI binary without any AWS endpoint: usage errors are caught before
//! any AWS call (exit 2, naming the flag), and a missing credential is named
//! as such, with where credentials are looked up (`-v` adds the SDK chain).

use std::process::{Command, Output};

fn bare(args: &[&str]) -> Output {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let home = std::env::temp_dir().join(format!("ddb-relay-nohome-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&home).expect("empty home");
    let out = Command::new(env!("CARGO_BIN_EXE_ddb-relay"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("run ddb-relay");
    std::fs::remove_dir_all(&home).ok();
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn usage_errors_name_the_flag_before_any_aws_call() {
    // A closed port: reaching AWS would be a different error.
    let at = ["--stack", "s", "--endpoint-url", "http://127.0.0.1:9"];
    for (args, flag) in [
        (&["restart", "--method", "pitr"][..], "--method"),
        (&["verify", "--sample", "250"], "--sample"),
        (&["seed", "--method", "scan", "--at", "now"], "--at"),
        (
            &["seed", "--method", "scan", "--s3-bucket", "b"],
            "--s3-bucket",
        ),
        (&["seed", "--method", "pitr", "--at", "next week"], "--at"),
        (&["replay", "--from", "soon"], "--from"),
        (&["seed", "--method", "scan", "--load"], "--load"),
        (
            &["seed", "--method", "export", "--from-export", "b/x"],
            "--from-export",
        ),
        (
            &[
                "seed",
                "--method",
                "export",
                "--from-export",
                "s3://b/AWSDynamoDB/x",
                "--s3-bucket",
                "b",
            ],
            "--from-export",
        ),
        (
            &[
                "seed",
                "--method",
                "export",
                "--load",
                "--print-import-spec",
                "--s3-bucket",
                "b",
            ],
            "--print-import-spec",
        ),
        (
            &[
                "seed",
                "--method",
                "export",
                "--s3-bucket",
                "b",
                "--segments",
                "8",
            ],
            "--segments",
        ),
    ] {
        let all: Vec<&str> = at.iter().copied().chain(args.iter().copied()).collect();
        let o = bare(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn missing_credentials_are_named_not_taken_for_the_network() {
    let o = bare(&[
        "--stack",
        "s",
        "--endpoint-url",
        "http://127.0.0.1:9",
        "status",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("no AWS credentials found"), "{err}");
    assert!(
        err.contains("AWS_PROFILE") && !err.contains("network"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let o = bare(&[
        "--stack",
        "s",
        "--endpoint-url",
        "http://127.0.0.1:9",
        "-v",
        "status",
    ]);
    let err = stderr(&o);
    assert!(
        err.contains("Caused by") && err.contains("credential"),
        "-v shows the SDK chain: {err}"
    );
}

/// A plan that cannot run, or a command a plan cannot run, is a usage error
/// (exit 2) naming the field, before any AWS call.
#[test]
fn a_bad_plan_is_refused_before_any_aws_call() {
    let dir = std::env::temp_dir().join(format!("ddb-relay-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let plan = dir.join("p.yaml");
    let good = "version: 1\nname: shop\nregion: us-east-1\npairs:\n  - {name: a, source: aaa, target: bbb, seed: scan}\n  - {name: b, source: ccc, target: ccc, seed: backup, target_role_arn: 'arn:aws:iam::222222222222:role/t'}\n";
    std::fs::write(&plan, good).expect("plan");
    let p = plan.to_str().unwrap_or_default();
    let at = ["--endpoint-url", "http://127.0.0.1:9"];
    let o = bare(&[&at[..], &["--plan", p, "preflight"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("pairs[1].seed: backup cannot seed a target in another account"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&plan, good.replace("seed: backup", "seed: scan")).expect("plan");
    let o = bare(&[&at[..], &["--plan", p, "watch"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--count"), "{}", stderr(&o));
    let o = bare(&[&at[..], &["--plan", p, "verify", "--sample", "250"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--sample"), "{}", stderr(&o));
    let o = bare(&[&at[..], &["--plan", p, "--stack", "x", "status"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).ok();
}
