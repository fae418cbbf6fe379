use super::render::*;
use super::*;
use proptest::prelude::*;

pub(super) fn orders() -> TableSpec {
    TableSpec {
        name: "orders-v2".into(),
        attributes: vec![
            AttrDef {
                name: "pk".into(),
                ty: "S".into(),
            },
            AttrDef {
                name: "sk".into(),
                ty: "N".into(),
            },
            AttrDef {
                name: "email".into(),
                ty: "S".into(),
            },
            AttrDef {
                name: "at".into(),
                ty: "N".into(),
            },
        ],
        key: vec![
            KeyPart {
                name: "sk".into(),
                kind: "RANGE".into(),
            },
            KeyPart {
                name: "pk".into(),
                kind: "HASH".into(),
            },
        ],
        billing: PROVISIONED.into(),
        throughput: Some(Throughput { read: 7, write: 3 }),
        gsis: vec![Index {
            name: "by-email".into(),
            key: vec![KeyPart {
                name: "email".into(),
                kind: "HASH".into(),
            }],
            projection: "INCLUDE".into(),
            non_key: vec!["total".into(), "state".into()],
            throughput: Some(Throughput { read: 2, write: 1 }),
        }],
        lsis: vec![Index {
            name: "by-time".into(),
            key: vec![
                KeyPart {
                    name: "pk".into(),
                    kind: "HASH".into(),
                },
                KeyPart {
                    name: "at".into(),
                    kind: "RANGE".into(),
                },
            ],
            projection: "KEYS_ONLY".into(),
            non_key: vec![],
            throughput: None,
        }],
        stream_view: Some("NEW_AND_OLD_IMAGES".into()),
        ttl_attribute: Some("expires".into()),
        pitr: true,
        deletion_protection: true,
        table_class: Some("STANDARD_INFREQUENT_ACCESS".into()),
        kms_key: Some("arn:aws:kms:us-east-1:123456789012:key/k-1".into()),
        tags: [
            ("team".to_string(), "payments".to_string()),
            ("aws:cloudformation:stack-name".into(), "x".into()),
        ]
        .into_iter()
        .collect(),
    }
}

#[test]
fn the_printed_definition_reads_back_as_the_table() {
    let spec = orders().normalised();
    assert!(
        !spec.tags.contains_key("aws:cloudformation:stack-name"),
        "aws: tags cannot be declared"
    );
    assert_eq!(spec.key[0].kind, "HASH");
    let props = spec.cfn_properties();
    assert_eq!(TableSpec::from_cfn(&props).unwrap(), spec);
    // Through the printed text too: YAML and JSON.
    let yaml = cfn_yaml(&spec, "OrdersV2");
    let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let p = &doc["Resources"]["OrdersV2"];
    assert_eq!(p["DeletionPolicy"], Value::from("Retain"));
    assert_eq!(p["UpdateReplacePolicy"], Value::from("Retain"));
    assert_eq!(TableSpec::from_cfn(&p["Properties"]).unwrap(), spec);
    let json = serde_json::to_string(&spec.cfn_resource()).unwrap();
    let back: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(TableSpec::from_cfn(&back["Properties"]).unwrap(), spec);
    // The reference's order, not the alphabet's.
    assert!(json.find("\"Type\"").unwrap() < json.find("\"Properties\"").unwrap());
}

#[test]
fn an_on_demand_table_prints_no_capacity_and_defaults_stay_implicit() {
    let mut spec = orders();
    spec.billing = PAY_PER_REQUEST.into();
    spec.pitr = false;
    spec.table_class = Some("STANDARD".into());
    spec.kms_key = None;
    let spec = spec.normalised();
    assert_eq!(spec.throughput, None);
    assert!(spec.gsis.iter().all(|g| g.throughput.is_none()));
    let props = spec.cfn_properties();
    for absent in [
        "ProvisionedThroughput",
        "PointInTimeRecoverySpecification",
        "TableClass",
        "SSESpecification",
    ] {
        assert!(props.get(absent).is_none(), "{absent}");
    }
    assert_eq!(TableSpec::from_cfn(&props).unwrap(), spec);
}

#[test]
fn differences_name_each_setting() {
    let a = orders();
    let mut b = orders();
    b.name = "other".into();
    assert!(
        a.differences(&b, &[]).is_empty(),
        "the name is not compared"
    );
    b.gsis[0].non_key.reverse();
    assert!(
        a.differences(&b, &[]).is_empty(),
        "non-key order is not a difference"
    );
    b.pitr = false;
    b.tags.insert("x".into(), "y".into());
    b.ttl_attribute = None;
    assert_eq!(a.differences(&b, &[]), ["ttl_attribute", "pitr", "tags"]);
    assert_eq!(a.differences(&b, &["pitr", "ttl_attribute"]), ["tags"]);
}

fn arb_spec() -> impl Strategy<Value = TableSpec> {
    let name = "[a-z][a-z0-9_.-]{2,20}";
    (
        name,
        any::<bool>(),
        proptest::option::of("[A-Z_]{3,12}"),
        proptest::option::of("[a-z]{1,8}"),
        any::<(bool, bool, bool)>(),
        proptest::collection::btree_map(
            "[a-zA-Z0-9 +=.:/@-]{1,12}",
            "[a-zA-Z0-9 +=.:/@-]{0,12}",
            0..4,
        ),
        (1i64..1000, 1i64..1000),
        proptest::collection::vec(
            ("[a-z]{1,8}", prop_oneof!["ALL", "KEYS_ONLY", "INCLUDE"]),
            0..3,
        ),
    )
        .prop_map(
            |(name, provisioned, stream, ttl, (pitr, dp, sort), tags, (r, w), gsis)| {
                let mut key = vec![KeyPart {
                    name: "pk".into(),
                    kind: "HASH".into(),
                }];
                let mut attributes = vec![AttrDef {
                    name: "pk".into(),
                    ty: "S".into(),
                }];
                if sort {
                    key.push(KeyPart {
                        name: "sk".into(),
                        kind: "RANGE".into(),
                    });
                    attributes.push(AttrDef {
                        name: "sk".into(),
                        ty: "B".into(),
                    });
                }
                let billing = if provisioned {
                    PROVISIONED
                } else {
                    PAY_PER_REQUEST
                };
                TableSpec {
                    name,
                    attributes,
                    key,
                    billing: billing.into(),
                    throughput: Some(Throughput { read: r, write: w }),
                    gsis: gsis
                        .into_iter()
                        .enumerate()
                        .map(|(i, (n, p))| Index {
                            name: format!("{n}{i}"),
                            key: vec![KeyPart {
                                name: "pk".into(),
                                kind: "HASH".into(),
                            }],
                            non_key: if p == "INCLUDE" {
                                vec!["a".into(), n.clone()]
                            } else {
                                vec![]
                            },
                            projection: p,
                            throughput: Some(Throughput { read: w, write: r }),
                        })
                        .collect(),
                    lsis: vec![],
                    stream_view: stream,
                    ttl_attribute: ttl,
                    pitr,
                    deletion_protection: dp,
                    table_class: None,
                    kms_key: None,
                    tags,
                }
                .normalised()
            },
        )
}

proptest! {
    /// **Invariant:** what `adopt` prints reads back as the table it was
    /// printed from, through the YAML text.
    #[test]
    fn any_table_round_trips_through_its_printed_yaml(spec in arb_spec()) {
        let yaml = cfn_yaml(&spec, "T");
        let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        prop_assert_eq!(TableSpec::from_cfn(&doc["Resources"]["T"]["Properties"]).unwrap(), spec);
        prop_assert!(unquoted_strings(&yaml).is_empty(), "{:?}\n{}", unquoted_strings(&yaml), yaml);
    }
}

/// Scalars in block YAML `text` that YAML 1.1 could read as something
/// other than what YAML 1.2 reads: anything plain but a safe key, a
/// boolean, an integer, `{}` or `[]`.
fn unquoted_strings(text: &str) -> Vec<String> {
    let safe_key = |k: &str| {
        k.starts_with('"')
            || (k.chars().all(|c| c.is_ascii_alphanumeric())
                && !["y", "n", "yes", "no", "on", "off", "true", "false", "null"]
                    .contains(&k.to_ascii_lowercase().as_str()))
    };
    let safe_value = |v: &str| {
        v.is_empty()
            || v.starts_with('"')
            || ["true", "false", "{}", "[]"].contains(&v)
            || (v.chars().all(|c| c.is_ascii_digit()) && !v.starts_with('0'))
            || v == "0"
    };
    let mut bad = Vec::new();
    for line in text.lines() {
        let mut l = line.trim_start();
        while let Some(rest) = l.strip_prefix("- ") {
            l = rest.trim_start();
        }
        let (key, value) = if l.starts_with('"') && !l.contains("\": ") && !l.ends_with("\":") {
            (None, l)
        } else {
            match l
                .find(": ")
                .or_else(|| l.strip_suffix(':').map(|k| k.len()))
            {
                Some(i) => (Some(&l[..i]), l[i + 1..].trim()),
                None => (None, l),
            }
        };
        if key.is_some_and(|k| !safe_key(k)) || !safe_value(value) {
            bad.push(line.to_string());
        }
    }
    bad
}

/// Review M3: CloudFormation parses YAML 1.1, where `on`, `yes`, `y`,
/// `1_000`, `0x1F`, `~` and dates are not strings. Every string we print is
/// double-quoted, so each means the same to CloudFormation as to us.
#[test]
fn printed_yaml_means_the_same_under_yaml_1_1() {
    let mut spec = orders();
    spec.name = "1_000".into();
    for (k, v) in [
        ("on", "yes"),
        ("flag", "on"),
        ("n", "1_000"),
        ("hex", "0x1F"),
        ("null", "~"),
        ("date", "2001-01-01"),
        ("Y", "off"),
        ("quote", "it's \"x\": y\n#z"),
    ] {
        spec.tags.insert(k.into(), v.into());
    }
    let spec = spec.normalised();
    for (text, path) in [
        (cfn_yaml(&spec, "On"), vec!["Resources", "On"]),
        (
            serverless_yaml(&spec, "On"),
            vec!["resources", "Resources", "On"],
        ),
    ] {
        assert_eq!(unquoted_strings(&text), Vec::<String>::new(), "{text}");
        assert!(
            text.contains("\"Value\": \"on\"") || text.contains("Value: \"on\""),
            "{text}"
        );
        assert!(
            text.contains("\"On\":"),
            "a logical id On is quoted: {text}"
        );
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        let res = path.iter().fold(&doc, |d, k| &d[*k]);
        assert_eq!(res, &spec.cfn_resource());
    }
    // The checker itself sees a plain YAML 1.1 boolean.
    assert_eq!(
        unquoted_strings("Tags:\n- Key: \"a\"\n  Value: on\n"),
        vec!["  Value: on"]
    );
}

/// Review: a JSON template keeps its key order and layout; only the
/// resource is added (pretty, compact, CRLF, empty `Resources`).
#[test]
fn the_import_template_keeps_the_layout_of_any_json_template() {
    let spec = orders().normalised();
    let cases = [
        ("pretty", "{\n  \"Parameters\": {\"Env\": {\"Type\": \"String\"}},\n  \"Resources\": {\n    \"Zeta\": {\"Type\": \"AWS::SQS::Queue\"},\n    \"Alpha\": {\"Type\": \"AWS::SQS::Queue\", \"Properties\": {\"QueueName\": \"Resources\"}}\n  },\n  \"Description\": \"Resources: {x}\"\n}\n"),
        ("compact", r#"{"Description":"{\"Resources\":1}","Resources":{"Q":{"Type":"AWS::SQS::Queue"}}}"#),
        ("crlf", "{\r\n    \"Resources\": {\r\n        \"Q\": {\"Type\": \"AWS::SQS::Queue\"}\r\n    }\r\n}\r\n"),
        ("empty", "{\n  \"Resources\": {}\n}"),
    ];
    for (name, json) in cases {
        let out = template_with(json, &spec, "OrdersV2").unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut after: serde_json::Value = serde_json::from_str(&out).unwrap();
        let added = after["Resources"]
            .as_object_mut()
            .unwrap()
            .remove("OrdersV2")
            .unwrap();
        assert_eq!(added["DeletionPolicy"], "Retain", "{name}");
        let before: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(after, before, "{name}");
        // Every byte of the template is still there, in order: the output
        // is the template with one contiguous insertion.
        let prefix = out
            .bytes()
            .zip(json.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let suffix = out
            .bytes()
            .rev()
            .zip(json.bytes().rev())
            .take_while(|(a, b)| a == b)
            .count();
        assert!(prefix + suffix >= json.len(), "{name}:\n{out}");
        assert_eq!(json.contains("\r\n"), out.contains("\r\n"), "{name}");
        if json.contains("\r\n") {
            assert!(
                !out.replace("\r\n", "").contains('\n'),
                "{name}: CRLF throughout"
            );
        }
        assert!(
            out.find("Zeta").unwrap_or(0) <= out.find("Alpha").unwrap_or(0),
            "{name}: order kept"
        );
    }
}

/// Review (weak tests): the resource goes under `Resources:` whatever the
/// template's layout, and nothing else changes, line endings included.
#[test]
fn the_import_template_keeps_the_layout_of_any_yaml_template() {
    let spec = orders().normalised();
    let cases = [
        ("comments", "# app\nResources: # the app\n  # first a queue\n  Queue:\n    Type: AWS::SQS::Queue\nOutputs:\n  Q:\n    Value: !Ref Queue\n"),
        ("four spaces", "Resources:\n    Queue:\n        Type: AWS::SQS::Queue\n        Properties:\n            DelaySeconds: 1_000\n"),
        ("crlf", "Resources:\r\n  Queue:\r\n    Type: AWS::SQS::Queue\r\n"),
        ("document start", "---\nAWSTemplateFormatVersion: '2010-09-09'\nResources:\n  Queue:\n    Type: AWS::SQS::Queue\n"),
        ("empty", "Resources: {}\nOutputs: {}\n"),
        ("no final newline", "Resources:\n  Queue:\n    Type: AWS::SQS::Queue"),
    ];
    for (name, yaml) in cases {
        let out = template_with(yaml, &spec, "OrdersV2").unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut before: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let mut after: Value = serde_yaml_ng::from_str(&out).unwrap();
        let added = after["Resources"]
            .as_mapping_mut()
            .unwrap()
            .remove("OrdersV2")
            .unwrap_or_else(|| panic!("{name}: not added\n{out}"));
        assert_eq!(added, spec.cfn_resource(), "{name}");
        if name == "empty" {
            before["Resources"] = Value::Mapping(Default::default());
        }
        assert_eq!(after, before, "{name}: nothing else changed\n{out}");
        assert_eq!(yaml.contains("\r\n"), out.contains("\r\n"), "{name}");
        if yaml.contains("\r\n") {
            assert!(
                !out.replace("\r\n", "").contains('\n'),
                "{name}: every line ends CRLF"
            );
        }
        assert_eq!(yaml.ends_with('\n'), out.ends_with('\n'), "{name}");
        // Every line of the template is still there, in order.
        let kept: Vec<&str> = out
            .lines()
            .filter(|l| yaml.lines().any(|y| y == *l))
            .collect();
        let want: Vec<&str> = yaml
            .lines()
            .filter(|l| !l.starts_with("Resources: {}"))
            .collect();
        assert_eq!(kept, want, "{name}");
        assert_eq!(
            unquoted_strings(
                &out[out.find("OrdersV2").unwrap()..]
                    .lines()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            Vec::<String>::new()
        );
    }
    // A flow-style or odd template is refused with a clear message.
    assert!(template_with("{Resources: {Q: {Type: X}}}", &spec, "T").is_err());
}

#[test]
fn policies_are_read_from_json_and_yaml_templates_with_short_tags() {
    let yaml = "AWSTemplateFormatVersion: '2010-09-09'\nTransform: AWS::Serverless-2016-10-31\nResources:\n  Orders:\n    Type: AWS::DynamoDB::Table\n    DeletionPolicy: Retain\n    Properties:\n      TableName: !Sub '${AWS::StackName}-orders'\n  Fn:\n    Type: AWS::Serverless::Function\n    UpdateReplacePolicy: !If [Prod, Retain, Delete]\n";
    assert_eq!(
        resource_policies(yaml, "Orders").unwrap(),
        Some((Some("Retain".into()), None))
    );
    assert_eq!(
        resource_policies(yaml, "Fn").unwrap(),
        Some((None, Some("<expression>".into())))
    );
    assert_eq!(resource_policies(yaml, "Nope").unwrap(), None);
    let json = r#"{"Resources":{"Orders":{"Type":"AWS::DynamoDB::Table","DeletionPolicy":"Retain","UpdateReplacePolicy":"Retain"}}}"#;
    assert_eq!(
        resource_policies(json, "Orders").unwrap(),
        Some((Some("Retain".into()), Some("Retain".into())))
    );
    assert!(resource_policies("Resources: [", "Orders").is_err());
}

#[test]
fn logical_ids_and_quoting() {
    assert_eq!(logical_id("orders-v2"), "OrdersV2");
    assert_eq!(logical_id("my_table.prod"), "MyTableProd");
    assert_eq!(logical_id("2024-orders"), "Table2024Orders");
    assert!(valid_logical_id("OrdersV2"));
    assert!(!valid_logical_id("Orders-V2"));
    assert_eq!(sh("plain-name_1.x"), "plain-name_1.x");
    assert_eq!(sh("it's"), r"'it'\''s'");
    assert_eq!(sh(""), "''");
}

#[test]
fn the_import_template_adds_only_the_table() {
    let spec = orders().normalised();
    let yaml = "Transform: AWS::Serverless-2016-10-31\nParameters:\n  Env: {Type: String}\nResources:\n  Orders:\n    Type: AWS::DynamoDB::Table\n    Properties:\n      TableName: !Sub '${Env}-orders'\n";
    let out = template_with(yaml, &spec, "OrdersV2").unwrap();
    let before: Value = serde_yaml_ng::from_str(yaml).unwrap();
    let mut after: Value = serde_yaml_ng::from_str(&out).unwrap();
    assert!(out.contains("!Sub"), "short tags survive: {out}");
    let added = after["Resources"]
        .as_mapping_mut()
        .unwrap()
        .remove("OrdersV2")
        .unwrap();
    assert_eq!(after, before, "nothing else changed");
    assert_eq!(TableSpec::from_cfn(&added["Properties"]).unwrap(), spec);
    // JSON stays JSON.
    let json = r#"{"Resources":{"Orders":{"Type":"AWS::DynamoDB::Table"}}}"#;
    let out = template_with(json, &spec, "OrdersV2").unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Resources"]["OrdersV2"]["DeletionPolicy"], "Retain");
    assert!(template_with(json, &spec, "Orders")
        .unwrap_err()
        .contains("--logical-id"));
    assert!(template_with("Outputs: {}", &spec, "X").is_err());
}

#[test]
fn the_import_steps_are_one_change_set_with_the_stacks_parameters_kept() {
    let steps = import_steps(
        "app",
        "us-east-1",
        "OrdersV2",
        &["Env".into(), "It's".into()],
        "adopt",
        "relay",
    );
    let create = steps[0].command.as_deref().unwrap();
    assert!(create.starts_with("aws cloudformation create-change-set --region us-east-1 --stack-name app --change-set-name ddb-relay-adopt-OrdersV2 --change-set-type IMPORT --resources-to-import file://adopt/resources-to-import.json --template-body file://adopt/import-template"), "{create}");
    assert!(create.ends_with(" --parameters ParameterKey=Env,UsePreviousValue=true 'ParameterKey=It'\\''s,UsePreviousValue=true'"), "{create}");
    assert_eq!(
        resources_to_import("OrdersV2", "orders-v2"),
        serde_json::json!([{"ResourceType": "AWS::DynamoDB::Table", "LogicalResourceId": "OrdersV2", "ResourceIdentifier": {"TableName": "orders-v2"}}])
    );
    assert!(steps.iter().any(|s| s
        .command
        .as_deref()
        .is_some_and(|c| c == "ddb-relay --stack relay adopt --logical-id OrdersV2")));
}

#[test]
fn cdk_and_serverless_print_the_same_table() {
    let spec = orders().normalised();
    let code = cdk(&spec, "OrdersV2");
    for want in [
        "new dynamodb.Table(this, \"OrdersV2\", {",
        "tableName: \"orders-v2\"",
        "partitionKey: { name: \"pk\", type: dynamodb.AttributeType.STRING }",
        "sortKey: { name: \"sk\", type: dynamodb.AttributeType.NUMBER }",
        "billingMode: dynamodb.BillingMode.PROVISIONED,\n  readCapacity: 7,\n  writeCapacity: 3,",
        "stream: dynamodb.StreamViewType.NEW_AND_OLD_IMAGES",
        "timeToLiveAttribute: \"expires\"",
        "pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true }",
        "tableClass: dynamodb.TableClass.STANDARD_INFREQUENT_ACCESS",
        "encryptionKey: kms.Key.fromKeyArn(this, \"OrdersV2Key\", \"arn:aws:kms:us-east-1:123456789012:key/k-1\")",
        "deletionProtection: true",
        "removalPolicy: RemovalPolicy.RETAIN",
        "ordersV2.addGlobalSecondaryIndex({\n  indexName: \"by-email\",\n  partitionKey: { name: \"email\", type: dynamodb.AttributeType.STRING },\n  projectionType: dynamodb.ProjectionType.INCLUDE,\n  nonKeyAttributes: [\"total\", \"state\"],\n  readCapacity: 2,\n  writeCapacity: 1,\n});",
        "ordersV2.addLocalSecondaryIndex({\n  indexName: \"by-time\",\n  sortKey: { name: \"at\", type: dynamodb.AttributeType.NUMBER },\n  projectionType: dynamodb.ProjectionType.KEYS_ONLY,\n});",
        "Tags.of(ordersV2).add(\"team\", \"payments\");",
        "overrideLogicalId(\"OrdersV2\")",
    ] {
        assert!(code.contains(want), "missing {want:?} in\n{code}");
    }
    assert_eq!(
        cdk_mapping("OrdersV2", "orders-v2"),
        serde_json::json!({"OrdersV2": {"TableName": "orders-v2"}})
    );
    let sls: Value = serde_yaml_ng::from_str(&serverless_yaml(&spec, "OrdersV2")).unwrap();
    assert_eq!(
        sls["resources"]["Resources"]["OrdersV2"],
        spec.cfn_resource()
    );
}
