//! PostgreSQL's canaries: one row per service in `seawall.canary`, the
//! schema and table created on the first write.

use crate::engine::postgres::conn::query_error;
use crate::stores::canary::Marker;
use seawall_common::{Error, ErrorKind, Result};

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
pub async fn write(client: &tokio_postgres::Client, service: &str, marker: Marker) -> Result<()> {
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
pub async fn read(client: &tokio_postgres::Client, service: &str) -> Result<Option<Marker>> {
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
