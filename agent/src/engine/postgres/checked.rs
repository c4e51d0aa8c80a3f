//! Restores followed by their integrity checks, as one engine call: the
//! CLI's `restore --pg-target|--pg-datadir [--check FILE]` and the restore
//! drill both run these, so a restore is judged the same way wherever it
//! runs. Also which backup `latest` (or a time) means.

use super::check::{check_postgres, CheckReport, ChecksFile, Depth};
use super::conn::with_database;
use super::logical::{restore_logical, LogicalRestoreOptions, LogicalRestoreReport};
use super::recovery::{restore_physical, PitrOptions, PitrReport};
use crate::engine::progress::Progress;
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use std::sync::Arc;

/// The kind of PostgreSQL backup a snapshot holds ("logical", "physical").
pub fn mode(s: &Snapshot) -> Option<&str> {
    if s.source != "postgres" {
        return None;
    }
    s.facts.get("mode").and_then(|m| m.as_str())
}

/// The snapshot `spec` names; for `latest`, the newest PostgreSQL backup of
/// `want` ("logical" or "physical"), finished before `before` when given.
pub async fn find_backup(
    repo: &Repository,
    spec: &str,
    want: &str,
    before: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(Id, Snapshot)> {
    if spec != "latest" {
        return repo.find_snapshot(spec).await;
    }
    let all = repo.snapshots().await?;
    all.into_iter()
        .rev()
        .find(|(_, s)| mode(s) == Some(want) && before.is_none_or(|t| s.end_time <= t))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                match before {
                    Some(t) => format!("no {want} PostgreSQL backup finished before {t}"),
                    None => format!("the repository has no {want} PostgreSQL backup"),
                },
            )
        })
}

/// Whether every check passed.
pub fn all_passed(reports: &[CheckReport]) -> bool {
    reports.iter().all(|r| r.ok)
}

/// Restores a logical backup into the target server, then runs `checks`
/// (when given) in each restored database.
pub async fn restore_logical_checked(
    repo: Arc<Repository>,
    snap: &Snapshot,
    opts: LogicalRestoreOptions,
    checks: Option<&ChecksFile>,
    progress: Arc<Progress>,
) -> Result<(LogicalRestoreReport, Vec<CheckReport>)> {
    let target = opts.target_dsn.clone();
    let tools = opts.tools.clone();
    let report = restore_logical(repo, snap, opts, progress).await?;
    let mut reports = Vec::new();
    if let Some(c) = checks {
        for d in &report.databases {
            reports.push(
                check_postgres(
                    &with_database(&target, &d.target),
                    c,
                    Depth::Amchecked,
                    &tools,
                )
                .await?,
            );
        }
    }
    Ok((report, reports))
}

/// Lays down a base backup and recovers it as `opts` says; when the server
/// was started and `checks` are given, runs them in the recovered server
/// (in the checks file's database, as the user the server runs as).
pub async fn restore_physical_checked(
    repo: Arc<Repository>,
    snap: &Snapshot,
    opts: PitrOptions,
    checks: Option<&ChecksFile>,
    progress: Arc<Progress>,
) -> Result<(PitrReport, Vec<CheckReport>)> {
    let tools = opts.tools.clone();
    let user = opts.run_as.clone().unwrap_or_else(|| "postgres".into());
    let report = restore_physical(repo, snap, opts, progress).await?;
    let mut reports = Vec::new();
    if let (Some(c), Some(dsn)) = (checks, &report.dsn) {
        let db = c.database.clone().unwrap_or_else(|| "postgres".into());
        let dsn = format!("{dsn} user={user} dbname={db}");
        reports.push(check_postgres(&dsn, c, Depth::Amchecked, &tools).await?);
    }
    Ok((report, reports))
}
