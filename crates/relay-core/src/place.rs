//! Where the target table lives, when it is not next to the stack: another
//! region, another account (through a role the stack assumes), or both.
//!
//! The stack always runs in the **source** region and account: a Lambda
//! event source mapping reads only a stream of its own region. Everything
//! that touches the target (applier, copy workers, CLI seeds, verify,
//! repair) reaches it through a client built from a [`TargetPlace`].
//!
//! **Invariant:** a target that is elsewhere is never named by its bare
//! table name inside the tools: it is named by its [`TargetPlace::handle`]
//! (`name@region`, a string DynamoDB cannot use as a table name), so a
//! same-named source and target in two regions can never be confused, and a
//! call that is not routed to the target's client fails instead of writing
//! to a same-named table next to the stack.

use crate::config::{ConfigError, Env};

/// The target's region and account, as the template's `TargetRegion`,
/// `TargetRoleArn` and `TargetExternalId` set them (empty: the stack's own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetPlace {
    /// `None`: the stack's region.
    pub region: Option<String>,
    /// `None`: the stack's own credentials (same account).
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
}

/// How a seed method fares when the target is elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedReach {
    /// Works across the boundary.
    Crosses,
    /// The AWS API cannot do it; the reason names what can.
    Refused(&'static str),
}

impl TargetPlace {
    /// Reads `TARGET_REGION`, `TARGET_ROLE_ARN` and `TARGET_EXTERNAL_ID`
    /// (each optional; empty is absent) and checks their form.
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let get = |k: &str| {
            env.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let place = TargetPlace {
            region: get("TARGET_REGION"),
            role_arn: get("TARGET_ROLE_ARN"),
            external_id: get("TARGET_EXTERNAL_ID"),
        };
        place
            .check()
            .map_err(|(var, problem)| ConfigError { var, problem })?;
        Ok(place)
    }

    /// Checks the form of each setting; the error names the variable.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(r) = &self.region {
            check_region(r).map_err(|p| ("TARGET_REGION", p))?;
        }
        if let Some(a) = &self.role_arn {
            role_account(a).map_err(|p| ("TARGET_ROLE_ARN", p))?;
        }
        if let Some(x) = &self.external_id {
            if self.role_arn.is_none() {
                return Err((
                    "TARGET_EXTERNAL_ID",
                    "is set without TARGET_ROLE_ARN (an external id goes with a role to assume)"
                        .into(),
                ));
            }
            // STS: 2-1224 characters of [\w+=,.@:/-].
            let ok = (2..=1224).contains(&x.len())
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c));
            if !ok {
                return Err((
                    "TARGET_EXTERNAL_ID",
                    "must be 2-1224 characters of letters, digits and _+=,.@:/-".into(),
                ));
            }
        }
        Ok(())
    }

    /// The target is in another region than `stack_region`.
    pub fn other_region(&self, stack_region: &str) -> bool {
        self.region.as_deref().is_some_and(|r| r != stack_region)
    }

    /// The target is reached through a role (another account, usually).
    pub fn assumes_role(&self) -> bool {
        self.role_arn.is_some()
    }

    /// Anything that needs a client of its own.
    pub fn is_elsewhere(&self, stack_region: &str) -> bool {
        self.other_region(stack_region) || self.assumes_role()
    }

    /// The target's account when a role names it.
    pub fn account(&self) -> Option<&str> {
        self.role_arn.as_deref().and_then(|a| role_account(a).ok())
    }

    /// How the tools name a target that is elsewhere: `name@region`, or
    /// `name@region/account` through a role.
    pub fn handle(&self, table: &str, stack_region: &str) -> String {
        let region = self.region.as_deref().unwrap_or(stack_region);
        match self.account() {
            Some(acct) => format!("{table}@{region}/{acct}"),
            None => format!("{table}@{region}"),
        }
    }

    /// Whether `method` (backup, pitr, export, scan) can seed a target that
    /// is here. Checked against the DynamoDB API reference: see
    /// docs/DESIGN.md, "Another region or account".
    pub fn seed_reach(&self, method: &str, stack_region: &str) -> SeedReach {
        let region = self.other_region(stack_region);
        let account = self.assumes_role();
        match method {
            _ if !region && !account => SeedReach::Crosses,
            "backup" if account => SeedReach::Refused(
                "RestoreTableFromBackup restores only within the backup's account (across accounts, AWS Backup copies it first); use --method scan or export --load",
            ),
            "pitr" if account => SeedReach::Refused(
                "RestoreTableToPointInTime restores only within the source's account; use --method scan or export --load",
            ),
            // Both restores run in the target's region, naming the backup
            // or the source by ARN, with an SSE override (the API requires
            // one across regions).
            "backup" | "pitr" | "export" | "scan" => SeedReach::Crosses,
            _ => SeedReach::Refused("unknown seed method"),
        }
    }
}

/// What the least-privilege policies of a target elsewhere are made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyInputs<'a> {
    pub partition: &'a str,
    /// The stack's (and the source's) account and region.
    pub account: &'a str,
    pub region: &'a str,
    pub stack: &'a str,
    pub target_table: &'a str,
    pub place: &'a TargetPlace,
    /// Who runs the CLI (a role or user ARN), to be trusted by the target
    /// role too.
    pub operator: Option<&'a str>,
    /// The stack's applier and worker role ARNs, as deployed (empty: name
    /// them by CloudFormation's pattern).
    pub roles: &'a [String],
}

/// Actions on the target table: the applier (BatchWriteItem, PutItem,
/// DeleteItem), the copy workers and the CLI (Scan, reads by key, repairs
/// with UpdateItem, DescribeTable).
pub const TARGET_ACTIONS: [&str; 8] = [
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Scan",
    "dynamodb:UpdateItem",
];

/// The policy documents a target elsewhere needs, as JSON: the target
/// role's trust and permissions policies (in the target's account), and
/// what the operator needs on the stack's side. `None` without a role (a
/// target in another region of the same account needs nothing beyond the
/// template's own grants).
pub fn iam_policies(i: &PolicyInputs<'_>) -> Option<serde_json::Value> {
    use serde_json::json;
    let role = i.place.role_arn.as_deref()?;
    let account = i.place.account()?;
    let region = i.place.region.as_deref().unwrap_or(i.region);
    let p = i.partition;
    let table = format!(
        "arn:{p}:dynamodb:{region}:{account}:table/{}",
        i.target_table
    );
    // CloudFormation names a role it creates STACK-LOGICALID-RANDOM, with
    // the stack's name cut short past 64 characters: the deployed ARNs when
    // known, else that pattern.
    let mut principals = if i.roles.is_empty() {
        vec![
            format!("arn:{p}:iam::{}:role/{}-ApplierRole-*", i.account, i.stack),
            format!("arn:{p}:iam::{}:role/{}-WorkerRole-*", i.account, i.stack),
        ]
    } else {
        i.roles.to_vec()
    };
    principals.extend(i.operator.map(str::to_string));
    let mut condition = json!({ "ArnLike": { "aws:PrincipalArn": principals } });
    if let Some(x) = &i.place.external_id {
        condition["StringEquals"] = json!({ "sts:ExternalId": x });
    }
    Some(json!({
        "target_role": role,
        "target_role_trust_policy": {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:{p}:iam::{}:root", i.account) },
                "Action": "sts:AssumeRole",
                "Condition": condition
            }]
        },
        "target_role_permissions_policy": {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Action": TARGET_ACTIONS,
                "Resource": table
            }]
        },
        "operator_policy_addition": {
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Resource": role
            }]
        },
        "stack_roles": "the template grants sts:AssumeRole on TargetRoleArn to the applier and worker roles; nothing to add"
    }))
}

/// (partition, region, account) of an ARN such as a table's.
pub fn arn_parts(arn: &str) -> Option<(&str, &str, &str)> {
    let mut it = arn.split(':');
    let (_, partition, _, region, account) =
        (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    Some((partition, region, account))
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`...
pub fn check_region(r: &str) -> Result<(), String> {
    let parts: Vec<&str> = r.split('-').collect();
    let ok = parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be an AWS region such as us-west-2, got {r:?}"
        ))
    }
}

/// The 12-digit account of an IAM role ARN
/// (`arn:PARTITION:iam::ACCOUNT:role/NAME`).
pub fn role_account(arn: &str) -> Result<&str, String> {
    let bad = || {
        format!("must be an IAM role ARN such as arn:aws:iam::123456789012:role/ddb-relay-target, got {arn:?}")
    };
    let mut it = arn.splitn(6, ':');
    let (arn_, partition, service, region, account, resource) = (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    );
    match (arn_, partition, service, region, account, resource) {
        (Some("arn"), Some(p), Some("iam"), Some(""), Some(a), Some(res))
            if p.starts_with("aws")
                && a.len() == 12
                && a.chars().all(|c| c.is_ascii_digit())
                && res.len() > "role/".len()
                && res.starts_with("role/") =>
        {
            Ok(a)
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn a_target_elsewhere_is_read_checked_and_named_apart() {
        let here = TargetPlace::from_env(&env(&[("TARGET_REGION", " ")])).unwrap();
        assert_eq!(here, TargetPlace::default());
        assert!(!here.is_elsewhere("us-east-1"));
        let p = TargetPlace::from_env(&env(&[
            ("TARGET_REGION", "us-west-2"),
            (
                "TARGET_ROLE_ARN",
                "arn:aws:iam::222222222222:role/ddb-relay-target",
            ),
            ("TARGET_EXTERNAL_ID", "shop-2026"),
        ]))
        .unwrap();
        assert!(p.is_elsewhere("us-east-1") && p.other_region("us-east-1"));
        assert_eq!(p.account(), Some("222222222222"));
        assert_eq!(
            p.handle("orders", "us-east-1"),
            "orders@us-west-2/222222222222"
        );
        let same_region = TargetPlace {
            region: Some("us-east-1".into()),
            ..TargetPlace::default()
        };
        assert!(!same_region.is_elsewhere("us-east-1"));
        assert_eq!(
            same_region.handle("orders", "us-east-1"),
            "orders@us-east-1"
        );
        for (k, v) in [
            ("TARGET_REGION", "us_west_2"),
            ("TARGET_REGION", "west"),
            ("TARGET_ROLE_ARN", "arn:aws:iam::2222:role/x"),
            ("TARGET_ROLE_ARN", "arn:aws:iam::222222222222:user/x"),
            ("TARGET_EXTERNAL_ID", "only-with-a-role"),
        ] {
            let e = TargetPlace::from_env(&env(&[(k, v)])).unwrap_err();
            assert_eq!(e.var, k, "{v}");
        }
        check_region("us-gov-west-1").unwrap();
        check_region("cn-north-1").unwrap();
    }

    #[test]
    fn seeds_that_cannot_cross_are_refused_with_the_ones_that_can() {
        let region = TargetPlace {
            region: Some("us-west-2".into()),
            ..TargetPlace::default()
        };
        let account = TargetPlace {
            role_arn: Some("arn:aws:iam::222222222222:role/t".into()),
            ..TargetPlace::default()
        };
        let r = |p: &TargetPlace, m| p.seed_reach(m, "us-east-1");
        assert_eq!(r(&region, "backup"), SeedReach::Crosses);
        assert!(matches!(r(&account, "backup"), SeedReach::Refused(w) if w.contains("scan")));
        assert_eq!(r(&region, "pitr"), SeedReach::Crosses);
        assert_eq!(r(&region, "scan"), SeedReach::Crosses);
        assert_eq!(r(&region, "export"), SeedReach::Crosses);
        assert!(matches!(r(&account, "pitr"), SeedReach::Refused(_)));
        assert!(matches!(r(&account, "backup"), SeedReach::Refused(_)));
        assert_eq!(r(&account, "scan"), SeedReach::Crosses);
        assert_eq!(r(&TargetPlace::default(), "backup"), SeedReach::Crosses);
    }

    #[test]
    fn policies_grant_the_target_table_to_the_stack_roles_only() {
        let place = TargetPlace {
            region: Some("us-west-2".into()),
            role_arn: Some("arn:aws:iam::222222222222:role/ddb-relay-target".into()),
            external_id: Some("shop-users".into()),
        };
        let i = PolicyInputs {
            partition: "aws",
            account: "111111111111",
            region: "us-east-1",
            stack: "shop-users",
            target_table: "users",
            place: &place,
            operator: Some("arn:aws:iam::111111111111:role/oncall"),
            roles: &[],
        };
        let v = iam_policies(&i).unwrap();
        let trust = &v["target_role_trust_policy"]["Statement"][0];
        assert_eq!(trust["Principal"]["AWS"], "arn:aws:iam::111111111111:root");
        assert_eq!(
            trust["Condition"]["StringEquals"]["sts:ExternalId"],
            "shop-users"
        );
        let who = trust["Condition"]["ArnLike"]["aws:PrincipalArn"]
            .as_array()
            .unwrap();
        assert_eq!(who.len(), 3);
        assert_eq!(
            who[0],
            "arn:aws:iam::111111111111:role/shop-users-ApplierRole-*"
        );
        let perm = &v["target_role_permissions_policy"]["Statement"][0];
        assert_eq!(
            perm["Resource"],
            "arn:aws:dynamodb:us-west-2:222222222222:table/users"
        );
        assert!(!perm["Action"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "dynamodb:DeleteTable" || a == "dynamodb:*"));
        let deployed = ["arn:aws:iam::111111111111:role/shop-users-ApplierRole-AB12".to_string()];
        let v = iam_policies(&PolicyInputs {
            roles: &deployed,
            ..i.clone()
        })
        .unwrap();
        let who = &v["target_role_trust_policy"]["Statement"][0]["Condition"]["ArnLike"]
            ["aws:PrincipalArn"];
        assert_eq!(who[0], deployed[0].as_str());
        let no_role = TargetPlace {
            role_arn: None,
            external_id: None,
            ..place.clone()
        };
        assert!(iam_policies(&PolicyInputs {
            place: &no_role,
            ..i
        })
        .is_none());
    }
}
