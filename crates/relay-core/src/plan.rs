//! A migration plan: one file that lists the table pairs of a set, so every
//! command runs on all of them (`ddb-relay --plan FILE COMMAND`).
//!
//! ```yaml
//! version: 1
//! name: shop                  # stacks are named <name>-<pair> unless set
//! region: us-east-1           # where the sources (and the stacks) are
//! parallel: 4                 # pairs worked on at once (1-16)
//! parameters: {LagAlarmSeconds: "120"}   # template parameters for every pair
//! pairs:
//!   - name: orders
//!     source: orders
//!     target: orders-v2
//!     seed: scan              # backup | pitr | export | scan
//!     transform: orders.yaml  # relative to this file
//!   - name: carts
//!     source: carts
//!     target: carts
//!     seed: pitr
//!     target_region: us-west-2
//!   - name: users
//!     source: users
//!     target: users
//!     seed: scan
//!     target_role_arn: arn:aws:iam::222222222222:role/ddb-relay-target
//!     target_external_id: shop-users
//! ```
//!
//! **Invariant:** a plan that parses is one the tools can run: every error
//! (syntax, unknown field, duplicate pair, stack or target, a seed that
//! cannot reach its target's region or account) is found here, before any
//! AWS call, and names the line or the field (`pairs[2].seed`).

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use crate::place::{check_region, SeedReach, TargetPlace};

/// The most pairs worked on at once.
pub const MAX_PARALLEL: usize = 16;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    pub name: String,
    /// The sources' region, where every pair's stack runs (default: the
    /// CLI's `--region`).
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// Template parameters for every pair (a pair's own win).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    pub pairs: Vec<Pair>,
}

fn default_parallel() -> usize {
    4
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    pub name: String,
    pub source: String,
    pub target: String,
    /// The stack (default `<plan>-<pair>`).
    #[serde(default)]
    pub stack: Option<String>,
    /// backup, pitr, export or scan.
    pub seed: String,
    /// The bucket of an export seed.
    #[serde(default)]
    pub s3_bucket: Option<String>,
    /// Extra arguments for `seed` (e.g. `[--segments, "8", --fan-out]`).
    #[serde(default)]
    pub seed_args: Vec<String>,
    /// A transform file, relative to the plan file.
    #[serde(default)]
    pub transform: Option<String>,
    #[serde(default)]
    pub target_region: Option<String>,
    #[serde(default)]
    pub target_role_arn: Option<String>,
    #[serde(default)]
    pub target_external_id: Option<String>,
    /// Template parameters of this pair.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

/// A plan that does not parse or cannot run; the message names the line or
/// the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("plan {file}: {problem}")]
pub struct PlanError {
    pub file: String,
    pub problem: String,
}

const METHODS: [&str; 4] = ["backup", "pitr", "export", "scan"];

/// Template parameters the plan sets itself: a `parameters:` entry may not
/// set them (the pair's fields do).
pub const OWN_PARAMETERS: [&str; 7] = [
    "SourceTableName",
    "SourceStreamArn",
    "TargetTableName",
    "TransformSpec",
    "TargetRegion",
    "TargetRoleArn",
    "TargetExternalId",
];

impl Pair {
    pub fn place(&self) -> TargetPlace {
        TargetPlace {
            region: self.target_region.clone(),
            role_arn: self.target_role_arn.clone(),
            external_id: self.target_external_id.clone(),
        }
    }

    pub fn stack_name(&self, plan: &str) -> String {
        self.stack
            .clone()
            .unwrap_or_else(|| format!("{plan}-{}", self.name))
    }
}

/// The environment variable that tells a pair's process what its stack
/// must have been deployed for (a JSON [`Expected`]).
pub const EXPECTED_ENV: &str = "DDB_RELAY_PLAN_PAIR";

/// A plan's pair as its stack must have been deployed for it: a plan edited
/// without a redeploy must not run on the stack's old pair.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Expected {
    pub pair: String,
    /// The pair's stack: a process on another stack is not this pair's
    /// (the variable left exported in a shell).
    pub stack: String,
    pub source: String,
    pub target: String,
    pub target_region: Option<String>,
    pub target_role_arn: Option<String>,
    /// The pair's transform file's text (`None`: no transform).
    pub transform: Option<String>,
    /// Why the pair's transform file could not be read, if so (then the
    /// transform is not compared).
    #[serde(default)]
    pub transform_unreadable: Option<String>,
}

impl Pair {
    /// `transform`: the text of the pair's transform file, if it has one.
    pub fn expected(&self, plan: &str, transform: Option<String>) -> Expected {
        Expected {
            pair: self.name.clone(),
            stack: self.stack_name(plan),
            source: self.source.clone(),
            target: self.target.clone(),
            target_region: self.target_region.clone(),
            target_role_arn: self.target_role_arn.clone(),
            transform,
            transform_unreadable: None,
        }
    }
}

impl Expected {
    /// Every way the deployed stack (its source, target, the target's place
    /// (`region`: the stack's) and its `TransformSpec`, when the stack
    /// reports it) differs from the plan's pair.
    pub fn check(
        &self,
        (source, target): (&str, &str),
        place: &TargetPlace,
        region: &str,
        deployed_transform: Option<&str>,
    ) -> Result<(), String> {
        let here = |r: &Option<String>| r.clone().unwrap_or_else(|| region.to_string());
        let mut diffs = Vec::new();
        if self.source != source {
            diffs.push(format!("source {} (the plan: {})", source, self.source));
        }
        if self.target != target {
            diffs.push(format!("target {} (the plan: {})", target, self.target));
        }
        if here(&self.target_region) != here(&place.region) {
            diffs.push(format!(
                "target region {} (the plan: {})",
                here(&place.region),
                here(&self.target_region)
            ));
        }
        if self.target_role_arn != place.role_arn {
            diffs.push(format!(
                "target role {} (the plan: {})",
                place.role_arn.as_deref().unwrap_or("none"),
                self.target_role_arn.as_deref().unwrap_or("none")
            ));
        }
        // A stack that does not report its parameters says nothing here
        // (`--transform`, passed to the pair's process, is checked against
        // the deployed spec where one is read).
        let spec = |t: &str| crate::transform::Spec::parse(t).ok();
        // A transform file that cannot be read is not compared: the
        // commands that load it fail on it, and the others (an emergency
        // `pause`) must still run.
        let deployed_transform = deployed_transform.filter(|_| self.transform_unreadable.is_none());
        match (deployed_transform, &self.transform) {
            (Some(d), None) => diffs.push(format!("a transform ({d}; the plan: none)")),
            (Some(d), Some(e)) if spec(d).is_none() || spec(d) != spec(e) => {
                diffs.push(format!("another transform ({d})"));
            }
            _ => {}
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the stack of pair {} is deployed with {}: the plan was edited since it was deployed. Redeploy it (`ddb-relay --plan FILE deploy`) or put the plan back",
                self.pair,
                diffs.join(", ")
            ))
        }
    }
}

impl Pair {
    /// The pair is seeded from an export it already has
    /// (`seed_args: [--from-export, URI]`), so it takes none.
    pub fn loads_an_export(&self) -> bool {
        self.seed_args
            .iter()
            .any(|a| a == "--from-export" || a.starts_with("--from-export="))
    }

    /// The bucket the stack's copy workers must read: an export seed loaded
    /// by them (`--load` or `--from-export`, with `--fan-out`), from
    /// `s3_bucket` or the `--from-export` URI. `None` otherwise.
    pub fn workers_bucket(&self) -> Option<String> {
        let has = |f: &str| {
            self.seed_args
                .iter()
                .any(|a| a == f || a.starts_with(&format!("{f}=")))
        };
        if self.seed != "export" || !has("--fan-out") {
            return None;
        }
        if let Some(b) = self.s3_bucket.as_ref().filter(|_| has("--load")) {
            return Some(b.clone());
        }
        let mut args = self.seed_args.iter();
        while let Some(a) = args.next() {
            let uri = match a.strip_prefix("--from-export=") {
                Some(u) => Some(u),
                None if a == "--from-export" => args.next().map(String::as_str),
                None => None,
            };
            if let Some(Ok((bucket, _))) = uri.map(crate::export::parse_s3_dir) {
                return Some(bucket);
            }
        }
        None
    }
}

impl Plan {
    /// Parses (YAML or JSON) and checks a plan. `default_region` is the
    /// CLI's region, used when the plan names none.
    pub fn parse(file: &str, text: &str, default_region: Option<&str>) -> Result<Plan, PlanError> {
        let fail = |problem: String| PlanError {
            file: file.to_string(),
            problem,
        };
        let mut plan: Plan = serde_yaml_ng::from_str(text).map_err(|e| fail(e.to_string()))?;
        if plan.region.is_none() {
            plan.region = default_region.map(str::to_string);
        }
        plan.check().map_err(fail)?;
        Ok(plan)
    }

    /// The stacks' region.
    pub fn region(&self) -> &str {
        self.region.as_deref().unwrap_or("us-east-1")
    }

    fn check(&self) -> Result<(), String> {
        if self.version != 1 {
            return Err(format!(
                "version: this release reads version 1, got {}",
                self.version
            ));
        }
        check_name("name", &self.name, 64)?;
        let Some(region) = self.region.as_deref() else {
            return Err("region: not set, and no --region or AWS_REGION either".into());
        };
        check_region(region).map_err(|p| format!("region: {p}"))?;
        if !(1..=MAX_PARALLEL).contains(&self.parallel) {
            return Err(format!(
                "parallel: must be from 1 to {MAX_PARALLEL}, got {}",
                self.parallel
            ));
        }
        check_parameters("parameters", &self.parameters)?;
        if self.pairs.is_empty() {
            return Err("pairs: the plan lists no table pairs".into());
        }
        let (mut names, mut stacks, mut targets, mut sources) = (
            HashSet::new(),
            HashSet::new(),
            HashSet::new(),
            HashSet::new(),
        );
        for (i, p) in self.pairs.iter().enumerate() {
            let at = |f: &str| format!("pairs[{i}].{f}");
            check_name(&at("name"), &p.name, 64)?;
            for (f, t) in [("source", &p.source), ("target", &p.target)] {
                check_table(&at(f), t)?;
            }
            let stack = p.stack_name(&self.name);
            check_stack(&at("stack"), &stack)?;
            if !METHODS.contains(&p.seed.as_str()) {
                return Err(format!(
                    "{}: must be one of backup, pitr, export, scan, got {:?}",
                    at("seed"),
                    p.seed
                ));
            }
            let place = p.place();
            place.check().map_err(|(var, problem)| {
                let field = match var {
                    "TARGET_REGION" => "target_region",
                    "TARGET_ROLE_ARN" => "target_role_arn",
                    _ => "target_external_id",
                };
                format!("{}: {}", at(field), problem.replace(var, &at(field)))
            })?;
            if let SeedReach::Refused(why) = place.seed_reach(&p.seed, region) {
                return Err(format!(
                    "{}: {} cannot seed a target in another {}: {why}",
                    at("seed"),
                    p.seed,
                    if place.assumes_role() {
                        "account"
                    } else {
                        "region"
                    }
                ));
            }
            if p.seed == "export" && p.s3_bucket.is_none() && !p.loads_an_export() {
                return Err(format!(
                    "{}: an export seed needs s3_bucket (or --from-export in seed_args)",
                    at("s3_bucket")
                ));
            }
            if p.loads_an_export() && p.s3_bucket.is_some() {
                return Err(format!(
                    "{}: a pair seeded --from-export takes no s3_bucket (the export's URI names its bucket)",
                    at("s3_bucket")
                ));
            }
            if p.seed != "export" && p.s3_bucket.is_some() {
                return Err(format!(
                    "{}: only an export seed uses a bucket",
                    at("s3_bucket")
                ));
            }
            check_parameters(&at("parameters"), &p.parameters)?;
            if !names.insert(p.name.clone()) {
                return Err(format!("{}: pair {:?} is listed twice", at("name"), p.name));
            }
            if !stacks.insert(stack.clone()) {
                return Err(format!(
                    "{}: stack {stack:?} is used by two pairs",
                    at("stack")
                ));
            }
            let target_region = p.target_region.as_deref().unwrap_or(region);
            let target_at = (
                p.target.clone(),
                target_region.to_string(),
                place.account().map(str::to_string),
            );
            if !targets.insert(target_at) {
                return Err(format!(
                    "{}: two pairs write into {} in {target_region}",
                    at("target"),
                    p.target
                ));
            }
            if !place.is_elsewhere(region) && p.source == p.target {
                return Err(format!(
                    "{}: the target is the source ({}, same region and account)",
                    at("target"),
                    p.source
                ));
            }
            if !sources.insert(p.source.clone()) {
                return Err(format!(
                    "{}: source {} is migrated by two pairs (one stream, two forwarders: give it one pair)",
                    at("source"),
                    p.source
                ));
            }
        }
        // A target next to the stacks must not be any pair's source.
        for (i, p) in self.pairs.iter().enumerate() {
            if !p.place().is_elsewhere(region) && sources.contains(&p.target) {
                return Err(format!(
                    "pairs[{i}].target: {} is the source of a pair of this plan (a seed would write into a live source)",
                    p.target
                ));
            }
        }
        Ok(())
    }
}

impl Plan {
    /// The set's dashboard: for every pair, its changes forwarded and
    /// applied, its replication lag, and its failures; and every pair's lag
    /// on one chart. The metrics are the stacks' own (namespace DdbRelay,
    /// `Migration` = stack name), in the stacks' region.
    pub fn dashboard_body(&self) -> String {
        use serde_json::json;
        let region = self.region();
        let metric = |stack: &str, name: &str, function: &str| {
            json!(["DdbRelay", name, "Migration", stack, "Function", function])
        };
        let mut widgets = vec![json!({
            "type": "metric", "x": 0, "y": 0, "width": 24, "height": 6,
            "properties": {
                "title": format!("{}: replication lag of every pair (ms)", self.name),
                "region": region, "stat": "Maximum", "period": 60,
                "metrics": self.pairs.iter().map(|p| metric(&p.stack_name(&self.name), "ReplicationLag", "applier")).collect::<Vec<_>>()
            }
        })];
        for (i, p) in self.pairs.iter().enumerate() {
            let stack = p.stack_name(&self.name);
            let y = 6 + 6 * i;
            widgets.push(json!({
                "type": "metric", "x": 0, "y": y, "width": 12, "height": 6,
                "properties": {
                    "title": format!("{}: forwarded, applied, skipped", p.name),
                    "region": region, "stat": "Sum", "period": 60,
                    "metrics": [
                        metric(&stack, "Forwarded", "forwarder"),
                        metric(&stack, "AppliedPuts", "applier"),
                        metric(&stack, "AppliedDeletes", "applier"),
                        metric(&stack, "SkippedBeforeCutoff", "applier")
                    ]
                }
            }));
            widgets.push(json!({
                "type": "metric", "x": 12, "y": y, "width": 12, "height": 6,
                "properties": {
                    "title": format!("{}: failures and retries", p.name),
                    "region": region, "stat": "Sum", "period": 60,
                    "metrics": [
                        metric(&stack, "FailedMessages", "applier"),
                        metric(&stack, "WriteRetries", "applier"),
                        metric(&stack, "UndecodableMessages", "applier"),
                        metric(&stack, "SendFailures", "forwarder"),
                        metric(&stack, "BadRecords", "forwarder")
                    ]
                }
            }));
        }
        json!({ "widgets": widgets }).to_string()
    }

    /// A CloudFormation template holding only the set's dashboard
    /// (`ddb-relay-plan-<name>`), deployed as the stack `<name>-dashboard`.
    pub fn dashboard_template(&self) -> String {
        let t = serde_json::json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": format!("ddb-relay: the dashboard of migration plan {}", self.name),
            "Resources": {
                "Dashboard": {
                    "Type": "AWS::CloudWatch::Dashboard",
                    "Properties": {
                        "DashboardName": format!("ddb-relay-plan-{}", self.name),
                        "DashboardBody": self.dashboard_body()
                    }
                }
            },
            "Outputs": { "Dashboard": { "Value": format!("ddb-relay-plan-{}", self.name) } }
        });
        serde_json::to_string_pretty(&t).unwrap_or_default()
    }
}

/// A transform file (JSON or YAML) as the one line of JSON the template's
/// `TransformSpec` parameter takes; the spec is checked first.
pub fn transform_parameter(text: &str) -> Result<String, String> {
    crate::transform::Spec::parse(text).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    Ok(v.to_string())
}

fn check_name(field: &str, v: &str, max: usize) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.starts_with(|c: char| c.is_ascii_alphabetic())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: must be 1-{max} letters, digits and '-', starting with a letter, got {v:?}"
        ))
    }
}

fn check_stack(field: &str, v: &str) -> Result<(), String> {
    check_name(field, v, 128).map_err(|e| format!("{e} (a CloudFormation stack name)"))
}

fn check_table(field: &str, v: &str) -> Result<(), String> {
    let ok = (3..=255).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: must be a DynamoDB table name (3-255 of letters, digits, _ - .), got {v:?}"
        ))
    }
}

fn check_parameters(field: &str, params: &BTreeMap<String, String>) -> Result<(), String> {
    for k in params.keys() {
        if OWN_PARAMETERS.contains(&k.as_str()) {
            return Err(format!(
                "{field}.{k}: set by the plan itself (source, target, transform, target_region, target_role_arn, target_external_id)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
