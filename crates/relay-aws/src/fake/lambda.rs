//! The fakes' [`Triggers`]: the functions' event source mappings, their
//! timeouts and environment, and the faults tests set on trigger updates.

use super::aws::FakeAws;
use super::lock;
use crate::operator::{Mapping, Triggers};
use crate::AwsError;

impl FakeAws {
    async fn mapping_delay(&self, call: Option<bool>) {
        let d = lock(&self.state)
            .mapping_latency
            .as_mut()
            .map_or(std::time::Duration::ZERO, |f| f(call));
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

impl Triggers for FakeAws {
    async fn mapping(&self, function: &str, prefix: &str) -> Result<Mapping, AwsError> {
        tokio::task::yield_now().await;
        let found = lock(&self.state)
            .triggers
            .iter()
            .find(|t| t.function == function && t.source_arn.starts_with(prefix))
            .map(|t| Mapping {
                uuid: t.uuid.clone(),
                state: if t.enabled { "Enabled" } else { "Disabled" }.into(),
                source_arn: t.source_arn.clone(),
                last_result: None,
            })
            .ok_or_else(|| {
                AwsError::permanent(
                    "ListEventSourceMappings",
                    "ResourceNotFoundException",
                    &format!("no {prefix}* trigger on function {function}"),
                )
            });
        self.mapping_delay(None).await;
        found
    }

    async fn mapping_state(&self, uuid: &str) -> Result<String, AwsError> {
        tokio::task::yield_now().await;
        lock(&self.state)
            .triggers
            .iter()
            .find(|t| t.uuid == uuid)
            .map(|t| if t.enabled { "Enabled" } else { "Disabled" }.to_string())
            .ok_or_else(|| {
                AwsError::permanent(
                    "GetEventSourceMapping",
                    "ResourceNotFoundException",
                    "no such mapping",
                )
            })
    }

    async fn set_mapping(&self, uuid: &str, enabled: bool) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        self.mapping_delay(Some(enabled)).await;
        let mut s = lock(&self.state);
        let hit = match &s.mapping_fault_of {
            None => true,
            Some(f) => s
                .triggers
                .iter()
                .any(|t| t.uuid == uuid && &t.function == f),
        };
        let fault = s.mapping_fault.clone().filter(|_| hit);
        if fault.is_none() || s.mapping_fault_lands {
            for t in s.triggers.iter_mut() {
                if t.uuid == uuid {
                    t.enabled = enabled;
                }
            }
        }
        fault.map_or(Ok(()), Err)
    }

    async fn function_timeout_s(&self, function: &str) -> Result<u64, AwsError> {
        Ok(lock(&self.state)
            .timeouts
            .get(function)
            .copied()
            .unwrap_or(3))
    }

    async fn function_env(&self, function: &str, var: &str) -> Result<Option<String>, AwsError> {
        Ok(lock(&self.state)
            .env
            .get(&(function.to_string(), var.to_string()))
            .cloned())
    }
}
