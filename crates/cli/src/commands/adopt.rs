//! `adopt`: hands the target to the user's IaC. Reads the target as it is
//! and prints its definition (CloudFormation/SAM, CDK, Serverless), the
//! IMPORT change set that adopts it (built from the receiving stack's own
//! deployed template), what the target lacks that the source had, and the
//! source's retirement. Writes files only with `--write`; changes nothing
//! in AWS.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use relay_aws::operator::Aws;
use relay_core::iac::render::{self, Step};
use relay_core::iac::{gaps, Gap, Owner, TableSpec};
use relay_core::place::arn_parts;
use serde::Serialize;

use crate::ctx::{explain, Ctx};
use crate::report::Report;

/// Where the commands say the files are when `--write` is not given.
const DEFAULT_DIR: &str = "ddb-relay-adopt";

#[derive(Debug)]
pub struct AdoptArgs {
    pub logical_id: Option<String>,
    pub into_stack: Option<String>,
    pub write: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct CloudFormation {
    /// The `AWS::DynamoDB::Table` resource (Retain on delete and replace).
    pub resource: serde_json::Value,
    pub resources_to_import: serde_json::Value,
    /// The receiving stack's deployed template plus the resource (`null`:
    /// no stack given or found, or the target is in another region or
    /// account).
    pub import_template: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Serialize)]
pub struct Cdk {
    pub code: String,
    pub mapping: serde_json::Value,
    pub steps: Vec<Step>,
}

#[derive(Debug, Serialize)]
pub struct Serverless {
    pub yaml: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Serialize)]
pub struct AdoptReport {
    pub stack: String,
    pub table: String,
    pub region: String,
    pub logical_id: String,
    pub into_stack: Option<String>,
    /// The stack that already holds the target, if one does (nothing to
    /// import then).
    pub already_in: Option<Owner>,
    /// With `already_in`: the settings in which the stack's definition of
    /// the table differs from the live table (`[]`: none, no drift;
    /// `null`: not compared, see `notes`).
    pub drift: Option<Vec<String>>,
    pub source: String,
    pub source_owner: Option<Owner>,
    /// Why the source's owner could not be looked up (`null`: it was).
    pub owner_error: Option<String>,
    /// Why it is unknown whether a stack already holds the target (`null`:
    /// it is known).
    pub target_owner_error: Option<String>,
    pub spec: TableSpec,
    pub gaps: Vec<Gap>,
    pub cloudformation: CloudFormation,
    pub cdk: Cdk,
    pub serverless: Serverless,
    pub retire: Vec<Step>,
    /// Going back inside the rollback window (not a retirement step).
    pub rollback: Step,
    /// Files written (`--write`).
    pub files: Vec<String>,
    pub notes: Vec<String>,
}

fn steps_text(steps: &[Step]) -> String {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| match &s.command {
            Some(c) => format!("  {}. {}\n     $ {c}", i + 1, s.what),
            None => format!("  {}. {}", i + 1, s.what),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

impl Report for AdoptReport {
    /// 3 when the stack that holds the target defines it otherwise than the
    /// live table is, when that could not be compared, or when whether a
    /// stack holds it could not be looked up: a gate such as
    /// `ddb-relay adopt && cdk deploy` stops.
    fn exit_code(&self) -> i32 {
        let drifted =
            self.already_in.is_some() && self.drift.as_ref().is_none_or(|d| !d.is_empty());
        if drifted || self.target_owner_error.is_some() {
            crate::report::EXIT_NO_GO
        } else {
            0
        }
    }

    fn text(&self) -> String {
        let mut o = Vec::new();
        o.push(format!(
            "Adopting {} (region {}) as {} into {}",
            self.table,
            self.region,
            self.logical_id,
            self.into_stack
                .as_deref()
                .map(|s| format!("stack {s}"))
                .unwrap_or_else(|| "your stack (--into-stack)".into())
        ));
        if let Some(a) = &self.already_in {
            o.push(format!(
                "{} is already in stack {} as {}: nothing to import. {}",
                self.table,
                a.stack,
                a.logical_id,
                match &self.drift {
                    Some(d) if d.is_empty() =>
                        "Its definition there matches the live table: no drift.".to_string(),
                    Some(d) => format!(
                        "Its definition there differs from the live table in: {} (DRIFTED).",
                        d.join(", ")
                    ),
                    None =>
                        "Its definition there could not be compared (see the notes).".to_string(),
                }
            ));
        }
        o.push("\n== 1. What the target lacks that the source had (fix, then run adopt again: the definition is read live)".into());
        if self.gaps.is_empty() {
            o.push("  nothing: the target has every setting the source had".into());
        }
        for g in &self.gaps {
            o.push(format!(
                "  {}: source {}, target {}\n     $ {}",
                g.setting, g.source, g.target, g.fix
            ));
        }
        o.push("\n== 2. CloudFormation and SAM: the resource, as the table is now".into());
        o.push(render::cfn_yaml(&self.spec, &self.logical_id));
        o.push(format!(
            "resources-to-import.json:\n{}",
            pretty(&self.cloudformation.resources_to_import)
        ));
        if self.cloudformation.import_template.is_some() {
            o.push(format!(
                "import-template: stack {}'s deployed template plus {} (written by --write)",
                self.into_stack.as_deref().unwrap_or_default(),
                self.logical_id
            ));
        }
        o.push(steps_text(&self.cloudformation.steps));
        o.push("\n== 3. CDK (TypeScript)".into());
        o.push(self.cdk.code.clone());
        o.push(format!(
            "cdk-import-mapping.json: {}",
            serde_json::to_string(&self.cdk.mapping).unwrap_or_default()
        ));
        o.push(steps_text(&self.cdk.steps));
        o.push("\n== 4. Serverless Framework (serverless.yml)".into());
        o.push(self.serverless.yaml.clone());
        o.push(steps_text(&self.serverless.steps));
        o.push(format!("\n== 5. Retiring the source {}", self.source));
        o.push(steps_text(&self.retire));
        o.push(format!(
            "  To roll back, {}\n     $ {}",
            self.rollback.what,
            self.rollback.command.as_deref().unwrap_or_default()
        ));
        if self.files.is_empty() {
            o.push(format!(
                "\nThe commands name files in {DEFAULT_DIR}/: run again with --write {DEFAULT_DIR} to write them."
            ));
        } else {
            o.push(format!("\nWrote: {}", self.files.join(", ")));
        }
        for n in &self.notes {
            o.push(format!("note: {n}"));
        }
        o.join("\n")
    }
}

pub async fn adopt<A: Aws>(ctx: &Ctx<A>, args: &AdoptArgs) -> Result<AdoptReport> {
    let s = &ctx.stack;
    let remote = s.target.region.is_some() || s.target.assumes_role();
    // The handle is `name@region[/account]`; the real name is before '@'.
    let name = s.target_table.split('@').next().unwrap_or(&s.target_table);
    let source_info = ctx
        .aws
        .describe(&s.source_table)
        .await
        .map_err(|e| explain(e, &s.source_table))?
        .ok_or_else(|| anyhow!("source table {} not found: check --region", s.source_table))?;
    let stack_region = source_info
        .arn
        .as_deref()
        .and_then(arn_parts)
        .map(|(_, r, _)| r.to_string())
        .unwrap_or_default();
    let region = s.target.region.clone().unwrap_or(stack_region.clone());
    let mut spec = ctx
        .aws
        .table_spec(&s.target_table)
        .await
        .map_err(|e| explain(e, &s.target_table))?
        .ok_or_else(|| anyhow!("target table {} not found: seed it first", s.target_table))?;
    spec.name = name.to_string();
    let source = ctx
        .aws
        .table_spec(&s.source_table)
        .await
        .map_err(|e| explain(e, &s.source_table))?
        .ok_or_else(|| anyhow!("source table {} not found", s.source_table))?;
    let logical = match &args.logical_id {
        Some(l) if !render::valid_logical_id(l) => {
            bail!("--logical-id {l:?}: letters and digits only, at most 255")
        }
        Some(l) => l.clone(),
        None => render::logical_id(name),
    };
    let mut notes = Vec::new();
    let (source_owner, owner_error) = match ctx.aws.owner(&s.source_table).await {
        Ok(o) => (o, None),
        Err(e) => (None, Some(explain(e, "CloudFormation").to_string())),
    };
    if let Some(e) = &owner_error {
        notes.push(format!("the source's stack could not be looked up ({e}): the retirement steps cover a stack generically; pass --into-stack"));
    }
    let (already_in, target_owner_error) = match ctx.aws.owner(&s.target_table).await {
        Ok(o) => (o, None),
        Err(e) => {
            let e = explain(e, "CloudFormation").to_string();
            notes.push(format!(
                "whether a stack already holds the target is unknown ({e}): importing it into a second stack would fail, so this exits 3"
            ));
            (None, Some(e))
        }
    };
    // A nested stack's template is written by its root's deploys: no
    // default into it.
    let into_stack = args.into_stack.clone().or_else(|| {
        source_owner
            .as_ref()
            .filter(|o| o.root_stack.is_none())
            .map(|o| o.stack.clone())
    });
    if let Some(o) = source_owner
        .as_ref()
        .filter(|o| o.resource_type != relay_core::iac::TABLE_TYPE)
    {
        notes.push(format!("the source is declared in stack {} as {} ({}, such as CDK's TableV2): the resource printed here is an AWS::DynamoDB::Table, which imports beside it. To keep that type, declare the new table as one yourself (its properties differ: Replicas carry the per-table settings) and import it with ResourceType {}", o.stack, o.logical_id, o.resource_type, o.resource_type));
    }
    if let Some(root) = source_owner.as_ref().and_then(|o| o.root_stack.as_ref()) {
        notes.push(format!("the source's stack is nested in {root}: import from the root stack (CloudFormation: create the change set on the root, with the nested stack's template changed), or pass --into-stack"));
    }
    let dir = args
        .write
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| DEFAULT_DIR.into());
    // The import template: the receiving stack's own deployed template
    // plus the table, so the import changes nothing else.
    let (import_template, parameters) = match (&into_stack, remote, &already_in) {
        (Some(st), false, None) => {
            let body = ctx
                .aws
                .template(st)
                .await
                .map_err(|e| explain(e, &format!("stack {st}")))?;
            let params: Vec<String> = {
                let mut k: Vec<String> = ctx
                    .aws
                    .stack(st)
                    .await
                    .map_err(|e| explain(e, &format!("stack {st}")))?
                    .parameters
                    .into_keys()
                    .collect();
                k.sort();
                k
            };
            (
                Some(
                    render::template_with(&body, &spec, &logical)
                        .map_err(|m| anyhow!("stack {st}: {m}"))?,
                ),
                params,
            )
        }
        (Some(_), true, _) => {
            notes.push(format!("the target is in another region or account: run the import with that account's credentials in {region}, from your stack's template plus the resource above (`ddb-relay` reads stacks in the source's region and account only)"));
            (None, Vec::new())
        }
        _ => (None, Vec::new()),
    };
    let stack_word = into_stack.clone().unwrap_or_else(|| "YOUR-STACK".into());
    let mut cfn_steps =
        render::import_steps(&stack_word, &region, &logical, &parameters, &dir, &s.name);
    let mut cdk_steps = render::cdk_steps("STACK", &dir, &s.name);
    if already_in.is_some() {
        cfn_steps.clear();
        cdk_steps.clear();
    } else if import_template.is_none() {
        cfn_steps.insert(
            0,
            Step {
                what: format!("Put in {dir}/import-template the stack's deployed template (`aws cloudformation get-template --stack-name {stack_word} --query TemplateBody`) plus the resource above, nothing else"),
                command: None,
            },
        );
    }
    if spec.billing == relay_core::iac::PROVISIONED {
        notes.push("provisioned capacity is printed as it is now; with auto scaling it drifts as it scales (declare the scaling in your IaC, or switch to on-demand)".into());
    }
    if spec.kms_key.is_some() {
        notes.push("SSE-KMS: the key ARN is printed as DescribeTable reports it; if it is the AWS managed key (alias/aws/dynamodb), you may declare SSEEnabled: true, SSEType: KMS without KMSMasterKeyId".into());
    }
    if !spec.deletion_protection {
        notes.push(format!("deletion protection is off on {name}: `ddb-relay --stack {} protect --target` before the import, then run adopt again", s.name));
    }
    notes.push("not read: on-demand and warm throughput settings, PITR's recovery period (35 days unless changed), resource policy, contributor insights, Kinesis streaming destination, auto scaling, replicas (declare them yourself if you use them)".into());
    // Drift: the stack's own definition of the table, read back and
    // compared with the live table setting by setting.
    let drift = match &already_in {
        Some(o) if o.resource_type != relay_core::iac::TABLE_TYPE => {
            notes.push(format!("stack {} declares {} as {}: adopt compares only AWS::DynamoDB::Table definitions; use CloudFormation's drift detection (`aws cloudformation detect-stack-resource-drift --stack-name {} --logical-resource-id {}`)", o.stack, o.logical_id, o.resource_type, render::sh(&o.stack), o.logical_id));
            None
        }
        Some(o) => {
            let props = ctx
                .aws
                .template(&o.stack)
                .await
                .map_err(|e| e.message)
                .and_then(|t| relay_core::iac::resource_properties(&t, &o.logical_id))
                .and_then(|p| {
                    p.ok_or_else(|| format!("no resource {} in the template", o.logical_id))
                })
                .and_then(|p| TableSpec::from_cfn(&p));
            match props {
                Ok(declared) => Some(declared.differences(&spec, &[])),
                Err(why) => {
                    notes.push(format!("stack {}'s definition of {} was not compared with the live table: {why} (a property that is not a literal, such as !Ref, cannot be read back)", o.stack, o.logical_id));
                    None
                }
            }
        }
        None => None,
    };
    let resource = serde_json::to_value(spec.cfn_resource())?;
    let resources_to_import = render::resources_to_import(&logical, name);
    let mapping = render::cdk_mapping(&logical, name);
    let sls_stack = into_stack.clone().unwrap_or_else(|| "SERVICE-STAGE".into());
    let serverless = Serverless {
        yaml: render::serverless_yaml(&spec, &logical),
        steps: vec![
            Step {
                what: "Build the import template from the service's deployed stack (Serverless deploys `<service>-<stage>`): the packaged template would change the functions' artifact keys, which an import refuses".into(),
                command: Some(format!("ddb-relay --stack {} adopt --into-stack {} --logical-id {logical} --write {dir}", render::sh(&s.name), render::sh(&sls_stack))),
            },
            Step {
                what: "Run the CloudFormation steps above against that stack".into(),
                command: None,
            },
            Step {
                what: "Add the YAML above under `resources:` in serverless.yml and deploy: the table shows no change".into(),
                command: Some("serverless deploy --stage STAGE".into()),
            },
        ],
    };
    let ownership = match (&source_owner, &owner_error) {
        (Some(o), _) => render::Ownership::Owned(o),
        (None, Some(_)) => render::Ownership::Unknown,
        (None, None) => render::Ownership::Free,
    };
    let source_arn = source_info
        .arn
        .as_deref()
        .ok_or_else(|| anyhow!("DescribeTable gave no ARN for {}", s.source_table))?;
    // The source's own resource policy: the read-only step adds to it, and
    // the rollback puts it back.
    let policy = match ctx.aws.resource_policy(&s.source_table, source_arn).await {
        Ok(p) => p,
        Err(e) => {
            notes.push(format!("the source's resource policy could not be read ({}): the read-only step expects none (NO_POLICY), so it fails rather than replace one", explain(e, &s.source_table)));
            None
        }
    };
    // The table's own policy, without the statement an earlier read-only
    // step added: that is what a rollback puts back.
    let own = match policy.as_ref().map(|(p, _)| render::own_policy(p)) {
        None => Ok(None),
        Some(r) => r,
    };
    // A policy we cannot read as JSON is never replaced: the put then
    // expects no policy (NO_POLICY) and fails.
    let (own, revision) = match own {
        Ok(o) => (o, policy.as_ref().map(|(_, rev)| rev.as_str())),
        Err(m) => {
            notes.push(format!("{}: {m}; the read-only step's put expects no policy and fails: add its Deny statement to the table's policy by hand", s.source_table));
            (None, None)
        }
    };
    let retire = render::retire_steps(
        &s.source_table,
        &stack_region,
        ownership,
        &render::RelayStack {
            name: &s.name,
            control_table: &s.control_table,
            queue_url: &s.queue_url,
            dlq_url: &s.dlq_url,
            stream_failure_url: &s.stream_failure_url,
        },
        &dir,
        revision,
    );
    let read_only = render::read_only_policy(source_arn, own.as_deref()).unwrap_or_else(|m| {
        notes.push(format!("{}: {m}", s.source_table));
        render::read_only_policy(source_arn, None).unwrap_or_default()
    });
    // Compact: DynamoDB counts whitespace toward the policy's size limit.
    let read_only = serde_json::to_string(&read_only)?;
    if read_only.len() > render::MAX_RESOURCE_POLICY_BYTES {
        notes.push(format!("the read-only policy is {} bytes, over DynamoDB's {} for a resource policy: its put will be refused; shorten the table's own policy, or deny writes another way (revoke the writers' IAM permissions)", read_only.len(), render::MAX_RESOURCE_POLICY_BYTES));
    }
    let mut files = Vec::new();
    if let Some(d) = &args.write {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        let mut put = |file: &str, body: String| -> Result<()> {
            let p = d.join(file);
            std::fs::write(&p, body).with_context(|| format!("write {}", p.display()))?;
            files.push(p.display().to_string());
            Ok(())
        };
        put("resources-to-import.json", pretty(&resources_to_import))?;
        if let Some(t) = &import_template {
            put("import-template", t.clone())?;
        }
        put("resource.yaml", render::cfn_yaml(&spec, &logical))?;
        put("cdk-table.ts", render::cdk(&spec, &logical))?;
        put("cdk-import-mapping.json", pretty(&mapping))?;
        put(
            "serverless-resources.yml",
            render::serverless_yaml(&spec, &logical),
        )?;
        put("read-only-policy.json", read_only.clone())?;
        if let Some(original) = &own {
            put("original-policy.json", original.clone())?;
        }
    }
    Ok(AdoptReport {
        stack: s.name.clone(),
        table: name.to_string(),
        region: region.clone(),
        logical_id: logical.clone(),
        into_stack,
        already_in,
        drift,
        source: s.source_table.clone(),
        source_owner,
        owner_error,
        target_owner_error,
        gaps: gaps(&source, &spec, &region, &s.name),
        cloudformation: CloudFormation {
            resource,
            resources_to_import,
            import_template,
            steps: cfn_steps,
        },
        cdk: Cdk {
            code: render::cdk(&spec, &logical),
            mapping,
            steps: cdk_steps,
        },
        serverless,
        retire,
        rollback: render::rollback_step(&s.source_table, &stack_region, &dir, own.is_some()),
        files,
        notes,
        spec,
    })
}
