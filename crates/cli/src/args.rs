//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ddb-relay",
    version,
    about = "Migrate a live DynamoDB table into a new table: operate a ddb-relay stack.",
    after_help = "Exit codes: 0 done/GO, 1 error, 2 usage, 3 NO-GO or preflight blocker.\n\
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
    /// Declarative transform (JSON or YAML): the same spec as the stack's
    /// TransformSpec. Used by preflight, seed --method scan and verify.
    #[arg(long, global = true, env = "DDB_RELAY_TRANSFORM")]
    pub transform: Option<std::path::PathBuf>,
    /// More detail on errors and progress (SDK errors in full).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that the migration can start; non-zero exit on a blocker.
    Preflight {
        /// The seed method you plan to use (checks PITR, target existence).
        #[arg(long, value_enum, default_value_t = Method::Backup)]
        method: Method,
    },
    /// Seed the target table and set the cutoff (seed time - margin).
    Seed {
        #[arg(long, value_enum)]
        method: Method,
        /// Point in time for pitr/export: epoch ms, RFC 3339, or "now".
        #[arg(long)]
        at: Option<String>,
        /// S3 bucket for export.
        #[arg(long)]
        s3_bucket: Option<String>,
        /// S3 prefix for export.
        #[arg(long, default_value = "ddb-relay-export")]
        s3_prefix: String,
        /// Print the ImportSourceSpecification snippet (for a table created by your own IaC) and stop.
        #[arg(long)]
        print_import_spec: bool,
        /// Scan copy: parallel segments.
        #[arg(long, default_value_t = 4)]
        segments: i32,
        /// Scan copy and verify: at most this many items per second (0 = no limit).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Scan copy: at most this many write capacity units per second, as
        /// DynamoDB reports them consumed (0 = no limit).
        #[arg(long, default_value_t = 0)]
        max_wcu: u64,
        /// Show what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare the tables through the transform: missing, different, extra items.
    Verify {
        /// Check this percentage of keys (0-100).
        #[arg(long, default_value_t = 100.0)]
        sample: f64,
        /// Write the source state for missing/different items, delete extras, re-verify them.
        #[arg(long)]
        repair: bool,
        /// Seconds to wait before re-checking mismatches with consistent reads.
        #[arg(long, default_value_t = 2)]
        recheck_wait: u64,
        #[arg(long, default_value_t = 4)]
        segments: i32,
        /// At most this many items per second read from each table (0 = no limit).
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    /// Disable the applier trigger (changes keep queueing) and record the time.
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
        /// T: epoch ms, RFC 3339, or "now". Must be >= paused-at + margin.
        #[arg(long)]
        from: String,
        /// Leave the applier paused at the end.
        #[arg(long)]
        no_resume: bool,
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-seed the target now (backup and restore, or a fresh scan copy), set the cutoff, resume.
    Restart {
        #[arg(long, value_enum, default_value_t = Method::Backup)]
        method: Method,
        #[arg(long, default_value_t = 4)]
        segments: i32,
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 0)]
        max_wcu: u64,
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
    },
    /// Wait for the queue to drain with no new changes, disable both triggers, write a report.
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
    /// Inspect and repair the dead-letter queue.
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
    /// Copy each key's current source state to the target, then delete the message.
    Repair {
        #[arg(long, default_value_t = 1000)]
        max: usize,
        #[arg(long)]
        dry_run: bool,
    },
}
