//! CloudFormation: a stack's outputs and parameters.

use super::{e, Sdk, StackInfo, Stacks};
use crate::AwsError;

impl Stacks for Sdk {
    async fn stack(&self, name: &str) -> Result<StackInfo, AwsError> {
        let d = self
            .cfn
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .map_err(e("DescribeStacks"))?;
        let s = d.stacks().first().ok_or_else(|| {
            AwsError::permanent("DescribeStacks", "ValidationError", "stack not found")
        })?;
        Ok(StackInfo {
            name: name.to_string(),
            status: s
                .stack_status()
                .map(|x| x.as_str().to_string())
                .unwrap_or_default(),
            outputs: s
                .outputs()
                .iter()
                .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
                .collect(),
            parameters: s
                .parameters()
                .iter()
                .filter_map(|p| {
                    Some((
                        p.parameter_key()?.to_string(),
                        p.parameter_value().unwrap_or_default().to_string(),
                    ))
                })
                .collect(),
        })
    }
}
