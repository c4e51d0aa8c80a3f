//! The store side of a failover: fence the old primary, wait for the
//! standby to catch up, promote it, prove it takes writes, and keep the
//! demoted side from taking any. Each function is idempotent: run twice
//! (a new leader repeating a step) it finds its work done and says so.

use crate::engine::canary;
use crate::engine::postgres::conn::query_error;
use seawall_common::{Error, ErrorKind, Result};
use std::time::{Duration, Instant};

/// What an action did, with its evidence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Done {
    /// The work was found done already.
    pub already: bool,
    /// What happened, in words.
    pub detail: String,
    /// PostgreSQL: the WAL position after the action.
    pub lsn: String,
    /// PostgreSQL: the timeline after the action.
    pub timeline: u32,
    /// Redis: the replication offset after the action.
    pub offset: i64,
}

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

async fn pg_position(client: &tokio_postgres::Client) -> Result<(String, u32)> {
    let row = client
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text,
                    (SELECT timeline_id FROM pg_control_checkpoint())::int8,
                    CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_walfile_name(pg_current_wal_lsn()) END",
            &[],
        )
        .await
        .map_err(|e| query_error("reading the WAL position", e))?;
    let lsn: Option<String> = row.get(0);
    // A primary's current timeline is in its WAL file name (the checkpoint
    // still names the old one right after a promotion).
    let file: String = row.get(2);
    let timeline = u32::from_str_radix(file.get(0..8).unwrap_or(""), 16)
        .unwrap_or(row.get::<_, i64>(1) as u32);
    Ok((lsn.unwrap_or_default(), timeline))
}

/// Makes a PostgreSQL primary refuse writes: read-only by default for every
/// new transaction, and every client session ended so none keeps writing.
/// Returns the WAL position it stopped at.
pub async fn pg_fence(client: &tokio_postgres::Client) -> Result<Done> {
    let already: bool = client
        .query_one(
            "SELECT current_setting('default_transaction_read_only') = 'on'",
            &[],
        )
        .await
        .map_err(|e| query_error("reading default_transaction_read_only", e))?
        .get(0);
    if !already {
        // One statement each: ALTER SYSTEM refuses the implicit
        // transaction of a multi-statement batch.
        for sql in [
            "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
        ] {
            client.batch_execute(sql).await.map_err(|e| {
                query_error(
                    "making the server read-only (the role needs superuser or ALTER SYSTEM)",
                    e,
                )
            })?;
        }
    }
    let ended: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
            &[],
        )
        .await
        .map_err(|e| query_error("ending client sessions", e))?
        .get(0);
    let (lsn, timeline) = pg_position(client).await?;
    Ok(Done {
        already,
        detail: format!(
            "read-only (default_transaction_read_only = on{}), {ended} client session(s) ended, WAL at {lsn}",
            if already { ", already" } else { "" }
        ),
        lsn,
        timeline,
        offset: 0,
    })
}

/// Waits until a standby has replayed `lsn`, for at most `deadline`.
pub async fn pg_catch_up(
    client: &tokio_postgres::Client,
    lsn: &str,
    deadline: Duration,
) -> Result<Done> {
    let started = Instant::now();
    loop {
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(),
                        coalesce(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), $1::text::pg_lsn), 0)::int8,
                        coalesce(pg_last_wal_replay_lsn()::text, '')",
                &[&lsn],
            )
            .await
            .map_err(|e| query_error("reading the replay position", e))?;
        let in_recovery: bool = row.get(0);
        let ahead: i64 = row.get(1);
        let replayed: String = row.get(2);
        if !in_recovery {
            let (now, timeline) = pg_position(client).await?;
            return Ok(Done {
                already: true,
                detail: format!("already promoted (at {now}): nothing to catch up"),
                lsn: now,
                timeline,
                offset: 0,
            });
        }
        if ahead >= 0 {
            return Ok(Done {
                detail: format!(
                    "replayed up to {replayed}, at or past the primary's last position {lsn}"
                ),
                lsn: replayed,
                ..Done::default()
            });
        }
        if started.elapsed() >= deadline {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!(
                    "the standby replayed only up to {replayed} within {deadline:?}, {} bytes short of the primary's last position {lsn} (replay paused? the link slow?)",
                    -ahead
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Promotes a PostgreSQL standby and waits until it takes writes.
pub async fn pg_promote(client: &tokio_postgres::Client, deadline: Duration) -> Result<Done> {
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| query_error("reading pg_is_in_recovery()", e))?
        .get(0);
    if in_recovery {
        let secs = deadline.as_secs().clamp(1, i32::MAX as u64) as i32;
        let promoted: bool = client
            .query_one("SELECT pg_promote(true, $1)", &[&secs])
            .await
            .map_err(|e| query_error("promoting (pg_promote)", e))?
            .get(0);
        if !promoted {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!("pg_promote did not finish within {secs} s: the server log says why"),
            ));
        }
    }
    // A read-only default left over from an earlier fence must not make
    // the new primary refuse the service's writes.
    let read_only: bool = client
        .query_one(
            "SELECT current_setting('default_transaction_read_only') = 'on'",
            &[],
        )
        .await
        .map_err(|e| query_error("reading default_transaction_read_only", e))?
        .get(0);
    if read_only {
        for sql in [
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
        ] {
            client
                .batch_execute(sql)
                .await
                .map_err(|e| query_error("making the promoted server writable", e))?;
        }
    }
    let (lsn, timeline) = pg_position(client).await?;
    Ok(Done {
        already: !in_recovery,
        detail: if in_recovery {
            format!("promoted: timeline {timeline}, writable at {lsn}")
        } else {
            format!("already a primary (timeline {timeline}, at {lsn})")
        },
        lsn,
        timeline,
        offset: 0,
    })
}

/// Writes and reads back a marker through the promoted server.
pub async fn pg_post_check(client: &tokio_postgres::Client, service: &str) -> Result<Done> {
    let marker = canary::Marker {
        seq: chrono::Utc::now().timestamp_millis().max(0) as u64,
        written_unix_ms: chrono::Utc::now().timestamp_millis(),
    };
    canary::pg_write(client, service, marker).await?;
    let seen = canary::pg_read(client, service).await?;
    if seen.map(|m| m.seq) < Some(marker.seq) {
        return Err(Error::new(
            ErrorKind::Io,
            "a marker written to the promoted server did not read back",
        ));
    }
    let (lsn, timeline) = pg_position(client).await?;
    Ok(Done {
        detail: format!(
            "wrote and read back canary {} (timeline {timeline}, {lsn})",
            marker.seq
        ),
        lsn,
        timeline,
        ..Done::default()
    })
}

/// The demoted PostgreSQL side: stays read-only, sessions ended.
pub async fn pg_rejoin(client: &tokio_postgres::Client) -> Result<Done> {
    pg_fence(client).await
}

type Con = redis::aio::MultiplexedConnection;

fn redis_error(what: &str, e: redis::RedisError) -> Error {
    Error::new(ErrorKind::Unreachable, format!("{what}: {e}"))
}

async fn redis_info(con: &mut Con) -> Result<crate::engine::replication::RedisReplication> {
    crate::engine::replication::redis_on(con, "the store").await
}

fn offset_of(state: &crate::engine::replication::RedisReplication) -> i64 {
    match state {
        crate::engine::replication::RedisReplication::Master { offset, .. } => *offset,
        crate::engine::replication::RedisReplication::Replica { offset, .. } => *offset,
    }
}

/// Ends a fence's write pause (best effort: Redis before 6.2 has none).
async fn unpause(con: &mut Con) {
    let _ = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async::<()>(con)
        .await;
}

/// Pauses writes on a Redis master for `pause`; returns its offset.
pub async fn redis_fence(con: &mut Con, pause: Duration) -> Result<Done> {
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis().max(1) as u64)
        .arg("WRITE")
        .query_async::<()>(con)
        .await
        .map_err(|e| redis_error("pausing writes (CLIENT PAUSE WRITE, Redis 6.2 or later)", e))?;
    let state = redis_info(con).await?;
    let offset = offset_of(&state);
    Ok(Done {
        detail: format!("writes paused for {pause:?}, offset {offset}"),
        offset,
        ..Done::default()
    })
}

/// Waits until a Redis replica has processed `offset`, for at most `deadline`.
pub async fn redis_catch_up(con: &mut Con, offset: i64, deadline: Duration) -> Result<Done> {
    let started = Instant::now();
    loop {
        let state = redis_info(con).await?;
        let at = offset_of(&state);
        if matches!(
            state,
            crate::engine::replication::RedisReplication::Master { .. }
        ) {
            return Ok(Done {
                already: true,
                detail: format!("already a master (offset {at}): nothing to catch up"),
                offset: at,
                ..Done::default()
            });
        }
        if at >= offset {
            return Ok(Done {
                detail: format!("reached offset {at}, at or past the master's {offset}"),
                offset: at,
                ..Done::default()
            });
        }
        if started.elapsed() >= deadline {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!(
                    "the replica reached only offset {at} within {deadline:?}, {} bytes short of the master's {offset}",
                    offset - at
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Promotes a Redis replica (`REPLICAOF NO ONE`).
pub async fn redis_promote(con: &mut Con) -> Result<Done> {
    let before = redis_info(con).await?;
    let already = matches!(
        before,
        crate::engine::replication::RedisReplication::Master { .. }
    );
    if !already {
        redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async::<()>(con)
            .await
            .map_err(|e| redis_error("promoting (REPLICAOF NO ONE)", e))?;
    }
    // A master must take writes: a pause left by a fence ends here (this
    // is also how a failover that promoted nothing unfences the old one).
    unpause(con).await;
    let offset = offset_of(&redis_info(con).await?);
    Ok(Done {
        already,
        detail: if already {
            format!("already a master (offset {offset})")
        } else {
            format!("promoted with REPLICAOF NO ONE at offset {offset}")
        },
        offset,
        ..Done::default()
    })
}

/// Writes and reads back a marker through the promoted Redis.
pub async fn redis_post_check(con: &mut Con, service: &str) -> Result<Done> {
    let now = chrono::Utc::now().timestamp_millis();
    let marker = canary::Marker {
        seq: now.max(0) as u64,
        written_unix_ms: now,
    };
    canary::redis_write(con, service, marker).await?;
    let seen = canary::redis_read(con, service).await?;
    if seen != Some(marker) {
        return Err(Error::new(
            ErrorKind::Io,
            "a marker written to the promoted Redis did not read back",
        ));
    }
    let offset = offset_of(&redis_info(con).await?);
    Ok(Done {
        detail: format!("wrote and read back canary {}", marker.seq),
        offset,
        ..Done::default()
    })
}

/// The demoted Redis side: a replica of the new master.
pub async fn redis_rejoin(con: &mut Con, master: &str) -> Result<Done> {
    let (host, port) = master.rsplit_once(':').ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{master:?} is not host:port"),
        )
    })?;
    let before = redis_info(con).await?;
    let already = matches!(&before, crate::engine::replication::RedisReplication::Replica { master: m, .. } if m == master);
    if !already {
        redis::cmd("REPLICAOF")
            .arg(host)
            .arg(port)
            .query_async::<()>(con)
            .await
            .map_err(|e| redis_error("turning the old master into a replica (REPLICAOF)", e))?;
        // Writes paused by the fence stay refused: a replica is read-only.
        unpause(con).await;
    }
    Ok(Done {
        already,
        detail: format!(
            "a replica of {master}{}",
            if already { " already" } else { "" }
        ),
        offset: offset_of(&redis_info(con).await?),
        ..Done::default()
    })
}

/// Failback's Redis half: a replica of `master`, waited for until its link
/// is up (Redis reports the link up once the first full sync is loaded).
pub async fn redis_follow(con: &mut Con, master: &str, deadline: Duration) -> Result<Done> {
    let started = Instant::now();
    let mut done = redis_rejoin(con, master).await?;
    loop {
        let state = redis_info(con).await?;
        if let crate::engine::replication::RedisReplication::Replica { link, offset, .. } = &state {
            if link == "up" {
                done.offset = *offset;
                done.detail = format!(
                    "{}, link up at offset {offset} after {:.1} s",
                    done.detail,
                    started.elapsed().as_secs_f64()
                );
                return Ok(done);
            }
        }
        if started.elapsed() >= deadline {
            return Err(Error::new(
                ErrorKind::Unreachable,
                format!("the replica's link to {master} is not up after {deadline:?} (its first sync still loading? the master unreachable from here?)"),
            ));
        }
        tokio::time::sleep(POLL * 5).await;
    }
}
