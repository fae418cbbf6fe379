//! The SDK's clients, one per service, each recording AWS's clock.

use super::{server_time, Deployment};
use crate::runtime::ServerTime;
use crate::AwsError;

/// Clients for every service the operator touches.
#[derive(Clone, Debug)]
pub struct Sdk {
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub cfn: aws_sdk_cloudformation::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub cw: aws_sdk_cloudwatch::Client,
    pub s3: aws_sdk_s3::Client,
    /// The target's client, when the target is elsewhere (another region
    /// or account): calls that name its handle go there.
    target: Option<RemoteTable>,
    /// AWS's clock, from every response's `Date`.
    time: ServerTime,
}

#[derive(Clone, Debug)]
struct RemoteTable {
    handle: String,
    name: String,
    ddb: aws_sdk_dynamodb::Client,
}

/// A service's client on `conf` with the `Date` interceptor.
macro_rules! client {
    ($service:ident, $conf:expr, $date:expr) => {
        $service::Client::from_conf(
            $service::config::Builder::from($conf)
                .interceptor($date)
                .build(),
        )
    };
}

impl Sdk {
    pub fn new(conf: &aws_config::SdkConfig) -> Self {
        let time = ServerTime::default();
        let date = || server_time::DateHeader(time.clone());
        Sdk {
            ddb: client!(aws_sdk_dynamodb, conf, date()),
            sqs: client!(aws_sdk_sqs, conf, date()),
            cfn: client!(aws_sdk_cloudformation, conf, date()),
            lambda: client!(aws_sdk_lambda, conf, date()),
            cw: client!(aws_sdk_cloudwatch, conf, date()),
            // Emulators on an endpoint URL serve path-style requests only
            // (no `bucket.localhost` names); AWS itself takes either.
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(conf)
                    .force_path_style(conf.endpoint_url().is_some())
                    .interceptor(date())
                    .build(),
            ),
            target: None,
            time,
        }
    }

    /// AWS's clock, as the responses of these clients said it.
    pub fn server_time(&self) -> ServerTime {
        self.time.clone()
    }

    /// Routes the stack's target through its own client when the target is
    /// in another region or account (`stack_region` is this configuration's
    /// region): from here on `stack.target_table` is the target's handle
    /// (`name@region[/account]`), and every table call that names it goes
    /// to that client with the real name; `stack.target.region` is set only
    /// when it differs from `stack_region`.
    pub async fn route_target(
        &mut self,
        base: &aws_config::SdkConfig,
        stack: &mut Deployment,
        stack_region: &str,
    ) {
        // Normalised: afterwards `stack.target` names only what differs.
        if !stack.target.other_region(stack_region) {
            stack.target.region = None;
        }
        if !stack.target.is_elsewhere(stack_region) {
            return;
        }
        let conf = crate::sdk::target_config(base, &stack.target, &stack.migration).await;
        let handle = stack.target.handle(&stack.target_table, stack_region);
        self.target = Some(RemoteTable {
            handle: handle.clone(),
            name: std::mem::replace(&mut stack.target_table, handle),
            ddb: client!(
                aws_sdk_dynamodb,
                &conf,
                server_time::DateHeader(self.time.clone())
            ),
        });
    }

    /// The client and the real name for `table` (a name or the target's
    /// handle).
    pub(crate) fn at<'a>(&'a self, table: &'a str) -> (&'a aws_sdk_dynamodb::Client, &'a str) {
        match &self.target {
            Some(t) if t.handle == table => (&t.ddb, &t.name),
            _ => (&self.ddb, table),
        }
    }

    pub(crate) fn is_remote(&self, table: &str) -> bool {
        self.target.as_ref().is_some_and(|t| t.handle == table)
    }

    /// DescribeTable for `table` (a name or the target's handle); `None`:
    /// no such table.
    pub(crate) async fn describe_table(
        &self,
        table: &str,
    ) -> Result<Option<aws_sdk_dynamodb::types::TableDescription>, AwsError> {
        let (ddb, name) = self.at(table);
        match ddb.describe_table().table_name(name).send().await {
            Ok(d) => Ok(d.table),
            Err(err) => {
                let err = crate::sdk::classify("DescribeTable", &err);
                if err.code == "ResourceNotFoundException" {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }
}
