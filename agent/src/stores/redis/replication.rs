//! Where a Redis server stands in its replication: a master and its
//! replicas, or a replica and its link (`INFO replication`). A server that
//! cannot be reached is an error, never "no lag".

use crate::engine::redis::{connect::Endpoint, RedisTls};
use seawall_common::{Error, ErrorKind, Result};
use serde::Serialize;

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
pub async fn read(url: &str, tls: &RedisTls) -> Result<RedisReplication> {
    let endpoint = Endpoint::new(url, tls)?;
    let mut con = endpoint.connection().await?;
    read_on(&mut con, &endpoint.describe()).await
}

/// Reads the replication state of the Redis server `con` reaches
/// (`describe` names it in errors).
pub async fn read_on(
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
    parse_info(&info)
}

/// Parses `INFO replication`.
pub fn parse_info(info: &str) -> Result<RedisReplication> {
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
        match parse_info(master).expect("master") {
            RedisReplication::Master { offset, replicas } => {
                assert_eq!(offset, 1000);
                assert_eq!(replicas[0].lag_bytes, 100);
                assert_eq!(replicas[0].address, "127.0.0.1:7001");
            }
            other => panic!("{other:?}"),
        }
        let replica = "role:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\nslave_repl_offset:42\r\n";
        match parse_info(replica).expect("replica") {
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
        assert!(parse_info("nothing").is_err());
    }
}
