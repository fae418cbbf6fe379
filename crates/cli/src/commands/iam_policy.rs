//! `iam-policy`: the policy documents a target in another account needs,
//! made from the stack as deployed (`relay_core::place::iam_policies`).

use anyhow::{anyhow, Result};
use relay_aws::operator::Aws;
use relay_core::place::{arn_parts, iam_policies, PolicyInputs};
use serde::Serialize;

use crate::ctx::{explain, Ctx};
use crate::report::Report;

#[derive(Debug, Serialize)]
pub struct PolicyReport {
    pub stack: String,
    pub target_table: String,
    /// `null` when the target needs no role (same account).
    pub policies: Option<serde_json::Value>,
}

impl Report for PolicyReport {
    fn text(&self) -> String {
        match &self.policies {
            None => format!(
                "{}: the target {} is in the stack's account: the template grants its roles the target table (in its region); no role, no policy to add.",
                self.stack, self.target_table
            ),
            Some(p) => {
                let doc = |k: &str| serde_json::to_string_pretty(&p[k]).unwrap_or_default();
                format!(
                    "Target role {role} (in the target's account)\n\n\
                     == trust policy (aws iam update-assume-role-policy --role-name ROLE --policy-document file://trust.json)\n{trust}\n\n\
                     == permissions policy (aws iam put-role-policy --role-name ROLE --policy-name ddb-relay-target --policy-document file://target.json)\n{perm}\n\n\
                     == the operator's addition (in the stack's account: whoever runs ddb-relay)\n{op}\n\n\
                     The stack's applier and worker roles may already assume the role (the template grants it with TargetRoleArn).",
                    role = p["target_role"].as_str().unwrap_or_default(),
                    trust = doc("target_role_trust_policy"),
                    perm = doc("target_role_permissions_policy"),
                    op = doc("operator_policy_addition"),
                )
            }
        }
    }
}

pub async fn iam_policy<A: Aws>(ctx: &Ctx<A>, operator: Option<&str>) -> Result<PolicyReport> {
    let s = &ctx.stack;
    // The handle is `name@region[/account]`; '@' is not allowed in a table name.
    let real_target = s.target_table.split('@').next().unwrap_or(&s.target_table);
    let policies = if s.target.assumes_role() {
        let source = ctx
            .aws
            .describe(&s.source_table)
            .await
            .map_err(|e| explain(e, &s.source_table))?
            .ok_or_else(|| anyhow!("source table {} not found: check --region", s.source_table))?;
        let arn = source.arn.unwrap_or_default();
        let (partition, region, account) = arn_parts(&arn)
            .ok_or_else(|| anyhow!("the source table's ARN {arn:?} is not a DynamoDB table ARN"))?;
        iam_policies(&PolicyInputs {
            partition,
            account,
            region,
            stack: &s.name,
            target_table: real_target,
            place: &s.target,
            operator,
            roles: &s.roles,
        })
    } else {
        None
    };
    Ok(PolicyReport {
        stack: s.name.clone(),
        target_table: s.target_table.clone(),
        policies,
    })
}
