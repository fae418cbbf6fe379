//! What every command needs: the AWS services (real or fake), the resolved
//! stack, the clock, output settings, and errors that say what to do.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use relay_aws::operator::{Aws, ControlWrite, Deployment, Mapping};
use relay_aws::runtime::Clock;
use relay_aws::AwsError;
use relay_core::control::ControlState;

/// Text or JSON on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A command's context.
pub struct Ctx<A> {
    pub aws: A,
    pub stack: Deployment,
    pub clock: Clock,
    /// `--transform FILE`, when given.
    pub transform_file: Option<std::path::PathBuf>,
    pub output: Output,
    /// No progress bars or steps on stderr (tests, simulations).
    pub quiet: bool,
    /// How often waits poll.
    pub poll: Duration,
}

impl<A> std::fmt::Debug for Ctx<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("stack", &self.stack.name)
            .finish()
    }
}

/// Turns an AWS error into one line that names the fix; the SDK's error
/// chain rides along as the cause (`-v` prints it).
pub fn explain(err: AwsError, what: &str) -> anyhow::Error {
    let line = explain_line(&err, what);
    match err.chain {
        Some(chain) => anyhow::Error::msg(chain).context(line.to_string()),
        None => line,
    }
}

fn explain_line(err: &AwsError, what: &str) -> anyhow::Error {
    let code = err.code.as_str();
    if code == "NoCredentials" {
        anyhow!(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pick a profile (--profile or AWS_PROFILE, from ~/.aws/credentials and ~/.aws/config, SSO included), or run where a role is attached (instance, container, Lambda); for a target in another account, the stack's TargetRoleArn must trust you with its external id (`ddb-relay iam-policy --operator-arn YOUR_ARN`)"
        )
    } else if code.contains("AccessDenied")
        || code == "UnauthorizedOperation"
        || code == "AuthFailure"
    {
        anyhow!(
            "missing permission: {} on {what} was denied; grant it to your role or profile",
            err.operation
        )
    } else if code == "ResourceNotFoundException" || code == "TableNotFoundException" {
        anyhow!(
            "{what} not found ({}); check the name and --region",
            err.operation
        )
    } else if code == "DispatchFailure" || code == "Timeout" {
        anyhow!(
            "cannot reach AWS for {} ({}); check --endpoint-url, --region and the network",
            err.operation,
            err.message
        )
    } else if code.contains("ExpiredToken")
        || code.contains("InvalidClientTokenId")
        || code == "UnrecognizedClientException"
    {
        anyhow!("AWS credentials were refused ({code}); refresh them or pick another --profile")
    } else {
        anyhow!(
            "{} on {what} failed: {code}: {}",
            err.operation,
            err.message
        )
    }
}

/// What a pair's process under `--plan` checks its stack against
/// ([`relay_core::plan::EXPECTED_ENV`], JSON): the pair as the plan names it
/// now, with its transform file's text (or why it cannot be read).
pub fn expected_json(
    plan: &relay_core::plan::Plan,
    file: &std::path::Path,
    p: &relay_core::plan::Pair,
) -> String {
    let read = crate::plan::transform_path(file, p)
        .map(|t| std::fs::read_to_string(&t).map_err(|e| format!("{}: {e}", t.display())));
    let mut e = p.expected(&plan.name, read.clone().and_then(Result::ok));
    e.transform_unreadable = read.and_then(Result::err);
    serde_json::to_string(&e).unwrap_or_default()
}

/// A pair's process under `--plan` (`expected`: the parent's
/// [`expected_json`]): the stack must be deployed for the pair the plan
/// names now (`region`: the stack's). Not checked on another stack than the
/// pair's (the variable left exported in a shell).
pub fn check_plan_pair(stack: &Deployment, region: &str, expected: Option<String>) -> Result<()> {
    let Some(json) = expected else {
        return Ok(());
    };
    let e: relay_core::plan::Expected = serde_json::from_str(&json)
        .map_err(|e| anyhow::anyhow!("{}: {e}", relay_core::plan::EXPECTED_ENV))?;
    if e.stack != stack.name {
        return Ok(());
    }
    e.check(
        (&stack.source_table, &stack.target_table),
        &stack.target,
        region,
        stack.transform_spec.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!(e))
}

/// Refuses a target "elsewhere" (another region, or through a role) that is
/// the source itself: a role in the stack's own account, or a region equal to
/// the stack's, with the source's name. Both tables are described, each
/// through its own client; a table that does not exist yet (a restore will
/// create it) cannot be the source.
pub async fn check_target_is_not_source<A: Aws>(aws: &A, stack: &Deployment) -> Result<()> {
    if stack.target.region.is_none() && !stack.target.assumes_role() {
        return Ok(());
    }
    let source = aws
        .describe(&stack.source_table)
        .await
        .map_err(|e| explain(e, &stack.source_table))?;
    let target = aws
        .describe(&stack.target_table)
        .await
        .map_err(|e| explain(e, &stack.target_table))?;
    if let (Some(s), Some(t)) = (source.and_then(|s| s.arn), target.and_then(|t| t.arn)) {
        if s == t {
            bail!(
                "the target {} is the source table itself ({s}): TargetRoleArn is a role of the stack's own account, or TargetRegion the stack's region, with the source's name; point the stack at the real target",
                stack.target_table
            );
        }
    }
    Ok(())
}

impl<A: Aws> Ctx<A> {
    /// A context for `stack`, read from CloudFormation.
    pub async fn for_stack(aws: A, name: &str, region: &str, clock: Clock) -> Result<Ctx<A>> {
        let info = aws.stack(name).await.map_err(|e| {
            if e.code == "ValidationError" {
                anyhow!("stack {name} not found in {region}: check --stack and --region (deploy it with `sam deploy`)")
            } else {
                explain(e, &format!("stack {name}"))
            }
        })?;
        let mut stack = Deployment::from_stack(&info).map_err(|e| anyhow!(e))?;
        if stack.transform_spec.is_none() && !info.parameters.contains_key("TransformSpec") {
            // A stack that does not report parameters: the applier's setting.
            stack.transform_spec = aws
                .function_env(&stack.applier, "TRANSFORM")
                .await
                .map_err(|e| explain(e, &format!("function {}", stack.applier)))?
                .filter(|s| !s.trim().is_empty());
        }
        Ok(Ctx {
            aws,
            stack,
            clock,
            transform_file: None,
            output: Output::Text,
            quiet: false,
            poll: Duration::from_millis(500),
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// A step of a multi-step command, on stderr (stdout stays clean for JSON).
    pub fn step(&self, msg: &str) {
        if !self.quiet {
            eprintln!("==> {msg}");
        }
    }

    /// A progress bar on stderr (hidden when quiet).
    pub fn bar(&self, len: Option<u64>, what: &str) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let b = match len {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        b.set_style(
            ProgressStyle::with_template(
                "    {spinner} {msg} {pos}/{len} items ({per_sec}, {elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_message(what.to_string());
        b
    }

    /// The control item; a default (version 0) when absent.
    pub async fn control(&self) -> Result<ControlState> {
        let s = &self.stack;
        Ok(self
            .aws
            .control(&s.control_table, &s.migration)
            .await
            .map_err(|e| explain(e, &format!("control table {}", s.control_table)))?
            .unwrap_or_else(|| ControlState {
                migration: s.migration.clone(),
                ..ControlState::default()
            }))
    }

    /// Writes the control item's operator attributes if nobody changed it
    /// since `read`.
    pub async fn write_control(
        &self,
        read: &ControlState,
        next: ControlState,
    ) -> Result<ControlState> {
        match self.write_control_unless_moved(read, next).await? {
            Some(s) => Ok(s),
            None => bail!(
                "another operator (or command) changed migration {} since this command read it (version {}); check `ddb-relay status` and re-run",
                self.stack.migration,
                read.version
            ),
        }
    }

    /// [`Ctx::write_control`], with `None` when the item moved past
    /// `read` (nothing written).
    pub async fn write_control_unless_moved(
        &self,
        read: &ControlState,
        next: ControlState,
    ) -> Result<Option<ControlState>> {
        let mut next = next;
        next.migration = self.stack.migration.clone();
        next.updated_ms = Some(self.now_ms());
        Ok(
            match self
                .aws
                .write_control(&self.stack.control_table, &next, read.version)
                .await
                .map_err(|e| explain(e, &format!("control table {}", self.stack.control_table)))?
            {
                ControlWrite::Written(s) => Some(*s),
                ControlWrite::Conflict => None,
            },
        )
    }

    /// The applier's queue trigger.
    pub async fn applier_trigger(&self) -> Result<Mapping> {
        self.aws
            .mapping(&self.stack.applier, "arn:aws:sqs:")
            .await
            .map_err(|e| explain(e, &format!("function {}", self.stack.applier)))
    }

    /// The forwarder's stream trigger.
    pub async fn forwarder_trigger(&self) -> Result<Mapping> {
        self.aws
            .mapping(&self.stack.forwarder, "arn:aws:dynamodb:")
            .await
            .map_err(|e| explain(e, &format!("function {}", self.stack.forwarder)))
    }

    /// Sets a trigger and waits until the service reports the state.
    pub async fn set_trigger(&self, uuid: &str, enabled: bool, what: &str) -> Result<()> {
        let want = if enabled { "Enabled" } else { "Disabled" };
        self.aws
            .set_mapping(uuid, enabled)
            .await
            .map_err(|e| explain(e, what))?;
        self.wait(
            &format!("{what}: waiting for {want}"),
            Duration::from_secs(300),
            || async {
                Ok(self
                    .aws
                    .mapping_state(uuid)
                    .await
                    .map_err(|e| explain(e, what))?
                    == want)
            },
        )
        .await
    }

    /// Polls `done` with a spinner until it is true or `limit` passes.
    pub async fn wait<F, Fut>(&self, msg: &str, limit: Duration, mut done: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let bar = if self.quiet {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("    {spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        };
        bar.set_message(msg.to_string());
        let start = tokio::time::Instant::now();
        loop {
            bar.tick();
            if done().await? {
                bar.finish_and_clear();
                return Ok(());
            }
            if start.elapsed() > limit {
                bar.finish_and_clear();
                bail!("timed out after {} s: {msg}", limit.as_secs());
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Sleeps until the clock reaches `t_ms` (with a spinner saying why).
    pub async fn wait_until(&self, t_ms: i64, why: &str) -> Result<()> {
        let left = t_ms - self.now_ms();
        if left <= 0 {
            return Ok(());
        }
        let limit = Duration::from_millis(left as u64 + 60_000);
        self.wait(why, limit, || async { Ok(self.now_ms() >= t_ms) })
            .await
    }

    /// Exports the source table to `s3://bucket/prefix` (at `at_ms`, or
    /// now) and waits for it; returns its export time and the key of its
    /// `manifest-summary.json`.
    pub async fn run_export(
        &self,
        bucket: &str,
        prefix: &str,
        at_ms: Option<i64>,
    ) -> Result<(i64, Option<String>)> {
        let s = &self.stack;
        let arn = self
            .aws
            .describe(&s.source_table)
            .await
            .map_err(|e| explain(e, &s.source_table))?
            .and_then(|t| t.arn)
            .ok_or_else(|| anyhow!("source table {} not found", s.source_table))?;
        self.step(&format!(
            "exporting {} to s3://{bucket}/{prefix}",
            s.source_table
        ));
        let export = self
            .aws
            .export(&arn, bucket, prefix, at_ms)
            .await
            .map_err(|e| explain(e, &format!("export of {}", s.source_table)))?;
        let done = std::cell::RefCell::new((0i64, None));
        self.wait(
            "export: waiting for COMPLETED",
            Duration::from_secs(12 * 3600),
            || async {
                let (status, t, manifest) = self
                    .aws
                    .export_status(&export)
                    .await
                    .map_err(|e| explain(e, &export))?;
                if status == "FAILED" {
                    bail!("export {export} FAILED; see the DynamoDB console");
                }
                *done.borrow_mut() = (t.unwrap_or(0), manifest);
                Ok(status == "COMPLETED")
            },
        )
        .await?;
        Ok(done.into_inner())
    }

    /// Waits for a table to be ACTIVE.
    pub async fn wait_table_active(&self, name: &str) -> Result<()> {
        self.wait(
            &format!("table {name}: waiting for ACTIVE"),
            Duration::from_secs(6 * 3600),
            || async {
                Ok(matches!(self.aws.describe(name).await.map_err(|e| explain(e, name))?, Some(t) if t.status == "ACTIVE"))
            },
        )
        .await
    }

    /// Waits for a table to be gone.
    pub async fn wait_table_gone(&self, name: &str) -> Result<()> {
        self.wait(
            &format!("table {name}: waiting for deletion"),
            Duration::from_secs(3600),
            || async {
                Ok(self
                    .aws
                    .describe(name)
                    .await
                    .map_err(|e| explain(e, name))?
                    .is_none())
            },
        )
        .await
    }
}

/// A point in time on the command line: "now", epoch milliseconds or
/// RFC 3339. Parsed by clap, so a bad value is a usage error (exit 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Now,
    At(i64),
}

impl When {
    pub fn resolve(self, now_ms: i64) -> i64 {
        match self {
            When::Now => now_ms,
            When::At(t) => t,
        }
    }
}

/// Parses a point in time: epoch milliseconds, RFC 3339, or "now".
pub fn parse_when(s: &str) -> Result<When, String> {
    if s == "now" {
        return Ok(When::Now);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(When::At(ms));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| When::At(t.timestamp_millis()))
        .map_err(|_| format!("invalid time {s:?}: use epoch milliseconds, RFC 3339 (2026-11-24T18:00:00Z) or \"now\""))
}

/// Epoch ms as RFC 3339 (UTC, milliseconds).
/// What to tell the operator when this machine's clock (`local_ms`) is
/// two seconds or more from AWS's (`aws_ms`, from its responses): the
/// commands use AWS's.
pub fn clock_note(local_ms: i64, aws_ms: Option<i64>) -> Option<String> {
    let ahead_s = (local_ms - aws_ms?) / 1000;
    (ahead_s.abs() >= 2).then(|| {
        format!(
            "this machine's clock is {} s {} AWS's: ddb-relay uses AWS's time (from its responses)",
            ahead_s.abs(),
            if ahead_s > 0 { "ahead of" } else { "behind" }
        )
    })
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_three_forms() {
        assert_eq!(parse_when("now").unwrap().resolve(5), 5);
        assert_eq!(
            parse_when("1700000000000").unwrap(),
            When::At(1_700_000_000_000)
        );
        assert_eq!(
            parse_when("2023-11-14T22:13:20Z").unwrap(),
            When::At(1_700_000_000_000)
        );
        let e = parse_when("yesterday").unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }
}
