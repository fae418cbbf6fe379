//! The fakes' [`Iac`]: tables as CloudFormation declares them, deletion
//! protection, and owners and templates set by tests.

use super::aws::FakeAws;
use super::lock;
use crate::operator::Iac;
use crate::AwsError;

impl Iac for FakeAws {
    async fn table_spec(
        &self,
        table: &str,
    ) -> Result<Option<relay_core::iac::TableSpec>, AwsError> {
        use relay_core::iac::{AttrDef, KeyPart, TableSpec, PAY_PER_REQUEST};
        self.enter("DescribeTable", table).await?;
        let Some(d) = self.db.with_state(|s| s.describe(table)) else {
            return Ok(None);
        };
        let (key_names, stream) = (d.key_names, d.stream);
        let ttl_attribute = lock(&self.state).ttl_attributes.get(table).cloned();
        Ok(Some(
            TableSpec {
                name: table.into(),
                attributes: key_names
                    .iter()
                    .map(|n| AttrDef {
                        name: n.clone(),
                        ty: "S".into(),
                    })
                    .collect(),
                key: key_names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| KeyPart {
                        name: n.clone(),
                        kind: if i == 0 { "HASH" } else { "RANGE" }.into(),
                    })
                    .collect(),
                billing: PAY_PER_REQUEST.into(),
                throughput: None,
                gsis: vec![],
                lsis: vec![],
                stream_view: stream.then(|| "NEW_AND_OLD_IMAGES".to_string()),
                ttl_attribute,
                pitr: false,
                deletion_protection: self.is_protected(table),
                table_class: None,
                kms_key: None,
                tags: Default::default(),
            }
            .normalised(),
        ))
    }

    async fn set_deletion_protection(&self, table: &str, on: bool) -> Result<(), AwsError> {
        self.enter("UpdateTable", table).await?;
        if self.db.with_state(|s| s.describe(table)).is_none() {
            return Err(AwsError::permanent(
                "UpdateTable",
                "ResourceNotFoundException",
                "Requested resource not found",
            ));
        }
        let mut s = lock(&self.state);
        if on {
            s.protected.insert(table.into());
        } else {
            s.protected.remove(table);
        }
        Ok(())
    }

    async fn owner(&self, table: &str) -> Result<Option<relay_core::iac::Owner>, AwsError> {
        self.enter("DescribeStackResources", table).await?;
        Ok(lock(&self.state).owners.get(table).cloned())
    }

    async fn resource_policy(
        &self,
        table: &str,
        _arn: &str,
    ) -> Result<Option<(String, String)>, AwsError> {
        self.enter("GetResourcePolicy", table).await?;
        Ok(None)
    }

    async fn template(&self, stack: &str) -> Result<String, AwsError> {
        tokio::task::yield_now().await;
        lock(&self.state)
            .templates
            .get(stack)
            .cloned()
            .ok_or_else(|| AwsError::permanent("GetTemplate", "ValidationError", "stack not found"))
    }
}
