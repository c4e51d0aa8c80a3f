//! `seawall check postgres`: proof that a database is whole, not just
//! present. Row counts of every table, the operator's checks from a file
//! (tables that must not be empty, minimum row counts, queries that must
//! return no rows, such as orphans), all inside a read-only transaction,
//! and `pg_amcheck` for heap and index corruption.

use super::conn;
use super::tools::{tail, PgTools};
use seawall_common::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The checks file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksFile {
    /// Database to check after a physical restore (default: postgres).
    #[serde(default)]
    pub database: Option<String>,
    /// Tables that must have at least one row.
    #[serde(default)]
    pub not_empty: Vec<String>,
    /// Tables with a minimum number of rows.
    #[serde(default)]
    pub min_rows: BTreeMap<String, i64>,
    /// Queries that must return no rows.
    #[serde(default)]
    pub zero_rows: Vec<NamedQuery>,
}

/// A query with a name for the report.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedQuery {
    /// What the query proves, in words.
    pub name: String,
    /// The SQL.
    pub sql: String,
}

impl ChecksFile {
    /// Reads and parses a checks file. An error names the line and column,
    /// never the content: the path may name any file (a key file too).
    pub fn load(path: &Path) -> Result<ChecksFile> {
        use std::io::Read;
        let what = || format!("checks file {}", path.display());
        let file = std::fs::File::open(path).map_err(|e| Error::io(what(), e))?;
        let meta = file.metadata().map_err(|e| Error::io(what(), e))?;
        if !meta.is_file() || meta.len() > MAX_CHECKS_FILE {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is not a regular file of at most 1 MiB: name the checks file itself",
                    what()
                ),
            ));
        }
        let mut text = String::new();
        file.take(MAX_CHECKS_FILE)
            .read_to_string(&mut text)
            .map_err(|e| Error::io(what(), e))?;
        toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|r| {
                    let before = text.get(..r.start).unwrap_or_default();
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!(" at line {line}, column {column}")
                })
                .unwrap_or_default();
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is not a valid checks file{at} (its keys: database, not_empty, min_rows, [[zero_rows]] with name and sql; docs/operations.md); its content is not shown",
                    what()
                ),
            )
        })
    }
}

/// The largest checks file read.
const MAX_CHECKS_FILE: u64 = 1 << 20;

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Row count of one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableRows {
    /// schema.table.
    pub table: String,
    /// Rows: counted, or the catalog's estimate (-1: never analyzed).
    pub rows: i64,
    /// Whether `rows` is the catalog's estimate.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

/// How much of a database a check reads, beside the check file's queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every table's rows as the catalog estimates them: nothing more read.
    Catalog,
    /// Every table counted, each read whole.
    Counted,
    /// Counted, with pg_amcheck reading every heap page and B-tree alongside.
    Amchecked,
}

/// Everything a check run found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Database checked.
    pub database: String,
    /// Row counts.
    pub tables: Vec<TableRows>,
    /// Results, the amcheck run last.
    pub checks: Vec<CheckResult>,
    /// Whether every check passed.
    pub ok: bool,
}

/// Runs the checks against the database `dsn` names, as deep as `depth`;
/// pg_amcheck (its own process, reading every page) runs alongside the row
/// counts.
pub async fn check_postgres(
    dsn: &str,
    checks: &ChecksFile,
    depth: Depth,
    tools: &PgTools,
) -> Result<CheckReport> {
    let amchecked = async {
        if depth == Depth::Amchecked {
            run_amcheck(dsn, tools).await.map(Some)
        } else {
            Ok(None)
        }
    };
    let counted = counts_and_checks(dsn, checks, depth != Depth::Catalog);
    let (counted, amchecked) = tokio::join!(counted, amchecked);
    let (database, tables, mut results) = counted?;
    results.extend(amchecked?);
    let ok = results.iter().all(|r| r.ok);
    Ok(CheckReport {
        database,
        tables,
        checks: results,
        ok,
    })
}

/// Row counts (`exact`, else the catalog's) and the file's checks, in one
/// read-only transaction.
async fn counts_and_checks(
    dsn: &str,
    checks: &ChecksFile,
    exact: bool,
) -> Result<(String, Vec<TableRows>, Vec<CheckResult>)> {
    let mut client = conn::connect(dsn).await?;
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(|e| conn::query_error("starting a read-only transaction", e))?;
    let database: String = tx
        .query_one("SELECT current_database()", &[])
        .await
        .map_err(|e| conn::query_error("reading the database name", e))?
        .get(0);
    let rows = tx
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname,
                    c.reltuples::bigint
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg_toast%'
             ORDER BY 2, 3",
            &[],
        )
        .await
        .map_err(|e| conn::query_error("listing tables", e))?;
    let mut tables = Vec::with_capacity(rows.len());
    for r in rows {
        let table: String = r.get(0);
        let rows = if exact {
            tx.query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .map_err(|e| conn::query_error(&format!("counting rows of {table}"), e))?
                .get(0)
        } else {
            r.get(3)
        };
        tables.push(TableRows {
            table,
            rows,
            estimated: !exact,
        });
    }
    let mut results = Vec::new();
    let mut minimums: Vec<(String, i64)> =
        checks.not_empty.iter().map(|t| (t.clone(), 1)).collect();
    minimums.extend(checks.min_rows.iter().map(|(t, n)| (t.clone(), *n)));
    for (table, min) in minimums {
        let name = if min == 1 {
            format!("{table} is not empty")
        } else {
            format!("{table} has at least {min} rows")
        };
        let result = match tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
        {
            Ok(row) => {
                let n: i64 = row.get(0);
                CheckResult {
                    name,
                    ok: n >= min,
                    detail: format!("{n} rows"),
                }
            }
            Err(e) => CheckResult {
                name,
                ok: false,
                detail: conn::query_error("query failed", e).to_string(),
            },
        };
        results.push(result);
        if !results.last().is_some_and(|r| r.ok) {
            // A failed statement aborts the transaction; the rest need a fresh one.
            break;
        }
    }
    if results.iter().all(|r| r.ok) {
        for q in &checks.zero_rows {
            let result = match tx.query(q.sql.as_str(), &[]).await {
                Ok(rows) => CheckResult {
                    name: q.name.clone(),
                    ok: rows.is_empty(),
                    detail: format!("{} rows", rows.len()),
                },
                Err(e) => CheckResult {
                    name: q.name.clone(),
                    ok: false,
                    detail: conn::query_error("query failed", e).to_string(),
                },
            };
            let failed_sql = !result.ok && result.detail.starts_with("query failed");
            results.push(result);
            if failed_sql {
                break;
            }
        }
    }
    let _ = tx.rollback().await;
    Ok((database, tables, results))
}

async fn run_amcheck(dsn: &str, tools: &PgTools) -> Result<CheckResult> {
    let mut cmd = tools.async_command("pg_amcheck")?;
    // The positional argument may be a whole connection string; its
    // password goes in the environment, never on the command line.
    let (bare, password) = super::conn::split_password(dsn);
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    cmd.arg("--install-missing")
        .arg(format!("--jobs={jobs}"))
        .arg(bare);
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| Error::io("running pg_amcheck", e))?;
    let said = tail(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    Ok(CheckResult {
        name: "pg_amcheck (heap and B-tree indexes)".into(),
        ok: out.status.success(),
        detail: if said.is_empty() {
            "no corruption found".into()
        } else {
            said
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_file_that_is_not_a_checks_file_is_refused_without_showing_its_content() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text, line) in [
            (
                "key.toml",
                "region = \"eu\"\nsecret_access_key = \"wJalrSECRETbPxRfiCY\"\n",
                1,
            ),
            (
                "key.pem",
                "-----BEGIN PRIVATE KEY-----\nMIIEvSECRETQIBADANBg\n",
                1,
            ),
            ("typed.toml", "not_empty = \"SECRETtable\"\n", 1),
            (
                "third.toml",
                "database = \"app\"\n\nmin_rows = { a = \"SECRET\" }\n",
                3,
            ),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let e = ChecksFile::load(&p).unwrap_err().to_string();
            assert!(!e.contains("SECRET"), "{e}");
            assert!(e.contains(&format!("line {line}")), "{e}");
            assert!(e.contains("not a valid checks file"), "{e}");
        }
        let e = ChecksFile::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    use super::*;

    #[test]
    fn checks_file_parses_and_rejects_typos() {
        let f: ChecksFile = toml::from_str(
            r#"
not_empty = ["agents"]
[min_rows]
"public.tasks" = 3
[[zero_rows]]
name = "orphan tasks"
sql = "SELECT 1"
"#,
        )
        .unwrap();
        assert_eq!(f.not_empty, vec!["agents"]);
        assert_eq!(f.min_rows["public.tasks"], 3);
        assert_eq!(f.zero_rows[0].name, "orphan tasks");
        assert!(toml::from_str::<ChecksFile>("not_emtpy = []").is_err());
    }
}
