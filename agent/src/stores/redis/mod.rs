//! The self-managed Redis provider: a server the agent reaches by a URL.
//! Probes keep one multiplexed connection, made again once when a restarted
//! server broke it; actions open the provider afresh.

pub mod canary;
pub mod control;
pub mod fence;
pub mod replication;

use super::{Done, StoreControl};
use crate::engine::redis::{connect::Endpoint, RedisTls};
use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use replication::RedisReplication;
use seawall_common::tasks::Tree;
use seawall_common::{Error, ErrorKind, Result};
use seawall_proto::v1::{
    store_position, store_report, FenceAction, PostCheckAction, RebuildAction, RedisPosition,
    RedisReplicaSeen, RejoinAction, StorePosition,
};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// One Redis server of the agent's sources.
pub struct RedisStore {
    url: String,
    /// Where a demoted master's dataset is kept before REPLICAOF.
    keeper: crate::stores::diverged_copy::Keeper,
    /// What the fence replaced, kept for when it is lifted.
    fence_memory: PathBuf,
    con: Mutex<Option<MultiplexedConnection>>,
}

impl RedisStore {
    /// The server at `url`, the agent's source `source`.
    pub fn new(config: &crate::daemon::config::AgentConfig, source: &str, url: &str) -> RedisStore {
        let state_dir = &config.state_dir;
        RedisStore {
            url: url.to_string(),
            keeper: crate::stores::diverged_copy::Keeper::of(config, source),
            fence_memory: fence::memory_path(state_dir, source),
            con: Mutex::new(None),
        }
    }

    fn endpoint(&self) -> Result<Endpoint> {
        Endpoint::new(&self.url, &RedisTls::default())
    }

    /// The kept connection (and whether it was kept), or a new one.
    async fn connection(&self) -> Result<(MultiplexedConnection, bool)> {
        if let Some(c) = self.con.lock().ok().and_then(|c| c.clone()) {
            return Ok((c, true));
        }
        let c = self.endpoint()?.connection().await?;
        if let Ok(mut slot) = self.con.lock() {
            *slot = Some(c.clone());
        }
        Ok((c, false))
    }
}

/// Runs `$call` with `$con` bound to the kept connection; a server
/// restarted since the last call broke it, so a failure on a kept
/// connection is followed by one attempt on a fresh one.
macro_rules! on_connection {
    ($store:expr, |$con:ident| $call:expr) => {{
        let (mut $con, kept) = $store.connection().await?;
        match $call.await {
            Ok(v) => Ok(v),
            Err(_) if kept => {
                $store.forget();
                let (mut $con, _) = $store.connection().await?;
                $call.await
            }
            Err(e) => {
                $store.forget();
                Err(e)
            }
        }
    }};
}

#[async_trait]
impl StoreControl for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn replication(&self) -> Result<store_report::Replication> {
        let describe = self.endpoint()?.describe();
        let state: RedisReplication =
            on_connection!(self, |con| replication::read_on(&mut con, &describe))?;
        Ok(store_report::Replication::Redis(message(state)))
    }

    async fn write_canary(&self, service: &str, marker: super::canary::Marker) -> Result<()> {
        on_connection!(self, |con| canary::write(&mut con, service, marker))
    }

    async fn read_canary(&self, service: &str) -> Result<Option<super::canary::Marker>> {
        on_connection!(self, |con| canary::read(&mut con, service))
    }

    fn forget(&self) {
        if let Ok(mut slot) = self.con.lock() {
            *slot = None;
        }
    }

    async fn fence(&self, _how: &FenceAction, _deadline: Duration) -> Result<Done> {
        control::fence(&mut self.connection().await?.0, &self.fence_memory).await
    }

    async fn unfence(&self, _deadline: Duration) -> Result<Done> {
        control::unfence(&mut self.connection().await?.0, &self.fence_memory).await
    }

    async fn catch_up(&self, to: Option<&StorePosition>, deadline: Duration) -> Result<Done> {
        let offset = match to.and_then(|p| p.kind.as_ref()) {
            Some(store_position::Kind::Redis(r)) => r.offset,
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "a Redis catch-up needs the fenced master's offset",
                ))
            }
        };
        control::catch_up(&mut self.connection().await?.0, offset, deadline).await
    }

    async fn promote(&self, _deadline: Duration) -> Result<Done> {
        control::promote(&mut self.connection().await?.0, &self.fence_memory).await
    }

    async fn post_check(&self, check: &PostCheckAction, _deadline: Duration) -> Result<Done> {
        control::post_check(&mut self.connection().await?.0, &check.service).await
    }

    async fn demote(&self, how: &RejoinAction, _deadline: Duration) -> Result<Done> {
        let mut con = self.connection().await?.0;
        if how.new_primary.is_empty() {
            // No address for the new master in the topology: it stays
            // fenced until failback.
            return control::fence(&mut con, &self.fence_memory).await;
        }
        // An old master that may hold writes the new one lacks: REPLICAOF
        // discards its dataset, so the dataset goes into the repository
        // first (tag diverged, source `<source>.diverged`). When that
        // fails it stays as it is (fenced) and the demotion fails.
        let kept = if how.keep_diverged && control::is_master(&mut con).await? {
            let spec = crate::engine::operation::SourceSpec::Redis {
                url: self.url.clone(),
                keys: Vec::new(),
            };
            let id = crate::stores::diverged_copy::keep_source(&self.keeper, spec, "demoted")
                .await
                .map_err(|e| {
                    e.context(
                        "its dataset could not be kept before REPLICAOF would discard it: it stays a fenced master, nothing is lost",
                    )
                })?;
            Some(id)
        } else {
            None
        };
        let mut done = control::rejoin(&mut con, &how.new_primary).await?;
        if let Some(id) = kept {
            done.detail = format!(
                "its dataset kept in snapshot {id} (tag diverged, source {}.diverged) first; {}",
                self.keeper.source, done.detail
            );
        }
        Ok(done)
    }

    async fn rebuild(
        &self,
        how: &RebuildAction,
        deadline: Duration,
        _tasks: &Tree,
    ) -> Result<Done> {
        control::follow(&mut self.connection().await?.0, &how.primary, deadline).await
    }
}

/// A replication offset, as actions report it.
pub fn at(offset: i64) -> StorePosition {
    StorePosition {
        kind: Some(store_position::Kind::Redis(RedisPosition { offset })),
    }
}

/// The wire form of a server's replication state.
fn message(state: RedisReplication) -> seawall_proto::v1::RedisReplication {
    match state {
        RedisReplication::Master { offset, replicas } => seawall_proto::v1::RedisReplication {
            master: true,
            offset,
            replicas: replicas
                .into_iter()
                .map(|r| RedisReplicaSeen {
                    address: r.address,
                    state: r.state,
                    offset: r.offset,
                    lag_bytes: r.lag_bytes,
                    lag_secs: r.lag_secs,
                })
                .collect(),
            ..Default::default()
        },
        RedisReplication::Replica {
            master,
            link,
            last_io_secs,
            offset,
        } => seawall_proto::v1::RedisReplication {
            master: false,
            offset,
            master_address: master,
            link,
            last_io_secs,
            replicas: Vec::new(),
        },
    }
}
