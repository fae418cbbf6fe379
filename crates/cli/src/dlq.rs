//! `dlq list` and `dlq repair`. Keys are shown, item values never.
//!
//! **Invariant:** a DLQ message is deleted only after every key it holds was
//! repaired from the source (consistent read, then put or delete).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::Result;
use relay_aws::ops::RawMessage;
use relay_core::envelope;
use relay_core::item::{Attrs, CanonicalKey};
use serde_json::{json, Value};

use crate::commands::emit;
use crate::ctx::{explain, rfc3339, Ctx};

/// What a DLQ message holds, without item values.
struct Inspected {
    msg: RawMessage,
    keys: Vec<Attrs>,
    events: usize,
    reason: String,
}

fn inspect(msg: RawMessage) -> Inspected {
    match envelope::decode(&msg.body) {
        Ok(env) => {
            let mut seen = HashSet::new();
            let keys: Vec<Attrs> = env
                .ev
                .iter()
                .filter(|e| seen.insert(CanonicalKey::of(&e.keys)))
                .map(|e| e.keys.clone())
                .collect();
            Inspected {
                reason: format!(
                    "not applied after {} deliveries (the applier's log names the error)",
                    msg.receive_count
                ),
                events: env.ev.len(),
                keys,
                msg,
            }
        }
        Err(e) => Inspected {
            reason: format!("undecodable: {e}"),
            events: 0,
            keys: Vec::new(),
            msg,
        },
    }
}

fn key_json(key: &Attrs) -> Value {
    serde_json::to_value(key).unwrap_or(Value::Null)
}

/// Receives up to `max` distinct messages, holding each for `hold_s`.
async fn drain(ctx: &Ctx, max: usize, hold_s: i32) -> Result<Vec<RawMessage>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut empty_polls = 0;
    while out.len() < max && empty_polls < 2 {
        let batch = ctx
            .ops
            .receive(&ctx.stack.dlq_url, (max - out.len()).min(10) as i32, hold_s)
            .await
            .map_err(|e| explain(e, "DLQ"))?;
        if batch.is_empty() {
            empty_polls += 1;
            continue;
        }
        for m in batch {
            if seen.insert(m.id.clone()) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

async fn release(ctx: &Ctx, msgs: &[RawMessage]) {
    for m in msgs {
        // Best effort: if this fails, the message returns after its hold.
        let _ = ctx
            .ops
            .release_message(&ctx.stack.dlq_url, &m.receipt)
            .await;
    }
}

pub async fn list(ctx: &Ctx, max: usize) -> Result<i32> {
    let msgs = drain(ctx, max, 30).await?;
    release(ctx, &msgs).await;
    let rows: Vec<Inspected> = msgs.into_iter().map(inspect).collect();
    let value = json!({
        "stack": ctx.stack.name,
        "count": rows.len(),
        "messages": rows.iter().map(|r| json!({
            "id": r.msg.id,
            "group": r.msg.group,
            "sent_ms": r.msg.sent_ms,
            "receive_count": r.msg.receive_count,
            "events": r.events,
            "keys": r.keys.iter().map(key_json).collect::<Vec<_>>(),
            "reason": r.reason,
        })).collect::<Vec<_>>(),
    });
    let mut text = format!("DLQ of {}: {} message(s)", ctx.stack.name, rows.len());
    for r in &rows {
        text.push_str(&format!(
            "\n- {} group {} sent {} events {} keys {}\n  reason: {}",
            r.msg.id,
            r.msg.group.as_deref().unwrap_or("?"),
            r.msg.sent_ms.map_or("?".into(), rfc3339),
            r.events,
            r.keys
                .iter()
                .map(|k| key_json(k).to_string())
                .collect::<Vec<_>>()
                .join(" "),
            r.reason
        ));
    }
    if !rows.is_empty() {
        text.push_str(
            "\nRepair from the source: `ddb-relay dlq repair` (add --dry-run to preview)",
        );
    }
    emit(ctx, &value, &text);
    Ok(0)
}

pub async fn repair(ctx: &Ctx, max: usize, dry_run: bool) -> Result<i32> {
    let s = &ctx.stack;
    let msgs = drain(ctx, max, 300).await?;
    let mut repaired = 0usize;
    let mut results = Vec::new();
    let mut left = Vec::new();
    for msg in msgs {
        let r = inspect(msg);
        if r.keys.is_empty() {
            results.push(json!({"id": r.msg.id, "status": "skipped", "reason": r.reason}));
            left.push(r.msg);
            continue;
        }
        if dry_run {
            results.push(json!({"id": r.msg.id, "status": "would repair", "keys": r.keys.iter().map(key_json).collect::<Vec<_>>()}));
            left.push(r.msg);
            continue;
        }
        let mut actions = BTreeMap::new();
        let mut failed = None;
        for key in &r.keys {
            let step = async {
                match ctx.ops.get_item(&s.source_table, key).await? {
                    Some(item) => ctx
                        .ops
                        .put_item(&s.target_table, &item)
                        .await
                        .map(|_| "put"),
                    None => ctx
                        .ops
                        .delete_item(&s.target_table, key)
                        .await
                        .map(|_| "delete"),
                }
            };
            match step.await {
                Ok(a) => {
                    *actions.entry(a).or_insert(0usize) += 1;
                }
                Err(e) => {
                    failed = Some(explain(e, "repair").to_string());
                    break;
                }
            }
        }
        match failed {
            None => {
                ctx.ops
                    .delete_message(&s.dlq_url, &r.msg.receipt)
                    .await
                    .map_err(|e| explain(e, "DLQ"))?;
                repaired += 1;
                results.push(json!({"id": r.msg.id, "status": "repaired", "keys": r.keys.len(), "actions": actions}));
            }
            Some(err) => {
                results.push(json!({"id": r.msg.id, "status": "failed", "reason": err}));
                left.push(r.msg);
            }
        }
    }
    release(ctx, &left).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let value = json!({"stack": s.name, "dry_run": dry_run, "repaired": repaired, "left": left.len(), "results": results});
    let mut text = format!(
        "{}repaired {repaired} message(s) from {}; {} left in the DLQ",
        if dry_run { "dry run: " } else { "" },
        s.source_table,
        left.len()
    );
    for r in &results {
        text.push_str(&format!(
            "\n- {} {}",
            r["id"].as_str().unwrap_or("?"),
            r["status"].as_str().unwrap_or("?")
        ));
        if let Some(why) = r.get("reason").and_then(Value::as_str) {
            text.push_str(&format!(": {why}"));
        }
    }
    emit(ctx, &value, &text);
    Ok(if results.iter().any(|r| r["status"] == "failed") {
        1
    } else {
        0
    })
}
