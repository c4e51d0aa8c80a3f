//! A lag metric's newest period from CloudWatch: its Maximum and when the
//! period began, so a bound can grow from there (the lag grows at most a
//! second per second since).

use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use seawall_common::aws::call_failed;
use seawall_common::Result;
use std::time::{Duration, SystemTime};

/// A lag metric's newest period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricLag {
    /// The period's Maximum, in seconds.
    pub max_secs: f64,
    /// When the period began (unix ms).
    pub period_start_unix_ms: i64,
}

impl MetricLag {
    /// The bound it gives at `now_ms`: the Maximum plus the time since.
    pub fn bound_at(&self, now_ms: i64) -> f64 {
        self.max_secs + (now_ms - self.period_start_unix_ms).max(0) as f64 / 1000.0
    }
}

/// The newest one-minute period of `namespace`'s `metric` for `dimensions`
/// within the last `window` (None: no datapoint).
pub async fn newest_maximum(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metric: &str,
    dimensions: &[(&str, &str)],
    window: Duration,
) -> Result<Option<MetricLag>> {
    let now = SystemTime::now();
    let dims = dimensions
        .iter()
        .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
        .collect();
    let out = cloudwatch
        .get_metric_statistics()
        .namespace(namespace)
        .metric_name(metric)
        .set_dimensions(Some(dims))
        .start_time(aws_smithy_types::DateTime::from(now - window))
        .end_time(aws_smithy_types::DateTime::from(
            now + Duration::from_secs(60),
        ))
        .period(60)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .map_err(|e| call_failed("cloudwatch:GetMetricStatistics", "*", &e))?;
    Ok(out
        .datapoints()
        .iter()
        .filter_map(|d| {
            let at = d.timestamp()?.to_millis().ok()?;
            Some(MetricLag {
                max_secs: d.maximum()?,
                period_start_unix_ms: at,
            })
        })
        .max_by_key(|m| m.period_start_unix_ms))
}

/// The values dimension `dimension` takes among `namespace`'s `metric`
/// series (the nodes that publish it).
pub async fn dimension_values(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    metric: &str,
    dimension: &str,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = cloudwatch
            .list_metrics()
            .namespace(namespace)
            .metric_name(metric)
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| call_failed("cloudwatch:ListMetrics", "*", &e))?;
        for m in out.metrics() {
            for d in m.dimensions() {
                if d.name() == Some(dimension) {
                    if let Some(v) = d.value() {
                        if !found.iter().any(|f| f == v) {
                            found.push(v.to_string());
                        }
                    }
                }
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(found);
        }
    }
}
