//! `finish --report`'s picture of the migration.

use relay_aws::operator::{Aws, MetricQuery, Stat};
use relay_core::metrics::names;

use super::FinishReport;
use crate::ctx::{explain, rfc3339, Ctx};

/// A picture of the migration (SVG): replication lag, changes applied per
/// second and the queue backlog, from the seed (or the last hour) to now,
/// under the report's counts.
pub(super) async fn picture<A: Aws>(ctx: &Ctx<A>, r: &FinishReport) -> String {
    use relay_core::chart::{svg, Panel, Picture};
    let s = &ctx.stack;
    let until = r.finished_ms;
    let since = r.seed_ms.unwrap_or(until - 3_600_000).min(until - 600_000) - 300_000;
    let queries = [
        super::super::status::relay_metric(s, names::REPLICATION_LAG_MS, "applier", Stat::Maximum),
        super::super::status::relay_metric(s, names::APPLIED_PUTS, "applier", Stat::Sum),
        super::super::status::relay_metric(s, names::APPLIED_DELETES, "applier", Stat::Sum),
        MetricQuery::new(
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            &[("QueueName", super::super::status::queue_name(s))],
            Stat::Maximum,
        ),
    ];
    let mut facts: Vec<(&str, String)> = vec![
        (
            "tables",
            format!("{} -> {}", r.source_table, r.target_table),
        ),
        (
            "seed",
            format!(
                "{} at {}, cutoff {}",
                r.seed_method.as_deref().unwrap_or("?"),
                r.seed_ms.map_or("?".into(), rfc3339),
                r.cutoff_ms.map_or("?".into(), rfc3339)
            ),
        ),
        (
            "items (approximate)",
            format!(
                "source {}, target {}",
                r.source_items_approx.map_or("?".into(), |n| n.to_string()),
                r.target_items_approx.map_or("?".into(), |n| n.to_string())
            ),
        ),
        (
            "finished",
            format!(
                "{} (drained in {:.0} s)",
                rfc3339(r.finished_ms),
                r.drained_s
            ),
        ),
        (
            "left over",
            format!("DLQ {}, stream failures {}", r.dlq_depth, r.stream_failures),
        ),
        (
            "last verify",
            r.last_verify.clone().unwrap_or_else(|| "none".into()),
        ),
    ];
    let series = match ctx.aws.metrics(&queries, since, until).await {
        Ok(series) => series,
        Err(e) => {
            facts.push((
                "metrics",
                format!("unavailable: {}", explain(e, "CloudWatch")),
            ));
            vec![Vec::new(); queries.len()]
        }
    };
    let lag: Vec<(i64, f64)> = series[0].iter().map(|(t, v)| (*t, v / 1000.0)).collect();
    let mut applied: std::collections::BTreeMap<i64, f64> = std::collections::BTreeMap::new();
    for (t, v) in series[1].iter().chain(&series[2]) {
        *applied.entry(*t).or_default() += v / 60.0;
    }
    let applied: Vec<(i64, f64)> = applied.into_iter().collect();
    let title = format!("ddb-relay migration {} ({})", s.migration, s.name);
    let (from_label, to_label) = (rfc3339(since), rfc3339(until));
    svg(&Picture {
        title: &title,
        facts: &facts,
        panels: &[
            Panel {
                title: "replication lag (newest applied change)",
                unit: "s",
                points: &lag,
            },
            Panel {
                title: "changes applied",
                unit: "per s",
                points: &applied,
            },
            Panel {
                title: "queue backlog (visible messages)",
                unit: "messages",
                points: &series[3],
            },
        ],
        from_ms: since,
        to_ms: until,
        from_label: &from_label,
        to_label: &to_label,
    })
}
