//! `ddb-relay --plan FILE COMMAND`: one command on every table pair of a
//! migration plan ([`relay_core::plan`]).
//!
//! Each pair has its own stack, so each pair's command runs as its own
//! `ddb-relay --stack STACK --region REGION ...` process: at most
//! `parallel` at once, each with its own output, errors and exit code. A
//! pair that fails, hangs on a throttled target or waits on a poison message
//! never stops the others from being worked on; the aggregate verdict says
//! which pairs are not done. `deploy` (one `sam deploy` per pair, plus the
//! set's dashboard) and `iam-policy` run here.
//!
//! **Invariant:** the aggregate is GO (exit 0) only when every pair's
//! command exited 0: one NO-GO pair makes the set NO-GO (exit 3), one
//! error makes it an error (exit 1).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use relay_core::plan::{Pair, Plan};
use serde::Serialize;

use crate::report::EXIT_NO_GO;

/// Global options that take a value (so their value is not a command).
const VALUED: [&str; 7] = [
    "--profile",
    "--region",
    "--endpoint-url",
    "--stack",
    "--output",
    "--transform",
    "--plan",
];

/// The arguments of a plan run: the plan file, the remaining arguments (no
/// `--plan`, no `--region`), the CLI's region, and JSON output or not.
#[derive(Debug, PartialEq, Eq)]
pub struct PlanArgs {
    pub file: PathBuf,
    pub rest: Vec<String>,
    pub region: Option<String>,
    pub json: bool,
}

/// `Some` when the command line names a plan (`--plan FILE`, or
/// `DDB_RELAY_PLAN` in the environment).
pub fn plan_args(args: &[String], env_plan: Option<String>) -> Result<Option<PlanArgs>> {
    let mut rest = Vec::new();
    let (mut file, mut region, mut json) = (env_plan.map(PathBuf::from), None, false);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            // Everything after `--` belongs to the command (deploy's sam args).
            rest.push(a.clone());
            rest.extend(it.by_ref().cloned());
            break;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{flag} needs a value")),
            }
        };
        match flag {
            "--plan" => file = Some(PathBuf::from(value()?)),
            "--region" => region = Some(value()?),
            "--stack" | "--transform" => {
                let _ = value()?;
                rest.push(flag.to_string());
            }
            "--output" => {
                let v = value()?;
                json = v == "json";
                rest.extend(["--output".to_string(), v]);
            }
            _ if VALUED.contains(&flag) => {
                rest.extend([flag.to_string(), value()?]);
            }
            _ => rest.push(a.clone()),
        }
    }
    let Some(file) = file else { return Ok(None) };
    if let Some(f) = rest.iter().find(|a| *a == "--stack" || *a == "--transform") {
        bail!("{f} comes from the plan with --plan (each pair names its stack and transform)");
    }
    Ok(Some(PlanArgs {
        file,
        rest,
        region,
        json,
    }))
}

/// The command word of `rest` (the first argument that is neither an
/// option nor an option's value).
pub fn command_of(rest: &[String]) -> Option<&str> {
    let mut skip = false;
    for a in rest {
        if a == "--" {
            break;
        }
        if skip {
            skip = false;
            continue;
        }
        if VALUED.contains(&a.as_str()) {
            skip = true;
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// Reads and checks a plan file.
pub fn load(file: &Path, region: Option<&str>) -> Result<Plan> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read plan {}", file.display()))?;
    let plan = Plan::parse(&file.display().to_string(), &text, region)?;
    // Every pair's seed_args must be `seed`'s: a misspelt flag is refused
    // here, not dropped by a re-seed that keeps only the copy's flags.
    for (i, p) in plan.pairs.iter().enumerate() {
        use clap::{CommandFactory, Parser};
        // Only `seed`'s own flags: a global one (`--stack`, `--region`,
        // `--plan`, ...) would override the pair's own after the command.
        let cli = crate::args::Cli::command();
        let seed = cli.find_subcommand("seed").expect("seed is a command");
        for (name, _) in flags(&p.seed_args) {
            let own = seed
                .get_arguments()
                .any(|a| a.get_long() == Some(name.as_str()));
            if !name.is_empty() && !own {
                bail!(
                    "plan {}: pairs[{i}].seed_args: --{name} is not a flag of `seed` (the plan sets the stack, region and transform of each pair)",
                    file.display()
                );
            }
        }
        let argv = ["ddb-relay".to_string()].into_iter().chain(pair_args(
            &plan,
            file,
            p,
            &["seed".to_string()],
        ));
        if let Err(e) = crate::args::Cli::try_parse_from(argv).and_then(|c| c.validate()) {
            let why = e.to_string();
            let why = why.lines().next().unwrap_or_default();
            let why = why.strip_prefix("error: ").unwrap_or(why);
            bail!(
                "plan {}: pairs[{i}].seed_args: {why} (a pair's seed_args are `seed`'s flags)",
                file.display()
            );
        }
    }
    Ok(plan)
}

/// A pair's transform file, relative to the plan's directory.
pub fn transform_path(plan_file: &Path, pair: &Pair) -> Option<PathBuf> {
    pair.transform.as_ref().map(|t| {
        let p = Path::new(t);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            plan_file.parent().unwrap_or(Path::new(".")).join(p)
        }
    })
}

/// The arguments of one pair's `ddb-relay` process.
pub fn pair_args(plan: &Plan, file: &Path, pair: &Pair, rest: &[String]) -> Vec<String> {
    let mut args = vec![
        "--stack".to_string(),
        pair.stack_name(&plan.name),
        "--region".to_string(),
        plan.region().to_string(),
    ];
    if let Some(t) = transform_path(file, pair) {
        args.extend(["--transform".to_string(), t.display().to_string()]);
    }
    // One report file per pair (`finish --report F` writes F and F.svg).
    let mut rest = rest.to_vec();
    for i in 0..rest.len() {
        let file = if rest[i] == "--report" {
            rest.get(i + 1).cloned().map(|f| (i + 1, f, ""))
        } else {
            rest[i]
                .strip_prefix("--report=")
                .map(|f| (i, f.to_string(), "--report="))
        };
        if let Some((at, f, flag)) = file {
            let p = Path::new(&f);
            let stem = p
                .file_stem()
                .map(|x| x.to_string_lossy().into_owned())
                .unwrap_or_default();
            let ext = p
                .extension()
                .map(|x| format!(".{}", x.to_string_lossy()))
                .unwrap_or_default();
            let named = p.with_file_name(format!("{stem}-{}{ext}", pair.name));
            rest[at] = format!("{flag}{}", named.display());
        }
    }
    // One directory per pair (`adopt --write DIR` writes DIR/<pair>/).
    for i in 0..rest.len() {
        let dir = if rest[i] == "--write" {
            rest.get(i + 1).cloned().map(|d| (i + 1, d, ""))
        } else {
            rest[i]
                .strip_prefix("--write=")
                .map(|d| (i, d.to_string(), "--write="))
        };
        if let Some((at, d, flag)) = dir {
            rest[at] = format!("{flag}{}", Path::new(&d).join(&pair.name).display());
        }
    }
    let rest = &rest[..];
    args.extend(rest.iter().cloned());
    let has = |f: &str| {
        rest.iter()
            .any(|a| a == f || a.starts_with(&format!("{f}=")))
    };
    match command_of(rest) {
        Some("seed") => {
            // The pair's method (unless given): with it, all the pair's
            // flags and bucket; a scan copy of an export pair keeps the
            // copy's limits. A flag on the command line wins over the pair's.
            let own = !has("--method") || method_is(rest, &pair.seed);
            if !has("--method") {
                args.extend(["--method".to_string(), pair.seed.clone()]);
            }
            // An export the pair already has takes no bucket.
            let taking = own && !pair.loads_an_export() && !has("--from-export");
            if let (Some(b), false, true) = (&pair.s3_bucket, has("--s3-bucket"), taking) {
                args.extend(["--s3-bucket".to_string(), b.clone()]);
            }
            let kept = if own {
                flags(&pair.seed_args)
            } else if pair.seed == "export" && method_is(rest, "scan") {
                copy_flags(&pair.seed_args)
            } else {
                Vec::new()
            };
            for (name, flag) in kept {
                if !has(&format!("--{name}")) {
                    args.extend(flag);
                }
            }
        }
        Some("restart") => {
            // Re-seed the way the pair was seeded: a copy for a target your
            // IaC created, a backup restore for a restored one.
            let copies = matches!(pair.seed.as_str(), "scan" | "export");
            if !has("--method") {
                let method = if copies { "scan" } else { "backup" };
                args.extend(["--method".to_string(), method.to_string()]);
            }
            // A copy keeps the pair's limits, unless the command line sets them.
            if copies && (!has("--method") || method_is(rest, "scan")) {
                for (name, flag) in copy_flags(&pair.seed_args) {
                    if !has(&format!("--{name}")) {
                        args.extend(flag);
                    }
                }
            }
        }
        Some("preflight") => {
            if !has("--method") {
                args.extend(["--method".to_string(), pair.seed.clone()]);
            }
            // A pair loading an export it has checks that export (not the
            // source's PITR); one taking an export to load checks a load.
            // Under the pair's own method only, and not twice.
            let given = flags(&pair.seed_args);
            let from = given.iter().find(|(name, _)| name == "from-export");
            let export = pair.seed == "export" && (!has("--method") || method_is(rest, "export"));
            if export && !has("--from-export") && !has("--load") {
                if let Some((_, flag)) = from {
                    args.extend(flag.iter().cloned());
                } else if given.iter().any(|(name, _)| name == "load") {
                    args.push("--load".to_string());
                }
            }
        }
        _ => {}
    }
    args
}

/// Whether the command line's `--method` is `m`.
fn method_is(rest: &[String], m: &str) -> bool {
    rest.iter().enumerate().any(|(i, a)| {
        a.strip_prefix("--method=") == Some(m)
            || (a == "--method" && rest.get(i + 1).map(String::as_str) == Some(m))
    })
}

/// A pair's `seed_args` as flags, each with its value (`--flag value` or
/// `--flag=value`), named without the `--`. Values of flags that take one
/// are found by clap introspection of `seed`, not a hand-kept list.
fn flags(seed_args: &[String]) -> Vec<(String, Vec<String>)> {
    use clap::CommandFactory;
    let cli = crate::args::Cli::command();
    let seed = cli.find_subcommand("seed").expect("seed is a command");
    let takes_value = |name: &str| {
        seed.get_arguments()
            .find(|a| a.get_long() == Some(name))
            .is_some_and(|a| a.get_action().takes_values())
    };
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut args = seed_args.iter();
    while let Some(a) = args.next() {
        let Some(flag) = a.strip_prefix("--") else {
            // Not a flag: a stray value stays with the flag before it (and
            // the plan's check refuses it).
            match out.last_mut() {
                Some((_, f)) => f.push(a.clone()),
                None => out.push((String::new(), vec![a.clone()])),
            }
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, _)) => (n, true),
            None => (flag, false),
        };
        let mut f = vec![a.clone()];
        if !inline && takes_value(name) {
            f.extend(args.next().cloned());
        }
        out.push((name.to_string(), f));
    }
    out
}

/// The copy's flags among a pair's `seed_args` (with their values): what a
/// re-seed by scan keeps. An export's own flags (`--at`, `--s3-prefix`,
/// `--from-export`, `--load`, ...) are not `restart`'s; a flag `seed` does
/// not know was refused when the plan was loaded ([`load`]).
fn copy_flags(seed_args: &[String]) -> Vec<(String, Vec<String>)> {
    use clap::Args;
    let copy = crate::args::CopyArgs::augment_args(clap::Command::new("copy"));
    flags(seed_args)
        .into_iter()
        .filter(|(name, _)| copy.get_arguments().any(|a| a.get_long() == Some(name)))
        .collect()
}

/// One pair's outcome.
#[derive(Debug, Serialize)]
pub struct PairResult {
    pub pair: String,
    pub stack: String,
    pub exit: i32,
    /// The pair's own JSON report (`--output json`), when it printed one.
    pub result: Option<serde_json::Value>,
    /// The last line on stderr of a pair that failed.
    pub error: Option<String>,
}

/// The set's outcome.
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub plan: String,
    pub command: String,
    /// GO / OK (every pair exit 0), NO-GO (some pair 3, none failed),
    /// FAILED (some pair failed).
    pub verdict: String,
    pub exit: i32,
    pub pairs: Vec<PairResult>,
}

/// The set's exit code: 0 when every pair's is, 1 when any failed, else 3.
pub fn aggregate(exits: &[i32]) -> i32 {
    if exits.iter().all(|c| *c == 0) {
        0
    } else if exits.iter().any(|c| *c != 0 && *c != EXIT_NO_GO) {
        1
    } else {
        EXIT_NO_GO
    }
}

/// A job for one pair: the process to run.
#[derive(Debug)]
pub struct Job {
    pub pair: String,
    pub stack: String,
    pub command: Command,
}

/// Runs the jobs, at most `parallel` at once. In text mode each line a job
/// prints is shown as it comes, prefixed with its pair; in JSON mode stdout
/// is kept for the report.
pub fn run_jobs(jobs: Vec<Job>, parallel: usize, json: bool) -> Vec<PairResult> {
    let next = AtomicUsize::new(0);
    let jobs: Vec<Mutex<Option<Job>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let results: Mutex<Vec<(usize, PairResult)>> = Mutex::new(Vec::new());
    let out = Mutex::new(());
    std::thread::scope(|s| {
        for _ in 0..parallel.clamp(1, jobs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(slot) = jobs.get(i) else { break };
                let Some(job) = slot.lock().ok().and_then(|mut j| j.take()) else {
                    continue;
                };
                let r = run_one(job, json, &out);
                if let Ok(mut v) = results.lock() {
                    v.push((i, r));
                }
            });
        }
    });
    let mut v = results.into_inner().unwrap_or_default();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, r)| r).collect()
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // the CLI's output
fn run_one(mut job: Job, json: bool, out: &Mutex<()>) -> PairResult {
    let tag = format!("[{}]", job.pair);
    let failed = |error: String| PairResult {
        pair: job.pair.clone(),
        stack: job.stack.clone(),
        exit: 1,
        result: None,
        error: Some(error),
    };
    let mut child = match job
        .command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start {:?}: {e}", job.command.get_program())),
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return failed("no output pipes".into());
    };
    let last_err = Mutex::new(None::<String>);
    let mut kept = String::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _g = out.lock();
                eprintln!("{tag} {line}");
                if !line.trim().is_empty() {
                    if let Ok(mut l) = last_err.lock() {
                        *l = Some(line);
                    }
                }
            }
        });
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if json {
                kept.push_str(&line);
                kept.push('\n');
            } else {
                let _g = out.lock();
                println!("{tag} {line}");
            }
        }
    });
    let exit = match child.wait() {
        Ok(st) => st.code().unwrap_or(1),
        Err(e) => return failed(format!("lost the process: {e}")),
    };
    let _ = std::io::stdout().flush();
    PairResult {
        pair: job.pair,
        stack: job.stack,
        exit,
        result: serde_json::from_str(kept.trim()).ok().or_else(|| {
            // `watch` prints one document per line: all of them, in order.
            let lines: Option<Vec<serde_json::Value>> = kept
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).ok())
                .collect();
            lines
                .filter(|v| !v.is_empty())
                .map(serde_json::Value::Array)
        }),
        error: if exit == 0 {
            None
        } else {
            last_err.into_inner().ok().flatten()
        },
    }
}

/// Prints the set's report; returns its exit code.
#[allow(clippy::print_stdout)] // the CLI's output
pub fn emit(plan: &Plan, command: &str, pairs: Vec<PairResult>, json: bool) -> i32 {
    let exits: Vec<i32> = pairs.iter().map(|p| p.exit).collect();
    let exit = aggregate(&exits);
    let go_word = if command == "cutover" { "GO" } else { "OK" };
    let verdict = match exit {
        0 => go_word.to_string(),
        EXIT_NO_GO => "NO-GO".to_string(),
        _ => "FAILED".to_string(),
    };
    let report = PlanReport {
        plan: plan.name.clone(),
        command: command.to_string(),
        verdict: verdict.clone(),
        exit,
        pairs,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "\nplan {} ({command}), {} pair(s):",
            plan.name,
            report.pairs.len()
        );
        for p in &report.pairs {
            let what = match p.exit {
                0 => go_word.to_string(),
                EXIT_NO_GO => "NO-GO".into(),
                c => format!("FAILED (exit {c})"),
            };
            let why = p
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            println!("  {:<20} {:<28} {what}{why}", p.pair, p.stack);
        }
        let not: Vec<&str> = report
            .pairs
            .iter()
            .filter(|p| p.exit != 0)
            .map(|p| p.pair.as_str())
            .collect();
        if not.is_empty() {
            println!(
                "{verdict}: every pair must be {go_word}; not: {}",
                not.join(", ")
            );
        } else {
            println!("{verdict}: every pair is {go_word}");
        }
    }
    exit
}

/// Runs `rest` (a command and its arguments) on every pair of the plan as
/// `exe` processes.
pub fn run_command(exe: &OsString, a: &PlanArgs, plan: &Plan) -> i32 {
    let command = command_of(&a.rest).unwrap_or("").to_string();
    let jobs = plan
        .pairs
        .iter()
        .map(|p| {
            let mut c = Command::new(exe);
            // The children run one stack each: never a plan again.
            c.env_remove("DDB_RELAY_PLAN")
                .env_remove("DDB_RELAY_STACK")
                .env_remove("DDB_RELAY_TRANSFORM")
                .env(
                    relay_core::plan::EXPECTED_ENV,
                    crate::ctx::expected_json(plan, &a.file, p),
                )
                .args(pair_args(plan, &a.file, p, &a.rest));
            Job {
                pair: p.name.clone(),
                stack: p.stack_name(&plan.name),
                command: c,
            }
        })
        .collect();
    let results = run_jobs(jobs, plan.parallel, a.json);
    emit(plan, &command, results, a.json)
}

#[cfg(test)]
mod tests;
