//! End-to-end harness on a local AWS emulator (MiniStack by default).
//!
//! Everything here talks to a real endpoint through the AWS SDK: the stack is
//! deployed from the real `template.yaml` with `sam deploy`
//! (`infra/local/deploy.sh`), the functions are the real `bootstrap` binaries
//! and they are triggered by the emulator's event source mappings. Only the
//! endpoint differs from AWS (`AWS_ENDPOINT_URL`, default
//! `http://localhost:4566`).
//!
//! **Boundary:** this crate is a test and demo driver. The migration steps it
//! performs with the SDK (seed, cutoff, trigger) are what the operator CLI
//! does in production.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue as Av;
pub use aws_sdk_dynamodb::types::StreamViewType as View;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType,
};
use relay_aws::operator::{MetricQuery, Metrics, Queues, Stacks, Stat, Triggers};
use relay_core::control::{ControlState, Mode};
use relay_core::diff::{self, Keyed, TableDiff};
use relay_core::item::Attrs;

pub const DEFAULT_ENDPOINT: &str = "http://localhost:4566";
pub const REGION: &str = "us-east-1";
/// Key attributes of the tables the harness creates.
pub const PK: &str = "pk";
pub const SK: &str = "sk";

/// SDK clients for one endpoint.
#[derive(Clone, Debug)]
pub struct Local {
    pub endpoint: String,
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub cfn: aws_sdk_cloudformation::Client,
    /// The operator's calls, shared with the CLI.
    pub ops: relay_aws::operator::Sdk,
}

/// The repository root (for `infra/local/*.sh`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The values of the template's `GLIBC_TUNABLES: …` lines (the forwarder
/// sets one; the Makefile's `bench` reads the same line with `sed`).
pub fn template_tunables(template: &str) -> Vec<&str> {
    template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("GLIBC_TUNABLES:"))
        .map(str::trim)
        .collect()
}

/// Whether `v` is a `GLIBC_TUNABLES` value of plain numeric tunables:
/// `glibc.<namespace>.<name>=<digits>`, colon-separated.
pub fn plain_tunables(v: &str) -> bool {
    !v.is_empty()
        && v.split(':').all(|t| {
            t.split_once('=').is_some_and(|(name, n)| {
                name.starts_with("glibc.")
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
                    && !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
            })
        })
}

impl Local {
    /// Clients for `AWS_ENDPOINT_URL` (default MiniStack on localhost) with
    /// the emulator's dummy credentials unless real ones are set.
    pub async fn connect() -> Result<Self> {
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| REGION.to_string());
        Self::connect_as(&region, None).await
    }

    /// Clients for another region, or (on an emulator that takes a 12-digit
    /// access key id as the account, as MiniStack does) another account.
    pub async fn connect_as(region: &str, access_key: Option<&str>) -> Result<Self> {
        let endpoint =
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| DEFAULT_ENDPOINT.to_string());
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new(region.to_string()));
        if access_key.is_some() || std::env::var("AWS_ACCESS_KEY_ID").is_err() {
            loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                access_key.unwrap_or("test"),
                "test",
                None,
                None,
                "ddb-relay-e2e",
            ));
        }
        let conf = loader.load().await;
        let local = Local {
            endpoint,
            ddb: aws_sdk_dynamodb::Client::new(&conf),
            sqs: aws_sdk_sqs::Client::new(&conf),
            cfn: aws_sdk_cloudformation::Client::new(&conf),
            ops: relay_aws::operator::Sdk::new(&conf),
        };
        local
            .ddb
            .list_tables()
            .limit(1)
            .send()
            .await
            .map_err(sdk)
            .with_context(|| {
                format!(
                    "no AWS endpoint answers at {} (start the local stack: infra/local/start.sh)",
                    local.endpoint
                )
            })?;
        Ok(local)
    }

    /// Creates a table keyed on (pk S, sk N) with a NEW_AND_OLD_IMAGES
    /// stream, waits for ACTIVE and returns the stream ARN.
    pub async fn create_source_table(&self, name: &str) -> Result<String> {
        self.ddb
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr_def(PK, ScalarAttributeType::S)?)
            .attribute_definitions(attr_def(SK, ScalarAttributeType::N)?)
            .key_schema(key_elem(PK, KeyType::Hash)?)
            .key_schema(key_elem(SK, KeyType::Range)?)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()?,
            )
            .send()
            .await
            .map_err(sdk)
            .with_context(|| format!("create table {name}"))?;
        self.wait_active(name, Duration::from_secs(60)).await?;
        let desc = self
            .ddb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(sdk)?;
        desc.table()
            .and_then(|t| t.latest_stream_arn())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("table {name} has no stream"))
    }

    /// Creates a table keyed on one string attribute, with a stream of
    /// `view` (or none), waits for ACTIVE, and returns the stream ARN.
    pub async fn create_table_keyed(
        &self,
        name: &str,
        key: &str,
        view: Option<StreamViewType>,
    ) -> Result<Option<String>> {
        let mut req = self
            .ddb
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr_def(key, ScalarAttributeType::S)?)
            .key_schema(key_elem(key, KeyType::Hash)?);
        if let Some(v) = view {
            req = req.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(v)
                    .build()?,
            );
        }
        req.send()
            .await
            .map_err(sdk)
            .with_context(|| format!("create table {name}"))?;
        self.wait_active(name, Duration::from_secs(60)).await?;
        let desc = self
            .ddb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(sdk)?;
        Ok(desc
            .table()
            .and_then(|t| t.latest_stream_arn())
            .map(str::to_string))
    }

    /// Creates a table keyed on `keys` (name, `S` or `N`; the first is the
    /// partition key) without a stream (a target your IaC would create),
    /// and waits for ACTIVE.
    pub async fn create_target_table(&self, name: &str, keys: &[(&str, &str)]) -> Result<()> {
        let mut req = self
            .ddb
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest);
        for (i, (attr, t)) in keys.iter().enumerate() {
            let t = if *t == "N" {
                ScalarAttributeType::N
            } else {
                ScalarAttributeType::S
            };
            let kt = if i == 0 {
                KeyType::Hash
            } else {
                KeyType::Range
            };
            req = req
                .attribute_definitions(attr_def(attr, t)?)
                .key_schema(key_elem(attr, kt)?);
        }
        req.send()
            .await
            .map_err(sdk)
            .with_context(|| format!("create table {name}"))?;
        self.wait_active(name, Duration::from_secs(60)).await
    }

    /// Turns on point-in-time recovery (for PITR seeds and replays).
    pub async fn enable_pitr(&self, table: &str) -> Result<()> {
        self.ddb
            .update_continuous_backups()
            .table_name(table)
            .point_in_time_recovery_specification(
                aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(true)
                    .build()?,
            )
            .send()
            .await
            .map_err(sdk)?;
        Ok(())
    }

    /// Waits for the table to be ACTIVE (the SDK's `TableExists` waiter).
    pub async fn wait_active(&self, name: &str, limit: Duration) -> Result<()> {
        use aws_sdk_dynamodb::client::Waiters;
        self.ddb
            .wait_until_table_exists()
            .table_name(name)
            .wait(limit)
            .await
            .map_err(|e| anyhow!("table {name} not ACTIVE after {limit:?}: {e}"))?;
        Ok(())
    }

    /// Deploys `template.yaml` to the endpoint as `stack` with `sam deploy`
    /// (through `infra/local/deploy.sh`) and returns the stack outputs.
    pub async fn deploy(&self, stack: &str, params: &[(&str, &str)]) -> Result<Stack> {
        let script = repo_root().join("infra/local/deploy.sh");
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(&script).arg(stack);
        for (k, v) in params {
            // sam's --parameter-overrides splits on spaces and quotes: wrap a
            // value holding either in single quotes (JSON uses double ones).
            if v.contains(['"', ' ']) {
                cmd.arg(format!("{k}='{v}'"));
            } else {
                cmd.arg(format!("{k}={v}"));
            }
        }
        let out = cmd
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .kill_on_drop(true)
            .output()
            .await
            .context("run infra/local/deploy.sh")?;
        if !out.status.success() {
            bail!(
                "sam deploy of {stack} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stack = self.stack(stack).await?;
        // Emulator gap: MiniStack reports State "Enabled" for a mapping that
        // CloudFormation created with Enabled: false (it does not poll it).
        // Disabling it again makes the reported state match the template.
        if self.applier_trigger_state(&stack).await? != "Disabled" {
            self.set_applier_trigger(&stack, false).await?;
        }
        Ok(stack)
    }

    /// A fresh migration: a source table `{prefix}-src-{run}` with a stream
    /// (and PITR with `pitr`), and the stack `{prefix}-{run}` deployed for it
    /// with the target `{prefix}-tgt-{run}`, plus `extra` parameters.
    pub async fn new_migration(
        &self,
        prefix: &str,
        extra: &[(&str, &str)],
        pitr: bool,
    ) -> Result<Stack> {
        let run = run_id();
        let (source, target, name) = (
            format!("{prefix}-src-{run}"),
            format!("{prefix}-tgt-{run}"),
            format!("{prefix}-{run}"),
        );
        let stream = self.create_source_table(&source).await?;
        if pitr {
            self.enable_pitr(&source).await?;
        }
        let mut params = vec![
            ("SourceTableName", source.as_str()),
            ("SourceStreamArn", stream.as_str()),
            ("TargetTableName", target.as_str()),
            ("StreamBatchingWindowSeconds", "0"),
        ];
        params.extend_from_slice(extra);
        self.deploy(&name, &params).await
    }

    /// The outputs of a deployed stack (parsed as the CLI parses them).
    pub async fn stack(&self, stack: &str) -> Result<Stack> {
        let info = self.ops.stack(stack).await?;
        Stack::from_stack(&info).map_err(|e| anyhow!(e))
    }

    /// Seeds `target` from `source` by on-demand backup and restore. Returns
    /// the backup's creation time in epoch ms (the seed time).
    pub async fn seed_by_backup(&self, source: &str, target: &str) -> Result<i64> {
        let b = self
            .ddb
            .create_backup()
            .table_name(source)
            .backup_name(format!("{target}-seed"))
            .send()
            .await
            .map_err(sdk)
            .context("create backup")?;
        let details = b
            .backup_details()
            .ok_or_else(|| anyhow!("CreateBackup returned no details"))?;
        let arn = details.backup_arn().to_string();
        let created = details.backup_creation_date_time();
        let seed_ms = created.secs() * 1000 + i64::from(created.subsec_nanos() / 1_000_000);
        self.ddb
            .restore_table_from_backup()
            .backup_arn(&arn)
            .target_table_name(target)
            .send()
            .await
            .map_err(sdk)
            .context("restore table from backup")?;
        self.wait_active(target, Duration::from_secs(120)).await?;
        Ok(seed_ms)
    }

    /// Writes the control item (cutoff, normal mode).
    pub async fn set_cutoff(&self, stack: &Stack, cutoff_ms: i64) -> Result<()> {
        let state = ControlState {
            migration: stack.migration.clone(),
            cutoff_ms: Some(cutoff_ms),
            mode: Mode::Normal,
            paused_at_ms: None,
            version: 1,
            ..Default::default()
        };
        self.ddb
            .put_item()
            .table_name(&stack.control_table)
            .set_item(Some(relay_aws::convert::to_sdk_item(&state.to_item())))
            .send()
            .await
            .map_err(sdk)
            .context("write control item")?;
        Ok(())
    }

    /// Enables or disables the applier's queue trigger and waits for the state.
    pub async fn set_applier_trigger(&self, stack: &Stack, enabled: bool) -> Result<()> {
        self.set_trigger(&stack.applier, "arn:aws:sqs:", enabled)
            .await
    }

    /// Enables or disables the forwarder's stream trigger and waits for the state.
    pub async fn set_forwarder_trigger(&self, stack: &Stack, enabled: bool) -> Result<()> {
        self.set_trigger(&stack.forwarder, "arn:aws:dynamodb:", enabled)
            .await
    }

    /// Enables or disables `function`'s mapping on the source whose ARN
    /// starts with `source`, and waits (bounded) until the service says so.
    async fn set_trigger(&self, function: &str, source: &str, enabled: bool) -> Result<()> {
        let uuid = self.ops.mapping(function, source).await?.uuid;
        self.ops.set_mapping(&uuid, enabled).await?;
        let want = if enabled { "Enabled" } else { "Disabled" };
        let start = Instant::now();
        while self.ops.mapping_state(&uuid).await? != want {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("{function}'s trigger did not become {want}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(())
    }

    /// The applier trigger's state as the service reports it.
    pub async fn applier_trigger_state(&self, stack: &Stack) -> Result<String> {
        Ok(self
            .ops
            .mapping(&stack.applier, "arn:aws:sqs:")
            .await?
            .state)
    }

    /// A ddb-relay metric of one function since `since_ms`: the sum of its
    /// values, or the maximum with `max`. `None` when nothing was recorded.
    pub async fn metric(
        &self,
        stack: &Stack,
        function: &str,
        name: &str,
        since_ms: i64,
        max: bool,
    ) -> Result<Option<f64>> {
        let dims = [
            ("Migration", stack.migration.as_str()),
            ("Function", function),
        ];
        let stat = if max { Stat::Maximum } else { Stat::Sum };
        let q = MetricQuery::new("DdbRelay", name, &dims, stat);
        let series = self
            .ops
            .metrics(&[q], since_ms - 60_000, now_ms() + 60_000)
            .await?;
        let values = series.into_iter().flatten().map(|(_, v)| v);
        Ok(if max {
            values.reduce(f64::max)
        } else {
            values.reduce(|a, b| a + b)
        })
    }

    /// Visible + in-flight messages of a queue.
    pub async fn queue_depth(&self, url: &str) -> Result<(u64, u64)> {
        let q = self.ops.queue_attrs(url).await?;
        Ok((q.visible, q.in_flight))
    }

    /// Every item of a table (consistent scan), keyed by (pk, sk).
    pub async fn scan(&self, table: &str) -> Result<Keyed> {
        let items = self.scan_items(table).await?;
        let keys = [PK.to_string(), SK.to_string()];
        Ok(diff::index(items, &keys).0)
    }

    /// Every item of a table (consistent scan), in SDK form (any key schema).
    pub async fn scan_raw(&self, table: &str) -> Result<Vec<HashMap<String, Av>>> {
        Ok(self
            .scan_items(table)
            .await?
            .iter()
            .map(relay_aws::convert::to_sdk_item)
            .collect())
    }

    /// Every item of a table (consistent scan).
    pub async fn scan_items(&self, table: &str) -> Result<Vec<Attrs>> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, Av>> = None;
        loop {
            let page = self
                .ddb
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk)
                .with_context(|| format!("scan {table}"))?;
            for it in page.items() {
                items.push(
                    relay_aws::convert::from_sdk_item(it)
                        .map_err(|e| anyhow!("scan {table}: {e}"))?,
                );
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(items)
    }

    /// Compares two tables item for item.
    pub async fn compare(&self, source: &str, target: &str) -> Result<(usize, TableDiff)> {
        let s = self.scan(source).await?;
        let t = self.scan(target).await?;
        Ok((s.len(), diff::diff(&s, &t)))
    }

    /// Waits until the queue is empty and the target equals the source, or
    /// `limit` passes. Returns the last comparison.
    pub async fn wait_converged(
        &self,
        stack: &Stack,
        limit: Duration,
    ) -> Result<(usize, TableDiff)> {
        let start = Instant::now();
        loop {
            let (visible, in_flight) = self.queue_depth(&stack.queue_url).await?;
            if visible + in_flight == 0 {
                let r = self
                    .compare(&stack.source_table, &stack.target_table)
                    .await?;
                if r.1.is_clean() || start.elapsed() > limit {
                    return Ok(r);
                }
            } else if start.elapsed() > limit {
                return self.compare(&stack.source_table, &stack.target_table).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// An SDK error with its whole chain (code, message, cause) in one line.
pub fn sdk<E>(e: E) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    anyhow!(
        "{}",
        aws_smithy_types::error::display::DisplayErrorContext(&e)
    )
}

fn attr_def(name: &str, t: ScalarAttributeType) -> Result<AttributeDefinition> {
    Ok(AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(t)
        .build()?)
}

fn key_elem(name: &str, t: KeyType) -> Result<KeySchemaElement> {
    Ok(KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(t)
        .build()?)
}

/// A deployed ddb-relay stack, as the CLI reads it.
pub type Stack = relay_aws::operator::Deployment;

mod load;
pub mod readme;
pub use load::{preload, relay_json, sample_item, write_rate, Writer, WriterCounts};

/// The current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    relay_aws::runtime::now_ms()
}

/// A unique-enough suffix for names created by one run.
pub fn run_id() -> String {
    format!("{:x}", now_ms() % 0xffff_ffff)
}

/// Keys in `items` (for test messages).
pub fn keys_of(items: &Keyed) -> Vec<Attrs> {
    items
        .values()
        .filter_map(|i| diff::key_of(i, &[PK.to_string(), SK.to_string()]))
        .collect()
}
