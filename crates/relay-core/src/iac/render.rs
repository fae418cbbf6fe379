//! What `adopt` and `protect` print: the target's definition in each IaC
//! dialect, the import change set, and the source's retirement, as exact
//! commands.

use serde::Serialize;
use serde_yaml_ng::Value;

use super::{TableSpec, PROVISIONED};

/// One runbook step: what it does, and the command (`None`: an edit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub what: String,
    pub command: Option<String>,
}

pub(super) fn step(what: impl Into<String>, command: Option<String>) -> Step {
    Step {
        what: what.into(),
        command,
    }
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn sh(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A logical id for a table name: `orders-v2` → `OrdersV2` (letters and
/// digits, starting with a letter).
pub fn logical_id(table: &str) -> String {
    let mut out = String::new();
    for word in table.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut cs = word.chars();
        if let Some(first) = cs.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(cs);
        }
    }
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert_str(0, "Table");
    }
    out.truncate(255);
    out
}

/// Whether `id` is a valid CloudFormation logical id.
pub fn valid_logical_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// `Resources:` with the one resource, as YAML.
pub fn cfn_yaml(spec: &TableSpec, logical: &str) -> String {
    let mut res = serde_yaml_ng::Mapping::new();
    res.insert(logical.into(), spec.cfn_resource());
    let mut doc = serde_yaml_ng::Mapping::new();
    doc.insert("Resources".into(), Value::Mapping(res));
    yaml_text(&Value::Mapping(doc))
}

/// `v` as block YAML that means the same under YAML 1.1 (what
/// CloudFormation parses) and 1.2: every string is double-quoted (a JSON
/// string literal is a YAML double-quoted scalar), so a tag value `on`,
/// `yes`, `1_000` or `0x1F` stays a string.
pub fn yaml_text(v: &Value) -> String {
    let mut out = String::new();
    match scalar(v) {
        Some(s) => {
            out.push_str(&s);
            out.push('\n');
        }
        None => yaml_block(v, 0, &mut out),
    }
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("null".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(serde_json::to_string(s).unwrap_or_default()),
        Value::Mapping(m) if m.is_empty() => Some("{}".into()),
        Value::Sequence(s) if s.is_empty() => Some("[]".into()),
        Value::Tagged(t) => Some(format!(
            "{} {}",
            t.tag,
            scalar(&t.value).unwrap_or_else(|| serde_json::to_string(&t.value).unwrap_or_default())
        )),
        Value::Mapping(_) | Value::Sequence(_) => None,
    }
}

/// A mapping key: plain when it is a word no YAML reads otherwise.
fn yaml_key(k: &Value) -> String {
    const SPECIAL: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    match k {
        Value::String(s)
            if s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars().all(|c| c.is_ascii_alphanumeric())
                && !SPECIAL.contains(&s.to_ascii_lowercase().as_str()) =>
        {
            s.clone()
        }
        other => scalar(other).unwrap_or_else(|| serde_json::to_string(other).unwrap_or_default()),
    }
}

fn yaml_block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                out.push_str(&format!("{pad}{}:", yaml_key(k)));
                match scalar(val) {
                    Some(s) => out.push_str(&format!(" {s}\n")),
                    None => {
                        out.push('\n');
                        yaml_block(val, indent + 2, out);
                    }
                }
            }
        }
        Value::Sequence(items) => {
            for item in items {
                match scalar(item) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        // The item as a block two deeper, its first
                        // indentation replaced by the dash.
                        let mut inner = String::new();
                        yaml_block(item, indent + 2, &mut inner);
                        out.push_str(&format!("{pad}- {}", &inner[indent + 2..]));
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other).unwrap_or_default())),
    }
}

/// The `ResourcesToImport` of the IMPORT change set.
pub fn resources_to_import(logical: &str, table: &str) -> serde_json::Value {
    serde_json::json!([{
        "ResourceType": "AWS::DynamoDB::Table",
        "LogicalResourceId": logical,
        "ResourceIdentifier": {"TableName": table},
    }])
}

/// `template` (the stack's deployed template, JSON or YAML) with the
/// resource added under `Resources`, nothing else changed. Both are edited
/// as text (the resource is inserted right after `Resources`' opening), so
/// key order, comments, tags, line endings and YAML 1.1 scalars elsewhere
/// stay byte for byte, and the result is checked by parsing both.
pub fn template_with(template: &str, spec: &TableSpec, logical: &str) -> Result<String, String> {
    let taken = || {
        format!(
            "the stack's template already has a resource {logical}: choose another --logical-id"
        )
    };
    if template.trim_start().starts_with('{') {
        return json_template_with(template, spec, logical, taken);
    }
    let before: Value = serde_yaml_ng::from_str(template)
        .map_err(|e| format!("the stack's template does not parse: {e}"))?;
    let existing = before
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or("the stack's template has no Resources")?;
    if existing.contains_key(logical) {
        return Err(taken());
    }
    let eol = if template.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut lines: Vec<&str> = template.lines().collect();
    let after_key = |l: &str| {
        l.strip_prefix("Resources:").map(|r| {
            let r = r.trim_start();
            let r = r.strip_prefix("{}").unwrap_or(r).trim_start();
            r.is_empty() || r.starts_with('#')
        })
    };
    let at = lines
        .iter()
        .position(|l| after_key(l) == Some(true))
        .ok_or(
            "the stack's template has no block `Resources:` line to add under (edit it by hand)",
        )?;
    // `Resources: {}` (no resource yet) becomes a block.
    if lines[at]["Resources:".len()..]
        .trim_start()
        .starts_with("{}")
    {
        lines[at] = "Resources:";
    }
    let indent = lines[at + 1..]
        .iter()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.len() - l.trim_start().len())
        .filter(|n| *n > 0)
        .unwrap_or(2);
    let mut one = serde_yaml_ng::Mapping::new();
    one.insert(logical.into(), spec.cfn_resource());
    let block = yaml_text(&Value::Mapping(one));
    let pad = " ".repeat(indent);
    let mut out: Vec<String> = lines[..=at].iter().map(|l| l.to_string()).collect();
    out.extend(block.lines().map(|l| format!("{pad}{l}")));
    out.extend(lines[at + 1..].iter().map(|l| l.to_string()));
    let mut text = out.join(eol);
    if template.ends_with('\n') {
        text.push_str(eol);
    }
    // The check: the same document, plus the resource.
    let mut after: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("adding the resource broke the template ({e}): edit it by hand"))?;
    let added = after
        .get_mut("Resources")
        .and_then(Value::as_mapping_mut)
        .and_then(|m| m.remove(logical));
    if added.as_ref() != Some(&spec.cfn_resource()) || after != before {
        return Err("adding the resource changed the template otherwise: edit it by hand".into());
    }
    Ok(text)
}

/// [`template_with`] for a JSON template: the resource is inserted as text
/// right after the `{` of the top-level `Resources`, so every other byte
/// (key order, layout, line endings) stays, and checked by parsing both.
fn json_template_with(
    template: &str,
    spec: &TableSpec,
    logical: &str,
    taken: impl Fn() -> String,
) -> Result<String, String> {
    let before: serde_json::Value = serde_json::from_str(template)
        .map_err(|e| format!("the stack's template does not parse: {e}"))?;
    let existing = before
        .get("Resources")
        .and_then(serde_json::Value::as_object)
        .ok_or("the stack's template has no Resources")?;
    if existing.contains_key(logical) {
        return Err(taken());
    }
    let at = json_resources_open(template).ok_or("the stack's template has no Resources")?;
    let rest = &template[at..];
    let empty = rest.trim_start().starts_with('}');
    let comma = if empty { "" } else { "," };
    // Serialising the YAML value keeps the resource's key order.
    let res = spec.cfn_resource();
    let key = serde_json::to_string(logical).map_err(|e| e.to_string())?;
    let eol = if template.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let insert = match rest.find(|c: char| !c.is_whitespace() || c == '\n') {
        // Pretty: the next line's indentation (or four spaces).
        Some(i) if rest[i..].starts_with('\n') || rest[..i].contains('\n') => {
            let pad: String = rest
                .trim_start_matches(['\r', '\n'])
                .chars()
                .take_while(|c| *c == ' ' || *c == '\t')
                .collect();
            let pad = if pad.is_empty() || empty {
                "    ".to_string()
            } else {
                pad
            };
            let body = serde_json::to_string_pretty(&res).map_err(|e| e.to_string())?;
            let body = body.replace('\n', &format!("{eol}{pad}"));
            format!("{eol}{pad}{key}: {body}{comma}")
        }
        _ => format!(
            "{key}:{}{comma}",
            serde_json::to_string(&res).map_err(|e| e.to_string())?
        ),
    };
    let text = format!("{}{insert}{rest}", &template[..at]);
    let mut after: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("adding the resource broke the template ({e}): edit it by hand"))?;
    let added = after
        .get_mut("Resources")
        .and_then(serde_json::Value::as_object_mut)
        .and_then(|m| m.remove(logical));
    let want = serde_json::to_value(&res).map_err(|e| e.to_string())?;
    if added.as_ref() != Some(&want) || after != before {
        return Err("adding the resource changed the template otherwise: edit it by hand".into());
    }
    Ok(text)
}

/// The byte offset just after the `{` that opens the top-level object's
/// `"Resources"` value.
fn json_resources_open(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    let mut last_string: Option<(usize, usize)> = None;
    let mut resources_value = false;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 {
                    last_string = Some((start, i.min(b.len())));
                }
            }
            b':' if depth == 1 => {
                resources_value = last_string.is_some_and(|(s, e)| &text[s..e] == "Resources");
            }
            b'{' if depth == 1 && resources_value => return Some(i + 1),
            b'{' | b'[' => {
                depth += 1;
                resources_value = false;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' => resources_value = false,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The IMPORT change set's name for a resource.
pub fn change_set_name(logical: &str) -> String {
    format!("ddb-relay-adopt-{logical}")
}

/// Adopting the table into `stack` (in `region`) by an IMPORT change set.
/// `parameters`: the stack's parameter keys, kept at their values; `dir`:
/// where `adopt --write` put the files.
pub fn import_steps(
    stack: &str,
    region: &str,
    logical: &str,
    parameters: &[String],
    dir: &str,
    relay_stack: &str,
) -> Vec<Step> {
    let (s, r, cs) = (sh(stack), sh(region), change_set_name(logical));
    let params = if parameters.is_empty() {
        String::new()
    } else {
        format!(
            " --parameters {}",
            parameters
                .iter()
                .map(|k| sh(&format!("ParameterKey={k},UsePreviousValue=true")))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    vec![
        step(
            format!("Create the IMPORT change set: the stack's deployed template plus {logical}, nothing else (an import may only add what it imports). Over 51,200 bytes: upload the template to S3 and use --template-url."),
            Some(format!("aws cloudformation create-change-set --region {r} --stack-name {s} --change-set-name {cs} --change-set-type IMPORT --resources-to-import {} --template-body {} --capabilities CAPABILITY_IAM CAPABILITY_NAMED_IAM CAPABILITY_AUTO_EXPAND{params}", sh(&format!("file://{dir}/resources-to-import.json")), sh(&format!("file://{dir}/import-template")))),
        ),
        step(
            "Wait for it, and check it holds one change: Import of the table",
            Some(format!("aws cloudformation wait change-set-create-complete --region {r} --stack-name {s} --change-set-name {cs} && aws cloudformation describe-change-set --region {r} --stack-name {s} --change-set-name {cs} --query 'Changes[].ResourceChange.[Action,LogicalResourceId,PhysicalResourceId]'")),
        ),
        step(
            "Execute it",
            Some(format!("aws cloudformation execute-change-set --region {r} --stack-name {s} --change-set-name {cs} && aws cloudformation wait stack-import-complete --region {r} --stack-name {s}")),
        ),
        step(
            format!("Check for drift: adopt reads the stack's definition of {logical} back and compares it with the live table, setting by setting, and exits 3 if they differ or cannot be compared (a property that is not a literal, or a GlobalTable)"),
            Some(format!("ddb-relay --stack {} adopt --logical-id {logical}", sh(relay_stack))),
        ),
        step(
            "And CloudFormation's own drift detection, which AWS recommends after an import. If it refuses a stack in IMPORT_COMPLETE (MiniStack does; AWS's drift guide lists CREATE_COMPLETE, UPDATE_COMPLETE, UPDATE_ROLLBACK_COMPLETE and UPDATE_ROLLBACK_FAILED), run it after the stack's next update. IN_SYNC: no drift",
            Some(format!("aws cloudformation detect-stack-resource-drift --region {r} --stack-name {s} --logical-resource-id {logical} --query 'StackResourceDrift.[StackResourceDriftStatus,PropertyDifferences]'")),
        ),
        step(
            format!("Add {logical} to your template's source (template.yaml, serverless.yml `resources:`, or the CDK code below), exactly as printed, so the next deploy keeps it unchanged; point your functions at it there"),
            None,
        ),
    ]
}

/// The CDK construct for the table (TypeScript), with its logical id
/// pinned so `cdk import` can be given a mapping file.
pub fn cdk(spec: &TableSpec, logical: &str) -> String {
    let var = {
        let mut v = logical.to_string();
        if let Some(f) = v.get(..1) {
            let lower = f.to_ascii_lowercase();
            v.replace_range(..1, &lower);
        }
        v
    };
    let ty = |name: &str| {
        let t = spec
            .attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ty.as_str())
            .unwrap_or("S");
        match t {
            "N" => "NUMBER",
            "B" => "BINARY",
            _ => "STRING",
        }
    };
    let attr = |name: &str| {
        format!(
            "{{ name: {}, type: dynamodb.AttributeType.{} }}",
            js(name),
            ty(name)
        )
    };
    let part = |key: &[super::KeyPart], kind: &str| {
        key.iter().find(|k| k.kind == kind).map(|k| attr(&k.name))
    };
    let mut o = String::new();
    o.push_str("import { RemovalPolicy, Tags } from 'aws-cdk-lib';\n");
    o.push_str("import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';\n");
    if spec.kms_key.is_some() {
        o.push_str("import * as kms from 'aws-cdk-lib/aws-kms';\n");
    }
    o.push('\n');
    o.push_str(&format!(
        "const {var} = new dynamodb.Table(this, {}, {{\n",
        js(logical)
    ));
    o.push_str(&format!("  tableName: {},\n", js(&spec.name)));
    if let Some(p) = part(&spec.key, "HASH") {
        o.push_str(&format!("  partitionKey: {p},\n"));
    }
    if let Some(p) = part(&spec.key, "RANGE") {
        o.push_str(&format!("  sortKey: {p},\n"));
    }
    if spec.billing == PROVISIONED {
        o.push_str("  billingMode: dynamodb.BillingMode.PROVISIONED,\n");
        if let Some(t) = spec.throughput {
            o.push_str(&format!(
                "  readCapacity: {},\n  writeCapacity: {},\n",
                t.read, t.write
            ));
        }
    } else {
        o.push_str("  billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,\n");
    }
    if let Some(v) = &spec.stream_view {
        o.push_str(&format!("  stream: dynamodb.StreamViewType.{v},\n"));
    }
    if let Some(a) = &spec.ttl_attribute {
        o.push_str(&format!("  timeToLiveAttribute: {},\n", js(a)));
    }
    if spec.pitr {
        o.push_str("  pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true }, // aws-cdk-lib < 2.178: pointInTimeRecovery: true\n");
    }
    if let Some(c) = &spec.table_class {
        o.push_str(&format!("  tableClass: dynamodb.TableClass.{c},\n"));
    }
    if let Some(k) = &spec.kms_key {
        o.push_str("  encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED,\n");
        o.push_str(&format!(
            "  encryptionKey: kms.Key.fromKeyArn(this, {}, {}),\n",
            js(&format!("{logical}Key")),
            js(k)
        ));
    }
    o.push_str(&format!(
        "  deletionProtection: {},\n",
        spec.deletion_protection
    ));
    o.push_str("  removalPolicy: RemovalPolicy.RETAIN,\n});\n");
    let projection = |ix: &super::Index| {
        let mut s = format!(
            "  projectionType: dynamodb.ProjectionType.{},\n",
            ix.projection
        );
        if !ix.non_key.is_empty() {
            s.push_str(&format!(
                "  nonKeyAttributes: [{}],\n",
                ix.non_key
                    .iter()
                    .map(|n| js(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s
    };
    for ix in &spec.gsis {
        o.push_str(&format!(
            "{var}.addGlobalSecondaryIndex({{\n  indexName: {},\n",
            js(&ix.name)
        ));
        if let Some(p) = part(&ix.key, "HASH") {
            o.push_str(&format!("  partitionKey: {p},\n"));
        }
        if let Some(p) = part(&ix.key, "RANGE") {
            o.push_str(&format!("  sortKey: {p},\n"));
        }
        o.push_str(&projection(ix));
        if let Some(t) = ix.throughput {
            o.push_str(&format!(
                "  readCapacity: {},\n  writeCapacity: {},\n",
                t.read, t.write
            ));
        }
        o.push_str("});\n");
    }
    for ix in &spec.lsis {
        o.push_str(&format!(
            "{var}.addLocalSecondaryIndex({{\n  indexName: {},\n",
            js(&ix.name)
        ));
        if let Some(p) = part(&ix.key, "RANGE") {
            o.push_str(&format!("  sortKey: {p},\n"));
        }
        o.push_str(&projection(ix));
        o.push_str("});\n");
    }
    for (k, v) in &spec.tags {
        o.push_str(&format!("Tags.of({var}).add({}, {});\n", js(k), js(v)));
    }
    o.push_str(&format!(
        "// The logical id `cdk import --resource-mapping` names:\n({var}.node.defaultChild as dynamodb.CfnTable).overrideLogicalId({});\n",
        js(logical)
    ));
    o
}

/// A JavaScript string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The `cdk import --resource-mapping` file.
pub fn cdk_mapping(logical: &str, table: &str) -> serde_json::Value {
    serde_json::json!({ logical: { "TableName": table } })
}

/// `stack`: the CDK stack's id as `cdk list` shows it (`STACK` when not
/// known: it differs from the CloudFormation name under stages or
/// `stackName`).
pub fn cdk_steps(stack: &str, dir: &str, relay_stack: &str) -> Vec<Step> {
    let s = sh(stack);
    vec![
        step("Deploy any pending change first: `cdk diff` must show nothing but the table (STACK is the CDK stack's id, as `cdk list` prints it)", Some(format!("cdk diff {s}"))),
        step("Add the construct above to the stack, then import the table under its pinned logical id", Some(format!("cdk import {s} --resource-mapping {}", sh(&format!("{dir}/cdk-import-mapping.json"))))),
        step("Check for drift (adopt compares the stack's definition with the live table), then deploy as usual: the table shows no change", Some(format!("ddb-relay --stack {} adopt && cdk deploy {s}", sh(relay_stack)))),
        step("If your CDK app created the target itself (`importSource`, from `ddb-relay seed --method export --print-import-spec`), it is already in your stack: there is nothing to import", None),
    ]
}

/// The resource under `resources.Resources`, for serverless.yml.
pub fn serverless_yaml(spec: &TableSpec, logical: &str) -> String {
    let mut res = serde_yaml_ng::Mapping::new();
    res.insert(logical.into(), spec.cfn_resource());
    let mut inner = serde_yaml_ng::Mapping::new();
    inner.insert("Resources".into(), Value::Mapping(res));
    let mut doc = serde_yaml_ng::Mapping::new();
    doc.insert("resources".into(), Value::Mapping(inner));
    yaml_text(&Value::Mapping(doc))
}

pub use super::retire::{
    own_policy, read_only_policy, retire_steps, rollback_step, Ownership, RelayStack,
    MAX_RESOURCE_POLICY_BYTES, READ_ONLY_SID,
};
