//! PostgreSQL's side of a failover on a live connection: wait for the
//! standby to catch up, promote it and prove it takes writes (the fence,
//! which stops the server, is in `fence`). Each function is idempotent: run twice
//! (a new leader repeating a step) it finds its work done and says so.

use super::canary;
use crate::engine::postgres::conn::query_error;
use crate::stores::canary::Marker;
use crate::stores::{Done, POLL};
use seawall_common::{Error, ErrorKind, Result};
use std::time::{Duration, Instant};

/// A server's WAL position (replayed, on a standby) and timeline.
pub(crate) async fn position(client: &tokio_postgres::Client) -> Result<(String, u32)> {
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

/// Waits until a standby has replayed `lsn`, for at most `deadline`.
pub async fn catch_up(
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
            let (now, timeline) = position(client).await?;
            return Ok(Done {
                already: true,
                detail: format!("already promoted (at {now}): nothing to catch up"),
                position: Some(super::at(now, timeline)),
                divergence: None,
            });
        }
        if ahead >= 0 {
            return Ok(Done {
                detail: format!(
                    "replayed up to {replayed}, at or past the primary's last position {lsn}"
                ),
                position: Some(super::at(replayed, 0)),
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
pub async fn promote(client: &tokio_postgres::Client, deadline: Duration) -> Result<Done> {
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
    let (lsn, timeline) = position(client).await?;
    Ok(Done {
        already: !in_recovery,
        detail: if in_recovery {
            format!("promoted: timeline {timeline}, writable at {lsn}")
        } else {
            format!("already a primary (timeline {timeline}, at {lsn})")
        },
        position: Some(super::at(lsn, timeline)),
        divergence: None,
    })
}

/// Writes and reads back a marker through the promoted server.
pub async fn post_check(client: &tokio_postgres::Client, service: &str) -> Result<Done> {
    let marker = Marker {
        seq: chrono::Utc::now().timestamp_millis().max(0) as u64,
        written_unix_ms: chrono::Utc::now().timestamp_millis(),
    };
    canary::write(client, service, marker).await?;
    let seen = canary::read(client, service).await?;
    if seen.map(|m| m.seq) < Some(marker.seq) {
        return Err(Error::new(
            ErrorKind::Io,
            "a marker written to the promoted server did not read back",
        ));
    }
    let (lsn, timeline) = position(client).await?;
    Ok(Done {
        detail: format!(
            "wrote and read back canary {} (timeline {timeline}, {lsn})",
            marker.seq
        ),
        position: Some(super::at(lsn, timeline)),
        ..Done::default()
    })
}
