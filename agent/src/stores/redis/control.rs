//! Redis's side of a failover: fence the old master (`fence`), wait for
//! the replica to reach its offset, promote it (`REPLICAOF NO ONE`), prove
//! it takes writes, and make the demoted master a replica of the new one.
//! Each function is idempotent.

use super::canary;
use super::fence as durable;
use super::replication::RedisReplication;
use crate::stores::canary::Marker;
use crate::stores::{Done, POLL};
use seawall_common::{Error, ErrorKind, Result};
use std::path::Path;
use std::time::{Duration, Instant};

type Con = redis::aio::MultiplexedConnection;

fn redis_error(what: &str, e: redis::RedisError) -> Error {
    Error::new(ErrorKind::Unreachable, format!("{what}: {e}"))
}

async fn redis_info(con: &mut Con) -> Result<RedisReplication> {
    super::replication::read_on(con, "the store").await
}

fn offset_of(state: &RedisReplication) -> i64 {
    match state {
        RedisReplication::Master { offset, .. } => *offset,
        RedisReplication::Replica { offset, .. } => *offset,
    }
}

/// Ends a write pause an older agent's fence left (best effort: Redis
/// before 6.2 has none).
async fn unpause(con: &mut Con) {
    let _ = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async::<()>(con)
        .await;
}

/// Fences a Redis master for good; returns its offset.
pub async fn fence(con: &mut Con, memory: &Path) -> Result<Done> {
    let (already, how) = durable::fence(con, memory).await?;
    let state = redis_info(con).await?;
    let offset = offset_of(&state);
    Ok(Done {
        already,
        detail: format!("{how}; offset {offset}"),
        position: Some(super::at(offset)),
        divergence: None,
    })
}

/// Lifts a fence: the master takes writes again.
pub async fn unfence(con: &mut Con, memory: &Path) -> Result<Done> {
    promote(con, memory).await
}

/// Waits until a Redis replica has processed `offset`, for at most `deadline`.
pub async fn catch_up(con: &mut Con, offset: i64, deadline: Duration) -> Result<Done> {
    let started = Instant::now();
    loop {
        let state = redis_info(con).await?;
        let at = offset_of(&state);
        if matches!(state, RedisReplication::Master { .. }) {
            return Ok(Done {
                already: true,
                detail: format!("already a master (offset {at}): nothing to catch up"),
                position: Some(super::at(at)),
                divergence: None,
            });
        }
        if at >= offset {
            return Ok(Done {
                detail: format!("reached offset {at}, at or past the master's {offset}"),
                position: Some(super::at(at)),
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

/// Promotes a Redis replica (`REPLICAOF NO ONE`), kept over a restart.
pub async fn promote(con: &mut Con, memory: &Path) -> Result<Done> {
    let before = redis_info(con).await?;
    let already = matches!(before, RedisReplication::Master { .. });
    if !already {
        redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async::<()>(con)
            .await
            .map_err(|e| redis_error("promoting (REPLICAOF NO ONE)", e))?;
    }
    // A master must take writes: a fence left on it (it was fenced as an
    // old primary once, or a failover that promoted nothing unfences the
    // old one here) ends.
    unpause(con).await;
    let lifted = durable::lift(con, memory).await?;
    let kept = if already && lifted.is_none() {
        String::new()
    } else {
        format!(", {}", durable::persist(con).await)
    };
    let offset = offset_of(&redis_info(con).await?);
    Ok(Done {
        already: already && lifted.is_none(),
        detail: format!(
            "{}{}{kept}",
            if already {
                format!("already a master (offset {offset})")
            } else {
                format!("promoted with REPLICAOF NO ONE at offset {offset}")
            },
            lifted.map(|l| format!("; {l}")).unwrap_or_default()
        ),
        position: Some(super::at(offset)),
        divergence: None,
    })
}

/// Writes and reads back a marker through the promoted Redis.
pub async fn post_check(con: &mut Con, service: &str) -> Result<Done> {
    let now = chrono::Utc::now().timestamp_millis();
    let marker = Marker {
        seq: now.max(0) as u64,
        written_unix_ms: now,
    };
    canary::write(con, service, marker).await?;
    let seen = canary::read(con, service).await?;
    if seen != Some(marker) {
        return Err(Error::new(
            ErrorKind::Io,
            "a marker written to the promoted Redis did not read back",
        ));
    }
    let offset = offset_of(&redis_info(con).await?);
    Ok(Done {
        detail: format!("wrote and read back canary {}", marker.seq),
        position: Some(super::at(offset)),
        ..Done::default()
    })
}

/// Whether the server is a master now.
pub async fn is_master(con: &mut Con) -> Result<bool> {
    Ok(matches!(
        redis_info(con).await?,
        RedisReplication::Master { .. }
    ))
}

/// The demoted Redis side: a replica of the new master.
pub async fn rejoin(con: &mut Con, master: &str) -> Result<Done> {
    let (host, port) = master.rsplit_once(':').ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{master:?} is not host:port"),
        )
    })?;
    let before = redis_info(con).await?;
    let already = matches!(&before, RedisReplication::Replica { master: m, .. } if m == master);
    if !already {
        redis::cmd("REPLICAOF")
            .arg(host)
            .arg(port)
            .query_async::<()>(con)
            .await
            .map_err(|e| redis_error("turning the old master into a replica (REPLICAOF)", e))?;
        // Writes stay refused: a replica is read-only (and its fence stays).
        unpause(con).await;
    }
    let kept = if already {
        String::new()
    } else {
        format!(", {}", durable::persist(con).await)
    };
    Ok(Done {
        already,
        detail: format!(
            "a replica of {master}{}{kept}",
            if already { " already" } else { "" }
        ),
        position: Some(super::at(offset_of(&redis_info(con).await?))),
        divergence: None,
    })
}

/// Failback's Redis half: a replica of `master`, waited for until its link
/// is up (Redis reports the link up once the first full sync is loaded).
pub async fn follow(con: &mut Con, master: &str, deadline: Duration) -> Result<Done> {
    let started = Instant::now();
    let mut done = rejoin(con, master).await?;
    loop {
        let state = redis_info(con).await?;
        if let RedisReplication::Replica { link, offset, .. } = &state {
            if link == "up" {
                done.position = Some(super::at(*offset));
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
