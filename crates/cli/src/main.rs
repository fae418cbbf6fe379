//! `ddb-relay`: the operator CLI. See `ddb-relay --help` and the README's
//! runbook.
#![allow(clippy::print_stdout)] // a command-line program prints its results

mod args;
mod commands;
mod copy;
mod ctx;
mod dlq;

use clap::Parser;

/// Exit codes: 0 done (GO, no blocker), 1 error, 2 usage, 3 NO-GO or blocker.
pub const EXIT_NO_GO: i32 = 3;

fn main() {
    let cli = args::Cli::parse();
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
    match runtime.block_on(commands::run(cli)) {
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
