//! Aurora PostgreSQL in a Global Database (`kind = "aurora-postgres"` in
//! agent.toml), checked but not yet failed over by Seawall
//! (`checked_only`): its SQL side is the PostgreSQL provider's (canaries,
//! the post-check), and RDS's control plane adds the cluster's status, its
//! role in the global cluster and the `AuroraGlobalDBReplicationLag`
//! metric (`cloud::aurora`). A planned move is `SwitchoverGlobalCluster`
//! (no loss), an unplanned one `FailoverGlobalCluster` with
//! `AllowDataLoss`; Seawall calls neither yet.

use super::checked_only::CheckedOnly;
use super::postgres::PostgresStore;
use crate::cloud::aurora::api::Aurora;
use crate::cloud::aurora::config::AuroraCluster;
use crate::cloud::view::{read_now, ControlPlane, View, LAG_WINDOW};
use crate::daemon::config::{AgentConfig, SourceConfig};
use async_trait::async_trait;
use seawall_common::Result;
use seawall_proto::v1::ManagedStore;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// One cluster's control plane.
struct Plane {
    cluster: AuroraCluster,
    api: OnceCell<Aurora>,
}

#[async_trait]
impl ControlPlane for Plane {
    fn blank(&self) -> ManagedStore {
        ManagedStore {
            service: "aurora".into(),
            instance: self.cluster.cluster.clone(),
            ..ManagedStore::default()
        }
    }

    async fn read(&self) -> Result<ManagedStore> {
        let api = self
            .api
            .get_or_try_init(|| Aurora::open(&self.cluster))
            .await?;
        let state = api.describe().await?;
        // Only a secondary trails; the writer publishes no such lag.
        let lag = match state.role.as_deref() {
            Some("secondary") => api.global_lag(LAG_WINDOW).await?,
            _ => None,
        };
        Ok(ManagedStore {
            instance: state.id,
            arn: state.arn,
            status: state.status,
            group: self.cluster.global_cluster.clone().unwrap_or_default(),
            role: state.role.unwrap_or_default(),
            ..read_now("aurora", lag)
        })
    }
}

/// The store of `source`: its DSN read as PostgreSQL, its cluster through
/// RDS.
pub fn open(
    config: &AgentConfig,
    source: &SourceConfig,
    dsn: &str,
    pg_bin: &Option<std::path::PathBuf>,
    cluster: &AuroraCluster,
) -> CheckedOnly {
    let global = cluster.global_cluster.as_deref().unwrap_or("GLOBAL");
    CheckedOnly::new(
        Arc::new(PostgresStore::new(config, source, dsn, pg_bin)),
        View::new(Arc::new(Plane {
            cluster: cluster.clone(),
            api: OnceCell::new(),
        })),
        format!("Aurora cluster {}", cluster.cluster),
        format!(
            "Aurora replicates below PostgreSQL and Seawall does not call SwitchoverGlobalCluster or FailoverGlobalCluster yet; move the writer with `aws rds switchover-global-cluster --global-cluster-identifier {global} --target-db-cluster-identifier ARN` (planned, no loss) or `aws rds failover-global-cluster --global-cluster-identifier {global} --target-db-cluster-identifier ARN --allow-data-loss` (its region is down)"
        ),
    )
}
