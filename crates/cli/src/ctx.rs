//! What every command needs: clients, the resolved stack, output, and errors
//! that say what to do.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use relay_aws::ops::{ControlWrite, Ops};
use relay_aws::AwsError;
use relay_core::control::ControlState;

use crate::args::{Global, Output};

/// A ddb-relay stack, from its outputs.
#[derive(Clone, Debug)]
pub struct Stack {
    pub name: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub stream_failure_url: String,
    pub forwarder: String,
    pub applier: String,
    pub control_table: String,
    pub source_table: String,
    pub target_table: String,
    pub migration: String,
    pub margin_ms: i64,
}

pub struct Ctx {
    pub ops: Ops,
    pub output: Output,
    pub stack: Stack,
    pub transform_file: Option<std::path::PathBuf>,
}

/// Turns an AWS error into one line that names the fix.
pub fn explain(err: AwsError, what: &str) -> anyhow::Error {
    let code = err.code.as_str();
    if code.contains("AccessDenied") || code == "UnauthorizedOperation" || code == "AuthFailure" {
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

impl Ctx {
    pub async fn new(g: &Global) -> Result<Ctx> {
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
        let ops = Ops::new(&conf);
        let name = g
            .stack
            .clone()
            .ok_or_else(|| anyhow!("no stack: pass --stack NAME (the ddb-relay stack of this migration) or set DDB_RELAY_STACK"))?;
        let info = ops.stack(&name).await.map_err(|e| {
            if e.code == "ValidationError" {
                anyhow!("stack {name} not found in {region}: check --stack and --region (deploy it with `sam deploy`)")
            } else {
                explain(e, &format!("stack {name}"))
            }
        })?;
        let get = |k: &str| {
            info.output(k).map(str::to_string).ok_or_else(|| {
                anyhow!(
                    "stack {name} has no output {k}: is it a ddb-relay stack (status {})?",
                    info.status
                )
            })
        };
        let margin_s: i64 = get("CutoffMarginSeconds")?
            .parse()
            .map_err(|_| anyhow!("stack {name}: output CutoffMarginSeconds is not a number"))?;
        let stack = Stack {
            name: name.clone(),
            queue_url: get("QueueUrl")?,
            dlq_url: get("DeadLetterQueueUrl")?,
            stream_failure_url: get("StreamFailureQueueUrl")?,
            forwarder: get("ForwarderFunction")?,
            applier: get("ApplierFunction")?,
            control_table: get("ControlTable")?,
            source_table: get("SourceTable")?,
            target_table: get("TargetTable")?,
            migration: get("MigrationId")?,
            margin_ms: margin_s * 1000,
        };
        Ok(Ctx {
            ops,
            output: g.output,
            stack,
            transform_file: g.transform.clone(),
        })
    }

    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// A step of a multi-step command, on stderr (stdout stays clean for JSON).
    pub fn step(&self, msg: &str) {
        eprintln!("==> {msg}");
    }

    /// The control item; a default (version 0) when absent.
    pub async fn control(&self) -> Result<ControlState> {
        let s = &self.stack;
        Ok(self
            .ops
            .control(&s.control_table, &s.migration)
            .await
            .map_err(|e| explain(e, &format!("control table {}", s.control_table)))?
            .unwrap_or_else(|| ControlState {
                migration: s.migration.clone(),
                ..ControlState::default()
            }))
    }

    /// Writes the control item if nobody changed it since `read`.
    pub async fn write_control(
        &self,
        read: &ControlState,
        next: ControlState,
    ) -> Result<ControlState> {
        let mut next = next;
        next.updated_ms = Some(relay_aws::runtime::now_ms());
        match self
            .ops
            .write_control(&self.stack.control_table, &next, read.version)
            .await
            .map_err(|e| explain(e, &format!("control table {}", self.stack.control_table)))?
        {
            ControlWrite::Written(s) => Ok(s),
            ControlWrite::Conflict => bail!(
                "another operator changed migration {} since this command read it (version {}); check `ddb-relay status` and re-run",
                self.stack.migration,
                read.version
            ),
        }
    }

    /// The applier's queue trigger: (uuid, state).
    pub async fn applier_trigger(&self) -> Result<(String, String)> {
        let m = self
            .ops
            .mapping(&self.stack.applier, "arn:aws:sqs:")
            .await
            .map_err(|e| explain(e, &format!("function {}", self.stack.applier)))?;
        Ok((m.uuid, m.state))
    }

    /// The forwarder's stream trigger: (uuid, state, stream ARN).
    pub async fn forwarder_trigger(&self) -> Result<(String, String, String)> {
        let m = self
            .ops
            .mapping(&self.stack.forwarder, "arn:aws:dynamodb:")
            .await
            .map_err(|e| explain(e, &format!("function {}", self.stack.forwarder)))?;
        Ok((m.uuid, m.state, m.source_arn))
    }

    /// Sets a trigger and waits until the service reports the state.
    pub async fn set_trigger(&self, uuid: &str, enabled: bool, what: &str) -> Result<()> {
        let want = if enabled { "Enabled" } else { "Disabled" };
        self.ops
            .set_mapping(uuid, enabled)
            .await
            .map_err(|e| explain(e, what))?;
        self.wait(
            &format!("{what}: waiting for {want}"),
            Duration::from_secs(300),
            || async {
                Ok(self
                    .ops
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
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("    {spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(msg.to_string());
        let start = Instant::now();
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
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits for a table to be ACTIVE.
    pub async fn wait_table_active(&self, name: &str) -> Result<()> {
        self.wait(
            &format!("table {name}: waiting for ACTIVE"),
            Duration::from_secs(6 * 3600),
            || async {
                Ok(matches!(self.ops.table(name).await.map_err(|e| explain(e, name))?, Some(t) if t.status == "ACTIVE"))
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
                    .ops
                    .table(name)
                    .await
                    .map_err(|e| explain(e, name))?
                    .is_none())
            },
        )
        .await
    }
}

/// Parses a point in time: epoch milliseconds, RFC 3339, or "now".
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64> {
    if s == "now" {
        return Ok(now_ms);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| anyhow!("invalid time {s:?}: use epoch milliseconds, RFC 3339 (2026-11-24T18:00:00Z) or \"now\""))
}

/// Epoch ms as RFC 3339 (UTC, seconds).
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
        assert_eq!(parse_time("now", 5).unwrap(), 5);
        assert_eq!(parse_time("1700000000000", 5).unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", 5).unwrap(),
            1_700_000_000_000
        );
        let e = parse_time("yesterday", 5).unwrap_err().to_string();
        assert!(e.contains("RFC 3339"), "{e}");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }
}
