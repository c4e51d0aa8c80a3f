//! Canary markers: the primary's agent writes a sequence number and the
//! leader's clock into the store, the other region's agent reads the newest
//! one replication has brought it. How old the newest visible marker is
//! measures what would be lost if the primary vanished now, across the
//! whole path (WAL shipping, replay, Redis's stream), not one hop of it.
//!
//! PostgreSQL keeps them in `seawall.canary` (one row per service, created
//! on first write); Redis in the key `seawall:canary:SERVICE`.

use crate::engine::postgres::conn::query_error;
use seawall_common::{Error, ErrorKind, Result};

/// One marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Increases with every write.
    pub seq: u64,
    /// The leader's clock when it asked for the write.
    pub written_unix_ms: i64,
}

const PG_UPSERT: &str = "INSERT INTO seawall.canary (service, seq, written_unix_ms, updated_at)
     VALUES ($1, $2, $3, now())
     ON CONFLICT (service) DO UPDATE
       SET seq = EXCLUDED.seq, written_unix_ms = EXCLUDED.written_unix_ms, updated_at = now()
       WHERE seawall.canary.seq < EXCLUDED.seq";

const PG_CREATE: &str = "CREATE SCHEMA IF NOT EXISTS seawall;
     CREATE TABLE IF NOT EXISTS seawall.canary (
       service text PRIMARY KEY,
       seq bigint NOT NULL,
       written_unix_ms bigint NOT NULL,
       updated_at timestamptz NOT NULL
     );
     COMMENT ON TABLE seawall.canary IS
       'Seawall replication canaries: one row per service, rewritten every few seconds'";

fn seq_i64(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("canary sequence {seq} does not fit PostgreSQL's bigint"),
        )
    })
}

/// Writes `marker` for `service` on a PostgreSQL primary, creating the
/// schema and table the first time. An older marker never replaces a newer.
pub async fn pg_write(
    client: &tokio_postgres::Client,
    service: &str,
    marker: Marker,
) -> Result<()> {
    let seq = seq_i64(marker.seq)?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&service, &seq, &marker.written_unix_ms];
    match client.execute(PG_UPSERT, &params).await {
        Ok(_) => Ok(()),
        Err(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
                || e.code() == Some(&tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME) =>
        {
            client
                .batch_execute(PG_CREATE)
                .await
                .map_err(|e| query_error("creating seawall.canary (the role needs CREATE on the database, or create the schema for it)", e))?;
            client
                .execute(PG_UPSERT, &params)
                .await
                .map_err(|e| query_error("writing the canary", e))?;
            Ok(())
        }
        Err(e) => Err(query_error("writing the canary", e)),
    }
}

/// The newest marker of `service` the server holds (none before the first
/// write has arrived).
pub async fn pg_read(client: &tokio_postgres::Client, service: &str) -> Result<Option<Marker>> {
    let row = client
        .query_opt(
            "SELECT seq, written_unix_ms FROM seawall.canary WHERE service = $1",
            &[&service],
        )
        .await;
    match row {
        Ok(row) => Ok(row.map(|r| Marker {
            seq: r.get::<_, i64>(0).max(0) as u64,
            written_unix_ms: r.get(1),
        })),
        // The table has not been replicated here yet.
        Err(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
                || e.code() == Some(&tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME) =>
        {
            Ok(None)
        }
        Err(e) => Err(query_error("reading the canary", e)),
    }
}

/// The Redis key of `service`'s marker.
pub fn redis_key(service: &str) -> String {
    format!("seawall:canary:{service}")
}

fn redis_error(what: &str, e: redis::RedisError) -> Error {
    Error::new(ErrorKind::Unreachable, format!("{what}: {e}"))
}

/// Writes `marker` for `service` on a Redis master.
pub async fn redis_write(
    con: &mut redis::aio::MultiplexedConnection,
    service: &str,
    marker: Marker,
) -> Result<()> {
    redis::cmd("SET")
        .arg(redis_key(service))
        .arg(format!("{}:{}", marker.seq, marker.written_unix_ms))
        .query_async::<()>(con)
        .await
        .map_err(|e| redis_error("writing the canary", e))
}

/// The newest marker of `service` the server holds.
pub async fn redis_read(
    con: &mut redis::aio::MultiplexedConnection,
    service: &str,
) -> Result<Option<Marker>> {
    let value: Option<String> = redis::cmd("GET")
        .arg(redis_key(service))
        .query_async(con)
        .await
        .map_err(|e| redis_error("reading the canary", e))?;
    value.map(|v| parse_redis_marker(&v)).transpose()
}

/// Reads "SEQ:MILLISECONDS".
pub fn parse_redis_marker(value: &str) -> Result<Marker> {
    let bad = || {
        Error::new(
            ErrorKind::Corrupt,
            format!("the canary key holds {value:?}, not SEQ:MILLISECONDS: something else writes seawall:canary:*"),
        )
    };
    let (seq, ms) = value.split_once(':').ok_or_else(bad)?;
    Ok(Marker {
        seq: seq.parse().map_err(|_| bad())?,
        written_unix_ms: ms.parse().map_err(|_| bad())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_marker_reads_back_and_a_foreign_value_is_named() {
        let m = parse_redis_marker("42:1700000000123").expect("marker");
        assert_eq!(m.seq, 42);
        assert_eq!(m.written_unix_ms, 1_700_000_000_123);
        let e = parse_redis_marker("hello").expect_err("foreign");
        assert!(e.to_string().contains("something else writes"), "{e}");
    }
}
