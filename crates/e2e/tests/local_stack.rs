//! End-to-end tests on the local emulator with the real template, the real
//! `bootstrap` binaries and the emulator's event source mappings.
//!
//! They need a running emulator and a `sam build`: `make e2e` (part of
//! `make test`) starts MiniStack, builds and runs them. Each test creates its
//! own tables and stack, with unique names, and bounds every wait.

use std::time::{Duration, Instant};

use anyhow::Result;
use relay_core::group::bucket;
use relay_core::item::{Attrs, CanonicalKey};
use relay_e2e::{preload, run_id, Local, Writer, PK, SK};

/// The main scenario: live writes before, during and after a backup-restore
/// seed; the target must equal the source item for item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn a_live_migration_seeded_by_backup_restore_converges() -> Result<()> {
    let local = Local::connect().await?;
    let stack = local.new_migration("e2e-main", &[], false).await?;
    let (source, target) = (stack.source_table.clone(), stack.target_table.clone());
    preload(&local, &source, 60).await?;

    // Writes run before, during and after the seed.
    let writer = Writer::start(&local, &source, 90, 25, 10_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The applier trigger is created disabled: changes wait in the queue.
    // (MiniStack reports State "Enabled" for a mapping CloudFormation
    // created with Enabled: false, but does not poll it; so this checks what
    // matters: nothing is consumed.)
    let (visible, in_flight) = local.queue_depth(&stack.queue_url).await?;
    assert!(visible > 0, "the forwarder queued nothing");
    assert_eq!(in_flight, 0, "the applier consumed before it was enabled");
    let seed_ms = local.seed_by_backup(&source, &target).await?;
    local.set_cutoff(&stack, seed_ms - stack.margin_ms).await?;
    local.set_applier_trigger(&stack, true).await?;
    // Writes go on while the applier drains: at least 10 s, and until the
    // writer has made its 100 writes (an emulator busy with other tests'
    // stacks answers slowly; at most 2 minutes).
    tokio::time::sleep(Duration::from_secs(10)).await;
    for _ in 0..120 {
        if writer.counts.total() > 100 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let counts = writer.stop().await;
    assert!(
        counts.total() > 100,
        "writer did too little: {} ({} errors)",
        counts.summary(),
        counts.errors.load(std::sync::atomic::Ordering::Relaxed)
    );

    let (items, diff) = local
        .wait_converged(&stack, Duration::from_secs(120))
        .await?;
    assert!(items > 0);
    assert!(
        diff.is_clean(),
        "target differs from source: {} missing, {} extra, {} changed of {items}",
        diff.missing.len(),
        diff.extra.len(),
        diff.changed.len()
    );
    assert_eq!(local.queue_depth(&stack.dlq_url).await?, (0, 0));
    Ok(())
}

/// Messages the applier receives before a cutoff exists fail (nothing is
/// written) and stay in the queue; once the cutoff is set they are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn messages_received_before_a_cutoff_exists_are_not_lost() -> Result<()> {
    let local = Local::connect().await?;
    let stack = local
        .new_migration(
            "e2e-nocut",
            &[("ApplierTimeoutSeconds", "3"), ("MaxReceiveCount", "10")],
            false,
        )
        .await?;
    let (source, target) = (stack.source_table.clone(), stack.target_table.clone());
    let seed_ms = local.seed_by_backup(&source, &target).await?;
    // The operator mistake the CLI refuses: the trigger on, no cutoff.
    local.set_applier_trigger(&stack, true).await?;
    preload(&local, &source, 30).await?;

    // The applier must receive the messages and refuse them.
    let start = Instant::now();
    loop {
        let (visible, in_flight) = local.queue_depth(&stack.queue_url).await?;
        if in_flight > 0 && visible + in_flight > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the applier never received the messages"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        local.scan(&target).await?.is_empty(),
        "the applier wrote without a cutoff"
    );
    let (visible, in_flight) = local.queue_depth(&stack.queue_url).await?;
    assert!(
        visible + in_flight > 0,
        "messages were consumed without a cutoff"
    );

    local.set_cutoff(&stack, seed_ms - stack.margin_ms).await?;
    let (items, diff) = local
        .wait_converged(&stack, Duration::from_secs(120))
        .await?;
    assert_eq!(items, 30);
    assert!(diff.is_clean(), "not converged: {diff:?}");
    assert_eq!(local.queue_depth(&stack.dlq_url).await?, (0, 0));
    Ok(())
}

/// A message the applier can never apply (an envelope version from the
/// future) blocks only its own group; after maxReceiveCount it moves to the
/// DLQ and its group flows on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local stack and a sam build: run `make e2e`"]
async fn a_poison_message_reaches_the_dlq_while_other_groups_keep_flowing() -> Result<()> {
    let local = Local::connect().await?;
    let stack = local
        .new_migration(
            "e2e-poison",
            &[
                ("ApplierTimeoutSeconds", "3"),
                ("MaxReceiveCount", "2"),
                ("GroupBuckets", "8"),
            ],
            false,
        )
        .await?;
    let (source, target) = (stack.source_table.clone(), stack.target_table.clone());
    let seed_ms = local.seed_by_backup(&source, &target).await?;
    local.set_cutoff(&stack, seed_ms - stack.margin_ms).await?;

    // The poison goes first into the group of the first item the preload
    // writes (group ids hash the table name, which changes every run), so
    // the sample always has blocked items.
    let first = relay_aws::convert::from_sdk_item(&relay_e2e::sample_item(
        0,
        0,
        &mut fastrand::Rng::with_seed(7),
    ))?;
    let poisoned = bucket(
        &source,
        &CanonicalKey::of(&Attrs::from([
            (PK.to_string(), first[PK].clone()),
            (SK.to_string(), first[SK].clone()),
        ])),
        8,
    );
    local
        .sqs
        .send_message()
        .queue_url(&stack.queue_url)
        .message_group_id(relay_core::group::group_id(poisoned))
        .message_deduplication_id(format!("poison-{}", run_id()))
        .message_body(r#"{"v":99,"src":"from-the-future","ev":[]}"#)
        .send()
        .await?;
    local.set_applier_trigger(&stack, true).await?;
    // The preload starts once the poison has been received (it is in
    // flight): a change of its group queued before that would be received
    // with it the first time, failed with it (the group stops at its first
    // failure) as often as it, and dead-lettered with it after
    // maxReceiveCount. That is the design (DLQ repair brings such a
    // message back); this test is about the poison alone.
    let start = Instant::now();
    while local.queue_depth(&stack.queue_url).await?.1 == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the poison was never received"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    preload(&local, &source, 40).await?;

    let key_bucket = |item: &Attrs| {
        let key = Attrs::from([
            (PK.to_string(), item[PK].clone()),
            (SK.to_string(), item[SK].clone()),
        ]);
        bucket(&source, &CanonicalKey::of(&key), 8)
    };
    let src = local.scan(&source).await?;
    let healthy: Vec<&CanonicalKey> = src
        .iter()
        .filter(|(_, item)| key_bucket(item) != poisoned)
        .map(|(k, _)| k)
        .collect();
    let blocked = src.len() - healthy.len();
    assert!(
        !healthy.is_empty() && blocked > 0,
        "the sample must cover both"
    );

    // Other groups flow while the poison is still being retried.
    let start = Instant::now();
    loop {
        let tgt = local.scan(&target).await?;
        if healthy.iter().all(|k| tgt.contains_key(*k)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "healthy groups did not flow"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dlq_when_healthy_done = local.queue_depth(&stack.dlq_url).await?;
    assert_eq!(
        dlq_when_healthy_done,
        (0, 0),
        "other groups must flow before the poison is dead-lettered"
    );

    // Then the poison reaches the DLQ and its group flows too.
    let (items, diff) = local
        .wait_converged(&stack, Duration::from_secs(120))
        .await?;
    assert_eq!(items, 40);
    assert!(diff.is_clean(), "not converged: {diff:?}");
    let dlq = local
        .sqs
        .receive_message()
        .queue_url(&stack.dlq_url)
        .max_number_of_messages(10)
        .visibility_timeout(1)
        .send()
        .await?;
    let bodies: Vec<&str> = dlq.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, vec![r#"{"v":99,"src":"from-the-future","ev":[]}"#]);
    eprintln!(
        "healthy groups applied {} items while the DLQ held {:?}; {blocked} items waited behind the poison",
        healthy.len(),
        dlq_when_healthy_done
    );
    Ok(())
}
