//! PostgreSQL drilled. Physical: the base backup laid down in the scratch
//! directory with the archived WAL it needs fetched beside it, recovered to
//! the point on a free port, then checked. Logical: a fresh cluster made in
//! the scratch directory and started, every database restored into it,
//! then checked. The check is the service's check file (row minimums,
//! queries that must return nothing) in its database, and every table of
//! every database listed with the catalog's row estimate; a deep drill
//! counts every table's rows and runs pg_amcheck instead, reading every
//! page (the physical restore has already proved every file against the
//! backup's manifest, so this proves the source's pages, at a cost).

use super::phases::{evidence, Phases};
use super::scratch::{free_port, Scratch};
use super::Context;
use crate::engine::postgres::archive::WalArchive;
use crate::engine::postgres::check::{check_postgres, CheckReport, ChecksFile, Depth};
use crate::engine::postgres::conn::{connect, with_database};
use crate::engine::postgres::logical::{restore_logical, LogicalRestoreOptions};
use crate::engine::postgres::physical::PhysicalFacts;
use crate::engine::postgres::recovery::{
    as_user, chown_to, restore_physical, PitrOptions, RecoveryTarget,
};
use crate::engine::postgres::tools::output;
use crate::engine::postgres::walname::WalKind;
use crate::engine::restore::running_as_root;
use futures_util::StreamExt;
use seawall_common::point::Point;
use seawall_common::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long recovery may take before the drill calls it failed.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// The user scratch servers run as: postgres when the agent is root.
fn run_as() -> Option<String> {
    running_as_root().then(|| "postgres".to_string())
}

/// The PostgreSQL programs a drill runs, found before anything is laid
/// down; the error says where the agent looks for them.
fn programs(ctx: &Context<'_>, names: &[&str]) -> Result<()> {
    for name in names {
        ctx.tools.path(name).map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "{name} not found {}: a drill runs the PostgreSQL server programs; set [drills] pg_bin in agent.toml (Debian: /usr/lib/postgresql/15/bin)",
                    match &ctx.tools.bin_dir {
                        Some(d) => format!("in {}", d.display()),
                        None => "on PATH".into(),
                    }
                ),
            )
        })?;
    }
    Ok(())
}

/// How deep the request asks the checks to read.
fn depth(ctx: &Context<'_>) -> Depth {
    if ctx.req.deep {
        Depth::Amchecked
    } else {
        Depth::Catalog
    }
}

/// The programs a drill needs: the server's, and pg_amcheck when deep.
fn needed<'a>(ctx: &Context<'_>, server: &[&'a str]) -> Vec<&'a str> {
    let mut all = server.to_vec();
    if ctx.req.deep {
        all.push("pg_amcheck");
    }
    all
}

fn checks(ctx: &Context<'_>) -> Result<ChecksFile> {
    match &ctx.req.check_file {
        Some(p) => ChecksFile::load(p),
        None => Ok(ChecksFile::default()),
    }
}

/// Fetches the archived WAL recovery may replay (from the backup's first
/// segment on, every timeline after its own, and the history files) into
/// `dir`, so the scratch server's restore_command is a local copy and
/// needs none of the repository's secrets.
async fn fetch_wal(ctx: &Context<'_>, facts: &PhysicalFacts, dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(dir.display(), e))?;
    let archive = WalArchive::new(ctx.repo.clone());
    let seg = facts.segment_size;
    let from = facts.wal_start.segno(seg);
    let wanted: Vec<_> = archive
        .list()
        .await?
        .into_iter()
        .filter(|n| match n.kind {
            WalKind::History => true,
            WalKind::Segment => n.timeline >= facts.timeline && n.segno(seg) >= from,
            _ => false,
        })
        .collect();
    let archive = &archive;
    let mut fetched = futures_util::stream::iter(wanted)
        .map(|name| async move {
            let data = archive.fetch(&name).await?.unwrap_or_default();
            let path = dir.join(&name.file);
            tokio::fs::write(&path, &data)
                .await
                .map_err(|e| Error::io(path.display(), e))?;
            Ok::<u64, Error>(data.len() as u64)
        })
        .buffer_unordered(4);
    let (mut files, mut bytes) = (0u64, 0u64);
    while let Some(r) = fetched.next().await {
        bytes += r?;
        files += 1;
    }
    Ok((files, bytes))
}

/// Physical: PITR into scratch, then the checks.
pub async fn physical(
    ctx: &Context<'_>,
    scratch: &mut Scratch,
    phases: &mut Phases,
) -> Option<i64> {
    let datadir = scratch.postgres_dir();
    let wal_dir = scratch.path("wal");
    let user = run_as();
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => {
            phases.failed_now("restore", &e);
            return None;
        }
    };
    scratch.started_postgres(port);
    let (target, at) = match ctx.point {
        Point::At(t) => (
            RecoveryTarget::Time(t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()),
            Some(t.timestamp_millis()),
        ),
        _ => (RecoveryTarget::Latest, None),
    };
    phases
        .run("restore", async {
            programs(ctx, &needed(ctx, &["pg_ctl", "postgres"]))?;
            let facts = PhysicalFacts::of(ctx.snap)?;
            let (wal_files, wal_bytes) = fetch_wal(ctx, &facts, &wal_dir).await?;
            chown_to(user.as_deref(), &wal_dir).await?;
            let copy = format!("cp '{}/%f' '%p'", wal_dir.display());
            let r = restore_physical(
                ctx.repo.clone(),
                ctx.snap,
                PitrOptions {
                    datadir: datadir.clone(),
                    target,
                    restore_command: copy,
                    start: true,
                    run_as: user.clone(),
                    port,
                    keep_archiving: false,
                    ignore_wal_gap: false,
                    verify_files: true,
                    timeout: RECOVERY_TIMEOUT,
                    tools: ctx.tools.clone(),
                    // No TCP: reachable through its socket in the 0700
                    // data directory only, so by no other local user (it
                    // trusts local connections). Never waiting for the
                    // source's synchronous standbys (pg_amcheck installs its
                    // extension, a write).
                    settings: vec![
                        ("listen_addresses".into(), String::new()),
                        ("synchronous_standby_names".into(), String::new()),
                        ("hot_standby".into(), "on".into()),
                    ],
                },
                ctx.progress.clone(),
            )
            .await?;
            Ok((
                (),
                format!(
                    "base backup laid down ({} bytes{}), {wal_files} archived WAL file(s) replayed from, promoted on port {port}",
                    r.bytes,
                    if r.files_verified { ", files verified against its manifest" } else { "" }
                ),
                evidence([
                    ("base_bytes", r.bytes.to_string()),
                    ("wal_files_fetched", wal_files.to_string()),
                    ("wal_bytes_fetched", wal_bytes.to_string()),
                    ("wal_reach", r.wal_reach.unwrap_or_default()),
                    ("files_verified", r.files_verified.to_string()),
                    ("port", port.to_string()),
                ]),
            ))
        })
        .await?;
    let dsn = format!(
        "host='{}' port={port} user={} dbname=postgres",
        datadir.display(),
        user.clone().unwrap_or_else(|| "postgres".into())
    );
    phases
        .run("check", async {
            let c = checks(ctx)?;
            // The file's checks in its database (postgres by default, as
            // for `restore --pg-datadir --check`); every database listed.
            let home = c.database.clone().unwrap_or_else(|| "postgres".into());
            let client = connect(&dsn).await?;
            let databases: Vec<String> = client
                .query(
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                    &[],
                )
                .await
                .map_err(|e| crate::engine::postgres::conn::query_error("listing databases", e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut reports = Vec::new();
            for db in &databases {
                let own = if *db == home { c.clone() } else { ChecksFile::default() };
                let db_dsn = with_database(&dsn, db);
                reports.push(check_postgres(&db_dsn, &own, depth(ctx), &ctx.tools).await?);
            }
            let row = client
                .query_one(
                    "SELECT pg_current_wal_lsn()::text, timeline_id::text,
                            (extract(epoch from pg_last_xact_replay_timestamp()) * 1000)::bigint
                     FROM pg_control_checkpoint()",
                    &[],
                )
                .await
                .map_err(|e| {
                    crate::engine::postgres::conn::query_error("reading the recovered position", e)
                })?;
            let lsn: String = row.get(0);
            let timeline: String = row.get(1);
            let replayed: Option<i64> = row.get(2);
            let mut ev = check_evidence(&reports, ctx.req.deep);
            ev.insert("lsn".into(), lsn.clone());
            ev.insert("timeline".into(), timeline);
            if let Some(ms) = replayed {
                ev.insert(
                    "last_replayed_commit".into(),
                    chrono::DateTime::from_timestamp_millis(ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                );
            }
            judged(&reports, format!("recovered to {lsn}"))?;
            let point = match (replayed, at) {
                (Some(r), Some(t)) => Some(r.min(t)),
                (r, t) => r.or(t),
            };
            Ok((point, describe(&ev), ev))
        })
        .await
        .flatten()
        .map(|p| p.max(ctx.snap.end_time.timestamp_millis()))
}

/// Logical: a fresh scratch cluster, every database restored, checks.
pub async fn logical(ctx: &Context<'_>, scratch: &mut Scratch, phases: &mut Phases) -> Option<i64> {
    let datadir = scratch.postgres_dir();
    let user = run_as();
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => {
            phases.failed_now("scratch server", &e);
            return None;
        }
    };
    scratch.started_postgres(port);
    let dsn = format!(
        "host='{}' port={port} user=postgres dbname=postgres",
        datadir.display()
    );
    phases
        .run("scratch server", async {
            programs(ctx, &needed(ctx, &["initdb", "pg_ctl", "pg_restore"]))?;
            start_empty_cluster(ctx, &datadir, port, &user).await?;
            Ok((
                (),
                format!("an empty cluster started on port {port}"),
                evidence([("port", port.to_string())]),
            ))
        })
        .await?;
    let restored = phases
        .run("restore", async {
            let r = restore_logical(
                ctx.repo.clone(),
                ctx.snap,
                LogicalRestoreOptions {
                    target_dsn: dsn.clone(),
                    databases: Vec::new(),
                    globals: true,
                    no_owner: false,
                    clean: false,
                    jobs: std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2),
                    tools: ctx.tools.clone(),
                },
                ctx.progress.clone(),
            )
            .await?;
            let names: Vec<String> = r.databases.iter().map(|d| d.target.clone()).collect();
            let bytes: u64 = r.databases.iter().map(|d| d.bytes).sum();
            Ok((
                names.clone(),
                format!("{} database(s) restored ({bytes} dump bytes)", names.len()),
                evidence([
                    ("databases", names.join(",")),
                    ("dump_bytes", bytes.to_string()),
                ]),
            ))
        })
        .await?;
    phases
        .run("check", async {
            let c = checks(ctx)?;
            let mut reports = Vec::new();
            for db in &restored {
                // The file's table checks are about its database (default:
                // all of them); the rest are listed.
                let applies = c.database.as_deref().is_none_or(|d| d == db);
                let own = if applies {
                    c.clone()
                } else {
                    ChecksFile::default()
                };
                let db_dsn = with_database(&dsn, db);
                reports.push(check_postgres(&db_dsn, &own, depth(ctx), &ctx.tools).await?);
            }
            let ev = check_evidence(&reports, ctx.req.deep);
            judged(&reports, format!("{} database(s) checked", reports.len()))?;
            Ok(((), describe(&ev), ev))
        })
        .await?;
    None
}

/// initdb (as the server's user) and pg_ctl start, reachable only through
/// its socket (named for `port`) in the 0700 data directory: it trusts
/// local connections, and no other local user gets in.
async fn start_empty_cluster(
    ctx: &Context<'_>,
    datadir: &Path,
    port: u16,
    user: &Option<String>,
) -> Result<()> {
    std::fs::create_dir_all(datadir).map_err(|e| Error::io(datadir.display(), e))?;
    chown_to(user.as_deref(), datadir).await?;
    let mut init = as_user(ctx.tools.path("initdb")?, user.as_deref());
    init.arg("-D")
        .arg(datadir)
        .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    output(init, "initdb").await?;
    let log = datadir.join("seawall-scratch.log");
    let mut start = as_user(ctx.tools.path("pg_ctl")?, user.as_deref());
    start
        .arg("-D")
        .arg(datadir)
        .arg("-l")
        .arg(&log)
        .arg("-o")
        .arg(format!(
            "-p {port} -c listen_addresses='' -c unix_socket_directories='{}' -c fsync=off",
            datadir.display()
        ))
        .args(["-w", "-t", "120", "start"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    output(start, "pg_ctl start").await.map_err(|e| {
        e.context(format!(
            "the scratch server did not start; its log is {}",
            log.display()
        ))
    })?;
    Ok(())
}

/// Row counts and check results as evidence: an estimate is marked `~`.
pub(super) fn check_evidence(reports: &[CheckReport], deep: bool) -> BTreeMap<String, String> {
    let tables: usize = reports.iter().map(|r| r.tables.len()).sum();
    let rows: i64 = reports
        .iter()
        .flat_map(|r| r.tables.iter().map(|t| t.rows.max(0)))
        .sum();
    let estimated = reports.iter().any(|r| r.tables.iter().any(|t| t.estimated));
    let checks: usize = reports.iter().map(|r| r.checks.len()).sum();
    let passed: usize = reports
        .iter()
        .map(|r| r.checks.iter().filter(|c| c.ok).count())
        .sum();
    let shown = |n: i64, estimate: bool| match (estimate, n) {
        (false, n) => n.to_string(),
        (true, n) if n < 0 => "not analyzed".to_string(),
        (true, n) => format!("~{n}"),
    };
    let mut ev = evidence([
        ("depth", if deep { "deep" } else { "catalog" }.to_string()),
        ("tables", tables.to_string()),
        ("rows", shown(rows, estimated)),
        ("checks_passed", format!("{passed}/{checks}")),
    ]);
    for r in reports {
        for t in r.tables.iter().take(20) {
            ev.insert(
                format!("rows {}.{}", r.database, t.table),
                shown(t.rows, t.estimated),
            );
        }
        for c in &r.checks {
            ev.insert(
                format!("check {}: {}", r.database, c.name),
                c.detail.clone(),
            );
        }
    }
    ev
}

pub(super) fn describe(ev: &BTreeMap<String, String>) -> String {
    format!(
        "{} tables, {} rows, checks passed {}",
        ev.get("tables").map(String::as_str).unwrap_or("0"),
        ev.get("rows").map(String::as_str).unwrap_or("0"),
        ev.get("checks_passed").map(String::as_str).unwrap_or("0/0")
    )
}

/// An error naming every failed check, or Ok.
pub(super) fn judged(reports: &[CheckReport], what: String) -> Result<()> {
    let failed: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.checks
                .iter()
                .filter(|c| !c.ok)
                .map(move |c| format!("{}: {} ({})", r.database, c.name, c.detail))
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Corrupt,
        format!(
            "{what}, but {} check(s) failed: {}",
            failed.len(),
            failed.join("; ")
        ),
    ))
}
