//! Any table size (issue 10): verify compares whole tables in bounded
//! memory, through a key-changing transform, on the simulation harness.
#![allow(clippy::unwrap_used)]

mod sim;

use ddb_relay::args::SpillArgs;
use ddb_relay::commands::{load, verify};
use ddb_relay::spill::EXPANSION;
use relay_core::item::{AttributeValue as V, Attrs};
use relay_core::transform::Transform;
use sim::{copy, fabricate, fabricate_export, seed_by_scan, Config, Shape, Sim};

fn item(i: u32) -> Attrs {
    [
        ("pk".to_string(), V::S(format!("item-{i}"))),
        ("v".to_string(), V::N("1".into())),
        ("email".to_string(), V::S(format!("{i}@example.com"))),
        ("pad".to_string(), V::S("p".repeat(200))),
    ]
    .into()
}

/// 3,000 items (~3 MB spilled) against 1 MiB of memory: the comparison
/// partitions both sides, never holds more than the budget, and still finds
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
        assert!(v.spill.partitions > 1, "{:?}", v.spill);
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

fn load_args(uri: &str) -> load::LoadArgs {
    load::LoadArgs {
        from_export: Some(uri.to_string()),
        bucket: None,
        prefix: String::new(),
        at: None,
    }
}

/// The export path of a key-schema change: an export taken while writes go
/// on, loaded through a uuidv5(email) key; the changes after the export
/// (updates that move items, deletes, new items) come through the queue.
/// The target ends equal to the source, with no tombstone left.
#[test]
fn an_export_loaded_through_a_key_transform_under_live_writes_converges() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::KeyByEmail, 52)).await;
        for i in 0..300 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        let at = sim.now_ms();
        let snapshot: Vec<Attrs> = sim.db.items("source").into_values().collect();
        let uri = fabricate_export(&sim, "0001-abcd", &snapshot, at, 4);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // After the export: moves (new email), deletes, new items.
        for i in 0..20 {
            let mut moved = item(i);
            moved.insert("email".into(), V::S(format!("moved-{i}@example.com")));
            sim.db.put("source", moved);
        }
        for i in 20..30 {
            sim.db.delete(
                "source",
                &[("pk".to_string(), V::S(format!("item-{i}")))].into(),
                false,
            );
        }
        for i in 300..310 {
            sim.db.put("source", item(i));
        }
        sim.create_target();
        let r = load::seed_export_load(&sim.ctx, &load_args(&uri), copy(), false)
            .await
            .unwrap();
        assert_eq!(r.method, "export");
        assert_eq!(r.cutoff_ms, at - sim.ctx.stack.margin_ms);
        assert_eq!(r.copied + r.skipped_existing, 300, "{r:?}");
        sim.assert_converged().await;
        let control = sim.ctx.control().await.unwrap();
        assert_eq!(control.seed_method.as_deref(), Some("export"));
        assert_eq!(control.mode, relay_core::control::Mode::Normal);
        sim.stop_pollers();
    });
}

/// A damaged export (a data file with fewer items than its manifest says)
/// stops the load with an error naming the file and leaves that file
/// unchecked; exports that are stale, in the future or of another table
/// are refused before anything is written.
#[test]
fn a_damaged_or_stale_export_is_refused_with_a_clear_error() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Identity, 53)).await;
        for i in 0..10 {
            sim.db.put("source", item(i));
        }
        sim.create_target();
        let items: Vec<Attrs> = sim.db.items("source").into_values().collect();
        let before = sim.ctx.control().await.unwrap();
        let now = sim.now_ms();
        for (id, at, arn, why) in [
            ("old", now - 25 * 3600 * 1000, None, "24 hours"),
            ("future", now + 3_600_000, None, "in the future"),
            (
                "other",
                now,
                Some("arn:aws:dynamodb:us-east-1:123456789012:table/other"),
                "not of the source table",
            ),
        ] {
            let uri = fabricate(&sim, id, &items, at, 1, 0, arn);
            let err = load::seed_export_load(&sim.ctx, &load_args(&uri), copy(), false)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{id}: {err}");
            assert_eq!(
                sim.ctx.control().await.unwrap(),
                before,
                "{id}: nothing changed"
            );
        }

        let uri = fabricate(&sim, "short", &items, now, 1, 1, None);
        let err = load::seed_export_load(&sim.ctx, &load_args(&uri), copy(), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("file-0.json.gz holds 10 items, but the manifest says 11"),
            "{err}"
        );
        let checkpoint = sim
            .db
            .items("control")
            .into_values()
            .find(|c| c.contains_key("export"))
            .unwrap();
        assert!(!checkpoint.contains_key("file_0"), "{checkpoint:?}");
    });
}

/// A load that stopped (a data file could not be read) continues from its
/// checkpoints with the same cutoff: only the files not done are loaded.
#[test]
fn a_stopped_export_load_continues_with_the_files_not_done() {
    sim::run(async {
        let sim = Sim::new(Config::quiet(Shape::Rename, 54)).await;
        for i in 0..90 {
            sim.db.put("source", item(i));
        }
        sim.start_pollers();
        let at = sim.now_ms();
        let items: Vec<Attrs> = sim.db.items("source").into_values().collect();
        let uri = fabricate_export(&sim, "resume", &items, at, 3);
        let key = "AWSDynamoDB/resume/data/file-2.json.gz";
        let third = {
            // Take the third file away for the first run.
            let path =
                std::env::temp_dir().join(format!("ddb-relay-resume-{}", std::process::id()));
            relay_aws::operator::Objects::download(&sim.aws, "exports", key, &path)
                .await
                .unwrap();
            let bytes = std::fs::read(&path).unwrap();
            std::fs::remove_file(&path).ok();
            bytes
        };
        sim.aws.remove_object("exports", key);
        sim.create_target();
        let one_at_a_time = ddb_relay::args::CopyArgs {
            segments: 1,
            ..copy()
        };
        let err = load::seed_export_load(&sim.ctx, &load_args(&uri), one_at_a_time, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("file-2.json.gz"), "{err}");
        let first = sim.ctx.control().await.unwrap();
        assert_eq!(first.mode, relay_core::control::Mode::Tombstone);
        let status = ddb_relay::commands::status::status(&sim.ctx, 60)
            .await
            .unwrap();
        let p = status
            .copy_progress
            .expect("progress while the copy is stopped");
        assert_eq!((p.parts.as_str(), p.done, p.total), ("files", 2, 3));
        assert_eq!((p.items, p.expected), (60, Some(90)), "{p:?}");
        sim.aws.put_object("exports", key, third);
        let r = load::seed_export_load(&sim.ctx, &load_args(&uri), one_at_a_time, false)
            .await
            .unwrap();
        assert!(r.resumed, "{r:?}");
        assert_eq!(r.cutoff_ms, first.cutoff_ms.unwrap());
        assert_eq!(
            r.copied + r.skipped_existing,
            30,
            "only the third file: {r:?}"
        );
        sim.assert_converged().await;
        let status = ddb_relay::commands::status::status(&sim.ctx, 60)
            .await
            .unwrap();
        assert_eq!(status.copy_progress, None, "checkpoints forgotten");
        sim.stop_pollers();
    });
}
