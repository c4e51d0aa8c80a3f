//! The RDS for PostgreSQL provider (`kind = "rds-postgres"` in agent.toml):
//! the instance's SQL side is the self-managed provider's (replication
//! figures, canaries, catch-up, post-check through the DSN), its control
//! side is RDS's API. The fence takes LOGIN from the application roles
//! (`fence`), a promotion is `PromoteReadReplica` waited for until the
//! server leaves recovery, and a demoted old primary stays locked out (an
//! RDS instance cannot start following another; failback makes a new read
//! replica). docs/operations.md lists the calls each step makes.

pub mod fence;
pub mod parting;
pub mod rebuild;
pub mod sweep;
pub mod view;

use super::postgres::{control, PostgresStore};
use super::{Done, StoreControl};
use crate::cloud::rds::config::RdsInstance;
use crate::cloud::view::View;
use crate::daemon::config::{AgentConfig, SourceConfig};
use crate::engine::postgres::conn::{self, query_error};
use async_trait::async_trait;
use seawall_common::tasks::Tree;
use seawall_common::{Error, ErrorKind, Result};
use seawall_proto::v1::{
    store_report, FenceAction, ManagedStore, PostCheckAction, RebuildAction, RejoinAction,
    StorePosition,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use view::RdsPlane;

/// How often a promotion's wait asks RDS again (its API is rate-limited).
const API_POLL: Duration = Duration::from_secs(1);
/// How often it asks the server whether it left recovery.
const SQL_POLL: Duration = Duration::from_millis(50);

/// One RDS for PostgreSQL instance of the agent's sources.
pub struct RdsPostgresStore {
    sql: PostgresStore,
    dsn: String,
    instance: RdsInstance,
    plane: Arc<RdsPlane>,
    view: Arc<View>,
}

impl RdsPostgresStore {
    /// The instance of `source` (its DSN, its RDS settings).
    pub fn new(
        config: &AgentConfig,
        source: &SourceConfig,
        dsn: &str,
        pg_bin: &Option<std::path::PathBuf>,
        instance: &RdsInstance,
    ) -> RdsPostgresStore {
        let plane = Arc::new(RdsPlane::new(instance));
        RdsPostgresStore {
            sql: PostgresStore::new(config, source, dsn, pg_bin),
            dsn: dsn.to_string(),
            instance: instance.clone(),
            plane: plane.clone(),
            view: View::new(plane),
        }
    }

    /// A connection of its own (an action must not share the probes' one,
    /// which the fence may end).
    async fn fresh(&self) -> Result<tokio_postgres::Client> {
        conn::connect(&self.dsn).await
    }
}

async fn in_recovery(client: &tokio_postgres::Client) -> Result<bool> {
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| query_error("reading pg_is_in_recovery()", e))
}

async fn replayed(client: &tokio_postgres::Client) -> Result<String> {
    client
        .query_one("SELECT coalesce(pg_last_wal_replay_lsn()::text, '')", &[])
        .await
        .map(|r| r.get(0))
        .map_err(|e| query_error("reading the replayed position", e))
}

#[async_trait]
impl StoreControl for RdsPostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn replication(&self) -> Result<store_report::Replication> {
        self.sql.replication().await
    }

    fn managed(&self) -> Option<ManagedStore> {
        self.view.newest()
    }

    async fn write_canary(&self, service: &str, marker: super::canary::Marker) -> Result<()> {
        self.sql.write_canary(service, marker).await
    }

    async fn read_canary(&self, service: &str) -> Result<Option<super::canary::Marker>> {
        self.sql.read_canary(service).await
    }

    fn forget(&self) {
        self.sql.forget();
    }

    async fn fence(&self, _how: &FenceAction, deadline: Duration) -> Result<Done> {
        self.sql.forget();
        let client = self.fresh().await?;
        if in_recovery(&client).await? {
            let (lsn, timeline) = control::position(&client).await?;
            return Ok(Done {
                already: true,
                detail: format!(
                    "{} is a read replica: it takes no writes (replayed up to {lsn})",
                    self.instance.instance
                ),
                position: Some(super::postgres::at(lsn, timeline)),
                ..Done::default()
            });
        }
        let mut done = fence::lock_out(&client, &self.instance.app_roles, deadline).await?;
        // After the lock-out: the catch-up waits for every write made
        // before it.
        let (lsn, timeline) = control::position(&client).await?;
        done.detail = format!(
            "{} fenced: {}; WAL at {lsn} (timeline {timeline})",
            self.instance.instance, done.detail
        );
        done.position = Some(super::postgres::at(lsn, timeline));
        Ok(done)
    }

    async fn unfence(&self, _deadline: Duration) -> Result<Done> {
        let client = self.fresh().await?;
        if in_recovery(&client).await? {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "{} is a read replica: it cannot take writes, so there is no fence to lift (promote it instead)",
                    self.instance.instance
                ),
            ));
        }
        let words = fence::let_in(&client, &self.instance.app_roles).await?;
        let (lsn, timeline) = control::position(&client).await?;
        Ok(Done {
            detail: format!("{}: {words}", self.instance.instance),
            position: Some(super::postgres::at(lsn, timeline)),
            ..Done::default()
        })
    }

    async fn catch_up(&self, to: Option<&StorePosition>, deadline: Duration) -> Result<Done> {
        self.sql.catch_up(to, deadline).await
    }

    async fn promote(&self, deadline: Duration) -> Result<Done> {
        let started = Instant::now();
        let client = self.fresh().await?;
        let was_replica = in_recovery(&client).await?;
        let rds = self.plane.rds().await?;
        let mut asked = String::new();
        if was_replica {
            // Where it parted: recorded on it once promoted, for the old
            // primary's demotion to measure what it holds past it.
            let parted_at = replayed(&client).await?;
            match rds.promote().await {
                Ok(()) => asked = "PromoteReadReplica accepted".into(),
                // Asked already (a repeated step): the wait below decides.
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    asked = format!(
                        "PromoteReadReplica refused ({e}); waiting for the promotion under way"
                    )
                }
                Err(e) => return Err(e),
            }
            // The server is asked often (its promotion ends the outage),
            // RDS once per API_POLL (its API is rate-limited), and at once
            // when the server has just left recovery.
            let mut status = String::new();
            let mut asked_rds: Option<Instant> = None;
            let mut seen_promoted = false;
            loop {
                let promoted = !in_recovery(&client).await?;
                let due = asked_rds.is_none_or(|at| at.elapsed() >= API_POLL)
                    || (promoted && !seen_promoted);
                seen_promoted = promoted;
                if due {
                    if let Ok(s) = rds.describe().await {
                        status = s.status;
                    }
                    asked_rds = Some(Instant::now());
                    if promoted && status == "available" {
                        break;
                    }
                }
                if started.elapsed() >= deadline {
                    return Err(Error::new(
                        ErrorKind::Unreachable,
                        format!(
                            "{} was not promoted within {deadline:?}: {asked}; RDS says {status:?} and the server is {} (the RDS console's events for the instance say why)",
                            self.instance.instance,
                            if in_recovery(&client).await.unwrap_or(true) { "still in recovery" } else { "out of recovery" }
                        ),
                    ));
                }
                tokio::time::sleep(SQL_POLL.min(deadline.saturating_sub(started.elapsed()))).await;
            }
            let (_, timeline) = control::position(&client).await?;
            parting::record(&client, timeline, &parted_at).await?;
        }
        // Its roles came from the old primary, fenced before the catch-up:
        // LOGIN is given back here, on the new primary only.
        let roles = fence::let_in(&client, &self.instance.app_roles).await?;
        let (lsn, timeline) = control::position(&client).await?;
        Ok(Done {
            already: !was_replica,
            detail: if was_replica {
                format!(
                    "{}: {asked}, available and out of recovery after {:.1} s (backup retention {} days); {roles}; timeline {timeline}, writable at {lsn}",
                    self.instance.instance,
                    started.elapsed().as_secs_f64(),
                    self.instance.backup_retention_days
                )
            } else {
                format!(
                    "{} is a primary already (timeline {timeline}, at {lsn}); {roles}",
                    self.instance.instance
                )
            },
            position: Some(super::postgres::at(lsn, timeline)),
            divergence: None,
        })
    }

    async fn post_check(&self, check: &PostCheckAction, deadline: Duration) -> Result<Done> {
        self.sql.post_check(check, deadline).await
    }

    async fn demote(&self, how: &RejoinAction, deadline: Duration) -> Result<Done> {
        self.sql.forget();
        let client = self.fresh().await?;
        if in_recovery(&client).await? {
            return Ok(Done {
                already: true,
                detail: format!("{} is a read replica already", self.instance.instance),
                ..Done::default()
            });
        }
        // Its end of WAL before the fence's own catalog writes.
        let (end, _) = control::position(&client).await?;
        let fenced = fence::lock_out(&client, &self.instance.app_roles, deadline).await?;
        let divergence = match how.new_primary.as_str() {
            "" => None,
            at => Some(match self.parting_on(at).await {
                Ok(Some(parted_at)) => parting::divergence(&parted_at, &end),
                Ok(None) => seawall_proto::v1::Divergence {
                    error: format!("the new primary at {at} has no seawall.rds_partings row (promoted by hand?)"),
                    ..Default::default()
                },
                Err(e) => seawall_proto::v1::Divergence {
                    error: e.to_string(),
                    ..Default::default()
                },
            }),
        };
        Ok(Done {
            already: fenced.already,
            detail: format!(
                "{} stays fenced until failback (an RDS instance cannot follow another; failback makes a new read replica): {}",
                self.instance.instance, fenced.detail
            ),
            position: Some(super::postgres::at(end, 0)),
            divergence,
        })
    }

    async fn rebuild(&self, how: &RebuildAction, deadline: Duration, tasks: &Tree) -> Result<Done> {
        if how.primary_instance.is_empty() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "the primary's RDS instance is not known (its agent has not reported RDS's view of it yet): {} cannot be made its read replica; `seawall replication` shows when it has",
                    self.instance.instance
                ),
            ));
        }
        self.sql.forget();
        let job = rebuild::RebuildRds {
            rds: self.plane.rds().await?.clone(),
            instance: self.instance.clone(),
            dsn: self.dsn.clone(),
            primary: how.primary_instance.clone(),
            deadline,
        };
        // Its own task: a rename left half-done by a cut reply would leave
        // the service without its standby's name; a repeat waits for it.
        tasks
            .spawn_to_end(async move { rebuild::rebuild(&job).await })
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("the rebuild stopped: {e}")))?
    }
}

impl RdsPostgresStore {
    /// The parting the new primary at `address` recorded at its promotion
    /// (reached with this source's user and TLS settings: a replica has
    /// its primary's roles).
    async fn parting_on(&self, address: &str) -> Result<Option<String>> {
        let (host, port) = super::host_port(address)?;
        let (dsn, password) = conn::elsewhere(&self.dsn, &host, port)?;
        let dsn = match password {
            Some(p) => format!("{dsn} password={}", conn::conninfo_quote(&p)),
            None => dsn,
        };
        let client = conn::connect(&dsn).await?;
        parting::newest(&client).await
    }
}
