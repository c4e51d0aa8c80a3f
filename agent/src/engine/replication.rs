//! Where a store stands in its replication: a PostgreSQL primary and the
//! standbys streaming from it, or a standby and how far its replay trails
//! what it received; a Redis master and its replicas, or a replica and its
//! link. These are the figures the lag checks and the failover gate read.
//! A store that cannot be reached is an error, never "no lag".

use crate::engine::postgres::conn;
use crate::engine::redis::{connect::Endpoint, RedisTls};
use seawall_common::{Error, ErrorKind, Result};
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
pub async fn postgres(dsn: &str) -> Result<PgReplication> {
    postgres_on(&conn::connect(dsn).await?).await
}

/// Reads the replication state of the server `client` is connected to.
pub async fn postgres_on(client: &tokio_postgres::Client) -> Result<PgReplication> {
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

/// A Redis server's replication state.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum RedisReplication {
    /// A master and its replicas.
    Master {
        /// Its replication offset.
        offset: i64,
        /// Replicas as it sees them.
        replicas: Vec<RedisReplica>,
    },
    /// A replica of `master`.
    Replica {
        /// Its master, host:port.
        master: String,
        /// "up" or "down".
        link: String,
        /// Seconds since the last interaction with the master.
        last_io_secs: Option<i64>,
        /// How far it has processed the master's stream.
        offset: i64,
    },
}

/// One replica as its master sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RedisReplica {
    /// host:port.
    pub address: String,
    /// "online", "wait_bgsave", ...
    pub state: String,
    /// Its acknowledged offset.
    pub offset: i64,
    /// The master's offset minus the replica's, in bytes.
    pub lag_bytes: i64,
    /// Seconds since its last acknowledgement.
    pub lag_secs: i64,
}

/// Reads `url`'s replication state (`INFO replication`).
pub async fn redis(url: &str, tls: &RedisTls) -> Result<RedisReplication> {
    let endpoint = Endpoint::new(url, tls)?;
    let mut con = endpoint.connection().await?;
    redis_on(&mut con, &endpoint.describe()).await
}

/// Reads the replication state of the Redis server `con` reaches
/// (`describe` names it in errors).
pub async fn redis_on(
    con: &mut redis::aio::MultiplexedConnection,
    describe: &str,
) -> Result<RedisReplication> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(con)
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Unreachable,
                format!("INFO replication on {describe}: {e}"),
            )
        })?;
    parse_redis_info(&info)
}

/// Parses `INFO replication`.
pub fn parse_redis_info(info: &str) -> Result<RedisReplication> {
    let fields: std::collections::HashMap<&str, &str> = info
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .collect();
    let int = |k: &str| fields.get(k).and_then(|v| v.parse::<i64>().ok());
    match fields.get("role").copied() {
        Some("master") => {
            let offset = int("master_repl_offset").unwrap_or(0);
            let mut replicas = Vec::new();
            for i in 0..int("connected_slaves").unwrap_or(0) {
                let Some(line) = fields.get(format!("slave{i}").as_str()) else {
                    continue;
                };
                let kv: std::collections::HashMap<&str, &str> =
                    line.split(',').filter_map(|p| p.split_once('=')).collect();
                let their = kv.get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
                replicas.push(RedisReplica {
                    address: format!(
                        "{}:{}",
                        kv.get("ip").unwrap_or(&""),
                        kv.get("port").unwrap_or(&"")
                    ),
                    state: kv.get("state").unwrap_or(&"").to_string(),
                    offset: their,
                    lag_bytes: (offset - their).max(0),
                    lag_secs: kv.get("lag").and_then(|v| v.parse().ok()).unwrap_or(0),
                });
            }
            Ok(RedisReplication::Master { offset, replicas })
        }
        Some("slave") => Ok(RedisReplication::Replica {
            master: format!(
                "{}:{}",
                fields.get("master_host").unwrap_or(&""),
                fields.get("master_port").unwrap_or(&"")
            ),
            link: fields
                .get("master_link_status")
                .unwrap_or(&"down")
                .to_string(),
            last_io_secs: int("master_last_io_seconds_ago").filter(|s| *s >= 0),
            offset: int("slave_repl_offset").unwrap_or(0),
        }),
        other => Err(Error::new(
            ErrorKind::Corrupt,
            format!("INFO replication names no role ({other:?}): is this a Redis server?"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_replication_is_read_for_both_roles() {
        let master = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=900,lag=1\r\nmaster_repl_offset:1000\r\n";
        match parse_redis_info(master).expect("master") {
            RedisReplication::Master { offset, replicas } => {
                assert_eq!(offset, 1000);
                assert_eq!(replicas[0].lag_bytes, 100);
                assert_eq!(replicas[0].address, "127.0.0.1:7001");
            }
            other => panic!("{other:?}"),
        }
        let replica = "role:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\nslave_repl_offset:42\r\n";
        match parse_redis_info(replica).expect("replica") {
            RedisReplication::Replica {
                link,
                last_io_secs,
                offset,
                ..
            } => {
                assert_eq!(link, "down");
                assert_eq!(last_io_secs, None);
                assert_eq!(offset, 42);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_redis_info("nothing").is_err());
    }
}
