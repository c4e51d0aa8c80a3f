//! The self-managed PostgreSQL provider: a server the agent reaches by a
//! DSN and, for a stop-fence and failback, controls on its host. Probes
//! keep one connection (a probe every few seconds must not cost a
//! connection each time); actions open the provider afresh, so each runs on
//! a fresh connection (a kept one may be the one the fence just ended).

pub mod canary;
pub mod control;
pub mod diverged;
pub mod fence;
pub mod peer;
pub mod rebuild;
pub mod replication;
pub mod server;

use super::{Done, StoreControl};
use crate::daemon::config::{AgentConfig, SourceConfig};
use crate::engine::postgres::check::{check_postgres, ChecksFile, Depth};
use crate::engine::postgres::conn;
use crate::engine::postgres::tools::PgTools;
use async_trait::async_trait;
use rebuild::pg_rebuild;
use replication::PgReplication;
use seawall_common::tasks::Tree;
use seawall_common::{Error, ErrorKind, Result};
use seawall_proto::v1::{
    store_position, store_report, FenceAction, PostCheckAction, PostgresPosition,
    PostgresReplication, PostgresStandby, RebuildAction, RejoinAction, StorePosition,
};
use server::{memory_path, start_server, stopped_by_fence, Server};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One PostgreSQL server of the agent's sources.
pub struct PostgresStore {
    dsn: String,
    pg_bin: Option<PathBuf>,
    server: Server,
    keeper: crate::stores::diverged_copy::Keeper,
    client: Mutex<Option<Arc<tokio_postgres::Client>>>,
}

impl PostgresStore {
    /// The server of `source` (its `dsn`, its programs in `pg_bin`).
    pub fn new(
        config: &AgentConfig,
        source: &SourceConfig,
        dsn: &str,
        pg_bin: &Option<PathBuf>,
    ) -> PostgresStore {
        PostgresStore {
            dsn: dsn.to_string(),
            pg_bin: pg_bin.clone(),
            server: Server {
                dsn: dsn.to_string(),
                control: source.server.clone(),
                tools: PgTools {
                    bin_dir: pg_bin.clone(),
                },
                memory: memory_path(&config.state_dir, &source.name),
            },
            keeper: crate::stores::diverged_copy::Keeper::of(config, &source.name),
            client: Mutex::new(None),
        }
    }

    /// The kept connection, or a new one.
    async fn client(&self) -> Result<Arc<tokio_postgres::Client>> {
        let kept = self
            .client
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .filter(|c| !c.is_closed());
        if let Some(c) = kept {
            return Ok(c);
        }
        let client = Arc::new(conn::connect(&self.dsn).await?);
        // Where its data lives, kept while it answers: a server that dies
        // can still be fenced (standby.signal written into its directory)
        // although no fence or rebuild ran while it was up.
        match server::facts(&client).await {
            Ok(facts) => server::remember(&self.server.memory, &facts),
            Err(e) => tracing::debug!(error = %e, "the server's data directory is not known"),
        }
        if let Ok(mut slot) = self.client.lock() {
            *slot = Some(client.clone());
        }
        Ok(client)
    }
}

#[async_trait]
impl StoreControl for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn replication(&self) -> Result<store_report::Replication> {
        let client = self.client().await?;
        match replication::read_on(&client).await {
            Ok(state) => Ok(store_report::Replication::Postgres(message(state))),
            Err(e) => {
                self.forget();
                Err(e)
            }
        }
    }

    async fn write_canary(&self, service: &str, marker: super::canary::Marker) -> Result<()> {
        canary::write(&*self.client().await?, service, marker).await
    }

    async fn read_canary(&self, service: &str) -> Result<Option<super::canary::Marker>> {
        canary::read(&*self.client().await?, service).await
    }

    fn forget(&self) {
        if let Ok(mut slot) = self.client.lock() {
            *slot = None;
        }
    }

    async fn fence(&self, _how: &FenceAction, deadline: Duration) -> Result<Done> {
        // The kept connection is about to end with the server.
        self.forget();
        fence::fence(&self.server, deadline).await
    }

    async fn unfence(&self, deadline: Duration) -> Result<Done> {
        // A server the fence stopped starts again as the primary it was; a
        // standby is promoted.
        fence::lift(&self.server, deadline).await?;
        control::promote(&*self.client().await?, deadline).await
    }

    async fn catch_up(&self, to: Option<&StorePosition>, deadline: Duration) -> Result<Done> {
        let lsn = match to.and_then(|p| p.kind.as_ref()) {
            Some(store_position::Kind::Postgres(p)) => p.lsn.as_str(),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "a PostgreSQL catch-up needs the fenced primary's WAL position",
                ))
            }
        };
        control::catch_up(&*self.client().await?, lsn, deadline).await
    }

    async fn promote(&self, deadline: Duration) -> Result<Done> {
        if stopped_by_fence(&self.server) {
            start_server(&self.server, deadline).await?;
        }
        control::promote(&*self.client().await?, deadline).await
    }

    async fn post_check(&self, check: &PostCheckAction, _deadline: Duration) -> Result<Done> {
        let mut done = control::post_check(&*self.client().await?, &check.service).await?;
        if check.check_file.is_empty() {
            return Ok(done);
        }
        let checks = ChecksFile::load(Path::new(&check.check_file))?;
        let tools = PgTools {
            bin_dir: self.pg_bin.clone(),
        };
        let report = check_postgres(&self.dsn, &checks, Depth::Counted, &tools).await?;
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        if !failed.is_empty() {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "the check file {} fails on the promoted server: {}",
                    check.check_file,
                    failed.join("; ")
                ),
            ));
        }
        done.detail.push_str(&format!(
            "; check file {}: {} check(s) passed",
            check.check_file,
            report.checks.len()
        ));
        Ok(done)
    }

    async fn demote(&self, how: &RejoinAction, deadline: Duration) -> Result<Done> {
        self.forget();
        let fenced = fence::fence(&self.server, deadline).await?;
        // Stopped now (unless a running standby already): what it wrote
        // that the new primary lacks, for the failover's measured RPO.
        let divergence = match how.new_primary.as_str() {
            "" => None,
            at => diverged::since_promotion(&self.server, &self.keeper.source, at).await,
        };
        let mut done = if how.stay_stopped {
            Done {
                detail: format!(
                    "stays down until failback (fence = \"stop\"): {}",
                    fenced.detail
                ),
                ..fenced
            }
        } else {
            fence::start_standby(&self.server, deadline).await?
        };
        done.divergence = divergence;
        Ok(done)
    }

    async fn rebuild(&self, how: &RebuildAction, deadline: Duration, tasks: &Tree) -> Result<Done> {
        // Checked before anything is stopped.
        let peer = peer::peer(&self.server, &self.keeper.source, &how.primary)?;
        let opts = rebuild::RebuildOptions {
            server: self.server.clone(),
            peer,
            rewind_only: how.rewind_only,
            deadline,
            keeper: self.keeper.clone(),
        };
        // Its own task: a rebuild cut short half-way (the reply's deadline)
        // would leave a stopped server behind; it goes on, and a repeated
        // request waits for it.
        tasks
            .spawn_to_end(async move { pg_rebuild(&opts).await })
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("the rebuild stopped: {e}")))?
    }
}

/// A WAL position and its timeline (0: not read), as actions report it.
pub fn at(lsn: String, timeline: u32) -> StorePosition {
    StorePosition {
        kind: Some(store_position::Kind::Postgres(PostgresPosition {
            lsn,
            timeline,
        })),
    }
}

/// The wire form of a server's replication state.
fn message(state: PgReplication) -> PostgresReplication {
    match state {
        PgReplication::Primary {
            current_lsn,
            standbys,
        } => PostgresReplication {
            in_recovery: false,
            current_lsn,
            standbys: standbys
                .into_iter()
                .map(|s| PostgresStandby {
                    name: s.name,
                    client_addr: s.client_addr,
                    state: s.state,
                    sent_lsn: s.sent_lsn.unwrap_or_default(),
                    flush_lsn: s.flush_lsn.unwrap_or_default(),
                    replay_lsn: s.replay_lsn.unwrap_or_default(),
                    replay_lag_bytes: s.replay_lag_bytes,
                    flush_lag_bytes: s.flush_lag_bytes,
                    reply_unix_secs: s.reply_time,
                    replay_lag_secs: s.replay_lag_secs,
                })
                .collect(),
            ..Default::default()
        },
        PgReplication::Standby {
            receive_lsn,
            replay_lsn,
            replay_lag_bytes,
            last_replay_age_secs,
            replay_paused,
            receiver,
        } => PostgresReplication {
            in_recovery: true,
            receive_lsn: receive_lsn.unwrap_or_default(),
            replay_lsn: replay_lsn.unwrap_or_default(),
            replay_lag_bytes,
            last_replay_age_secs,
            replay_paused,
            receiver: receiver.unwrap_or_default(),
            ..Default::default()
        },
    }
}
