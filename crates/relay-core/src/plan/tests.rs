use super::*;

const GOOD: &str = r#"
version: 1
name: shop
region: us-east-1
parallel: 2
parameters: {LagAlarmSeconds: "120"}
pairs:
  - name: orders
    source: orders
    target: orders-v2
    seed: scan
    transform: orders.yaml
  - name: carts
    source: carts
    target: carts
    seed: pitr
    target_region: us-west-2
  - name: users
    source: users
    target: users
    seed: scan
    stack: users-move
    target_role_arn: arn:aws:iam::222222222222:role/ddb-relay-target
    target_external_id: shop-users
"#;

fn err(text: &str) -> String {
    Plan::parse("p.yaml", text, None).unwrap_err().to_string()
}

#[test]
fn a_plan_parses_with_defaults_and_names_its_stacks() {
    let p = Plan::parse("p.yaml", GOOD, None).unwrap();
    assert_eq!(p.pairs.len(), 3);
    assert_eq!(p.pairs[0].stack_name(&p.name), "shop-orders");
    assert_eq!(p.pairs[2].stack_name(&p.name), "users-move");
    assert_eq!(p.pairs[2].place().account(), Some("222222222222"));
    let json = r#"{"version":1,"name":"x","pairs":[{"name":"a","source":"aaa","target":"bbb","seed":"backup"}]}"#;
    let p = Plan::parse("p.json", json, Some("eu-west-1")).unwrap();
    assert_eq!((p.parallel, p.region()), (4, "eu-west-1"));
}

#[test]
fn the_sets_dashboard_shows_every_pair() {
    let p = Plan::parse("p.yaml", GOOD, None).unwrap();
    let body: serde_json::Value = serde_json::from_str(&p.dashboard_body()).unwrap();
    let w = body["widgets"].as_array().unwrap();
    assert_eq!(w.len(), 1 + 2 * 3);
    let lag = w[0]["properties"]["metrics"].as_array().unwrap();
    assert_eq!(lag.len(), 3);
    assert_eq!(lag[2][3], "users-move");
    let t: serde_json::Value = serde_json::from_str(&p.dashboard_template()).unwrap();
    assert_eq!(
        t["Resources"]["Dashboard"]["Properties"]["DashboardName"],
        "ddb-relay-plan-shop"
    );
}

#[test]
fn plan_errors_name_the_line_or_the_field() {
    let e = err(&GOOD.replace("    seed: pitr", "    sede: pitr"));
    assert!(
        e.contains("unknown field `sede`") && e.contains("line 16"),
        "{e}"
    );
    let e = err(&GOOD.replace("seed: pitr", "seed: copy"));
    assert!(e.contains("pairs[1].seed") && e.contains("\"copy\""), "{e}");
    let e = err(&GOOD.replace("    seed: scan\n    stack", "    seed: backup\n    stack"));
    assert!(
        e.contains("pairs[2].seed: backup cannot seed a target in another account")
            && e.contains("scan"),
        "{e}"
    );
    let e = err(&GOOD.replace("    seed: scan\n    stack", "    seed: pitr\n    stack"));
    assert!(
        e.contains("pairs[2].seed: pitr cannot seed a target in another account"),
        "{e}"
    );
    let e = err(&GOOD.replace("::222222222222:", "::2222:"));
    assert!(
        e.contains("pairs[2].target_role_arn: must be an IAM role ARN"),
        "{e}"
    );
    let e = err(&GOOD.replace("target_region: us-west-2", "target_region: mars"));
    assert!(e.contains("pairs[1].target_region"), "{e}");
    let e = err(&GOOD.replace("name: carts", "name: orders"));
    assert!(
        e.contains("pairs[1].name: pair \"orders\" is listed twice"),
        "{e}"
    );
    let e = err(&GOOD.replace("target: orders-v2", "target: orders"));
    assert!(
        e.contains("pairs[0].target: the target is the source"),
        "{e}"
    );
    let e = err(&GOOD.replace("stack: users-move", "stack: shop-orders"));
    assert!(e.contains("pairs[2].stack"), "{e}");
    let e = err(&GOOD.replace("source: carts", "source: orders"));
    assert!(e.contains("pairs[1].source"), "{e}");
    let e = err(&GOOD.replace("target: orders-v2", "target: carts"));
    assert!(
        e.contains("pairs[0].target: carts is the source of a pair"),
        "{e}"
    );
    let e = err(&GOOD.replace("LagAlarmSeconds", "TargetTableName"));
    assert!(e.contains("parameters.TargetTableName"), "{e}");
    let e = err(&GOOD.replace("version: 1", "version: 2"));
    assert!(e.contains("version"), "{e}");
    let e = err(&GOOD.replace("region: us-east-1\n", ""));
    assert!(e.contains("region: not set"), "{e}");
    let e = err(&GOOD.replace("parallel: 2", "parallel: 99"));
    assert!(e.contains("parallel"), "{e}");
    let e = err(&GOOD.replace("seed: pitr", "seed: export"));
    assert!(e.contains("pairs[1].s3_bucket"), "{e}");
    let from = GOOD.replace(
        "seed: pitr",
        "seed: export\n    seed_args: [--from-export, 's3://b/p/AWSDynamoDB/1']",
    );
    let p = Plan::parse("p.yaml", &from, None).unwrap();
    assert_eq!(p.pairs[1].workers_bucket(), None, "no --fan-out");
    let e = err(&from.replace("seed: export", "seed: export\n    s3_bucket: other"));
    assert!(
        e.contains("pairs[1].s3_bucket: a pair seeded --from-export takes no s3_bucket"),
        "{e}"
    );
    let fanned = from.replace("1']", "1', --fan-out]");
    let p = Plan::parse("p.yaml", &fanned, None).unwrap();
    assert_eq!(p.pairs[1].workers_bucket().as_deref(), Some("b"));
    let loads = GOOD.replace(
        "seed: pitr",
        "seed: export\n    s3_bucket: exports\n    seed_args: [--load, --fan-out]",
    );
    let p = Plan::parse("p.yaml", &loads, None).unwrap();
    assert_eq!(p.pairs[1].workers_bucket().as_deref(), Some("exports"));
    // An import by IaC (no --load) needs no workers' bucket.
    let imports = loads.replace("[--load, --fan-out]", "[--fan-out]");
    let p = Plan::parse("p.yaml", &imports, None).unwrap();
    assert_eq!(p.pairs[1].workers_bucket(), None);
    let e = err("version: 1\nname: x\nregion: us-east-1\npairs: []\n");
    assert!(e.contains("pairs: the plan lists no table pairs"), "{e}");
    let e = err("version: [1\n");
    assert!(e.starts_with("plan p.yaml: ") && e.contains("line"), "{e}");
}

/// helper-46 #5: a pair's process refuses a stack deployed for another
/// pair than the plan names now.
#[test]
fn a_stack_deployed_for_another_pair_than_the_plans_is_named() {
    let e = Expected {
        pair: "orders".into(),
        stack: "shop-orders".into(),
        source: "Orders".into(),
        target: "Orders2".into(),
        target_region: None,
        target_role_arn: None,
        transform: None,
        transform_unreadable: None,
    };
    let here = TargetPlace::default();
    let check = |e: &Expected, pair: (&str, &str), place: &TargetPlace, t: Option<&str>| {
        e.check(pair, place, "eu-west-1", t)
    };
    assert_eq!(check(&e, ("Orders", "Orders2"), &here, None), Ok(()));
    // The plan's region spelled out is the stack's region.
    let spelled = Expected {
        target_region: Some("eu-west-1".into()),
        ..e.clone()
    };
    assert_eq!(check(&spelled, ("Orders", "Orders2"), &here, None), Ok(()));
    let err = check(&e, ("Orders", "OrdersOld"), &here, None).unwrap_err();
    assert!(
        err.contains("target OrdersOld (the plan: Orders2)") && err.contains("deploy"),
        "{err}"
    );
    let err = check(&e, ("Carts", "Orders2"), &here, None).unwrap_err();
    assert!(err.contains("source Carts"), "{err}");
    let elsewhere = TargetPlace {
        region: Some("us-east-1".into()),
        role_arn: Some("arn:aws:iam::1:role/r".into()),
        external_id: None,
    };
    let err = check(&e, ("Orders", "Orders2"), &elsewhere, None).unwrap_err();
    assert!(
        err.contains("target region us-east-1") && err.contains("target role"),
        "{err}"
    );
    // A transform the plan no longer names (helper-50 #4), or another one;
    // the same spec in another spelling is the same.
    let deployed = r#"{"rename":{"a":"b"}}"#;
    let err = check(&e, ("Orders", "Orders2"), &here, Some(deployed)).unwrap_err();
    assert!(err.contains("the plan: none"), "{err}");
    let same = Expected {
        transform: Some("rename: {a: b}\n".into()),
        ..e.clone()
    };
    assert_eq!(
        check(&same, ("Orders", "Orders2"), &here, Some(deployed)),
        Ok(())
    );
    let other = Expected {
        transform: Some("rename: {a: c}\n".into()),
        ..e.clone()
    };
    assert!(check(&other, ("Orders", "Orders2"), &here, Some(deployed)).is_err());
    // A transform file the plan names but nobody can read is not compared
    // (not "the plan: none"); the commands that load it fail on it.
    let unreadable = Expected {
        transform_unreadable: Some("No such file".into()),
        ..e.clone()
    };
    assert_eq!(
        check(&unreadable, ("Orders", "Orders2"), &here, Some(deployed)),
        Ok(())
    );
    // A stack that does not report its parameters: not compared.
    assert_eq!(check(&same, ("Orders", "Orders2"), &here, None), Ok(()));
    // The expectation travels to the pair's process as JSON.
    let json = serde_json::to_string(&same).unwrap();
    assert_eq!(serde_json::from_str::<Expected>(&json).unwrap(), same);
}
