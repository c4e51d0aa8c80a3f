//! The ElastiCache and CloudWatch calls an `elasticache-redis` store
//! makes, each bounded and retried on throttling (`seawall_common::aws`).

use super::config::ElastiCacheGroup;
use crate::cloud::metric::{dimension_values, newest_maximum, MetricLag};
use seawall_common::aws::{call_failed, sdk_config};
use seawall_common::{Error, ErrorKind, Result};
use std::time::Duration;

/// What ElastiCache says of one replication group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupState {
    /// Its id.
    pub id: String,
    /// Its ARN.
    pub arn: String,
    /// "available", "modifying", "snapshotting", ...
    pub status: String,
    /// The Global Datastore it belongs to, if any.
    pub global_group: Option<String>,
    /// Its role there: "primary" or "secondary".
    pub role: Option<String>,
}

/// A replication group's control plane: ElastiCache and CloudWatch in its
/// region.
#[derive(Clone)]
pub struct ElastiCache {
    client: aws_sdk_elasticache::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    /// The group it was opened for.
    pub group: ElastiCacheGroup,
}

impl ElastiCache {
    /// Clients for `group`'s region.
    pub async fn open(group: &ElastiCacheGroup) -> Result<ElastiCache> {
        let shared = sdk_config(&group.target()?).await;
        Ok(ElastiCache {
            client: aws_sdk_elasticache::Client::new(&shared),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&shared),
            group: group.clone(),
        })
    }

    /// The configured group's state.
    pub async fn describe(&self) -> Result<GroupState> {
        let id = &self.group.replication_group;
        let out = self
            .client
            .describe_replication_groups()
            .replication_group_id(id)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_replication_group_not_found_fault()) =>
            {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "ElastiCache has no replication group {id:?} in {}: check replication_group and aws_region in agent.toml",
                        self.group.access.aws_region
                    ),
                ))
            }
            Err(e) => {
                return Err(call_failed(
                    "elasticache:DescribeReplicationGroups",
                    &self.group.arn(),
                    &e,
                ))
            }
        };
        let g = out.replication_groups().first().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("ElastiCache listed no replication group {id:?}"),
            )
        })?;
        let global = g.global_replication_group_info();
        Ok(GroupState {
            id: g.replication_group_id().unwrap_or_default().to_string(),
            arn: g.arn().unwrap_or_default().to_string(),
            status: g.status().unwrap_or_default().to_string(),
            global_group: global
                .and_then(|i| i.global_replication_group_id())
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            role: global
                .and_then(|i| i.global_replication_group_member_role())
                .filter(|s| !s.is_empty())
                .map(|s| s.to_lowercase()),
        })
    }

    /// The worst `GlobalDatastoreReplicationLag` among the group's nodes
    /// (their cache cluster ids begin with the group's id) in the last
    /// `window`: the one whose bound is largest now.
    pub async fn global_lag(&self, window: Duration) -> Result<Option<MetricLag>> {
        const NAMESPACE: &str = "AWS/ElastiCache";
        const METRIC: &str = "GlobalDatastoreReplicationLag";
        let prefix = format!("{}-", self.group.replication_group);
        let nodes = dimension_values(&self.cloudwatch, NAMESPACE, METRIC, "CacheClusterId").await?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut worst: Option<MetricLag> = None;
        for node in nodes.iter().filter(|n| n.starts_with(&prefix)) {
            let lag = newest_maximum(
                &self.cloudwatch,
                NAMESPACE,
                METRIC,
                &[("CacheClusterId", node)],
                window,
            )
            .await?;
            if let Some(l) = lag {
                if worst.is_none_or(|w| l.bound_at(now) > w.bound_at(now)) {
                    worst = Some(l);
                }
            }
        }
        Ok(worst)
    }
}
