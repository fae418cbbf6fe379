use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    let cli = Cli::try_parse_from(std::iter::once("ddb-relay").chain(args.iter().copied()))?;
    cli.validate()?;
    Ok(cli)
}

fn usage_error(args: &[&str], flag: &str) {
    let err = parse(args).expect_err("a usage error");
    assert_eq!(err.exit_code(), 2, "{args:?}");
    let text = err.to_string();
    assert!(text.contains(flag), "{args:?}: {text}");
}

#[test]
fn bad_arguments_are_usage_errors_naming_the_flag() {
    usage_error(&["restart", "--method", "pitr"], "--method");
    usage_error(
        &["preflight", "--from-export", "s3://b/p/AWSDynamoDB/1"],
        "--from-export",
    );
    usage_error(&["verify", "--sample", "250"], "--sample");
    usage_error(&["verify", "--sample=-1"], "--sample");
    usage_error(&["seed", "--method", "scan", "--at", "now"], "--at");
    usage_error(
        &["seed", "--method", "scan", "--s3-bucket", "b"],
        "--s3-bucket",
    );
    usage_error(&["seed", "--method", "backup", "--at", "now"], "--at");
    usage_error(&["seed", "--method", "pitr", "--at", "yesterday"], "--at");
    usage_error(&["replay", "--from", "last tuesday"], "--from");
    usage_error(&["seed", "--method", "export"], "--s3-bucket");
    usage_error(
        &["seed", "--method", "backup", "--segments", "8"],
        "--segments",
    );
    usage_error(&["restart", "--rate", "5"], "--rate");
    usage_error(&["verify", "--segments", "0"], "--segments");
    // A verify has no copy's write limits, in its help or its parse.
    usage_error(&["verify", "--rate", "5"], "--rate");
    usage_error(&["verify", "--max-wcu", "5"], "--max-wcu");
    // The workers' limit is checked before anything runs.
    usage_error(&["verify", "--fan-out", "--segments", "1001"], "--segments");
}

#[test]
fn good_arguments_parse() {
    for args in [
        &["seed", "--method", "pitr", "--at", "2026-11-24T18:00:00Z"][..],
        &[
            "seed",
            "--method",
            "scan",
            "--segments",
            "8",
            "--rate",
            "100",
        ],
        &[
            "seed",
            "--method",
            "export",
            "--s3-bucket",
            "b",
            "--at",
            "now",
        ],
        &["restart", "--method", "scan", "--segments", "2"],
        &["replay", "--from", "1700000000000", "--no-resume"],
        &["verify", "--sample", "12.5", "--repair"],
        &["verify", "--fan-out", "--segments", "1000"],
        &["verify", "--segments", "5000"],
        &["cutover", "--no-verify"],
    ] {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
}
