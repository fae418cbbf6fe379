//! `cutover`: GO or NO-GO, with every reason. Unknown is not zero.

use anyhow::Result;
use relay_aws::operator::Aws;
use relay_core::decide::{self, CheckStatus, CutoverThresholds, Decision};
use serde::Serialize;

use super::status::status;
use crate::ctx::Ctx;
use crate::report::{Report, EXIT_NO_GO};

#[derive(Debug, Serialize)]
pub struct CutoverReport {
    pub stack: String,
    #[serde(flatten)]
    pub decision: Decision,
}

impl Report for CutoverReport {
    fn text(&self) -> String {
        let d = &self.decision;
        format!(
            "{}\n{}",
            check_lines(&d.checks),
            if d.go {
                "GO: the target is in sync. Next: stop writes to the source, run `ddb-relay finish` (it drains the last changes), then switch your application to the target".to_string()
            } else {
                format!("NO-GO: {}", d.reasons.join("; "))
            }
        )
    }

    fn exit_code(&self) -> i32 {
        if self.decision.go {
            0
        } else {
            EXIT_NO_GO
        }
    }
}

/// A checklist as text lines.
pub fn check_lines(checks: &[decide::Check]) -> String {
    checks
        .iter()
        .map(|c| {
            let tag = match c.status {
                CheckStatus::Pass => "PASS",
                CheckStatus::Warn => "WARN",
                CheckStatus::Fail => "FAIL",
            };
            format!("{tag}  {:<26} {}", c.name, c.detail)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn cutover<A: Aws>(
    ctx: &Ctx<A>,
    thresholds: &CutoverThresholds,
    window: u64,
) -> Result<CutoverReport> {
    let s = status(ctx, window).await?;
    Ok(CutoverReport {
        stack: s.stack.clone(),
        decision: decide::cutover(&s, thresholds),
    })
}
