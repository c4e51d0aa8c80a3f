//! Where a PostgreSQL server stands in its replication: a primary and the
//! standbys streaming from it, or a standby and how far its replay trails
//! what it received. These are the figures the lag checks and the failover
//! gate read. A server that cannot be reached is an error, never "no lag".

use crate::engine::postgres::conn;
use seawall_common::{Error, Result};
use serde::Serialize;

/// A PostgreSQL server's replication state.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum PgReplication {
    /// Accepts writes; `standbys` stream from it.
    Primary {
        /// Its current WAL position.
        current_lsn: String,
        /// Standbys connected to it.
        standbys: Vec<PgStandby>,
    },
    /// In recovery.
    Standby {
        /// WAL received so far.
        receive_lsn: Option<String>,
        /// WAL replayed so far.
        replay_lsn: Option<String>,
        /// Received but not yet replayed, in bytes.
        replay_lag_bytes: i64,
        /// Seconds since the last replayed transaction was committed on
        /// the primary (grows while the primary is idle too).
        last_replay_age_secs: Option<f64>,
        /// Replay paused (`pg_wal_replay_pause()`).
        replay_paused: bool,
        /// The WAL receiver's status ("streaming"), if one runs.
        receiver: Option<String>,
    },
}

/// One standby as its primary sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PgStandby {
    /// Its `application_name`.
    pub name: String,
    /// Its address.
    pub client_addr: String,
    /// "streaming", "catchup", ...
    pub state: String,
    /// WAL positions it has been sent, written, flushed, replayed.
    pub sent_lsn: Option<String>,
    /// See `sent_lsn`.
    pub write_lsn: Option<String>,
    /// See `sent_lsn`.
    pub flush_lsn: Option<String>,
    /// See `sent_lsn`.
    pub replay_lsn: Option<String>,
    /// Bytes of WAL the primary has that the standby has not replayed.
    pub replay_lag_bytes: Option<i64>,
    /// Bytes not yet flushed on the standby (lost if both failed now).
    pub flush_lag_bytes: Option<i64>,
    /// The standby's last reply, seconds since the epoch.
    pub reply_time: Option<f64>,
    /// How long ago the newest WAL it has replayed was written on the
    /// primary (PostgreSQL's `replay_lag`; empty once it has caught up
    /// and the primary is idle).
    pub replay_lag_secs: Option<f64>,
}

fn query(e: tokio_postgres::Error) -> Error {
    conn::query_error("reading replication state", e)
}

/// Reads `dsn`'s replication state.
pub async fn read(dsn: &str) -> Result<PgReplication> {
    read_on(&conn::connect(dsn).await?).await
}

/// Reads the replication state of the server `client` is connected to.
pub async fn read_on(client: &tokio_postgres::Client) -> Result<PgReplication> {
    let standby: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(query)?
        .get(0);
    if standby {
        let row = client
            .query_one(
                "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
                        coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::int8,
                        extract(epoch from now() - pg_last_xact_replay_timestamp())::float8,
                        pg_is_wal_replay_paused(),
                        (SELECT status FROM pg_stat_wal_receiver LIMIT 1)",
                &[],
            )
            .await
            .map_err(query)?;
        return Ok(PgReplication::Standby {
            receive_lsn: row.get(0),
            replay_lsn: row.get(1),
            replay_lag_bytes: row.get::<_, i64>(2).max(0),
            last_replay_age_secs: row.get(3),
            replay_paused: row.get(4),
            receiver: row.get(5),
        });
    }
    let current: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(query)?
        .get(0);
    let rows = client
        .query(
            "SELECT coalesce(application_name, ''), coalesce(client_addr::text, 'local'), coalesce(state, ''),
                    sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::int8,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::int8,
                    extract(epoch from reply_time)::float8,
                    extract(epoch from replay_lag)::float8
             FROM pg_stat_replication ORDER BY application_name",
            &[],
        )
        .await
        .map_err(query)?;
    Ok(PgReplication::Primary {
        current_lsn: current,
        standbys: rows
            .iter()
            .map(|r| PgStandby {
                name: r.get(0),
                client_addr: r.get(1),
                state: r.get(2),
                sent_lsn: r.get(3),
                write_lsn: r.get(4),
                flush_lsn: r.get(5),
                replay_lsn: r.get(6),
                replay_lag_bytes: r.get(7),
                flush_lag_bytes: r.get(8),
                reply_time: r.get(9),
                replay_lag_secs: r.get(10),
            })
            .collect(),
    })
}
