//! ElastiCache for Redis OSS / Valkey (`kind = "elasticache-redis"` in
//! agent.toml), checked but not yet failed over by Seawall: its Redis side
//! is the self-managed provider's (replication offsets, canaries through
//! the endpoint), and ElastiCache's control plane adds the group's status,
//! its role in a Global Datastore and the Global Datastore's lag metric
//! (`cloud::elasticache`). ElastiCache refuses `REPLICAOF` and `CONFIG`,
//! so the self-managed fence and promotion cannot run there; moving a
//! Global Datastore's primary is `FailoverGlobalReplicationGroup`, which
//! Seawall does not call yet: every failover action says so, with the
//! command that does it.

use super::redis::RedisStore;
use super::{Done, StoreControl};
use crate::cloud::elasticache::api::ElastiCache;
use crate::cloud::elasticache::config::ElastiCacheGroup;
use crate::cloud::view::{ControlPlane, View, LAG_WINDOW};
use async_trait::async_trait;
use seawall_common::tasks::Tree;
use seawall_common::{Error, ErrorKind, Result};
use seawall_proto::v1::{
    store_report, FenceAction, ManagedStore, PostCheckAction, RebuildAction, RejoinAction,
    StorePosition,
};
use std::sync::Arc;
use std::time::Duration;
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
            service: "elasticache".into(),
            instance: state.id,
            arn: state.arn,
            status: state.status,
            group: state.global_group.unwrap_or_default(),
            role: state.role.unwrap_or_default(),
            lag_max_secs: lag.map(|l| l.max_secs),
            lag_period_start_unix_ms: lag.map(|l| l.period_start_unix_ms).unwrap_or(0),
            read_unix_ms: chrono::Utc::now().timestamp_millis(),
            ..ManagedStore::default()
        })
    }
}

/// One ElastiCache replication group of the agent's sources.
pub struct ElastiCacheRedisStore {
    redis: RedisStore,
    group: ElastiCacheGroup,
    view: Arc<View>,
}

impl ElastiCacheRedisStore {
    /// The group of `source` (its URL, its ElastiCache settings).
    pub fn new(
        config: &crate::daemon::config::AgentConfig,
        source: &str,
        url: &str,
        group: &ElastiCacheGroup,
    ) -> ElastiCacheRedisStore {
        ElastiCacheRedisStore {
            redis: RedisStore::new(config, source, url),
            group: group.clone(),
            view: View::new(Arc::new(Plane {
                group: group.clone(),
                api: OnceCell::new(),
            })),
        }
    }

    /// The refusal of a failover action: what to run instead.
    fn not_here(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{what} of ElastiCache replication group {} is not done by Seawall: ElastiCache refuses REPLICAOF and CONFIG, and Seawall does not call FailoverGlobalReplicationGroup yet; move the Global Datastore's primary with `aws elasticache failover-global-replication-group --global-replication-group-id ID --primary-region REGION --primary-replication-group-id GROUP`, or put this store in a service of its own without automatic failover (docs/operations.md, ElastiCache)",
                self.group.replication_group
            ),
        )
    }
}

#[async_trait]
impl StoreControl for ElastiCacheRedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn replication(&self) -> Result<store_report::Replication> {
        self.redis.replication().await
    }

    fn managed(&self) -> Option<ManagedStore> {
        self.view.newest()
    }

    async fn write_canary(&self, service: &str, marker: super::canary::Marker) -> Result<()> {
        self.redis.write_canary(service, marker).await
    }

    async fn read_canary(&self, service: &str) -> Result<Option<super::canary::Marker>> {
        self.redis.read_canary(service).await
    }

    fn forget(&self) {
        self.redis.forget();
    }

    async fn fence(&self, _how: &FenceAction, _deadline: Duration) -> Result<Done> {
        Err(self.not_here("the fence"))
    }

    async fn unfence(&self, _deadline: Duration) -> Result<Done> {
        Err(self.not_here("lifting the fence"))
    }

    async fn catch_up(&self, _to: Option<&StorePosition>, _deadline: Duration) -> Result<Done> {
        Err(self.not_here("the catch-up"))
    }

    async fn promote(&self, _deadline: Duration) -> Result<Done> {
        Err(self.not_here("the promotion"))
    }

    async fn post_check(&self, check: &PostCheckAction, deadline: Duration) -> Result<Done> {
        self.redis.post_check(check, deadline).await
    }

    async fn demote(&self, _how: &RejoinAction, _deadline: Duration) -> Result<Done> {
        Err(self.not_here("the demotion"))
    }

    async fn rebuild(
        &self,
        _how: &RebuildAction,
        _deadline: Duration,
        _tasks: &Tree,
    ) -> Result<Done> {
        Err(self.not_here("the rebuild"))
    }
}
