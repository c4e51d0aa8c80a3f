//! Live stores under failover control, one provider per kind. Each kind
//! (self-managed PostgreSQL, Redis) implements [`StoreControl`]: what the
//! replication checks read of it (its replication state, its canaries) and
//! what a failover does to it (fence, unfence, catch up, promote, post-check,
//! demote, rebuild). The agent's probes and actions reach a source's store
//! only through [`open`], the one place that knows which kinds exist.
//!
//! Adding a kind is a provider module here and one arm in [`open`], one case
//! in the protos' `StorePosition` and `StoreReport.replication`, and its
//! side on the coordinator (docs/architecture.md, "Adding a store kind").

pub mod aurora;
pub mod canary;
pub mod checked_only;
pub mod diverged_copy;
pub mod elasticache;
pub mod postgres;
pub mod rds;
pub mod reach;
pub mod redis;

use crate::daemon::config::AgentConfig;
use crate::engine::operation::SourceSpec;
use async_trait::async_trait;
use seawall_common::tasks::Tree;
use seawall_common::{Error, ErrorKind, Result};
use seawall_proto::v1::{
    store_report, FenceAction, PostCheckAction, RebuildAction, RejoinAction, StorePosition,
};
use std::sync::Arc;
use std::time::Duration;

/// How often a wait looks again.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// What an action did, with its evidence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Done {
    /// The work was found done already.
    pub already: bool,
    /// What happened, in words.
    pub detail: String,
    /// Where the store stands after it (its kind's case of the contract's
    /// `StorePosition`).
    pub position: Option<StorePosition>,
    /// A demoted old primary: what it wrote that the new primary lacks.
    pub divergence: Option<seawall_proto::v1::Divergence>,
}

/// A live store of one kind: what the replication checks read and what a
/// failover does. Every action is idempotent (a new leader repeats the
/// step it found unfinished) and finishes within its deadline.
#[async_trait]
pub trait StoreControl: Send + Sync {
    /// Its kind's name, as the topology writes it.
    fn kind(&self) -> &'static str;

    /// Its replication state, for a probe's report.
    async fn replication(&self) -> Result<store_report::Replication>;

    /// What its cloud control plane last said of it (a managed store's
    /// state and lag metric); None for a self-managed store.
    fn managed(&self) -> Option<seawall_proto::v1::ManagedStore> {
        None
    }

    /// Writes `marker` for `service` (on a primary).
    async fn write_canary(&self, service: &str, marker: canary::Marker) -> Result<()>;

    /// The newest marker of `service` the store holds.
    async fn read_canary(&self, service: &str) -> Result<Option<canary::Marker>>;

    /// Drops a kept connection (it failed or hung; the next call makes one).
    fn forget(&self);

    /// Stops the store taking writes; reports where it stopped.
    async fn fence(&self, how: &FenceAction, deadline: Duration) -> Result<Done>;

    /// Lifts a fence: the store takes writes again.
    async fn unfence(&self, deadline: Duration) -> Result<Done>;

    /// Waits until a standby has reached `to`.
    async fn catch_up(&self, to: Option<&StorePosition>, deadline: Duration) -> Result<Done>;

    /// Makes a standby the primary and waits until it takes writes.
    async fn promote(&self, deadline: Duration) -> Result<Done>;

    /// Proves a promoted store takes writes (and passes its checks).
    async fn post_check(&self, check: &PostCheckAction, deadline: Duration) -> Result<Done>;

    /// Keeps a demoted primary from taking writes (a replica of the new
    /// primary where the kind can follow at once).
    async fn demote(&self, how: &RejoinAction, deadline: Duration) -> Result<Done>;

    /// Makes the store a standby of the primary `how` names and waits until
    /// it follows; long work runs in `tasks` so a deadline does not cut it.
    async fn rebuild(&self, how: &RebuildAction, deadline: Duration, tasks: &Tree) -> Result<Done>;
}

/// The store of the agent's source `name`.
pub fn open(config: &AgentConfig, name: &str) -> Result<Arc<dyn StoreControl>> {
    let source = config
        .sources
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "this agent has no source {name:?}: the coordinator's topology names a source its agent.toml lacks"
                ),
            )
        })?;
    match &source.kind {
        SourceSpec::Postgres { dsn, pg_bin, .. } => match (&source.rds, &source.aurora) {
            (Some(instance), _) => Ok(Arc::new(rds::RdsPostgresStore::new(
                config, source, dsn, pg_bin, instance,
            ))),
            (None, Some(cluster)) => Ok(Arc::new(aurora::open(
                config, source, dsn, pg_bin, cluster,
            ))),
            (None, None) => Ok(Arc::new(postgres::PostgresStore::new(
                config, source, dsn, pg_bin,
            ))),
        },
        SourceSpec::Redis { url, .. } => match &source.elasticache {
            Some(group) => Ok(Arc::new(elasticache::open(
                config,
                &source.name,
                url,
                group,
            ))),
            None => Ok(Arc::new(redis::RedisStore::new(config, &source.name, url))),
        },
        SourceSpec::Files { .. } => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{name} is a files source: it has no replication to check and nothing to fence or promote (name a postgres or redis source)"
            ),
        )),
    }
}

/// `host:port` of a store's address.
pub(crate) fn host_port(address: &str) -> Result<(String, u16)> {
    address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{address:?} is not host:port (the store's address in the topology)"),
            )
        })
}
