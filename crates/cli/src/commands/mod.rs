//! The commands, one file each. Every command gathers facts through the
//! [`relay_aws::operator::Aws`] traits, lets `relay_core::decide` decide,
//! acts, and returns a typed report ([`crate::report::Report`]).

pub mod adopt;
pub mod copy;
pub mod cutover;
pub mod deploy;
pub mod dlq;
pub mod fanout;
pub mod finish;
pub mod iam_policy;
pub mod lease;
pub mod load;
pub mod parts;
pub mod pause;
pub mod preflight;
pub mod protect;
pub mod replay;
pub mod scan;
pub mod seed;
pub mod status;
pub mod stream_failures;
pub mod verify;
pub mod verify_fanout;
pub mod verify_part;

use anyhow::Result;
use relay_aws::operator::Aws;
use relay_core::decide::CutoverThresholds;

use crate::args::{Command, DlqCommand, Method, RestartMethod};
use crate::ctx::Ctx;
use crate::report::emit;

/// Refuses a seed the AWS API cannot run into a target in another region
/// or account (the message names the methods that can).
fn check_reach<A: Aws>(ctx: &Ctx<A>, command: &Command) -> Result<()> {
    let method = match command {
        Command::Seed {
            print_import_spec: true,
            ..
        } => return Ok(()),
        Command::Seed { method, .. } => method.as_str(),
        Command::Restart {
            method: RestartMethod::Backup,
            ..
        } => "backup",
        Command::Replay { .. } => "pitr",
        _ => return Ok(()),
    };
    if let relay_core::place::SeedReach::Refused(why) = ctx.stack.target.seed_reach(method, "") {
        anyhow::bail!(
            "a {method} seed cannot reach {} (another {}): {why}",
            ctx.stack.target_table,
            if ctx.stack.target.assumes_role() {
                "account"
            } else {
                "region"
            }
        );
    }
    Ok(())
}

/// Refuses a repair (`verify --repair`, `dlq repair`) of a finished
/// migration without `--after-finish`: a repair writes the source's state
/// into the target, and once the application writes to the target that
/// overwrites its writes with older data. The tool cannot see the switch;
/// the operator says it has not happened.
async fn refuse_repair_after_finish<A: Aws>(ctx: &Ctx<A>, command: &Command) -> Result<()> {
    let what = match command {
        Command::Verify {
            repair: true,
            after_finish: false,
            ..
        } => "verify --repair",
        Command::Dlq {
            command:
                DlqCommand::Repair {
                    after_finish: false,
                    dry_run: false,
                    ..
                },
        } => "dlq repair",
        _ => return Ok(()),
    };
    if let Some(t) = ctx.control().await?.finished_ms {
        anyhow::bail!(
            "this migration was finished at {}: once the application writes to {}, a repair from the source overwrites its writes with older data. If the application has not been switched to it, run `{what} --after-finish`",
            crate::ctx::rfc3339(t),
            ctx.stack.target_table
        );
    }
    Ok(())
}

/// Runs a command and prints its report; returns the exit code.
pub async fn run<A: Aws>(ctx: &Ctx<A>, command: Command) -> Result<i32> {
    let out = ctx.output;
    check_reach(ctx, &command)?;
    refuse_repair_after_finish(ctx, &command).await?;
    Ok(match command {
        Command::IamPolicy { operator_arn } => emit(
            out,
            &iam_policy::iam_policy(ctx, operator_arn.as_deref()).await?,
        ),
        Command::Protect { target, dry_run } => {
            emit(out, &protect::protect(ctx, target, dry_run).await?)
        }
        Command::Adopt {
            logical_id,
            into_stack,
            write,
        } => emit(
            out,
            &adopt::adopt(
                ctx,
                &adopt::AdoptArgs {
                    logical_id,
                    into_stack,
                    write,
                },
            )
            .await?,
        ),
        Command::Deploy { .. } => anyhow::bail!(
            "deploy works on a plan: ddb-relay --plan FILE deploy (one stack: sam deploy, README \"Deploy\")"
        ),
        Command::Preflight {
            method,
            load,
            from_export,
        } => emit(
            out,
            &preflight::preflight(ctx, method, load, from_export.as_deref()).await?,
        ),
        Command::Seed {
            method: Method::Export,
            print_import_spec: true,
            s3_bucket,
            s3_prefix,
            ..
        } => emit(
            out,
            &seed::print_import_spec(ctx, s3_bucket.as_deref().unwrap_or_default(), &s3_prefix)
                .await?,
        ),
        Command::Seed {
            method: Method::Scan,
            copy,
            dry_run,
            ..
        } => emit(out, &scan::seed_scan(ctx, copy, dry_run, false).await?),
        Command::Seed {
            method: Method::Export,
            load,
            from_export,
            s3_bucket,
            s3_prefix,
            at,
            copy,
            dry_run,
            ..
        } if load || from_export.is_some() => emit(
            out,
            &load::seed_export_load(
                ctx,
                &load::LoadArgs {
                    from_export,
                    bucket: s3_bucket,
                    prefix: s3_prefix,
                    at,
                },
                copy,
                dry_run,
            )
            .await?,
        ),
        Command::Seed {
            method,
            at,
            s3_bucket,
            s3_prefix,
            dry_run,
            ..
        } => emit(
            out,
            &seed::seed(
                ctx,
                &seed::SeedArgs {
                    method,
                    at,
                    bucket: s3_bucket,
                    prefix: s3_prefix,
                    dry_run,
                },
            )
            .await?,
        ),
        Command::Pause { dry_run } => emit(out, &pause::pause(ctx, dry_run).await?),
        Command::Resume { dry_run } => emit(out, &pause::resume(ctx, dry_run).await?),
        Command::Replay {
            from,
            no_resume,
            dry_run,
        } => emit(
            out,
            &replay::replay(ctx, Some(from), no_resume, dry_run).await?,
        ),
        Command::Restart {
            method: RestartMethod::Scan,
            copy,
            no_resume,
            dry_run,
        } => emit(
            out,
            &scan::restart_scan(ctx, copy, no_resume, dry_run).await?,
        ),
        Command::Restart {
            method: RestartMethod::Backup,
            no_resume,
            dry_run,
            ..
        } => emit(out, &replay::replay(ctx, None, no_resume, dry_run).await?),
        Command::Verify {
            sample,
            repair,
            recheck_wait,
            scan,
            ..
        } if scan.fan_out => emit(
            out,
            &verify_fanout::verify(ctx, sample, repair, recheck_wait, scan.segments).await?,
        ),
        Command::Verify {
            sample,
            repair,
            recheck_wait,
            scan,
            spill,
            ..
        } => emit(
            out,
            &verify::verify(ctx, sample, repair, recheck_wait, scan.limits(), &spill).await?,
        ),
        Command::Status { window } => emit(
            out,
            &status::StatusReport(status::status(ctx, window).await?),
        ),
        Command::Watch {
            window,
            interval,
            count,
        } => status::watch(ctx, window, interval, count).await?,
        Command::Cutover {
            max_lag,
            max_backlog,
            window,
            no_verify,
        } => emit(
            out,
            &cutover::cutover(
                ctx,
                &CutoverThresholds {
                    max_lag_ms: max_lag * 1000.0,
                    max_backlog,
                    waive_verify: no_verify,
                },
                window,
            )
            .await?,
        ),
        Command::Finish {
            quiet,
            timeout,
            report,
            dry_run,
        } => emit(
            out,
            &finish::finish(ctx, quiet, timeout, report.as_deref(), dry_run).await?,
        ),
        Command::Dlq { command } => match command {
            DlqCommand::List { max } => emit(out, &dlq::list(ctx, max).await?),
            DlqCommand::Repair { max, dry_run, .. } => {
                emit(out, &dlq::repair(ctx, max, dry_run).await?)
            }
            DlqCommand::StreamFailures {
                max,
                clear,
                dry_run,
            } => emit(
                out,
                &stream_failures::stream_failures(ctx, max, clear, dry_run).await?,
            ),
        },
    })
}
