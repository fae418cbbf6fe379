//! `protect`: deletion protection on the source (or the target), so the
//! deploy that points the user's template at the new table cannot delete
//! the old one; names the stack that owns it and the template fix.

use anyhow::{anyhow, Result};
use relay_aws::operator::Aws;
use relay_core::iac::{exposure, Exposure, Owner};
use serde::Serialize;

use crate::ctx::{explain, Ctx};
use crate::report::Report;

#[derive(Debug, Serialize)]
pub struct ProtectReport {
    pub stack: String,
    pub table: String,
    /// `source` or `target`.
    pub which: &'static str,
    pub was: bool,
    pub now: bool,
    pub dry_run: bool,
    /// The CloudFormation stack that owns the table (`null`: none found).
    pub owner: Option<Owner>,
    /// Why the owner lookup failed, when it did (protection is set anyway).
    pub owner_error: Option<String>,
    pub exposure: Exposure,
}

impl Report for ProtectReport {
    fn text(&self) -> String {
        let head = match (self.was, self.dry_run) {
            (true, _) => format!(
                "deletion protection already on for {} ({})",
                self.table, self.which
            ),
            (false, true) => format!(
                "dry run: would turn deletion protection on for {} ({})",
                self.table, self.which
            ),
            (false, false) => format!(
                "deletion protection on for {} ({}); it was off",
                self.table, self.which
            ),
        };
        let mut out = vec![head];
        if let Some(o) = &self.owner {
            out.push(format!(
                "owned by stack {} as {} (DeletionPolicy {}, UpdateReplacePolicy {})",
                o.stack,
                o.logical_id,
                o.deletion_policy.as_deref().unwrap_or("not set"),
                o.update_replace_policy.as_deref().unwrap_or("not set")
            ));
            if !o.retains() {
                out.push(format!(
                    "also set, in stack {}'s template, on {}:\n    DeletionPolicy: Retain\n    UpdateReplacePolicy: Retain\n  (CDK: removalPolicy: RemovalPolicy.RETAIN). Deletion protection makes CloudFormation's delete of it fail (the table stays, outside the stack); Retain makes removing it from the stack a deliberate, clean step.",
                    o.stack, o.logical_id
                ));
            }
        }
        if let Some(e) = &self.owner_error {
            out.push(format!("could not look up the owning stack: {e}"));
        }
        out.join("\n")
    }
}

pub async fn protect<A: Aws>(ctx: &Ctx<A>, target: bool, dry_run: bool) -> Result<ProtectReport> {
    let s = &ctx.stack;
    let (table, which) = if target {
        (&s.target_table, "target")
    } else {
        (&s.source_table, "source")
    };
    let info = ctx
        .aws
        .describe(table)
        .await
        .map_err(|e| explain(e, table))?
        .ok_or_else(|| anyhow!("{which} table {table} not found: check --region"))?;
    let (owner, owner_error) = match ctx.aws.owner(table).await {
        Ok(o) => (o, None),
        Err(e) => (None, Some(explain(e, "CloudFormation").to_string())),
    };
    let was = info.deletion_protection;
    if !was && !dry_run {
        ctx.aws
            .set_deletion_protection(table, true)
            .await
            .map_err(|e| explain(e, table))?;
    }
    let now = was || !dry_run;
    Ok(ProtectReport {
        stack: s.name.clone(),
        table: table.clone(),
        which,
        was,
        now,
        dry_run,
        exposure: exposure(table, now, owner.as_ref()),
        owner,
        owner_error,
    })
}
