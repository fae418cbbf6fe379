//! Lambda: event source mappings (the triggers) and function settings.

use super::{e, Mapping, Sdk, Triggers};
use crate::AwsError;

impl Triggers for Sdk {
    async fn mapping(&self, function: &str, prefix: &str) -> Result<Mapping, AwsError> {
        let list = self
            .lambda
            .list_event_source_mappings()
            .function_name(function)
            .send()
            .await
            .map_err(e("ListEventSourceMappings"))?;
        list.event_source_mappings()
            .iter()
            .find(|m| m.event_source_arn().is_some_and(|a| a.starts_with(prefix)))
            .map(|m| Mapping {
                uuid: m.uuid().unwrap_or_default().to_string(),
                state: m.state().unwrap_or("Unknown").to_string(),
                source_arn: m.event_source_arn().unwrap_or_default().to_string(),
                last_result: m.last_processing_result().map(str::to_string),
            })
            .ok_or_else(|| {
                AwsError::permanent(
                    "ListEventSourceMappings",
                    "ResourceNotFoundException",
                    &format!("no {prefix}* trigger on function {function}"),
                )
            })
    }

    async fn mapping_state(&self, uuid: &str) -> Result<String, AwsError> {
        let m = self
            .lambda
            .get_event_source_mapping()
            .uuid(uuid)
            .send()
            .await
            .map_err(e("GetEventSourceMapping"))?;
        Ok(m.state().unwrap_or("Unknown").to_string())
    }

    async fn set_mapping(&self, uuid: &str, enabled: bool) -> Result<(), AwsError> {
        self.lambda
            .update_event_source_mapping()
            .uuid(uuid)
            .enabled(enabled)
            .send()
            .await
            .map_err(e("UpdateEventSourceMapping"))?;
        Ok(())
    }

    async fn function_timeout_s(&self, function: &str) -> Result<u64, AwsError> {
        let c = self
            .lambda
            .get_function_configuration()
            .function_name(function)
            .send()
            .await
            .map_err(e("GetFunctionConfiguration"))?;
        Ok(c.timeout().unwrap_or(3).max(0) as u64)
    }

    async fn function_env(&self, function: &str, var: &str) -> Result<Option<String>, AwsError> {
        let c = self
            .lambda
            .get_function_configuration()
            .function_name(function)
            .send()
            .await
            .map_err(e("GetFunctionConfiguration"))?;
        Ok(c.environment()
            .and_then(|env| env.variables())
            .and_then(|v| v.get(var))
            .cloned())
    }
}
