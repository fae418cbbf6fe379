use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

const PLAN: &str = "version: 1\nname: shop\nregion: us-east-1\nparallel: 2\npairs:\n  - {name: orders, source: orders, target: orders-v2, seed: scan, seed_args: [--segments, '8'], transform: t.yaml}\n  - {name: carts, source: carts, target: carts, seed: export, s3_bucket: b, target_region: us-west-2, seed_args: [--load]}\n";

#[test]
fn a_plan_run_forwards_the_command_with_each_pairs_stack_and_seed() {
    let a = plan_args(
        &s(&[
            "ddb-relay",
            "--plan=p/plan.yaml",
            "--region",
            "eu-west-1",
            "-v",
            "seed",
            "--dry-run",
        ]),
        None,
    )
    .unwrap()
    .unwrap();
    assert_eq!(a.file, PathBuf::from("p/plan.yaml"));
    assert_eq!(a.region.as_deref(), Some("eu-west-1"));
    assert_eq!(a.rest, s(&["-v", "seed", "--dry-run"]));
    let plan = Plan::parse("p", PLAN, None).unwrap();
    let args = pair_args(&plan, &a.file, &plan.pairs[0], &a.rest);
    assert_eq!(
        args,
        s(&[
            "--stack",
            "shop-orders",
            "--region",
            "us-east-1",
            "--transform",
            "p/t.yaml",
            "-v",
            "seed",
            "--dry-run",
            "--method",
            "scan",
            "--segments",
            "8"
        ])
    );
    let args = pair_args(
        &plan,
        &a.file,
        &plan.pairs[1],
        &s(&["--output", "json", "preflight"]),
    );
    assert_eq!(
        args,
        s(&[
            "--stack",
            "shop-carts",
            "--region",
            "us-east-1",
            "--output",
            "json",
            "preflight",
            "--method",
            "export",
            "--load"
        ])
    );
    // Every pair's arguments parse as a command line.
    for p in &plan.pairs {
        for rest in [
            s(&["seed"]),
            s(&["--output", "json", "cutover", "--max-lag", "9"]),
            s(&["status"]),
            s(&["restart"]),
            s(&["restart", "--dry-run"]),
        ] {
            let argv =
                std::iter::once("ddb-relay".to_string()).chain(pair_args(&plan, &a.file, p, &rest));
            let cli = <crate::args::Cli as clap::Parser>::try_parse_from(argv).unwrap();
            cli.validate().unwrap();
        }
    }
    // restart re-seeds the way the pair was seeded; a report per pair.
    let args = pair_args(&plan, &a.file, &plan.pairs[0], &s(&["restart"]));
    assert!(
        args.ends_with(&s(&["restart", "--method", "scan", "--segments", "8"])),
        "{args:?}"
    );
    let args = pair_args(
        &plan,
        &a.file,
        &plan.pairs[1],
        &s(&["finish", "--report", "out/r.json"]),
    );
    assert!(
        args.ends_with(&s(&["finish", "--report", "out/r-carts.json"])),
        "{args:?}"
    );
    let args = pair_args(
        &plan,
        &a.file,
        &plan.pairs[1],
        &s(&["finish", "--report=r.json"]),
    );
    assert!(
        args.ends_with(&s(&["finish", "--report=r-carts.json"])),
        "{args:?}"
    );
    // `adopt --write DIR`: one directory per pair.
    let args = pair_args(
        &plan,
        &a.file,
        &plan.pairs[1],
        &s(&["adopt", "--write", "out"]),
    );
    assert!(
        args.ends_with(&s(&["adopt", "--write", "out/carts"])),
        "{args:?}"
    );
    let args = pair_args(
        &plan,
        &a.file,
        &plan.pairs[1],
        &s(&["adopt", "--write=out"]),
    );
    assert!(
        args.ends_with(&s(&["adopt", "--write=out/carts"])),
        "{args:?}"
    );
    // After `--`, arguments are the command's (deploy's sam arguments).
    let d = plan_args(
        &s(&[
            "ddb-relay",
            "--plan",
            "p",
            "deploy",
            "--",
            "--region",
            "x",
            "--output",
            "json",
        ]),
        None,
    )
    .unwrap()
    .unwrap();
    assert_eq!((d.region, d.json), (None, false));
    assert_eq!(
        d.rest,
        s(&["deploy", "--", "--region", "x", "--output", "json"])
    );
    assert!(plan_args(
        &s(&["ddb-relay", "--plan", "x", "--stack", "s", "status"]),
        None
    )
    .is_err());
    assert!(plan_args(&s(&["ddb-relay", "status"]), None)
        .unwrap()
        .is_none());
    assert_eq!(
        command_of(&s(&["--profile", "seed", "-v", "verify"])),
        Some("verify")
    );
}

#[test]
fn a_restart_of_an_exported_pair_keeps_only_the_copys_flags() {
    // An export's own flags (`--at`, `--s3-prefix`, `--from-export`,
    // `--load`) are not `restart --method scan`'s: passing them made the
    // whole set a usage error.
    let plan = Plan::parse(
        "plan.yaml",
        concat!(
            "version: 1\nname: shop\nregion: us-east-1\npairs:\n",
            "  - {name: a, source: aaa, target: aaa2, seed: export, s3_bucket: b, seed_args: ",
            "[--load, --at, now, --s3-prefix, p, --segments, '16', --max-wcu=500, --fan-out]}\n",
            "  - {name: b, source: bbb, target: bbb2, seed: export, ",
            "seed_args: ['--from-export=s3://b/x/AWSDynamoDB/01', --rate, '9']}\n",
            "  - {name: c, source: ccc, target: ccc2, seed: export, ",
            "seed_args: [--from-export, 's3://b/x/AWSDynamoDB/01']}\n",
        ),
        None,
    )
    .unwrap();
    let file = Path::new("plan.yaml");
    let tails = [
        s(&["--segments", "16", "--max-wcu=500", "--fan-out"]),
        s(&["--rate", "9"]),
        s(&[]),
    ];
    let pres = [
        s(&["preflight", "--method", "export", "--load"]),
        s(&[
            "preflight",
            "--method",
            "export",
            "--from-export=s3://b/x/AWSDynamoDB/01",
        ]),
        s(&[
            "preflight",
            "--method",
            "export",
            "--from-export",
            "s3://b/x/AWSDynamoDB/01",
        ]),
    ];
    for ((p, tail), pre) in plan.pairs.iter().zip(tails).zip(pres) {
        let args = pair_args(&plan, file, p, &s(&["restart"]));
        let want = [s(&["restart", "--method", "scan"]), tail].concat();
        assert!(args.ends_with(&want), "{args:?}");
        let argv = std::iter::once("ddb-relay".to_string()).chain(args);
        let cli = <crate::args::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        cli.validate().unwrap();
        // Its preflight checks a load, or the export it will load (not the
        // source's PITR), also under an explicit `--method export`, and
        // never twice.
        let args = pair_args(&plan, file, p, &s(&["preflight"]));
        assert!(args.ends_with(&pre), "{args:?}");
        let explicit = pair_args(&plan, file, p, &s(&["preflight", "--method", "export"]));
        assert!(explicit.ends_with(&pre[3..]), "{explicit:?}");
        for given in [
            ["--load"].as_slice(),
            &["--from-export", "s3://c/y/AWSDynamoDB/02"],
        ] {
            let rest = [s(&["preflight", "--method", "export"]), s(given)].concat();
            let args = pair_args(&plan, file, p, &rest);
            assert!(args.ends_with(&rest), "{args:?}");
        }
        let argv = std::iter::once("ddb-relay".to_string()).chain(args);
        let cli = <crate::args::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        cli.validate().unwrap();
        // Its seed parses too: a pair with an export takes no bucket.
        let argv = std::iter::once("ddb-relay".to_string()).chain(pair_args(
            &plan,
            file,
            p,
            &s(&["seed", "--dry-run"]),
        ));
        let cli = <crate::args::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        cli.validate().unwrap();
    }
}

#[test]
fn the_command_lines_flags_win_and_a_misspelt_seed_flag_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.yaml");
    let text = concat!(
        "version: 1\nname: shop\nregion: us-east-1\npairs:\n",
        "  - {name: a, source: aaa, target: aaa2, seed: scan, ",
        "seed_args: [--segments, '16', '--rate=9', --fan-out]}\n",
    );
    std::fs::write(&file, text).unwrap();
    let plan = load(&file, None).unwrap();
    let parses = |rest: &[&str]| {
        let args = pair_args(&plan, &file, &plan.pairs[0], &s(rest));
        let argv = std::iter::once("ddb-relay".to_string()).chain(args.clone());
        let cli = <crate::args::Cli as clap::Parser>::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        cli.validate().unwrap();
        args
    };
    // A flag given on the command line replaces the pair's (not a
    // duplicate, which clap refuses).
    let args = parses(&["restart", "--rate", "5"]);
    assert!(
        args.ends_with(&s(&[
            "--rate",
            "5",
            "--method",
            "scan",
            "--segments",
            "16",
            "--fan-out"
        ])),
        "{args:?}"
    );
    let args = parses(&["seed", "--segments=4"]);
    assert!(
        args.ends_with(&s(&[
            "--segments=4",
            "--method",
            "scan",
            "--rate=9",
            "--fan-out"
        ])),
        "{args:?}"
    );
    // An explicit `--method scan` keeps the pair's limits; backup takes none.
    let args = parses(&["restart", "--method", "scan"]);
    assert!(
        args.ends_with(&s(&["--segments", "16", "--rate=9", "--fan-out"])),
        "{args:?}"
    );
    let args = parses(&["restart", "--method=backup"]);
    assert!(
        args.ends_with(&s(&["restart", "--method=backup"])),
        "{args:?}"
    );
    // An explicit `--method` that is the pair's keeps its flags.
    let args = parses(&["seed", "--method", "scan"]);
    assert!(
        args.ends_with(&s(&["--segments", "16", "--rate=9", "--fan-out"])),
        "{args:?}"
    );
    // A flag `seed` does not know is refused when the plan is loaded (a
    // re-seed would otherwise drop it without a word), and so is a global
    // one (it would override the pair's stack or region after the command).
    for bad in [
        "--max_wcu, '5'",
        "--segments",
        "--at, now",
        "--stack, other",
        "'--region=eu-west-1'",
        "--plan, x.yaml",
    ] {
        std::fs::write(&file, text.replace("--fan-out", bad)).unwrap();
        let e = format!("{:#}", load(&file, None).unwrap_err());
        assert!(e.contains("pairs[0].seed_args: "), "{bad}: {e}");
    }
}

#[test]
fn the_set_is_go_only_when_every_pair_is() {
    assert_eq!(aggregate(&[0, 0, 0]), 0);
    assert_eq!(aggregate(&[0, 3, 0]), 3);
    assert_eq!(aggregate(&[0, 3, 1]), 1);
    assert_eq!(aggregate(&[2, 0]), 1);
}

#[test]
fn a_failing_or_slow_pair_does_not_hold_the_others() {
    let sh = |script: &str| {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    };
    // The slow pair ends only once the last pair has run (at most 10 s):
    // the others must run beside it, in the other slot (audit helper-69 #4).
    let dir = std::env::temp_dir().join(format!("ddb-relay-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("ok-ran");
    let _ = std::fs::remove_file(&marker);
    let m = marker.display();
    let jobs = vec![
        Job {
            pair: "slow".into(),
            stack: "s1".into(),
            command: sh(&format!("i=0; while [ ! -f '{m}' ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; [ -f '{m}' ] && echo '{{\"ok\":1}}'")),
        },
        Job {
            pair: "bad".into(),
            stack: "s2".into(),
            command: sh("echo 'error: throttled' >&2; exit 1"),
        },
        Job {
            pair: "nogo".into(),
            stack: "s3".into(),
            command: sh("echo '{\"go\":false}'; exit 3"),
        },
        Job {
            pair: "ok".into(),
            stack: "s4".into(),
            command: sh(&format!("touch '{m}'; echo '{{\"go\":true}}'")),
        },
    ];
    let r = run_jobs(jobs, 2, true);
    let _ = std::fs::remove_dir_all(&dir);
    let names: Vec<_> = r.iter().map(|p| (p.pair.as_str(), p.exit)).collect();
    assert_eq!(names, [("slow", 0), ("bad", 1), ("nogo", 3), ("ok", 0)]);
    assert_eq!(r[0].result.as_ref().unwrap()["ok"], 1);
    assert_eq!(r[1].error.as_deref(), Some("error: throttled"));
    assert_eq!(r[2].result.as_ref().unwrap()["go"], false);
    assert_eq!(aggregate(&r.iter().map(|p| p.exit).collect::<Vec<_>>()), 1);
}

/// helper-46 #5: each pair's process gets the pair as the plan names it and
/// refuses a stack deployed for another (a plan edited without a redeploy).
#[test]
fn a_pairs_process_refuses_a_stack_deployed_for_another_pair() {
    let plan = Plan::parse("p", PLAN, None).unwrap();
    // A deployed stack: name, source, target, target region, TransformSpec.
    let env = |d: [&str; 5]| {
        let vars = [
            ("STACK_NAME", d[0]),
            ("CONTROL_TABLE", "c"),
            ("SOURCE_TABLE", d[1]),
            ("TARGET_TABLE", d[2]),
            ("MIGRATION_ID", "m"),
            ("WORK_QUEUE_URL", "q"),
            ("TARGET_REGION", d[3]),
            ("TRANSFORM", d[4]),
        ];
        crate::worker::deployment_from_env(&|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
                .filter(|v| !v.is_empty())
        })
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.yaml");
    std::fs::write(dir.path().join("t.yaml"), "rename: {a: b}\n").unwrap();
    let check = |d: [&str; 5], pair: &relay_core::plan::Pair| {
        let expected = crate::ctx::expected_json(&plan, &file, pair);
        crate::ctx::check_plan_pair(&env(d), "us-east-1", Some(expected))
    };
    let (orders, carts) = (&plan.pairs[0], &plan.pairs[1]);
    let deployed = r#"{"rename":{"a":"b"}}"#;
    assert!(check(["shop-orders", "orders", "orders-v2", "", deployed], orders).is_ok());
    assert!(check(["shop-carts", "carts", "carts", "us-west-2", ""], carts).is_ok());
    let err = check(["shop-orders", "orders", "orders-old", "", ""], orders)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("orders-old") && err.contains("deploy"),
        "{err}"
    );
    let err = check(["shop-carts", "carts", "carts", "", ""], carts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("target region us-east-1"), "{err}");
    // A transform the plan no longer names (helper-50 #4).
    let err = check(
        [
            "shop-carts",
            "carts",
            "carts",
            "us-west-2",
            r#"{"rename":{"a":"b"}}"#,
        ],
        carts,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("the plan: none"), "{err}");
    // A transform file the plan names that cannot be read: not compared
    // (an emergency `pause` still runs; commands that load it fail on it).
    std::fs::remove_file(dir.path().join("t.yaml")).unwrap();
    assert!(check(["shop-orders", "orders", "orders-v2", "", deployed], orders).is_ok());
    // The variable left exported, on another stack: not this pair's.
    assert!(check(["other", "x", "y", "", ""], orders).is_ok());
    // Outside a plan run, nothing is checked.
    let plain = env(["shop-orders", "x", "y", "", ""]);
    assert!(crate::ctx::check_plan_pair(&plain, "us-east-1", None).is_ok());
}
