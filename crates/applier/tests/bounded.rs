//! Any table size (issue 10): verify compares whole tables in bounded
//! memory, through a key-changing transform, on the simulation harness.
#![allow(clippy::unwrap_used)]

mod sim;

use ddb_relay::args::SpillArgs;
use ddb_relay::commands::verify;
use ddb_relay::spill::EXPANSION;
use relay_core::item::{AttributeValue as V, Attrs};
use relay_core::transform::Transform;
use sim::{copy, seed_by_scan, Config, Shape, Sim};

fn item(i: u32) -> Attrs {
    [
        ("pk".to_string(), V::S(format!("item-{i}"))),
        ("v".to_string(), V::N("1".into())),
        ("email".to_string(), V::S(format!("{i}@example.com"))),
        ("pad".to_string(), V::S("p".repeat(200))),
    ]
    .into()
}

/// 3,000 items (~2 MB spilled) against 1 MiB of memory: the comparison
/// splits its partitions, never holds more than the budget, and still finds
/// every missing, changed and extra item behind a uuidv5 key, then repairs.
#[test]
fn verify_in_little_memory_finds_every_difference_behind_a_key_transform() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::KeyByEmail, 51)).await;
        for i in 0..3000 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        seed_by_scan(&sim).await;
        sim.assert_converged().await;
        let t = sim.transform.as_ref().unwrap();
        let target_key = |i: u32| t.key_only(&item(i)).unwrap();
        // Missing: 3; changed: 2; extra: 2 (their source items are gone).
        for i in [7, 1500, 2999] {
            sim.db.delete("target", &target_key(i), false);
        }
        for i in [10, 20] {
            let mut wrong = t.item(&item(i)).unwrap();
            wrong.insert("v".into(), V::N("99".into()));
            sim.db.put("target", wrong);
        }
        for i in [3000, 3001] {
            sim.db.put("target", t.item(&item(i)).unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let little = SpillArgs {
            memory_mb: 1,
            work_dir: Some(dir.path().to_path_buf()),
        };
        let v = verify::verify(&sim.ctx, 100.0, false, 0, copy(), &little)
            .await
            .unwrap();
        assert_eq!((v.missing, v.changed, v.extra), (3, 2, 2), "{v:?}");
        assert_eq!((v.source_items, v.compared), (3000, 3000));
        assert!(
            v.spill.splits >= 1 && v.spill.partitions > 1,
            "{:?}",
            v.spill
        );
        assert!(
            v.spill.max_bytes_held * EXPANSION <= 1 << 20,
            "{:?}",
            v.spill
        );
        assert_eq!(v.spill.records, 6000 - 3 + 2);
        let v = verify::verify(&sim.ctx, 100.0, true, 0, copy(), &little)
            .await
            .unwrap();
        assert!(v.clean && v.repaired == 7, "{v:?}");
        sim.assert_converged().await;
        sim.stop_pollers();
        // Nothing left behind in the work directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    });
}
