//! CloudWatch: several metric series in one GetMetricData request.

use super::{e, MetricQuery, Metrics, Sdk, Series, Stat};
use crate::AwsError;

impl Metrics for Sdk {
    async fn metrics(
        &self,
        queries: &[MetricQuery],
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<Series>, AwsError> {
        use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
        let mut out: Vec<Series> = vec![Vec::new(); queries.len()];
        // GetMetricData takes up to 500 queries per request.
        for (chunk_index, chunk) in queries.chunks(500).enumerate() {
            let mut req = self
                .cw
                .get_metric_data()
                .start_time(aws_smithy_types::DateTime::from_millis(since_ms))
                .end_time(aws_smithy_types::DateTime::from_millis(until_ms));
            for (i, q) in chunk.iter().enumerate() {
                let metric = Metric::builder()
                    .namespace(&q.namespace)
                    .metric_name(&q.name)
                    .set_dimensions(Some(
                        q.dims
                            .iter()
                            .map(|(n, v)| Dimension::builder().name(n).value(v).build())
                            .collect(),
                    ))
                    .build();
                let stat = MetricStat::builder()
                    .metric(metric)
                    .period(60)
                    .stat(match q.stat {
                        Stat::Sum => "Sum",
                        Stat::Maximum => "Maximum",
                    })
                    .build();
                req = req.metric_data_queries(
                    MetricDataQuery::builder()
                        .id(format!("q{}", chunk_index * 500 + i))
                        .metric_stat(stat)
                        .return_data(true)
                        .build(),
                );
            }
            let mut token: Option<String> = None;
            loop {
                let r = req
                    .clone()
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(e("GetMetricData"))?;
                for result in r.metric_data_results() {
                    let Some(index) = result
                        .id()
                        .and_then(|id| id.strip_prefix('q'))
                        .and_then(|n| n.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    if let Some(series) = out.get_mut(index) {
                        series.extend(
                            result
                                .timestamps()
                                .iter()
                                .map(super::ms)
                                .zip(result.values().iter().copied()),
                        );
                    }
                }
                match r.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        for series in &mut out {
            series.sort_by_key(|(t, _)| *t);
        }
        Ok(out)
    }
}
