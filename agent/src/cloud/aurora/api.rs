//! The RDS and CloudWatch calls an `aurora-postgres` store makes, each
//! bounded and retried on throttling (`seawall_common::aws`).

use super::config::AuroraCluster;
use crate::cloud::metric::{newest_maximum, MetricLag};
use seawall_common::aws::{call_failed, sdk_config};
use seawall_common::{Error, ErrorKind, Result};
use std::time::Duration;

/// What RDS says of one Aurora cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    /// Its identifier.
    pub id: String,
    /// Its ARN.
    pub arn: String,
    /// "available", "modifying", "failing-over", ...
    pub status: String,
    /// Its role in the global cluster: "primary" (the writer) or
    /// "secondary"; None when it is in none or not listed there.
    pub role: Option<String>,
}

/// A cluster's control plane: RDS and CloudWatch in its region.
#[derive(Clone)]
pub struct Aurora {
    rds: aws_sdk_rds::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    /// The cluster it was opened for.
    pub cluster: AuroraCluster,
}

impl Aurora {
    /// Clients for `cluster`'s region.
    pub async fn open(cluster: &AuroraCluster) -> Result<Aurora> {
        let shared = sdk_config(&cluster.target()?).await;
        Ok(Aurora {
            rds: aws_sdk_rds::Client::new(&shared),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&shared),
            cluster: cluster.clone(),
        })
    }

    /// The configured cluster's state, and its role in its global cluster.
    pub async fn describe(&self) -> Result<ClusterState> {
        let id = &self.cluster.cluster;
        let out = self
            .rds
            .describe_db_clusters()
            .db_cluster_identifier(id)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_cluster_not_found_fault()) =>
            {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "RDS has no DB cluster {id:?} in {}: check cluster and aws_region in agent.toml",
                        self.cluster.access.aws_region
                    ),
                ))
            }
            Err(e) => return Err(call_failed("rds:DescribeDBClusters", &self.cluster.arn(), &e)),
        };
        let c = out.db_clusters().first().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("RDS listed no DB cluster {id:?}"),
            )
        })?;
        let arn = c.db_cluster_arn().unwrap_or_default().to_string();
        let role = match &self.cluster.global_cluster {
            Some(global) => self.role_in(global, &arn).await?,
            None => None,
        };
        Ok(ClusterState {
            id: c.db_cluster_identifier().unwrap_or_default().to_string(),
            arn,
            status: c.status().unwrap_or_default().to_string(),
            role,
        })
    }

    /// The role of the cluster `arn` in global cluster `global`.
    async fn role_in(&self, global: &str, arn: &str) -> Result<Option<String>> {
        let out = self
            .rds
            .describe_global_clusters()
            .global_cluster_identifier(global)
            .send()
            .await
            .map_err(|e| {
                call_failed(
                    "rds:DescribeGlobalClusters",
                    &format!("arn:aws:rds::*:global-cluster:{global}"),
                    &e,
                )
            })?;
        Ok(out
            .global_clusters()
            .iter()
            .flat_map(|g| g.global_cluster_members())
            .find(|m| m.db_cluster_arn() == Some(arn))
            .map(|m| {
                if m.is_writer().unwrap_or(false) {
                    "primary".to_string()
                } else {
                    "secondary".to_string()
                }
            }))
    }

    /// The newest period of the cluster's `AuroraGlobalDBReplicationLag`
    /// (published in milliseconds) within `window`, in seconds.
    pub async fn global_lag(&self, window: Duration) -> Result<Option<MetricLag>> {
        Ok(newest_maximum(
            &self.cloudwatch,
            "AWS/RDS",
            "AuroraGlobalDBReplicationLag",
            &[("DBClusterIdentifier", &self.cluster.cluster)],
            window,
        )
        .await?
        .map(|l| MetricLag {
            max_secs: l.max_secs / 1000.0,
            ..l
        }))
    }
}
