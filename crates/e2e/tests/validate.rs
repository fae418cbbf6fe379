//! `make validate` must be able to fail: the real template passes, and
//! deliberately broken copies (a CloudFormation error, a SAM error, a
//! wildcard resource and a managed policy) are refused.

use std::path::Path;
use std::process::Command;

use relay_e2e::repo_root;

fn validate(template: &Path) -> (bool, String) {
    let out = Command::new("bash")
        .arg(repo_root().join("infra/validate.sh"))
        .arg(template)
        .output()
        .expect("run infra/validate.sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn broken_copy(name: &str, from: &str, to: &str) -> std::path::PathBuf {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).expect("template");
    assert!(template.contains(from), "the breakage must apply: {from}");
    let dir = std::env::temp_dir().join(format!("ddb-relay-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, template.replacen(from, to, 1)).expect("write copy");
    path
}

#[test]
#[ignore = "needs the pinned sam-cli and cfn-lint in .venv: run `make e2e`"]
fn the_template_is_clean_and_broken_copies_are_refused() {
    let (ok, log) = validate(&repo_root().join("template.yaml"));
    assert!(ok, "template.yaml must validate:\n{log}");

    // CloudFormation: a reference to a resource that does not exist.
    let dangling = broken_copy(
        "dangling.yaml",
        "deadLetterTargetArn: !GetAtt DeadLetterQueue.Arn",
        "deadLetterTargetArn: !GetAtt NoSuchQueue.Arn",
    );
    let (ok, log) = validate(&dangling);
    assert!(!ok, "a dangling GetAtt must fail validation:\n{log}");

    // Least privilege: a statement on every resource, and a managed policy.
    let wildcard = broken_copy(
        "wildcard.yaml",
        "                  - sqs:GetQueueAttributes\n                Resource: !GetAtt Queue.Arn",
        "                  - sqs:GetQueueAttributes\n                Resource: \"*\"",
    );
    let (ok, log) = validate(&wildcard);
    assert!(
        !ok && log.contains("on every resource"),
        "a wildcard resource must fail:\n{log}"
    );
    let managed = broken_copy(
        "managed.yaml",
        "  ApplierRole:\n    Type: AWS::IAM::Role\n    Properties:\n",
        "  ApplierRole:\n    Type: AWS::IAM::Role\n    Properties:\n      ManagedPolicyArns: [arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole]\n",
    );
    let (ok, log) = validate(&managed);
    assert!(
        !ok && log.contains("managed policy"),
        "a managed policy must fail:\n{log}"
    );

    // SAM: an event source property of the wrong type.
    let sam = broken_copy("sam-event.yaml", "BatchSize: 10", "BatchSize: [ten]");
    let (ok, log) = validate(&sam);
    assert!(!ok, "a malformed SQS event must fail validation:\n{log}");
}

/// The forwarder's `GLIBC_TUNABLES` is one plain line of the template: the
/// Makefile's `bench` (a `sed`) and the coldstart bench read it from there,
/// and glibc would silently ignore a value it cannot parse.
#[test]
fn the_forwarder_tunables_are_one_plain_template_line() {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).expect("template");
    let values = relay_e2e::template_tunables(&template);
    assert_eq!(values.len(), 1, "{values:?}");
    assert!(relay_e2e::plain_tunables(values[0]), "{:?}", values[0]);
    // The checker refuses what glibc would ignore or the sed would garble.
    for bad in [
        "",
        "'glibc.malloc.trim_threshold=1'",
        "glibc.malloc.x=1 # c",
        "malloc.x=1",
        "glibc.malloc.x=1:",
    ] {
        assert!(!relay_e2e::plain_tunables(bad), "{bad}");
    }
    assert!(relay_e2e::plain_tunables(
        "glibc.malloc.mmap_threshold=1:glibc.malloc.trim_threshold=2"
    ));
}

/// The lines of the template's top-level entry `name` (a resource or a
/// parameter): from `  name:` to the next entry at that indentation.
fn entry<'a>(template: &'a str, name: &str) -> Vec<&'a str> {
    let head = format!("  {name}:");
    let mut lines = template.lines().skip_while(|l| *l != head);
    let first = lines.next().expect("the entry is in the template");
    std::iter::once(first)
        .chain(lines.take_while(|l| l.starts_with("   ") || !l.starts_with("  ")))
        .collect()
}

/// A stack update must replace the applier before the forwarder (an
/// applier reads every earlier envelope version, not later ones), and the
/// forwarder writes the version the `EnvelopeVersion` parameter says:
/// this build's by default, 1 on demand for an upgrade that may roll back.
#[test]
fn the_forwarder_waits_for_the_applier_and_writes_the_parameters_envelope_version() {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).expect("template");
    let forwarder = entry(&template, "Forwarder");
    assert!(
        forwarder.contains(&"    DependsOn: Applier"),
        "{forwarder:#?}"
    );
    assert!(
        forwarder.contains(&"          ENVELOPE_VERSION: !Ref EnvelopeVersion"),
        "{forwarder:#?}"
    );
    let parameter = entry(&template, "EnvelopeVersion");
    let default = format!("    Default: {}", relay_core::envelope::VERSION);
    assert!(parameter.contains(&default.as_str()), "{parameter:#?}");
    assert!(
        parameter.contains(&"    AllowedValues: [1, 2]"),
        "{parameter:#?}"
    );
}

/// The trigger settings nothing may be lost without: the applier's queue
/// trigger is created disabled (nothing applied before a cutoff) and
/// reports failed messages one by one; the forwarder's stream trigger
/// reports failed records, retries until a record is 23 h old (under the
/// stream's 24 h) and then hands it to the stream failure queue. The local
/// deploy disables the applier trigger whatever the template says, and
/// the emulator may not honour the rest, so only this test pins them.
#[test]
fn the_triggers_lose_nothing() {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).expect("template");
    let applier = entry(&template, "Applier");
    for line in [
        "            Enabled: false",
        "            FunctionResponseTypes: [ReportBatchItemFailures]",
    ] {
        assert!(applier.contains(&line), "{line:?} in {applier:#?}");
    }
    let forwarder = entry(&template, "Forwarder");
    for line in [
        "            FunctionResponseTypes: [ReportBatchItemFailures]",
        "            MaximumRetryAttempts: -1",
        "            BisectBatchOnFunctionError: true",
        "                Destination: !GetAtt StreamFailureQueue.Arn",
    ] {
        assert!(forwarder.contains(&line), "{line:?} in {forwarder:#?}");
    }
    let age: u64 = forwarder
        .iter()
        .find_map(|l| l.trim().strip_prefix("MaximumRecordAgeInSeconds: "))
        .and_then(|v| v.parse().ok())
        .expect("MaximumRecordAgeInSeconds");
    assert!(
        age < 24 * 3600,
        "a record must reach the failure queue before the stream trims it: {age}"
    );
}

/// The queues' visibility timeout is 6× their function's timeout (AWS's
/// advice for SQS triggers: a batch still running is not delivered again).
/// CloudFormation has no arithmetic, so the template lists the pairs in a
/// mapping: every allowed timeout has its row, each row is 6×, and both
/// queues read it.
#[test]
fn every_allowed_timeout_has_a_visibility_six_times_it() {
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).expect("template");
    let rows: std::collections::BTreeMap<u64, u64> = entry(&template, "VisibilityTimeout")
        .iter()
        .skip(1)
        .filter_map(|l| {
            let (key, rest) = l.trim().split_once(": ")?;
            let key = key.trim_matches('"').parse().ok()?;
            let secs = rest
                .strip_prefix("{Seconds: ")?
                .strip_suffix('}')?
                .parse()
                .ok()?;
            Some((key, secs))
        })
        .collect();
    for (&timeout, &visibility) in &rows {
        assert_eq!(visibility, 6 * timeout, "row {timeout}");
    }
    for (parameter, queue) in [
        ("ApplierTimeoutSeconds", "Queue"),
        ("WorkerTimeoutSeconds", "WorkQueue"),
    ] {
        let allowed = entry(&template, parameter)
            .iter()
            .find_map(|l| l.trim().strip_prefix("AllowedValues: ["))
            .and_then(|l| l.strip_suffix(']'))
            .expect("AllowedValues")
            .split(", ")
            .map(|v| v.parse::<u64>().expect("a number"))
            .collect::<Vec<_>>();
        for t in allowed {
            assert!(rows.contains_key(&t), "{parameter} allows {t}: no row");
        }
        let line = format!(
            "      VisibilityTimeout: !FindInMap [VisibilityTimeout, !Ref {parameter}, Seconds]"
        );
        assert!(
            entry(&template, queue).contains(&line.as_str()),
            "{queue} must read the mapping"
        );
    }
}
