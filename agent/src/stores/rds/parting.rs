//! Where a promoted RDS replica parted from its old primary. RDS lets no
//! one read a timeline history file or run `pg_rewind --dry-run`, so the
//! promotion writes the position it had replayed into
//! `seawall.rds_partings` on the new primary; the old primary's demotion
//! reads it back and compares its own end of WAL with it.

use crate::engine::postgres::conn::query_error;
use seawall_common::Result;
use seawall_proto::v1::Divergence;

const CREATE: &str = "CREATE SCHEMA IF NOT EXISTS seawall;
     CREATE TABLE IF NOT EXISTS seawall.rds_partings (
       timeline bigint PRIMARY KEY,
       replayed_lsn pg_lsn NOT NULL,
       promoted_at timestamptz NOT NULL DEFAULT now()
     );
     COMMENT ON TABLE seawall.rds_partings IS
       'Seawall: where each promotion of this RDS instance parted from the old primary'";

/// Records on a just-promoted server that timeline `timeline` began after
/// `replayed_lsn` (kept if recorded already: a repeated promotion step).
pub async fn record(
    client: &tokio_postgres::Client,
    timeline: u32,
    replayed_lsn: &str,
) -> Result<()> {
    client
        .batch_execute(CREATE)
        .await
        .map_err(|e| query_error("creating seawall.rds_partings", e))?;
    client
        .execute(
            "INSERT INTO seawall.rds_partings (timeline, replayed_lsn)
             VALUES ($1, $2::text::pg_lsn) ON CONFLICT (timeline) DO NOTHING",
            &[&i64::from(timeline), &replayed_lsn],
        )
        .await
        .map_err(|e| query_error("recording where the promotion parted", e))?;
    Ok(())
}

/// The newest parting recorded on the new primary (None: none recorded).
pub async fn newest(client: &tokio_postgres::Client) -> Result<Option<String>> {
    match client
        .query_opt(
            "SELECT replayed_lsn::text FROM seawall.rds_partings ORDER BY timeline DESC LIMIT 1",
            &[],
        )
        .await
    {
        Ok(row) => Ok(row.map(|r| r.get(0))),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(None),
        Err(e) => Err(query_error("reading seawall.rds_partings", e)),
    }
}

/// What the old primary, whose WAL ends at `end`, holds past `parted_at`.
/// Without `pg_waldump` (RDS has none) the commits in that WAL cannot be
/// counted: WAL past the parting leaves the failover's bound standing.
pub fn divergence(parted_at: &str, end: &str) -> Divergence {
    let (Some(p), Some(e)) = (lsn(parted_at), lsn(end)) else {
        return Divergence {
            error: format!("the positions {parted_at:?} and {end:?} are not WAL positions"),
            ..Divergence::default()
        };
    };
    let bytes = e.saturating_sub(p);
    Divergence {
        parted_at: parted_at.to_string(),
        end: end.to_string(),
        bytes,
        error: if bytes == 0 {
            String::new()
        } else {
            format!(
                "{bytes} bytes of WAL past the parting at {parted_at} (to {end}); RDS runs no pg_waldump, so the commits in it are not counted"
            )
        },
        ..Divergence::default()
    }
}

fn lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_primary_that_ends_at_the_parting_lost_nothing() {
        let d = divergence("0/3000060", "0/3000060");
        assert_eq!((d.bytes, d.error.as_str()), (0, ""));
        let d = divergence("0/3000060", "0/3000000");
        assert_eq!((d.bytes, d.error.as_str()), (0, ""));
    }

    #[test]
    fn wal_past_the_parting_is_never_called_no_loss() {
        let d = divergence("0/3000060", "1/0");
        assert_eq!(d.bytes, 0x1_0000_0000 - 0x3000060);
        assert!(d.error.contains("not counted"), "{}", d.error);
        assert_eq!(d.commits, 0);
        assert!(!divergence("x", "0/1").error.is_empty());
    }
}
