//! `ddb-relay`: the operator CLI. See `ddb-relay --help` and the README's
//! runbook.

use anyhow::{anyhow, Result};
use clap::Parser;
use ddb_relay::args::Cli;
use ddb_relay::ctx::Ctx;
use relay_aws::operator::Sdk;
use relay_aws::runtime::Clock;

/// Exit codes: 0 done (GO, no blocker), 1 error, 2 usage, 3 NO-GO (cutover
/// NO-GO, a preflight blocker, a verify divergence, finish NOT READY, adopt
/// drift).
fn main() {
    let args: Vec<String> = std::env::args().collect();
    match ddb_relay::plan::plan_args(&args, std::env::var("DDB_RELAY_PLAN").ok()) {
        Ok(None) => {}
        Ok(Some(plan)) => {
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| args[0].clone());
            std::process::exit(plan_main(&exe, plan))
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
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

/// `--plan FILE COMMAND`: the command on every pair (usage errors exit 2).
fn plan_main(exe: &str, a: ddb_relay::plan::PlanArgs) -> i32 {
    let region = a
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok());
    let plan = match ddb_relay::plan::load(&a.file, region.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    // Every pair's command line must parse before anything runs.
    let mut first = None;
    for p in &plan.pairs {
        let argv = std::iter::once(exe.to_string())
            .chain(ddb_relay::plan::pair_args(&plan, &a.file, p, &a.rest));
        match Cli::try_parse_from(argv).and_then(|c| c.validate().map(|_| c)) {
            Ok(c) => first = first.or(Some(c)),
            Err(e) => {
                eprintln!("pair {}:", p.name);
                e.exit();
            }
        }
    }
    let Some(cli) = first else { return 2 };
    if let ddb_relay::args::Command::Watch { count: None, .. } = &cli.command {
        eprintln!("error: with --plan, watch needs --count N (each pair's watch is its own process, and `parallel` of them run at once)");
        return 2;
    }
    if let ddb_relay::args::Command::Deploy {
        template_file,
        sam,
        dry_run,
        sam_args,
    } = &cli.command
    {
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return 1;
            }
        };
        let opts = ddb_relay::commands::deploy::DeployOpts {
            template_file,
            sam,
            profile: cli.global.profile.as_deref(),
            dry_run: *dry_run,
            sam_args,
        };
        let g = &cli.global;
        let done = runtime.block_on(async {
            let conf = sdk_config(
                g.profile.as_deref(),
                Some(plan.region()),
                g.endpoint_url.as_deref(),
            )
            .await;
            ddb_relay::commands::deploy::deploy(&Sdk::new(&conf), &plan, &a.file, &opts, a.json)
                .await
        });
        return match done {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        };
    }
    ddb_relay::plan::run_command(&exe.into(), &a, &plan)
}

async fn sdk_config(
    profile: Option<&str>,
    region: Option<&str>,
    endpoint: Option<&str>,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(p) = profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

async fn run(cli: Cli) -> Result<i32> {
    let g = &cli.global;
    let conf = sdk_config(
        g.profile.as_deref(),
        g.region.as_deref(),
        g.endpoint_url.as_deref(),
    )
    .await;
    let region = conf
        .region()
        .map(|r| r.to_string())
        .ok_or_else(|| anyhow!("no AWS region: pass --region or set AWS_REGION"))?;
    let name = g.stack.clone().ok_or_else(|| {
        anyhow!("no stack: pass --stack NAME (the ddb-relay stack of this migration) or set DDB_RELAY_STACK")
    })?;
    // Every time a command compares or records is AWS's (its responses'
    // `Date`), the clock of the event times, backups and stream labels.
    let sdk = Sdk::new(&conf);
    let aws_time = sdk.server_time();
    let clock = Clock::following(Clock::wall(), aws_time.clone());
    let mut ctx = Ctx::for_stack(sdk, &name, &region, clock).await?;
    // Before the target is renamed to its handle (name@region/account).
    ddb_relay::ctx::check_plan_pair(
        &ctx.stack,
        &region,
        std::env::var(relay_core::plan::EXPECTED_ENV).ok(),
    )?;
    // A target in another region or account: its own client (and role).
    ctx.aws.route_target(&conf, &mut ctx.stack, &region).await;
    ddb_relay::ctx::check_target_is_not_source(&ctx.aws, &ctx.stack).await?;
    ctx.output = g.output;
    ctx.transform_file = g.transform.clone();
    if let Some(note) = ddb_relay::ctx::clock_note(Clock::wall().now_ms(), aws_time.now_ms()) {
        ctx.step(&note);
    }
    ddb_relay::commands::run(&ctx, cli.command).await
}
