//! ElastiCache for Redis OSS / Valkey (`kind = "elasticache-redis"` in
//! agent.toml), checked but not yet failed over by Seawall
//! (`checked_only`): its Redis side is the self-managed provider's
//! (replication offsets, canaries through the endpoint), and ElastiCache's
//! control plane adds the group's status, its role in a Global Datastore
//! and the Global Datastore's lag metric (`cloud::elasticache`).
//! ElastiCache refuses `REPLICAOF` and `CONFIG`, so the self-managed fence
//! and promotion cannot run there; moving a Global Datastore's primary is
//! `FailoverGlobalReplicationGroup`, which Seawall does not call yet.

use super::checked_only::CheckedOnly;
use super::redis::RedisStore;
use crate::cloud::elasticache::api::ElastiCache;
use crate::cloud::elasticache::config::ElastiCacheGroup;
use crate::cloud::view::{read_now, ControlPlane, View, LAG_WINDOW};
use async_trait::async_trait;
use seawall_common::Result;
use seawall_proto::v1::ManagedStore;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// One replication group's control plane.
struct Plane {
    group: ElastiCacheGroup,
    api: OnceCell<ElastiCache>,
}

#[async_trait]
impl ControlPlane for Plane {
    fn blank(&self) -> ManagedStore {
        ManagedStore {
            service: "elasticache".into(),
            instance: self.group.replication_group.clone(),
            ..ManagedStore::default()
        }
    }

    async fn read(&self) -> Result<ManagedStore> {
        let api = self
            .api
            .get_or_try_init(|| ElastiCache::open(&self.group))
            .await?;
        let state = api.describe().await?;
        // Only a secondary trails; a primary publishes no such lag.
        let lag = match state.role.as_deref() {
            Some("secondary") => api.global_lag(LAG_WINDOW).await?,
            _ => None,
        };
        Ok(ManagedStore {
            instance: state.id,
            arn: state.arn,
            status: state.status,
            group: state.global_group.unwrap_or_default(),
            role: state.role.unwrap_or_default(),
            ..read_now("elasticache", lag)
        })
    }
}

/// The store of `source`: its URL read as Redis, its group through
/// ElastiCache.
pub fn open(
    config: &crate::daemon::config::AgentConfig,
    source: &str,
    url: &str,
    group: &ElastiCacheGroup,
) -> CheckedOnly {
    CheckedOnly::new(
        Arc::new(RedisStore::new(config, source, url)),
        View::new(Arc::new(Plane {
            group: group.clone(),
            api: OnceCell::new(),
        })),
        format!("ElastiCache replication group {}", group.replication_group),
        "ElastiCache refuses REPLICAOF and CONFIG, and Seawall does not call FailoverGlobalReplicationGroup yet; move the Global Datastore's primary with `aws elasticache failover-global-replication-group --global-replication-group-id ID --primary-region REGION --primary-replication-group-id GROUP`".to_string(),
    )
}
