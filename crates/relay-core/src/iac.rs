//! Handing tables to and from the user's IaC: a table as CloudFormation
//! defines it ([`TableSpec`]), who owns the source ([`Owner`]) and whether
//! an edit of that template can delete it ([`exposure`]), and what the
//! target lacks that the source had ([`gaps`]). [`render`] prints the
//! definitions (CloudFormation/SAM, CDK, Serverless) and the runbook steps.
//!
//! **Invariant:** a printed definition describes the live table exactly:
//! [`TableSpec::from_cfn`] of [`TableSpec::cfn_properties`] is the spec
//! itself, so an import of it finds no drift.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

mod gaps;
pub mod render;
mod retire;

pub use gaps::{gaps, Gap};

/// One key attribute: its name and `HASH` or `RANGE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPart {
    pub name: String,
    pub kind: String,
}

/// An attribute definition: its name and `S`, `N` or `B`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throughput {
    pub read: i64,
    pub write: i64,
}

/// A global or local secondary index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub name: String,
    pub key: Vec<KeyPart>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection: String,
    pub non_key: Vec<String>,
    /// A GSI's capacity on a provisioned table.
    pub throughput: Option<Throughput>,
}

/// A table's settings as an `AWS::DynamoDB::Table` defines them, read from
/// DescribeTable, DescribeTimeToLive, DescribeContinuousBackups and
/// ListTagsOfResource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSpec {
    pub name: String,
    pub attributes: Vec<AttrDef>,
    pub key: Vec<KeyPart>,
    /// `PAY_PER_REQUEST` or `PROVISIONED`.
    pub billing: String,
    /// The table's capacity when provisioned.
    pub throughput: Option<Throughput>,
    pub gsis: Vec<Index>,
    pub lsis: Vec<Index>,
    pub stream_view: Option<String>,
    pub ttl_attribute: Option<String>,
    pub pitr: bool,
    pub deletion_protection: bool,
    /// `None`: the default class (`STANDARD`).
    pub table_class: Option<String>,
    /// The KMS key of SSE-KMS (`None`: the default, an AWS owned key).
    pub kms_key: Option<String>,
    /// User tags (`aws:` tags are AWS's own and cannot be declared).
    pub tags: BTreeMap<String, String>,
}

pub const PAY_PER_REQUEST: &str = "PAY_PER_REQUEST";
pub const PROVISIONED: &str = "PROVISIONED";

impl TableSpec {
    /// A canonical order (key: HASH first; attributes, indexes by name),
    /// no `aws:` tags, `STANDARD` as the default class, and no capacity
    /// on an on-demand table: two reads of one table are equal.
    pub fn normalised(mut self) -> TableSpec {
        fn key_order(k: &mut [KeyPart]) {
            k.sort_by_key(|p| p.kind != "HASH");
        }
        key_order(&mut self.key);
        self.attributes.sort_by(|a, b| a.name.cmp(&b.name));
        for ix in self.gsis.iter_mut().chain(self.lsis.iter_mut()) {
            key_order(&mut ix.key);
            if self.billing != PROVISIONED {
                ix.throughput = None;
            }
        }
        self.gsis.sort_by(|a, b| a.name.cmp(&b.name));
        self.lsis.sort_by(|a, b| a.name.cmp(&b.name));
        self.tags.retain(|k, _| !k.starts_with("aws:"));
        if self.table_class.as_deref() == Some("STANDARD") {
            self.table_class = None;
        }
        if self.billing != PROVISIONED {
            self.throughput = None;
        }
        self
    }

    /// The `Properties` of an `AWS::DynamoDB::Table` for this table, in the
    /// order the CloudFormation reference lists them.
    pub fn cfn_properties(&self) -> Value {
        let mut p = Mapping::new();
        p.insert("TableName".into(), self.name.as_str().into());
        p.insert(
            "AttributeDefinitions".into(),
            seq(self.attributes.iter().map(|a| {
                map(&[
                    ("AttributeName", a.name.as_str().into()),
                    ("AttributeType", a.ty.as_str().into()),
                ])
            })),
        );
        p.insert("KeySchema".into(), key_schema(&self.key));
        p.insert("BillingMode".into(), self.billing.as_str().into());
        if let Some(t) = self.throughput {
            p.insert("ProvisionedThroughput".into(), throughput(t));
        }
        if !self.gsis.is_empty() {
            p.insert(
                "GlobalSecondaryIndexes".into(),
                seq(self.gsis.iter().map(index)),
            );
        }
        if !self.lsis.is_empty() {
            p.insert(
                "LocalSecondaryIndexes".into(),
                seq(self.lsis.iter().map(index)),
            );
        }
        if let Some(v) = &self.stream_view {
            p.insert(
                "StreamSpecification".into(),
                map(&[("StreamViewType", v.as_str().into())]),
            );
        }
        if let Some(a) = &self.ttl_attribute {
            p.insert(
                "TimeToLiveSpecification".into(),
                map(&[
                    ("AttributeName", a.as_str().into()),
                    ("Enabled", true.into()),
                ]),
            );
        }
        if self.pitr {
            p.insert(
                "PointInTimeRecoverySpecification".into(),
                map(&[("PointInTimeRecoveryEnabled", true.into())]),
            );
        }
        if let Some(k) = &self.kms_key {
            p.insert(
                "SSESpecification".into(),
                map(&[
                    ("SSEEnabled", true.into()),
                    ("SSEType", "KMS".into()),
                    ("KMSMasterKeyId", k.as_str().into()),
                ]),
            );
        }
        if let Some(c) = &self.table_class {
            p.insert("TableClass".into(), c.as_str().into());
        }
        p.insert(
            "DeletionProtectionEnabled".into(),
            self.deletion_protection.into(),
        );
        if !self.tags.is_empty() {
            p.insert(
                "Tags".into(),
                seq(self.tags.iter().map(|(k, v)| {
                    map(&[("Key", k.as_str().into()), ("Value", v.as_str().into())])
                })),
            );
        }
        Value::Mapping(p)
    }

    /// The whole resource, retained on deletion and on replacement.
    pub fn cfn_resource(&self) -> Value {
        map(&[
            ("Type", "AWS::DynamoDB::Table".into()),
            ("DeletionPolicy", "Retain".into()),
            ("UpdateReplacePolicy", "Retain".into()),
            ("Properties", self.cfn_properties()),
        ])
    }

    /// Reads the `Properties` of an `AWS::DynamoDB::Table` (literal values
    /// only) back into a spec, normalised.
    pub fn from_cfn(props: &Value) -> Result<TableSpec, String> {
        let get = |k: &str| props.get(k);
        let text = |v: Option<&Value>, what: &str| -> Result<String, String> {
            v.and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("{what}: expected a string"))
        };
        let list = |v: Option<&Value>| -> Vec<Value> {
            v.and_then(Value::as_sequence).cloned().unwrap_or_default()
        };
        let keys = |v: Option<&Value>, what: &str| -> Result<Vec<KeyPart>, String> {
            list(v)
                .iter()
                .map(|k| {
                    Ok(KeyPart {
                        name: text(k.get("AttributeName"), what)?,
                        kind: text(k.get("KeyType"), what)?,
                    })
                })
                .collect()
        };
        let capacity = |v: Option<&Value>| -> Option<Throughput> {
            let v = v?;
            Some(Throughput {
                read: v.get("ReadCapacityUnits")?.as_i64()?,
                write: v.get("WriteCapacityUnits")?.as_i64()?,
            })
        };
        let indexes = |v: Option<&Value>, what: &str| -> Result<Vec<Index>, String> {
            list(v)
                .iter()
                .map(|ix| {
                    let proj = ix.get("Projection");
                    Ok(Index {
                        name: text(ix.get("IndexName"), what)?,
                        key: keys(ix.get("KeySchema"), what)?,
                        projection: text(proj.and_then(|p| p.get("ProjectionType")), what)?,
                        non_key: list(proj.and_then(|p| p.get("NonKeyAttributes")))
                            .iter()
                            .filter_map(|n| n.as_str().map(str::to_string))
                            .collect(),
                        throughput: capacity(ix.get("ProvisionedThroughput")),
                    })
                })
                .collect()
        };
        let enabled = |v: Option<&Value>, flag: &str| {
            v.and_then(|s| s.get(flag))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let spec = TableSpec {
            name: text(get("TableName"), "TableName")?,
            attributes: list(get("AttributeDefinitions"))
                .iter()
                .map(|a| {
                    Ok(AttrDef {
                        name: text(a.get("AttributeName"), "AttributeDefinitions")?,
                        ty: text(a.get("AttributeType"), "AttributeDefinitions")?,
                    })
                })
                .collect::<Result<_, String>>()?,
            key: keys(get("KeySchema"), "KeySchema")?,
            billing: get("BillingMode")
                .and_then(Value::as_str)
                .unwrap_or(PROVISIONED)
                .to_string(),
            throughput: capacity(get("ProvisionedThroughput")),
            gsis: indexes(get("GlobalSecondaryIndexes"), "GlobalSecondaryIndexes")?,
            lsis: indexes(get("LocalSecondaryIndexes"), "LocalSecondaryIndexes")?,
            stream_view: get("StreamSpecification")
                .and_then(|s| s.get("StreamViewType"))
                .and_then(Value::as_str)
                .map(str::to_string),
            ttl_attribute: get("TimeToLiveSpecification")
                .filter(|s| enabled(Some(s), "Enabled"))
                .and_then(|s| s.get("AttributeName"))
                .and_then(Value::as_str)
                .map(str::to_string),
            pitr: enabled(
                get("PointInTimeRecoverySpecification"),
                "PointInTimeRecoveryEnabled",
            ),
            deletion_protection: get("DeletionProtectionEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            table_class: get("TableClass")
                .and_then(Value::as_str)
                .map(str::to_string),
            kms_key: get("SSESpecification")
                .filter(|s| enabled(Some(s), "SSEEnabled"))
                .and_then(|s| s.get("KMSMasterKeyId"))
                .and_then(Value::as_str)
                .map(str::to_string),
            tags: list(get("Tags"))
                .iter()
                .filter_map(|t| {
                    Some((
                        t.get("Key")?.as_str()?.to_string(),
                        t.get("Value")?.as_str()?.to_string(),
                    ))
                })
                .collect(),
        };
        Ok(spec.normalised())
    }

    /// The settings in which `other` differs from this table, by name
    /// (the table name is not compared; `skip` names settings left out).
    pub fn differences(&self, other: &TableSpec, skip: &[&str]) -> Vec<String> {
        let (a, b) = (self.clone().normalised(), other.clone().normalised());
        let sorted_non_key = |v: &[Index]| -> Vec<Index> {
            v.iter()
                .cloned()
                .map(|mut ix| {
                    ix.non_key.sort();
                    ix
                })
                .collect()
        };
        let checks: Vec<(&str, bool)> = vec![
            ("attributes", a.attributes == b.attributes),
            ("key", a.key == b.key),
            ("billing", a.billing == b.billing),
            ("throughput", a.throughput == b.throughput),
            ("gsis", sorted_non_key(&a.gsis) == sorted_non_key(&b.gsis)),
            ("lsis", sorted_non_key(&a.lsis) == sorted_non_key(&b.lsis)),
            ("stream_view", a.stream_view == b.stream_view),
            ("ttl_attribute", a.ttl_attribute == b.ttl_attribute),
            ("pitr", a.pitr == b.pitr),
            (
                "deletion_protection",
                a.deletion_protection == b.deletion_protection,
            ),
            ("table_class", a.table_class == b.table_class),
            ("kms_key", a.kms_key == b.kms_key),
            ("tags", a.tags == b.tags),
        ];
        checks
            .into_iter()
            .filter(|(name, same)| !same && !skip.contains(name))
            .map(|(name, _)| name.to_string())
            .collect()
    }
}

fn map(entries: &[(&str, Value)]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(Value::from(*k), v.clone());
    }
    Value::Mapping(m)
}

fn seq(items: impl Iterator<Item = Value>) -> Value {
    Value::Sequence(items.collect())
}

fn key_schema(key: &[KeyPart]) -> Value {
    seq(key.iter().map(|k| {
        map(&[
            ("AttributeName", k.name.as_str().into()),
            ("KeyType", k.kind.as_str().into()),
        ])
    }))
}

fn throughput(t: Throughput) -> Value {
    map(&[
        ("ReadCapacityUnits", t.read.into()),
        ("WriteCapacityUnits", t.write.into()),
    ])
}

fn index(ix: &Index) -> Value {
    let mut projection = vec![("ProjectionType", Value::from(ix.projection.as_str()))];
    if !ix.non_key.is_empty() {
        projection.push((
            "NonKeyAttributes",
            seq(ix.non_key.iter().map(|n| n.as_str().into())),
        ));
    }
    let mut entries = vec![
        ("IndexName", Value::from(ix.name.as_str())),
        ("KeySchema", key_schema(&ix.key)),
        ("Projection", map(&projection)),
    ];
    if let Some(t) = ix.throughput {
        entries.push(("ProvisionedThroughput", throughput(t)));
    }
    map(&entries)
}

/// The CloudFormation stack that owns a table, and the resource's policies
/// as its deployed template declares them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub stack: String,
    pub logical_id: String,
    /// `None`: not declared (CloudFormation deletes the table).
    pub deletion_policy: Option<String>,
    pub update_replace_policy: Option<String>,
    /// The root stack, when `stack` is nested in another (its template is
    /// written by the root's deploys).
    #[serde(default)]
    pub root_stack: Option<String>,
    /// [`TABLE_TYPE`], or [`GLOBAL_TABLE_TYPE`] (CDK `TableV2`).
    #[serde(default = "table_type")]
    pub resource_type: String,
}

/// The CloudFormation type `adopt` prints.
pub const TABLE_TYPE: &str = "AWS::DynamoDB::Table";
/// The type CDK's `TableV2` declares; it owns a table as well.
pub const GLOBAL_TABLE_TYPE: &str = "AWS::DynamoDB::GlobalTable";

fn table_type() -> String {
    TABLE_TYPE.into()
}

impl Owner {
    /// Removing the resource from the template, or an edit that replaces
    /// it, keeps the table.
    pub fn retains(&self) -> bool {
        let keeps = |p: &Option<String>| {
            matches!(p.as_deref(), Some("Retain") | Some("RetainExceptOnCreate"))
        };
        keeps(&self.deletion_policy) && keeps(&self.update_replace_policy)
    }
}

/// A resource's (`DeletionPolicy`, `UpdateReplacePolicy`).
pub type Policies = (Option<String>, Option<String>);

/// A resource's `DeletionPolicy` and `UpdateReplacePolicy` in a template
/// (JSON or YAML, short-form tags allowed). `Ok(None)`: no such resource.
/// A policy that is not a literal (an `Fn::If`) reads as `"<expression>"`,
/// which does not count as retaining.
pub fn resource_policies(template: &str, logical_id: &str) -> Result<Option<Policies>, String> {
    let doc: Value = serde_yaml_ng::from_str(template)
        .map_err(|e| format!("the stack's template does not parse: {e}"))?;
    let Some(res) = doc.get("Resources").and_then(|r| r.get(logical_id)) else {
        return Ok(None);
    };
    let policy = |k: &str| {
        res.get(k).map(|v| match v.as_str() {
            Some(s) => s.to_string(),
            None => "<expression>".to_string(),
        })
    };
    Ok(Some((
        policy("DeletionPolicy"),
        policy("UpdateReplacePolicy"),
    )))
}

/// A resource's `Properties` in a template (JSON or YAML). `Ok(None)`: no
/// such resource.
pub fn resource_properties(template: &str, logical_id: &str) -> Result<Option<Value>, String> {
    let doc: Value = serde_yaml_ng::from_str(template)
        .map_err(|e| format!("the stack's template does not parse: {e}"))?;
    Ok(doc
        .get("Resources")
        .and_then(|r| r.get(logical_id))
        .map(|r| r.get("Properties").cloned().unwrap_or(Value::Null)))
}

/// Whether an edit of the user's IaC can delete the table, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exposure {
    /// False: deletion protection is on, or the owning stack retains it.
    pub exposed: bool,
    pub detail: String,
}

/// How exposed `table` is to deletion by its owner's next deploy.
pub fn exposure(table: &str, deletion_protection: bool, owner: Option<&Owner>) -> Exposure {
    let policies = |o: &Owner| {
        format!(
            "DeletionPolicy {}, UpdateReplacePolicy {}",
            o.deletion_policy.as_deref().unwrap_or("not set (Delete)"),
            o.update_replace_policy
                .as_deref()
                .unwrap_or("not set (Delete)")
        )
    };
    let whose = |o: &Owner| {
        format!(
            "owned by stack {} as {}{}",
            o.stack,
            o.logical_id,
            o.root_stack
                .as_deref()
                .map(|r| format!(" (nested in {r}: its template is edited through {r}'s)"))
                .unwrap_or_default()
        )
    };
    match (deletion_protection, owner) {
        (true, Some(o)) => Exposure {
            exposed: false,
            detail: format!("deletion protection on; {} ({})", whose(o), policies(o)),
        },
        (true, None) => Exposure {
            exposed: false,
            detail: "deletion protection on; in no CloudFormation stack".into(),
        },
        (false, Some(o)) if o.retains() => Exposure {
            exposed: false,
            detail: format!("{} ({}); deletion protection off", whose(o), policies(o)),
        },
        (false, Some(o)) => Exposure {
            exposed: true,
            detail: format!(
                "{} ({}) and deletion protection off: the deploy that points that template at \
                 the new table deletes {table}. Run `ddb-relay protect` now, and set \
                 DeletionPolicy: Retain and UpdateReplacePolicy: Retain on {} \
                 (CDK: removalPolicy: RemovalPolicy.RETAIN)",
                whose(o),
                policies(o),
                o.logical_id
            ),
        },
        (false, None) => Exposure {
            exposed: true,
            detail: format!(
                "in no CloudFormation stack, and deletion protection off: nothing stops a \
                 delete of {table} (another tool's, or by hand). Run `ddb-relay protect`"
            ),
        },
    }
}

#[cfg(test)]
mod gaps_tests;
#[cfg(test)]
mod retire_tests;
#[cfg(test)]
mod tests;
