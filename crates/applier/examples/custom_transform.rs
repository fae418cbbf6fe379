//! Build your own applier with a custom transform.
//!
//! The declarative spec (`TransformSpec` in the template) covers renames,
//! drops, constants and derived keys. When a migration needs logic, write a
//! [`Transform`] and build this file as your applier instead of the stock
//! one: the same queue, control table and guarantees, your mapping.
//!
//! ```text
//! cargo lambda build --release --arm64 --example custom_transform
//! ```
//!
//! Then point the template's `Applier` at it (CodeUri/Binary), and give the
//! CLI the same mapping for `seed --method scan` and `verify` (a declarative
//! spec with the same result, or your own build of the CLI with this type).
//!
//! This example splits `FullName` into `First` and `Last`, and keys the target
//! on a lower-cased `Email`.

use std::collections::BTreeSet;

use aws_lambda_events::event::sqs::SqsBatchResponse;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use relay_applier::{Applier, Messages};
use relay_aws::runtime::deadline_from_epoch_ms;
use relay_aws::sdk::{load_config, CloudWatchMetrics, DynamoTable};
use relay_core::config::ApplierConfig;
use relay_core::item::{AttributeValue, Attrs};
use relay_core::transform::{Transform, TransformError};

/// Pure and deterministic: the same input gives the same output, in the
/// applier, in the scan copy and in verify.
#[derive(Debug)]
struct SplitNames;

impl Transform for SplitNames {
    fn item(&self, source: &Attrs) -> Result<Attrs, TransformError> {
        let mut out = source.clone();
        if let Some(AttributeValue::S(full)) = source.get("FullName") {
            let (first, last) = full.split_once(' ').unwrap_or((full.as_str(), ""));
            out.insert("First".into(), AttributeValue::S(first.into()));
            out.insert("Last".into(), AttributeValue::S(last.into()));
            out.remove("FullName");
        }
        out.extend(self.key_only(source)?);
        Ok(out)
    }

    fn key_sources(&self) -> BTreeSet<String> {
        BTreeSet::from(["Email".to_string()])
    }

    fn target_key_names(&self) -> Vec<String> {
        vec!["email_id".into()]
    }

    fn key_only(&self, image: &Attrs) -> Result<Attrs, TransformError> {
        match image.get("Email") {
            Some(AttributeValue::S(e)) => Ok(Attrs::from([(
                "email_id".to_string(),
                AttributeValue::S(e.to_lowercase()),
            )])),
            _ => Err(TransformError::Missing("Email".into())),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // JSON logs and level from Lambda's logging controls (AWS_LAMBDA_LOG_FORMAT/LEVEL).
    lambda_runtime::tracing::init_default_subscriber();
    let config = ApplierConfig::from_env(&|k: &str| std::env::var(k).ok())?;
    let sdk = load_config().await;
    let applier = Applier::new(
        config.clone(),
        DynamoTable::new(&sdk, &config.target_table),
        DynamoTable::new(&sdk, &config.source_table),
        DynamoTable::new(&sdk, &config.control_table),
        CloudWatchMetrics::new(&sdk),
    )
    .with_transform(Box::new(SplitNames));
    let applier = &applier;
    run(service_fn(move |event: LambdaEvent<Messages>| async move {
        let deadline = deadline_from_epoch_ms(event.context.deadline);
        Ok::<SqsBatchResponse, Error>(applier.handle(event.payload, deadline).await)
    }))
    .await
}
