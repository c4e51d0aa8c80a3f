//! Logical backups: `pg_dumpall --globals-only` for roles and tablespaces,
//! then one uncompressed custom-format `pg_dump` per database, each streamed
//! through the chunker (compressing before chunking would defeat
//! deduplication). Restore feeds the dump to `pg_restore` in one
//! transaction, so a failed restore leaves the target database empty.

use super::conn::{self, ServerFacts};
use super::tables::{self, TABLE_INFIX};
use super::tools::{tail, PgTools, Running};
use crate::engine::progress::Progress;
use crate::engine::stream::{
    save_stream, write_stream, StreamBackup, StreamManifest, StreamSettings,
};
use futures_util::StreamExt;
use seawall_common::repo::snapshot::{Snapshot, Stream};
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Stream name of the cluster's global objects.
pub const GLOBALS_STREAM: &str = "globals";
/// Prefix of per-database stream names.
pub const DATABASE_PREFIX: &str = "db/";

/// What a logical backup reads.
#[derive(Debug, Clone)]
pub struct LogicalOptions {
    /// Connection string of the server.
    pub dsn: String,
    /// Databases to dump; empty means every database that accepts connections.
    pub databases: Vec<String>,
    /// Also dump roles and tablespaces.
    pub globals: bool,
    /// Operator tags.
    pub tags: Vec<String>,
    /// Tables read at once; above 1, large tables are dumped by COPY beside pg_dump.
    pub jobs: usize,
    /// Tables at least this large are dumped apart when jobs > 1.
    pub split_min_bytes: i64,
    /// Where the PostgreSQL programs are.
    pub tools: PgTools,
    /// Storage settings.
    pub settings: StreamSettings,
}

/// Tables at least this large are dumped on their own by default.
pub const SPLIT_MIN_BYTES: i64 = 32 * 1024 * 1024;

/// Dumps the chosen databases into one snapshot.
pub async fn backup_logical(
    repo: Arc<Repository>,
    opts: LogicalOptions,
    progress: Arc<Progress>,
) -> Result<(Id, Snapshot)> {
    let client = conn::connect(&opts.dsn).await?;
    let facts = conn::server_facts(&client).await?;
    let present = conn::databases(&client).await?;
    drop(client);
    let databases = if opts.databases.is_empty() {
        present
    } else {
        for d in &opts.databases {
            if !present.contains(d) {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "database {d:?} does not exist on the server (or does not accept connections); it has: {}",
                        present.join(", ")
                    ),
                ));
            }
        }
        opts.databases.clone()
    };
    // Check every program before taking the lock, so a missing one costs nothing.
    opts.tools.path("pg_dump")?;
    if opts.globals {
        opts.tools.path("pg_dumpall")?;
    }
    let backup = StreamBackup::begin(repo, opts.settings.clone(), progress).await?;
    let outcome = dump_all(&backup, &opts, &databases, &facts).await;
    backup.commit(outcome).await
}

async fn dump_all(
    backup: &StreamBackup,
    opts: &LogicalOptions,
    databases: &[String],
    facts: &ServerFacts,
) -> Result<(Vec<Stream>, StreamManifest)> {
    let mut streams = Vec::new();
    if opts.globals {
        let mut cmd = opts.tools.command("pg_dumpall")?;
        cmd.arg("--globals-only");
        conn::pass_dsn(&mut cmd, &opts.dsn);
        streams.push(dump_one(backup, cmd, GLOBALS_STREAM, "pg_dumpall --globals-only").await?);
    }
    for db in databases {
        let db_dsn = conn::with_database(&opts.dsn, db);
        // Large tables go beside pg_dump, all in one exported snapshot.
        let (coordinator, snapshot, split) = if opts.jobs > 1 {
            let client = conn::connect(&db_dsn).await?;
            let snapshot = tables::export_snapshot(&client).await?;
            let mut split = tables::large_tables(&client, opts.split_min_bytes).await?;
            split.retain(|t| !t.table.contains(['*', '?']));
            (Some(client), Some(snapshot), split)
        } else {
            (None, None, vec![])
        };
        let mut cmd = opts.tools.command("pg_dump")?;
        cmd.arg("--format=custom").arg("--compress=0");
        conn::pass_dsn(&mut cmd, &db_dsn);
        if let Some(s) = &snapshot {
            cmd.arg(format!("--snapshot={s}"));
        }
        for t in &split {
            cmd.arg(format!("--exclude-table-data={}", t.table));
        }
        let name = format!("{DATABASE_PREFIX}{db}");
        let what = format!("pg_dump of database {db:?}");
        let main = dump_one(backup, cmd, &name, &what);
        let copies = futures_util::stream::iter(split.iter().map(|t| {
            let stream_name = format!("{DATABASE_PREFIX}{db}{TABLE_INFIX}{}", t.table);
            let mut cmd = opts.tools.command("pg_dump");
            if let Ok(c) = cmd.as_mut() {
                c.args(["--format=custom", "--compress=0", "--data-only"])
                    .arg(format!("--table={}", t.table))
                    .arg(format!(
                        "--snapshot={}",
                        snapshot.as_deref().unwrap_or_default()
                    ));
                conn::pass_dsn(c, &db_dsn);
            }
            let what = format!("pg_dump of table {} in database {db:?}", t.table);
            async move { dump_one(backup, cmd?, &stream_name, &what).await }
        }))
        .buffered(opts.jobs.max(1))
        .collect::<Vec<_>>();
        let (main, copies) = tokio::join!(main, copies);
        drop(coordinator);
        streams.push(main?);
        for c in copies {
            streams.push(c?);
        }
        tracing::info!(database = %db, tables_apart = split.len(), "dumped");
    }
    let mut f = facts.snapshot_facts("logical");
    f.insert("databases".into(), serde_json::json!(databases));
    Ok((
        streams,
        StreamManifest {
            source: "postgres".into(),
            paths: vec![conn::describe(&opts.dsn)?],
            tags: opts.tags.clone(),
            facts: f,
        },
    ))
}

/// Runs one dump program and chunks its stdout; its exit status decides.
async fn dump_one(
    backup: &StreamBackup,
    cmd: std::process::Command,
    name: &str,
    what: &str,
) -> Result<Stream> {
    let saver = backup.saver()?;
    let params = backup.params();
    let progress = backup.progress().clone();
    let (name, what) = (name.to_string(), what.to_string());
    tokio::task::spawn_blocking(move || {
        let mut child = Running::spawn(cmd, &what)?;
        let stdout = child.stdout()?;
        match save_stream(&name, stdout, &saver, params, &progress) {
            Ok(stream) => {
                child.wait()?;
                Ok(stream)
            }
            Err(e) => {
                child.kill();
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, format!("dump stopped: {e}")))?
}

/// What a logical restore does.
#[derive(Debug, Clone)]
pub struct LogicalRestoreOptions {
    /// Connection string of the target server (its dbname, if any, is the
    /// target when one database is restored).
    pub target_dsn: String,
    /// Databases of the snapshot to restore; empty means all.
    pub databases: Vec<String>,
    /// Also restore roles and tablespaces first.
    pub globals: bool,
    /// Do not set object owners (when the roles do not exist on the target).
    pub no_owner: bool,
    /// Drop objects in a non-empty target before restoring.
    pub clean: bool,
    /// Large tables loaded at once.
    pub jobs: usize,
    /// Where the PostgreSQL programs are.
    pub tools: PgTools,
}

/// One database restored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoredDatabase {
    /// Name in the snapshot.
    pub source: String,
    /// Name on the target server.
    pub target: String,
    /// Whether Seawall created it.
    pub created: bool,
    /// Dump bytes fed to pg_restore.
    pub bytes: u64,
}

/// What a logical restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogicalRestoreReport {
    /// Databases restored.
    pub databases: Vec<RestoredDatabase>,
    /// Messages from restoring globals (roles that already existed, ...).
    pub warnings: Vec<String>,
    /// Seconds taken.
    pub duration_secs: f64,
}

/// Restores a logical snapshot into a server.
pub async fn restore_logical(
    repo: Arc<Repository>,
    snap: &Snapshot,
    opts: LogicalRestoreOptions,
    progress: Arc<Progress>,
) -> Result<LogicalRestoreReport> {
    let started = std::time::Instant::now();
    if snap.source != "postgres" || snap.facts.get("mode") != Some(&"logical".into()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "--pg-target restores logical PostgreSQL snapshots; this one is not (use --pg-datadir for a physical one, --to for files)",
        ));
    }
    let chosen: Vec<&Stream> = snap
        .streams
        .iter()
        .filter(|s| match s.name.strip_prefix(DATABASE_PREFIX) {
            Some(db) if !db.contains(TABLE_INFIX) => {
                opts.databases.is_empty() || opts.databases.iter().any(|d| d == db)
            }
            _ => false,
        })
        .collect();
    for d in &opts.databases {
        if !chosen.iter().any(|s| s.name[DATABASE_PREFIX.len()..] == *d) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("the snapshot has no database {d:?}"),
            ));
        }
    }
    if chosen.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            "the snapshot holds no database dumps",
        ));
    }
    repo.load_index().await?;
    let named_target = conn::parse(&opts.target_dsn)?
        .get_dbname()
        .map(str::to_string);
    let admin_dsn = conn::with_database(&opts.target_dsn, "postgres");
    let admin = conn::connect(&admin_dsn).await?;
    let mut report = LogicalRestoreReport {
        databases: vec![],
        warnings: vec![],
        duration_secs: 0.0,
    };
    if opts.globals {
        let globals = snap
            .streams
            .iter()
            .find(|s| s.name == GLOBALS_STREAM)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "the snapshot has no globals dump"))?;
        let mut cmd = opts.tools.async_command("psql")?;
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=0"]);
        conn::pass_dsn_async(&mut cmd, &admin_dsn);
        let stderr = feed(repo.clone(), cmd, globals, "psql (globals)", &progress).await?;
        report.warnings.extend(
            stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    let single = chosen.len() == 1;
    for stream in chosen {
        let source = stream.name[DATABASE_PREFIX.len()..].to_string();
        // A DSN naming a database is the target when one database is restored.
        let target = match &named_target {
            Some(t) if single => t.clone(),
            _ => source.clone(),
        };
        let created = prepare_target(&admin, &opts, &target).await?;
        let restored =
            restore_database(&repo, snap, stream, &source, &target, &opts, &progress).await;
        if let Err(e) = restored {
            let mut e = e;
            if created {
                // Leave nothing half restored behind.
                let drop_sql = format!("DROP DATABASE IF EXISTS {}", quote_ident(&target));
                if admin.batch_execute(&drop_sql).await.is_ok() {
                    e = e.context(format!(
                        "the partly restored database {target:?} was dropped"
                    ));
                }
            }
            return Err(e);
        }
        report.databases.push(RestoredDatabase {
            source,
            target,
            created,
            bytes: stream.size,
        });
    }
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Restores one database: in one pg_restore transaction, or, when large
/// tables were dumped apart, pre-data, data, those tables by COPY (in
/// parallel), then post-data.
async fn restore_database(
    repo: &Arc<Repository>,
    snap: &Snapshot,
    stream: &Stream,
    source: &str,
    target: &str,
    opts: &LogicalRestoreOptions,
    progress: &Arc<Progress>,
) -> Result<()> {
    let target_dsn = conn::with_database(&opts.target_dsn, target);
    let prefix = format!("{}{TABLE_INFIX}", stream.name);
    let apart: Vec<&Stream> = snap
        .streams
        .iter()
        .filter(|s| s.name.starts_with(&prefix))
        .collect();
    let hint = |e: Error| {
        let hint = if e.message().contains("role") && !opts.no_owner {
            " (restore the roles with --pg-globals, or pass --no-owner)"
        } else {
            ""
        };
        e.context(format!("restoring database {source:?}{hint}"))
    };
    let sections: &[Option<&str>] = if apart.is_empty() {
        &[None]
    } else {
        &[Some("pre-data"), Some("data")]
    };
    let pg_restore = |section: Option<&str>| -> Result<tokio::process::Command> {
        let mut cmd = opts.tools.async_command("pg_restore")?;
        cmd.arg("--exit-on-error").arg("--single-transaction");
        conn::pass_dsn_async(&mut cmd, &target_dsn);
        if let Some(s) = section {
            cmd.arg(format!("--section={s}"));
        }
        if opts.no_owner {
            cmd.arg("--no-owner");
        }
        if opts.clean && section.is_none_or(|s| s == "pre-data") {
            cmd.args(["--clean", "--if-exists"]);
        }
        Ok(cmd)
    };
    let what = format!("pg_restore into database {target:?}");
    for section in sections {
        feed(repo.clone(), pg_restore(*section)?, stream, &what, progress)
            .await
            .map_err(hint)?;
    }
    if apart.is_empty() {
        return Ok(());
    }
    let loads = futures_util::stream::iter(apart.iter().map(|s| {
        let what = format!(
            "pg_restore of table {} into database {target:?}",
            &s.name[prefix.len()..]
        );
        let cmd = pg_restore(Some("data"));
        async move { feed(repo.clone(), cmd?, s, &what, progress).await }
    }))
    .buffer_unordered(opts.jobs.max(1))
    .collect::<Vec<_>>()
    .await;
    for l in loads {
        l.map_err(hint)?;
    }
    feed(
        repo.clone(),
        pg_restore(Some("post-data"))?,
        stream,
        &what,
        progress,
    )
    .await
    .map_err(hint)?;
    Ok(())
}

/// Creates the target database if absent; refuses a non-empty one unless cleaning.
async fn prepare_target(
    admin: &tokio_postgres::Client,
    opts: &LogicalRestoreOptions,
    target: &str,
) -> Result<bool> {
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&target])
        .await
        .map_err(|e| conn::query_error("looking up the target database", e))?
        .is_some();
    if !exists {
        let sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(target));
        admin
            .batch_execute(&sql)
            .await
            .map_err(|e| conn::query_error(&format!("creating database {target:?}"), e))?;
        return Ok(true);
    }
    if opts.clean {
        return Ok(false);
    }
    let db = conn::connect(&conn::with_database(&opts.target_dsn, target)).await?;
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                       AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%')
                  + (SELECT count(*) FROM pg_largeobject_metadata)",
            &[],
        )
        .await
        .map_err(|e| conn::query_error("checking the target database", e))?;
    let objects: i64 = row.get(0);
    if objects > 0 {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "target database {target:?} is not empty ({objects} objects): restore into a new database name in --pg-target, or pass --pg-clean to drop what the dump recreates"
            ),
        ));
    }
    Ok(false)
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs `cmd` with a stream on its stdin; returns its stderr, or an error quoting it.
async fn feed(
    repo: Arc<Repository>,
    mut cmd: tokio::process::Command,
    stream: &Stream,
    what: &str,
    progress: &Progress,
) -> Result<String> {
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting {what}"), e))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::new(ErrorKind::Io, format!("{what} has no stdin")))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| Error::new(ErrorKind::Io, format!("{what} has no stderr")))?;
    let errors = tokio::spawn(async move {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf).await;
        buf
    });
    let written = write_stream(repo, stream, &mut stdin, progress).await;
    drop(stdin);
    let status = child
        .wait()
        .await
        .map_err(|e| Error::io(format!("waiting for {what}"), e))?;
    let stderr = errors.await.unwrap_or_default();
    match written {
        // A damaged repository is the cause even if the program then failed too.
        Err(e) if e.kind() != ErrorKind::Io => Err(e.context(format!("{what} stopped"))),
        _ if !status.success() => Err(Error::new(
            ErrorKind::Io,
            format!("{what} failed ({status}): {}", tail(&stderr)),
        )),
        // The program succeeded without reading everything (pg_restore --section=pre-data
        // stops after the table of contents): the broken pipe is not a failure.
        Err(_) => Ok(stderr),
        Ok(_) => Ok(stderr),
    }
}
