//! Large tables dumped beside the main `pg_dump`, in parallel: a
//! coordinating transaction exports its snapshot and every `pg_dump` joins
//! it (`--snapshot`), so all streams show one consistent moment. Restore
//! loads them with `pg_restore --data-only` between the main dump's data
//! and post-data sections, so indexes and constraints are built once, after
//! the rows.

use super::conn;
use seawall_common::Result;
use tokio_postgres::Client;

/// Stream-name infix of a table dumped on its own: `db/<name>/table/<schema.table>`.
pub const TABLE_INFIX: &str = "/table/";

/// A table dumped apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitTable {
    /// `schema.table`, quoted as needed (a pg_dump pattern that matches only it).
    pub table: String,
    /// Bytes on disk (for ordering: largest first).
    pub bytes: i64,
}

/// Opens the coordinating transaction and exports its snapshot.
pub async fn export_snapshot(client: &Client) -> Result<String> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| conn::query_error("starting the snapshot transaction", e))?;
    Ok(client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|e| conn::query_error("exporting a snapshot", e))?
        .get(0))
}

/// Ordinary tables of at least `min_bytes`, largest first, as of the exported snapshot.
pub async fn large_tables(client: &Client, min_bytes: i64) -> Result<Vec<SplitTable>> {
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), pg_relation_size(c.oid)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'r' AND c.relpersistence = 'p'
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg_toast%'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                   AND d.deptype = 'e')
                AND pg_relation_size(c.oid) >= $1
              ORDER BY 2 DESC",
            &[&min_bytes],
        )
        .await
        .map_err(|e| conn::query_error("listing large tables", e))?;
    Ok(rows
        .iter()
        .map(|r| SplitTable {
            table: r.get(0),
            bytes: r.get(1),
        })
        .collect())
}
