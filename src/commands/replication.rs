//! `seawall check replication`: one store's place in its replication.

use crate::args::{Global, ReplicationCheckArgs};
use seawall_agent::stores::postgres::replication::{self as pg_replication, PgReplication};
use seawall_agent::stores::redis::replication::{self as redis_replication, RedisReplication};

/// Prints a PostgreSQL or Redis server's replication state.
pub async fn check(g: &Global, a: ReplicationCheckArgs) -> anyhow::Result<u8> {
    if let Some(dsn) = &a.dsn {
        let state = pg_replication::read(dsn).await?;
        if g.json {
            crate::output::json(&state)?;
            return Ok(0);
        }
        match state {
            PgReplication::Primary {
                current_lsn,
                standbys,
            } => {
                println!("primary at {current_lsn}, {} standby(s)", standbys.len());
                for s in standbys {
                    println!(
                        "  {} ({}) {}: replayed {}, {} bytes behind",
                        s.name,
                        s.client_addr,
                        s.state,
                        s.replay_lsn.unwrap_or_else(|| "-".into()),
                        s.replay_lag_bytes.unwrap_or(0)
                    );
                }
            }
            PgReplication::Standby {
                receive_lsn,
                replay_lsn,
                replay_lag_bytes,
                last_replay_age_secs,
                replay_paused,
                receiver,
            } => {
                println!(
                    "standby: received {}, replayed {} ({replay_lag_bytes} bytes to replay{}); WAL receiver {}; last replayed commit {}",
                    receive_lsn.unwrap_or_else(|| "-".into()),
                    replay_lsn.unwrap_or_else(|| "-".into()),
                    if replay_paused { ", replay PAUSED" } else { "" },
                    receiver.unwrap_or_else(|| "not running".into()),
                    last_replay_age_secs
                        .map(|s| format!("{s:.1} s ago"))
                        .unwrap_or_else(|| "unknown".into())
                );
            }
        }
        return Ok(0);
    }
    let url = a.url.as_deref().unwrap_or_default();
    let state = redis_replication::read(url, &a.tls.files()).await?;
    if g.json {
        crate::output::json(&state)?;
        return Ok(0);
    }
    match state {
        RedisReplication::Master { offset, replicas } => {
            println!("master at offset {offset}, {} replica(s)", replicas.len());
            for r in replicas {
                println!(
                    "  {} {}: {} bytes behind, last ack {} s ago",
                    r.address, r.state, r.lag_bytes, r.lag_secs
                );
            }
        }
        RedisReplication::Replica {
            master,
            link,
            last_io_secs,
            offset,
        } => println!(
            "replica of {master}: link {link}, offset {offset}, last contact {}",
            last_io_secs
                .map(|s| format!("{s} s ago"))
                .unwrap_or_else(|| "never".into())
        ),
    }
    Ok(0)
}
