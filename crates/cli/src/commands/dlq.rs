//! `dlq list` and `dlq repair`. Keys are shown, item values never.
//!
//! **Invariant:** a DLQ message is deleted only after every source item it
//! holds a change of was repaired (`repair.rs`: through the transform, in
//! the current mode, never over a newer change).

use std::collections::HashSet;

use anyhow::Result;
use relay_aws::operator::{Aws, RawMessage};
use relay_core::envelope;
use relay_core::event::ChangeEvent;
use relay_core::item::{Attrs, CanonicalKey};
use relay_core::transform::Transform;
use serde::Serialize;
use serde_json::Value;

use crate::ctx::{explain, rfc3339, Ctx};
use crate::repair::{repair as repair_key, Fence, Repaired};
use crate::report::Report;

/// What a DLQ message holds, without item values.
struct Inspected {
    msg: RawMessage,
    /// The source keys, each with its changes in the message.
    keys: Vec<(Attrs, Vec<ChangeEvent>)>,
    events: usize,
    reason: String,
}

fn inspect(msg: RawMessage) -> Inspected {
    match envelope::decode(&msg.body) {
        Ok(env) => {
            let mut keys: Vec<(Attrs, Vec<ChangeEvent>)> = Vec::new();
            let events = env.ev.len();
            for e in env.ev {
                let ck = CanonicalKey::of(&e.keys);
                match keys.iter_mut().find(|(k, _)| CanonicalKey::of(k) == ck) {
                    Some((_, v)) => v.push(e),
                    None => keys.push((e.keys.clone(), vec![e])),
                }
            }
            Inspected {
                reason: format!(
                    "not applied after {} deliveries (the applier's log names the error)",
                    msg.receive_count
                ),
                events,
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

/// Receives up to `max` distinct messages of the queue at `url` (`what`
/// names it in errors), holding each for `hold_s`.
pub(crate) async fn drain<A: Aws>(
    ctx: &Ctx<A>,
    (url, what): (&str, &str),
    max: usize,
    hold_s: i32,
) -> Result<Vec<RawMessage>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut empty_polls = 0;
    while out.len() < max && empty_polls < 2 {
        let batch = ctx
            .aws
            .receive(url, (max - out.len()).min(10) as i32, hold_s)
            .await
            .map_err(|e| explain(e, what))?;
        if batch.is_empty() {
            empty_polls += 1;
            continue;
        }
        for m in batch {
            if seen.insert(m.id.clone()) {
                out.push(m);
            } else if let Some(known) = out.iter_mut().find(|k| k.id == m.id) {
                // Received again (a standard queue can deliver a message
                // twice): only the newest receipt deletes it.
                known.receipt = m.receipt;
            }
        }
    }
    Ok(out)
}

/// Makes held messages of the queue at `url` visible again.
pub(crate) async fn release<A: Aws>(ctx: &Ctx<A>, url: &str, msgs: &[RawMessage]) {
    for m in msgs {
        // Best effort: if this fails, the message returns after its hold.
        let _ = ctx.aws.release_message(url, &m.receipt).await;
    }
}

#[derive(Debug, Serialize)]
pub struct DlqMessage {
    pub id: String,
    pub group: Option<String>,
    pub sent_ms: Option<i64>,
    pub receive_count: u64,
    pub events: usize,
    pub keys: Vec<Value>,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct DlqListReport {
    pub stack: String,
    pub count: usize,
    pub messages: Vec<DlqMessage>,
}

impl Report for DlqListReport {
    fn text(&self) -> String {
        let mut text = format!("DLQ of {}: {} message(s)", self.stack, self.count);
        for r in &self.messages {
            text.push_str(&format!(
                "\n- {} group {} sent {} events {} keys {}\n  reason: {}",
                r.id,
                r.group.as_deref().unwrap_or("?"),
                r.sent_ms.map_or("?".into(), rfc3339),
                r.events,
                r.keys
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                r.reason
            ));
        }
        if self.count > 0 {
            text.push_str(
                "\nRepair from the source: `ddb-relay dlq repair` (add --dry-run to preview)",
            );
        }
        text
    }
}

pub async fn list<A: Aws>(ctx: &Ctx<A>, max: usize) -> Result<DlqListReport> {
    let dlq = (ctx.stack.dlq_url.as_str(), "DLQ");
    let msgs = drain(ctx, dlq, max, 30).await?;
    release(ctx, dlq.0, &msgs).await;
    let rows: Vec<Inspected> = msgs.into_iter().map(inspect).collect();
    Ok(DlqListReport {
        stack: ctx.stack.name.clone(),
        count: rows.len(),
        messages: rows
            .into_iter()
            .map(|r| DlqMessage {
                keys: r.keys.iter().map(|(k, _)| key_json(k)).collect(),
                id: r.msg.id,
                group: r.msg.group,
                sent_ms: r.msg.sent_ms,
                receive_count: r.msg.receive_count,
                events: r.events,
                reason: r.reason,
            })
            .collect(),
    })
}

#[derive(Debug, Serialize)]
pub struct DlqResult {
    pub id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<Actions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Actions {
    pub put: u32,
    pub delete: u32,
}

#[derive(Debug, Serialize)]
pub struct DlqRepairReport {
    pub stack: String,
    pub dry_run: bool,
    pub repaired: usize,
    pub left: usize,
    pub results: Vec<DlqResult>,
    #[serde(skip)]
    source_table: String,
}

impl Report for DlqRepairReport {
    fn text(&self) -> String {
        let mut text = format!(
            "{}repaired {} message(s) from {}; {} left in the DLQ",
            if self.dry_run { "dry run: " } else { "" },
            self.repaired,
            self.source_table,
            self.left
        );
        for r in &self.results {
            text.push_str(&format!("\n- {} {}", r.id, r.status));
            if let Some(why) = &r.reason {
                text.push_str(&format!(": {why}"));
            }
        }
        text
    }

    fn exit_code(&self) -> i32 {
        if self.results.iter().any(|r| r.status == "failed") {
            1
        } else {
            0
        }
    }
}

/// The target keys a source item may occupy after the changes of a DLQ
/// message: those of its old and new images (the message was not applied,
/// or only in part).
fn stale_keys(t: &dyn Transform, keys: &Attrs, changes: &[ChangeEvent]) -> Vec<Attrs> {
    let mut out: Vec<Attrs> = Vec::new();
    let mut add = |k: Attrs| {
        if !out
            .iter()
            .any(|x| CanonicalKey::of(x) == CanonicalKey::of(&k))
        {
            out.push(k);
        }
    };
    for e in changes {
        if let Ok(k) = t.change_key(keys, e.old_image.as_ref()) {
            add(k);
        }
        if let Some(n) = &e.new_image {
            if let Ok(k) = t.key_only(&relay_core::transform::with_keys(n, keys)) {
                add(k);
            }
        }
    }
    out
}

pub async fn repair<A: Aws>(ctx: &Ctx<A>, max: usize, dry_run: bool) -> Result<DlqRepairReport> {
    let s = &ctx.stack;
    let loaded = crate::transform::load(ctx).await?;
    let t = loaded.transform.as_ref();
    let now = ctx.control().await?;
    if !dry_run {
        super::verify::refuse_repairs_unless_seeded(&now)?;
    }
    let fence = Fence::of(&now);
    let msgs = drain(ctx, (&s.dlq_url, "DLQ"), max, 300).await?;
    let mut repaired = 0usize;
    let mut results = Vec::new();
    let mut left = Vec::new();
    for msg in msgs {
        let r = inspect(msg);
        if r.keys.is_empty() {
            results.push(DlqResult {
                id: r.msg.id.clone(),
                status: "skipped".into(),
                keys: None,
                actions: None,
                reason: Some(r.reason.clone()),
            });
            left.push(r.msg);
            continue;
        }
        if dry_run {
            results.push(DlqResult {
                id: r.msg.id.clone(),
                status: "would repair".into(),
                keys: Some(r.keys.len()),
                actions: None,
                reason: None,
            });
            left.push(r.msg);
            continue;
        }
        let mut actions = Actions::default();
        let mut failed = None;
        for (key, changes) in &r.keys {
            let stale = stale_keys(t, key, changes);
            // Only inserts without images (refetch markers of items too big
            // to travel) and the item is gone again: the message left
            // nothing in the target, and the item's REMOVE carries its own
            // key sources. Nothing to repair.
            if stale.is_empty()
                && changes
                    .iter()
                    .all(|c| c.op == relay_core::event::Op::Insert)
            {
                // A read that fails leaves the message in the DLQ (released
                // with the others), not held by an aborted run.
                match ctx.aws.get_item(&s.source_table, key).await {
                    Ok(None) => continue,
                    Ok(Some(_)) => {}
                    Err(e) => {
                        failed = Some(explain(e, &s.source_table).to_string());
                        break;
                    }
                }
            }
            match repair_key(ctx, t, &fence, key, &stale).await {
                Ok(Repaired { puts, deletes }) => {
                    actions.put += puts;
                    actions.delete += deletes;
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        match failed {
            None => {
                ctx.aws
                    .delete_message(&s.dlq_url, &r.msg.receipt)
                    .await
                    .map_err(|e| explain(e, "DLQ"))?;
                repaired += 1;
                results.push(DlqResult {
                    id: r.msg.id.clone(),
                    status: "repaired".into(),
                    keys: Some(r.keys.len()),
                    actions: Some(actions),
                    reason: None,
                });
            }
            Some(err) => {
                results.push(DlqResult {
                    id: r.msg.id.clone(),
                    status: "failed".into(),
                    keys: None,
                    actions: None,
                    reason: Some(err),
                });
                left.push(r.msg);
            }
        }
    }
    release(ctx, &s.dlq_url, &left).await;
    Ok(DlqRepairReport {
        stack: s.name.clone(),
        dry_run,
        repaired,
        left: left.len(),
        results,
        source_table: s.source_table.clone(),
    })
}
