//! Command-line arguments. Everything that can be checked without AWS is
//! checked here (clap value parsers, then [`Cli::validate`]): a bad value is
//! a usage error, exit 2, naming the flag, before any AWS call.

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::ctx::{parse_when, Output, When};

#[derive(Debug, Parser)]
#[command(
    name = "ddb-relay",
    version,
    about = "Migrate a live DynamoDB table into a new table: operate a ddb-relay stack.",
    after_help = "Exit codes: 0 done/GO, 1 error, 2 usage, 3 NO-GO (cutover NO-GO, a preflight\n\
                  blocker, a verify divergence, finish NOT READY, adopt drift).\n\
                  Runbook: README.md, \"Operator runbook\"."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// AWS profile.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// AWS region.
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Endpoint for every AWS service (an emulator such as MiniStack).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// The ddb-relay stack (one per migration).
    #[arg(long, global = true, env = "DDB_RELAY_STACK")]
    pub stack: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Declarative transform (JSON or YAML). Default: the stack's deployed
    /// TransformSpec; a file that differs from it is refused.
    #[arg(long, global = true, env = "DDB_RELAY_TRANSFORM")]
    pub transform: Option<std::path::PathBuf>,
    /// A migration plan (YAML or JSON) listing table pairs: run the command
    /// on every pair's stack, `parallel` at a time, with one verdict for the
    /// set (README, "Migrating a set of tables").
    #[arg(long, global = true, env = "DDB_RELAY_PLAN")]
    pub plan: Option<std::path::PathBuf>,
    /// More detail on errors and progress (SDK errors in full).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// On-demand backup, then restore into the target name.
    Backup,
    /// Point-in-time restore at --at.
    Pitr,
    /// Export to S3, then import into the target name.
    Export,
    /// Parallel scan copy into an existing target (key-schema changes, transforms).
    Scan,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Backup => "backup",
            Method::Pitr => "pitr",
            Method::Export => "export",
            Method::Scan => "scan",
        }
    }
}

/// How `restart` re-seeds (now): `replay --from T` is the point-in-time way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestartMethod {
    Backup,
    Scan,
}

/// How hard a copy's scan (and its writes) may push.
#[derive(Clone, Copy, Debug, Args, PartialEq, Eq)]
pub struct CopyArgs {
    /// Parallel scan segments.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1_000_000))]
    pub segments: i32,
    /// At most this many items per second (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// At most this many write capacity units per second, as DynamoDB
    /// reports them consumed (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub max_wcu: u64,
    /// Run the copy on the stack's worker Lambda instead of this process:
    /// one task per segment (or export file) on the work queue, at most
    /// `WorkerConcurrency` at once; --rate and --max-wcu are shared among
    /// them. Resumable like the in-process copy.
    #[arg(long)]
    pub fan_out: bool,
}

impl Default for CopyArgs {
    fn default() -> Self {
        CopyArgs {
            segments: 4,
            rate: 0,
            max_wcu: 0,
            fan_out: false,
        }
    }
}

/// How a verify reads: its scans' segments, or the workers. It writes only
/// repairs, so it has no copy's write limits (`--rate`, `--max-wcu`).
#[derive(Clone, Copy, Debug, Args, PartialEq, Eq)]
pub struct VerifyScan {
    /// Parallel scan segments of each table (with --fan-out: one worker
    /// task per segment of each table, at most 1,000).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=1_000_000))]
    pub segments: i32,
    /// Compare on the stack's worker Lambda instead of this process, by
    /// lookups rather than on local disk, at most `WorkerConcurrency` tasks
    /// at once.
    #[arg(long)]
    pub fan_out: bool,
}

impl VerifyScan {
    /// The scan limits of the in-process comparison: its segments, no
    /// rate.
    pub fn limits(self) -> CopyArgs {
        CopyArgs {
            segments: self.segments,
            ..CopyArgs::default()
        }
    }
}

/// Where a whole-table comparison keeps what does not fit in memory.
#[derive(Clone, Debug, Args, PartialEq, Eq)]
pub struct SpillArgs {
    /// Memory for comparing tables, in MiB: both tables are partitioned by
    /// target key into files and compared one partition at a time, so any
    /// table size fits (local disk needs about 2.5x the two tables' size).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub memory_mb: u64,
    /// Directory for those files (default: the system's temporary directory).
    #[arg(long)]
    pub work_dir: Option<std::path::PathBuf>,
}

impl Default for SpillArgs {
    fn default() -> Self {
        SpillArgs {
            memory_mb: 256,
            work_dir: None,
        }
    }
}

fn parse_export_uri(s: &str) -> Result<String, String> {
    relay_core::export::parse_s3_dir(s).map(|_| s.to_string())
}

fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number from 0 to 100"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a percentage from 0 to 100"))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that the migration can start; non-zero exit on a blocker.
    Preflight {
        /// The seed method you plan to use (checks PITR, target existence).
        #[arg(long, value_enum, default_value_t = Method::Backup)]
        method: Method,
        /// With `--method export`: you will load the export through the
        /// transform (`seed --method export --load`) into a target your IaC
        /// created.
        #[arg(long)]
        load: bool,
        /// With `--method export`: you will load this export you already
        /// have (`seed --method export --from-export URI`; implies --load):
        /// checks the export instead of the source's PITR.
        #[arg(long, value_parser = parse_export_uri)]
        from_export: Option<String>,
    },
    /// Seed the target table and set the cutoff (seed time - margin).
    Seed {
        #[arg(long, value_enum)]
        method: Method,
        /// Point in time for pitr/export: epoch ms, RFC 3339, or "now".
        #[arg(long, value_parser = parse_when)]
        at: Option<When>,
        /// S3 bucket for export.
        #[arg(long)]
        s3_bucket: Option<String>,
        /// S3 prefix for export.
        #[arg(long, default_value = "ddb-relay-export")]
        s3_prefix: String,
        /// Print the ImportSourceSpecification snippet (for a table created by your own IaC) and stop.
        #[arg(long)]
        print_import_spec: bool,
        /// Export, then load the export's files through the transform into
        /// the target your IaC created (like the scan copy, but no read
        /// capacity is used on the source; works with any transform).
        #[arg(long)]
        load: bool,
        /// Load this existing export instead of taking one:
        /// s3://BUCKET/PREFIX/AWSDynamoDB/EXPORT_ID (implies --load).
        #[arg(long, value_parser = parse_export_uri)]
        from_export: Option<String>,
        #[command(flatten)]
        copy: CopyArgs,
        /// Show what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare the tables through the transform: missing, different, extra items.
    Verify {
        /// Check this percentage of keys (0-100).
        #[arg(long, default_value_t = 100.0, value_parser = percent)]
        sample: f64,
        /// Repair what differs from the source's current state (conditional
        /// writes that never overwrite a newer change), then re-check.
        #[arg(long)]
        repair: bool,
        /// Repair although the migration is finished: only while the
        /// application does not write to the target yet.
        #[arg(long, requires = "repair")]
        after_finish: bool,
        /// Seconds to wait before re-checking mismatches with consistent reads.
        #[arg(long, default_value_t = 2)]
        recheck_wait: u64,
        #[command(flatten)]
        scan: VerifyScan,
        #[command(flatten)]
        spill: SpillArgs,
    },
    /// Stop applying (a fence in the control item), disable the applier
    /// trigger and record when in-flight invocations are done
    /// (`stopped_by_ms`; replay and restart wait for it); changes keep
    /// queueing.
    Pause {
        #[arg(long)]
        dry_run: bool,
    },
    /// Enable the applier trigger; refused while no cutoff exists.
    Resume {
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-seed the target at point T by point-in-time restore, set the cutoff, resume.
    Replay {
        /// T: epoch ms, RFC 3339, or "now". Must leave every change after it
        /// in the queue (the error names the earliest valid T).
        #[arg(long, value_parser = parse_when)]
        from: When,
        /// Leave the applier paused at the end.
        #[arg(long)]
        no_resume: bool,
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-seed the target now (backup and restore, or a fresh scan copy), set the cutoff, resume.
    /// The copy's flags (--segments, --rate, --max-wcu, --fan-out) are for --method scan.
    Restart {
        #[arg(long, value_enum, default_value_t = RestartMethod::Backup)]
        method: RestartMethod,
        #[command(flatten)]
        copy: CopyArgs,
        #[arg(long)]
        no_resume: bool,
        #[arg(long)]
        dry_run: bool,
    },
    /// One screen: triggers, cutoff, queue, DLQ, rates, lag, errors.
    Status {
        /// Window for rates and errors, in seconds.
        #[arg(long, default_value_t = 300)]
        window: u64,
    },
    /// `status`, refreshed in place.
    Watch {
        #[arg(long, default_value_t = 300)]
        window: u64,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// Stop after this many refreshes (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
    },
    /// GO or NO-GO for the cutover, with reasons; exit code 0 (GO) or 3.
    Cutover {
        /// Maximum replication lag, seconds.
        #[arg(long, default_value_t = 5.0)]
        max_lag: f64,
        /// Maximum queued or in-flight messages.
        #[arg(long, default_value_t = 0)]
        max_backlog: u64,
        /// Error window, seconds.
        #[arg(long, default_value_t = 300)]
        window: u64,
        /// Do not require a clean `verify` since the last seed (the decision says so).
        #[arg(long)]
        no_verify: bool,
    },
    /// After writes to the source stopped: wait until the forwarder is caught
    /// up and the queue drained, then stop both triggers and write a report.
    Finish {
        /// Seconds with an empty queue and nothing forwarded.
        #[arg(long, default_value_t = 60)]
        quiet: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Write the JSON report here too.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the IAM policies a target in another account needs: the target
    /// role's trust and permissions policies, and the operator's addition.
    IamPolicy {
        /// Your own role or user ARN, trusted by the target role too (the
        /// CLI assumes it for seeds, verify and repairs).
        #[arg(long)]
        operator_arn: Option<String>,
    },
    /// Turn on deletion protection for the source (with --target: the
    /// target), so neither an IaC deploy nor a hand can delete it; names
    /// the stack that owns it and the template fix.
    Protect {
        /// Protect the target instead of the source.
        #[arg(long)]
        target: bool,
        #[arg(long)]
        dry_run: bool,
    },
    /// After `finish`: the target's definition for your IaC (CloudFormation
    /// and SAM, CDK, Serverless) matching the live table, the import steps,
    /// what the target lacks that the source had, and the source's
    /// retirement runbook. Changes nothing.
    Adopt {
        /// The resource's logical id in your stack (default: from the
        /// target's name, `orders-v2` → `OrdersV2`).
        #[arg(long)]
        logical_id: Option<String>,
        /// The CloudFormation stack to import it into (default: the stack
        /// that owns the source, if any).
        #[arg(long)]
        into_stack: Option<String>,
        /// Write the files the commands name (resources-to-import.json,
        /// import-template, cdk-import-mapping.json, read-only-policy.json)
        /// into this directory.
        #[arg(long)]
        write: Option<std::path::PathBuf>,
    },
    /// With --plan: deploy every pair's stack with `sam deploy` (from the
    /// built template), then the set's dashboard.
    Deploy {
        /// The built template (`sam build` output).
        #[arg(long, default_value = ".aws-sam/build/template.yaml")]
        template_file: std::path::PathBuf,
        /// The `sam` program.
        #[arg(long, default_value = "sam")]
        sam: String,
        /// Print the `sam deploy` commands; run nothing.
        #[arg(long)]
        dry_run: bool,
        /// More arguments for every `sam deploy` (after `--`).
        #[arg(last = true)]
        sam_args: Vec<String>,
    },
    /// Inspect and repair the dead-letter queue; list and clear the stream
    /// failure queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List DLQ messages by keys and reason (never item values).
    List {
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Copy each key's current source state to the target (through the
    /// transform, never over a newer change), then delete the message.
    Repair {
        #[arg(long, default_value_t = 1000)]
        max: usize,
        /// Repair although the migration is finished: only while the
        /// application does not write to the target yet.
        #[arg(long)]
        after_finish: bool,
        #[arg(long)]
        dry_run: bool,
    },
    /// List the stream failure queue's records (stream batches the
    /// forwarder gave up on: a shard and a sequence range each), and which
    /// the target is known to hold (before the whole seed's cutoff, and
    /// while paused before the frontier).
    StreamFailures {
        #[arg(long, default_value_t = 1000)]
        max: usize,
        /// Delete the covered records (exit 3 when a record read is left,
        /// or --max were read).
        #[arg(long)]
        clear: bool,
        /// With --clear: say what would be deleted; delete nothing.
        #[arg(long, requires = "clear")]
        dry_run: bool,
    },
}

impl Cli {
    /// Cross-flag rules clap cannot express; a usage error (exit 2) names
    /// the flag.
    pub fn validate(&self) -> Result<(), clap::Error> {
        let conflict =
            |msg: String| Cli::command().error(clap::error::ErrorKind::ArgumentConflict, msg);
        if let Command::Seed {
            method,
            at,
            s3_bucket,
            print_import_spec,
            load,
            from_export,
            copy,
            ..
        } = &self.command
        {
            let scan_flags = *copy != CopyArgs::default();
            let loading = *load || from_export.is_some();
            if loading && *method != Method::Export {
                return Err(conflict(format!(
                    "--load and --from-export are for --method export, not {}",
                    method.as_str()
                )));
            }
            if from_export.is_some() && (at.is_some() || s3_bucket.is_some()) {
                return Err(conflict(
                    "--from-export loads an export you already have: --at and --s3-bucket are for taking one"
                        .into(),
                ));
            }
            if loading && *print_import_spec {
                return Err(conflict(
                    "--print-import-spec is for an import by your IaC, not --load".into(),
                ));
            }
            match method {
                Method::Scan if at.is_some() => {
                    return Err(conflict(
                        "--at is not used by --method scan (the copy starts now)".into(),
                    ))
                }
                Method::Scan if s3_bucket.is_some() || *print_import_spec => {
                    return Err(conflict(
                        "--s3-bucket and --print-import-spec are for --method export, not scan"
                            .into(),
                    ))
                }
                Method::Backup if at.is_some() => {
                    return Err(conflict(
                        "--at is for --method pitr or export; a backup is taken now".into(),
                    ))
                }
                Method::Backup | Method::Pitr if s3_bucket.is_some() || *print_import_spec => {
                    return Err(conflict(format!(
                        "--s3-bucket and --print-import-spec are for --method export, not {}",
                        method.as_str()
                    )))
                }
                Method::Export if loading => {}
                Method::Backup | Method::Pitr | Method::Export if scan_flags => {
                    return Err(conflict(format!(
                        "--segments, --rate, --max-wcu and --fan-out are for --method scan or export --load, not {}",
                        method.as_str()
                    )))
                }
                Method::Export if s3_bucket.is_none() => {
                    return Err(Cli::command().error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "--method export needs --s3-bucket (a bucket in this account and region)",
                    ))
                }
                _ => {}
            }
        }
        if let Command::Verify {
            scan:
                VerifyScan {
                    segments,
                    fan_out: true,
                },
            ..
        } = &self.command
        {
            let most = crate::commands::verify_fanout::MAX_SEGMENTS;
            if *segments > most {
                return Err(Cli::command().error(
                    clap::error::ErrorKind::ValueValidation,
                    format!(
                        "--segments {segments}: a fanned-out verify runs at most {most} per table"
                    ),
                ));
            }
        }
        if let Command::Preflight {
            method,
            load,
            from_export,
        } = &self.command
        {
            if (*load || from_export.is_some()) && *method != Method::Export {
                return Err(conflict(format!(
                    "--load and --from-export are for --method export, not {}",
                    method.as_str()
                )));
            }
        }
        if let Command::Restart {
            method: RestartMethod::Backup,
            copy,
            ..
        } = &self.command
        {
            if *copy != CopyArgs::default() {
                return Err(conflict(
                    "--segments, --rate, --max-wcu and --fan-out are for --method scan".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
