//! `ddb-relay --plan FILE deploy`: one `sam deploy` per pair (its stack in
//! the plan's region, with the pair's source, stream, target, transform and
//! target place as parameters), the first alone (it may create sam's managed
//! bucket), then at most `parallel` at once, then the set's
//! dashboard as a stack of its own (`<plan>-dashboard`).
//!
//! **Boundary:** the stacks are deployed by `sam deploy`, exactly as one
//! stack is by hand; this command only fills in the parameters.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use relay_aws::operator::Aws;
use relay_core::plan::{transform_parameter, Plan};

use crate::ctx::explain;
use crate::plan::{emit, run_jobs, transform_path, Job, PairResult};

/// `deploy`'s options.
#[derive(Debug)]
pub struct DeployOpts<'a> {
    pub template_file: &'a Path,
    pub sam: &'a str,
    /// `--profile`, for `sam` too.
    pub profile: Option<&'a str>,
    pub dry_run: bool,
    pub sam_args: &'a [String],
}

fn sam_deploy(o: &DeployOpts<'_>, template: &Path, stack: &str, region: &str) -> Command {
    let mut c = Command::new(o.sam);
    c.arg("deploy")
        .arg("--template-file")
        .arg(template)
        .args(["--stack-name", stack, "--region", region])
        .args(["--capabilities", "CAPABILITY_IAM"])
        .args(["--no-confirm-changeset", "--no-fail-on-empty-changeset"]);
    if let Some(p) = o.profile {
        c.args(["--profile", p]);
    }
    c
}

/// Every pair's `sam deploy` parameters: the plan's and the pair's (the
/// pair's win), then the pair's own fields.
pub fn parameters(plan: &Plan, file: &Path, i: usize, stream_arn: &str) -> Result<Vec<String>> {
    let p = &plan.pairs[i];
    // The pair's own parameters win over the plan's.
    let mut merged = plan.parameters.clone();
    // Workers that load an export read its bucket: over the plan's
    // parameters, under the pair's own (`seed` checks it against the
    // stack's).
    if let Some(b) = p.workers_bucket() {
        merged.insert("ExportBucketName".to_string(), b);
    }
    merged.extend(p.parameters.clone());
    let mut params: Vec<String> = merged.iter().map(|(k, v)| format!("{k}={v}")).collect();
    params.push(format!("SourceTableName={}", p.source));
    params.push(format!("SourceStreamArn={stream_arn}"));
    params.push(format!("TargetTableName={}", p.target));
    // Always given, empty when the pair has none: `sam deploy` keeps a
    // stack's previous value of a parameter it is not given, so a field
    // removed from the plan would otherwise stay deployed for good.
    for (k, v) in [
        ("TargetRegion", &p.target_region),
        ("TargetRoleArn", &p.target_role_arn),
        ("TargetExternalId", &p.target_external_id),
    ] {
        match v {
            Some(v) => params.push(format!("{k}={v}")),
            None => params.push(format!("{k}=''")),
        }
    }
    if let Some(t) = transform_path(file, p) {
        let text = std::fs::read_to_string(&t)
            .with_context(|| format!("pairs[{i}].transform: cannot read {}", t.display()))?;
        let one_line = transform_parameter(&text)
            .map_err(|e| anyhow::anyhow!("pairs[{i}].transform {}: {e}", t.display()))?;
        if one_line.contains('\'') {
            bail!("pairs[{i}].transform {}: a transform with a ' cannot pass through sam's --parameter-overrides", t.display());
        }
        // One argument, quoted as sam's --parameter-overrides parser wants.
        params.push(format!("TransformSpec='{one_line}'"));
    } else {
        params.push("TransformSpec=''".to_string());
    }
    Ok(params)
}

/// `w` as one shell word: as it is when it is plain, else in single quotes.
pub fn shell_word(w: &str) -> String {
    let plain = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@,+%".contains(c));
    if plain {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

#[allow(clippy::print_stdout)] // the CLI's output
pub async fn deploy<A: Aws>(
    aws: &A,
    plan: &Plan,
    file: &Path,
    o: &DeployOpts<'_>,
    json: bool,
) -> Result<i32> {
    if !o.dry_run && !o.template_file.exists() {
        bail!(
            "{} not found: build the template first (`sam build`; `make build-local` for the local emulator)",
            o.template_file.display()
        );
    }
    let region = plan.region();
    let mut jobs = Vec::new();
    let mut failed = Vec::new();
    for (i, p) in plan.pairs.iter().enumerate() {
        let stack = p.stack_name(&plan.name);
        // The stream ARN changes when a stream is re-enabled: read it now.
        let stream = match aws.describe(&p.source).await {
            Ok(Some(t)) => t.stream_arn.ok_or_else(|| {
                anyhow::anyhow!(
                    "source {} has no stream: enable one (NEW_AND_OLD_IMAGES)",
                    p.source
                )
            }),
            Ok(None) => Err(anyhow::anyhow!("source {} not found in {region}", p.source)),
            Err(e) => Err(explain(e, &p.source)),
        };
        let params = stream.and_then(|arn| parameters(plan, file, i, &arn));
        match params {
            Ok(params) => {
                let mut c = sam_deploy(o, o.template_file, &stack, region);
                c.arg("--resolve-s3")
                    .arg("--parameter-overrides")
                    .args(&params)
                    .args(o.sam_args);
                jobs.push(Job {
                    pair: p.name.clone(),
                    stack,
                    command: c,
                });
            }
            Err(e) => failed.push(PairResult {
                pair: p.name.clone(),
                stack,
                exit: 1,
                result: None,
                error: Some(format!("{e:#}")),
            }),
        }
    }
    let dir = tempfile::tempdir().context("a temporary directory for the dashboard template")?;
    let dash_file = dir.path().join("dashboard.json");
    std::fs::write(&dash_file, plan.dashboard_template())
        .context("write the dashboard template")?;
    let mut dash = sam_deploy(o, &dash_file, &format!("{}-dashboard", plan.name), region);
    dash.args(o.sam_args);
    if o.dry_run {
        for j in jobs.iter().map(|j| &j.command).chain([&dash]) {
            // Quoted for a shell, so a pasted `TargetRegion=''` still
            // reaches sam as an empty value.
            let words: Vec<String> = std::iter::once(j.get_program())
                .chain(j.get_args())
                .map(|a| shell_word(&a.to_string_lossy()))
                .collect();
            println!("{}", words.join(" "));
        }
        for f in &failed {
            println!("# {}: {}", f.pair, f.error.as_deref().unwrap_or_default());
        }
        return Ok(if failed.is_empty() { 0 } else { 1 });
    }
    // The first deploy alone: `--resolve-s3` creates sam's managed bucket
    // stack on first use, and two deploys at once would both try.
    let rest = if jobs.is_empty() {
        Vec::new()
    } else {
        jobs.split_off(1)
    };
    let mut results = run_jobs(jobs, 1, json);
    results.extend(run_jobs(rest, plan.parallel, json));
    results.extend(failed);
    results.extend(run_jobs(
        vec![Job {
            pair: "(dashboard)".into(),
            stack: format!("{}-dashboard", plan.name),
            command: dash,
        }],
        1,
        json,
    ));
    Ok(emit(plan, "deploy", results, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_gets_its_parameters_and_a_one_line_transform() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.yaml"), "rename: {a: b}\n").unwrap();
        let file = dir.path().join("plan.yaml");
        let plan = Plan::parse(
            "plan.yaml",
            "version: 1\nname: shop\nregion: us-east-1\nparameters: {LogLevel: debug}\npairs:\n  - {name: users, source: users, target: users, seed: scan, transform: t.yaml, target_role_arn: 'arn:aws:iam::222222222222:role/t', target_external_id: ab, parameters: {ApplierTimeoutSeconds: '10'}}\n",
            None,
        )
        .unwrap();
        let p = parameters(&plan, &file, 0, "arn:stream").unwrap();
        assert_eq!(
            p,
            [
                "ApplierTimeoutSeconds=10",
                "LogLevel=debug",
                "SourceTableName=users",
                "SourceStreamArn=arn:stream",
                "TargetTableName=users",
                "TargetRegion=''",
                "TargetRoleArn=arn:aws:iam::222222222222:role/t",
                "TargetExternalId=ab",
                "TransformSpec='{\"rename\":{\"a\":\"b\"}}'",
            ]
        );
        // An export loaded by the stack's workers: they may read its bucket,
        // unless the pair's parameters name one.
        let exports = Plan::parse(
            "plan.yaml",
            "version: 1\nname: shop\nregion: us-east-1\nparameters: {ExportBucketName: shared}\npairs:\n  - {name: a, source: aaa, target: aaa2, seed: export, s3_bucket: ex, seed_args: [--load, --fan-out]}\n  - {name: b, source: bbb, target: bbb2, seed: export, seed_args: ['--from-export=s3://old/p/AWSDynamoDB/01', --fan-out]}\n  - {name: c, source: ccc, target: ccc2, seed: export, s3_bucket: ex, seed_args: [--load, --fan-out], parameters: {ExportBucketName: mine}}\n  - {name: d, source: ddd, target: ddd2, seed: export, s3_bucket: ex, seed_args: [--load]}\n",
            None,
        )
        .unwrap();
        let bucket = |i| {
            parameters(&exports, &file, i, "arn:stream")
                .unwrap()
                .into_iter()
                .find(|p| p.starts_with("ExportBucketName="))
        };
        assert_eq!(bucket(0).as_deref(), Some("ExportBucketName=ex"));
        assert_eq!(bucket(1).as_deref(), Some("ExportBucketName=old"));
        assert_eq!(bucket(2).as_deref(), Some("ExportBucketName=mine"));
        assert_eq!(
            bucket(3).as_deref(),
            Some("ExportBucketName=shared"),
            "the plan's, for a load in this process"
        );
        // A pair without a transform or a target elsewhere clears them: a
        // field removed from the plan must not stay deployed.
        let plain = parameters(&exports, &file, 0, "arn:stream").unwrap();
        for cleared in [
            "TargetRegion=''",
            "TargetRoleArn=''",
            "TargetExternalId=''",
            "TransformSpec=''",
        ] {
            assert!(plain.iter().any(|p| p == cleared), "{cleared}: {plain:?}");
        }
        // The dry run prints commands a shell passes on as they were.
        assert_eq!(shell_word("TargetTableName=users"), "TargetTableName=users");
        assert_eq!(shell_word("TargetRegion=''"), r"'TargetRegion='\'''\'''");
        assert_eq!(shell_word("a b"), "'a b'");
        std::fs::write(dir.path().join("t.yaml"), "rename: {a: 1").unwrap();
        let e = parameters(&plan, &file, 0, "arn:stream").unwrap_err();
        assert!(e.to_string().contains("pairs[0].transform"), "{e}");
    }
}
