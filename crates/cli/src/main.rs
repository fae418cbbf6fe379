//! `ddb-relay`: the operator CLI. See `ddb-relay --help` and the README's
//! runbook.

use anyhow::{anyhow, Result};
use clap::Parser;
use ddb_relay::args::Cli;
use ddb_relay::ctx::Ctx;
use relay_aws::operator::Sdk;
use relay_aws::runtime::Clock;

/// Exit codes: 0 done (GO, no blocker), 1 error, 2 usage, 3 NO-GO or blocker.
fn main() {
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        e.exit();
    }
    let filter = if cli.global.verbose > 0 {
        "ddb_relay=debug,relay_aws=debug,warn"
    } else {
        "error"
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let verbose = cli.global.verbose > 0;
    match runtime.block_on(run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) if verbose => {
            eprintln!("error: {e:?}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(p) = &g.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &g.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(e) = &g.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    let conf = loader.load().await;
    let region = conf
        .region()
        .map(|r| r.to_string())
        .ok_or_else(|| anyhow!("no AWS region: pass --region or set AWS_REGION"))?;
    let name = g.stack.clone().ok_or_else(|| {
        anyhow!("no stack: pass --stack NAME (the ddb-relay stack of this migration) or set DDB_RELAY_STACK")
    })?;
    let mut ctx = Ctx::for_stack(Sdk::new(&conf), &name, &region, Clock::wall()).await?;
    ctx.output = g.output;
    ctx.transform_file = g.transform.clone();
    ddb_relay::commands::run(&ctx, cli.command).await
}
