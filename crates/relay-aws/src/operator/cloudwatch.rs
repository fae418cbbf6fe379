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
                let more_pages = r.next_token().is_some_and(|t| !t.is_empty());
                for result in r.metric_data_results() {
                    series_status(result.status_code(), more_pages).map_err(|why| {
                        AwsError::retryable("GetMetricData", "MetricDataNotComplete", &why)
                    })?;
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

/// Whether one series of a GetMetricData answer is data: CloudWatch marks a
/// query it failed (`InternalError`, `Forbidden`) in the answer, not as an
/// error, and `PartialData` is complete only once the pages that follow are
/// read. A series that is not data is unknown, never zero.
fn series_status(
    code: Option<&aws_sdk_cloudwatch::types::StatusCode>,
    more_pages: bool,
) -> Result<(), String> {
    use aws_sdk_cloudwatch::types::StatusCode;
    match code {
        None | Some(StatusCode::Complete) => Ok(()),
        Some(StatusCode::PartialData) if more_pages => Ok(()),
        Some(other) => Err(format!(
            "CloudWatch answered a metric query with status {}",
            other.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::series_status;
    use aws_sdk_cloudwatch::types::StatusCode;

    #[test]
    fn a_failed_or_unfinished_series_is_not_data() {
        assert!(series_status(None, false).is_ok());
        assert!(series_status(Some(&StatusCode::Complete), false).is_ok());
        assert!(series_status(Some(&StatusCode::PartialData), true).is_ok());
        for code in [
            StatusCode::PartialData,
            StatusCode::InternalError,
            StatusCode::Forbidden,
            StatusCode::from("SomethingNew"),
        ] {
            assert!(series_status(Some(&code), false).is_err(), "{code:?}");
        }
        assert!(series_status(Some(&StatusCode::InternalError), true).is_err());
    }
}
