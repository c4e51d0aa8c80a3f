//! PostgreSQL commands: `backup postgres`, the PostgreSQL forms of
//! `restore`, `wal-push`, `wal-fetch` and `check postgres`.

use crate::args::{
    Global, PgCheckArgs, PostgresArgs, RestoreArgs, WalFetchArgs, WalPushArgs, WalStreamArgs,
};
use crate::output::{rate, size};
use crate::progress_view::View;
use crate::repo_open;
use anyhow::{bail, Context};
use seawall_agent::engine::postgres::check::{check_postgres, CheckReport, ChecksFile, Depth};
use seawall_agent::engine::postgres::checked::{
    all_passed, find_backup, restore_logical_checked, restore_physical_checked,
};
use seawall_agent::engine::postgres::spool::default_root;
use seawall_agent::engine::postgres::walcmd::{wal_fetch, wal_push, FetchOptions, PushOptions};
use seawall_agent::engine::postgres::walname::parse_lsn;
use seawall_agent::engine::postgres::{
    backup_datadir, backup_logical, backup_physical, DatadirOptions, LogicalOptions,
    LogicalRestoreOptions, PgTools, PhysicalOptions, PitrOptions, RecoveryTarget,
};
use seawall_agent::engine::progress::Progress;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// wal-fetch's exit status for a file the archive does not have (normal at the end of recovery).
const EXIT_WAL_NOT_FOUND: u8 = 1;
/// wal-fetch's exit status for any other failure: above 125, so PostgreSQL
/// stops recovery instead of taking the WAL for ended and losing data.
const EXIT_WAL_FETCH_FAILED: u8 = 200;

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

fn tools(g: &Global) -> PgTools {
    PgTools {
        bin_dir: g.pg_bin.clone(),
    }
}

/// `seawall backup postgres`.
pub async fn backup(g: &Global, a: PostgresArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let settings = super::stream_settings(g, a.store.compression_level, a.store.threads);
    let progress = Arc::new(Progress::default());
    let view = View::start(progress.clone(), "backup", !g.json && !g.quiet);
    let result = if a.file_level {
        backup_datadir(
            repo,
            DatadirOptions {
                dsn: a.dsn,
                data_dir: a.data_dir,
                fast_checkpoint: !a.spread_checkpoint,
                full: a.full,
                delta: a.delta,
                tags: a.store.tag,
                settings,
            },
            progress,
        )
        .await
    } else if a.physical {
        backup_physical(
            repo,
            PhysicalOptions {
                dsn: a.dsn,
                fast_checkpoint: !a.spread_checkpoint,
                tags: a.store.tag,
                tools: tools(g),
                settings,
            },
            progress,
        )
        .await
    } else {
        backup_logical(
            repo,
            LogicalOptions {
                dsn: a.dsn,
                databases: a.database,
                globals: !a.no_globals,
                tags: a.store.tag,
                jobs: a.jobs.unwrap_or_else(cores),
                split_min_bytes: a.split_min_mib.max(0) * 1024 * 1024,
                tools: tools(g),
                settings,
            },
            progress,
        )
        .await
    };
    view.finish().await;
    let (id, snap) = result?;
    let s = &snap.summary;
    if g.json {
        crate::output::json(&serde_json::json!({
            "snapshot": id,
            "facts": snap.facts,
            "streams": snap.streams.iter().map(|s| serde_json::json!({"name": s.name, "size": s.size, "sha256": s.sha256, "blake3": s.blake3})).collect::<Vec<_>>(),
            "summary": s,
        }))?;
    } else if !g.quiet {
        for st in &snap.streams {
            println!("{:<24} {:>10}", st.name, size(st.size));
        }
        if snap.tree.is_some() {
            println!(
                "files: {} new, {} changed, {} unchanged (of {} in all)",
                s.files_new,
                s.files_changed,
                s.files_unchanged,
                size(s.bytes_total)
            );
        }
        for w in &s.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "read {} in {:.2}s ({}), added {} to the repository",
            size(s.bytes_read),
            s.duration_secs,
            rate(s.bytes_read, s.duration_secs),
            size(s.bytes_added)
        );
        if let (Some(start), Some(stop)) = (snap.facts.get("start_lsn"), snap.facts.get("stop_lsn"))
        {
            println!("WAL {start} .. {stop} included");
        }
        println!("snapshot {} saved", id.short());
    }
    Ok(0)
}

/// Parses a recovery target time.
fn parse_time(t: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Ok(d.with_timezone(&chrono::Utc));
    }
    bail!("--time {t:?} is not a time with a zone: write it as RFC 3339, such as 2026-11-25T21:00:00Z")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The restore_command that runs this seawall against this repository.
fn restore_command(g: &Global) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("locating the seawall binary")?;
    let Some(pf) = &g.password_file else {
        bail!("a physical restore writes a restore_command that needs the repository password: pass --password-file FILE (readable by the server's user), or --restore-command");
    };
    let pf = std::path::absolute(pf)?;
    let repo = if g.repo.contains("://") {
        g.repo.clone()
    } else {
        std::path::absolute(&g.repo)?.display().to_string()
    };
    let mut parts = vec![
        shell_quote(&exe.display().to_string()),
        "--repo".into(),
        shell_quote(&repo),
        "--password-file".into(),
        shell_quote(&pf.display().to_string()),
    ];
    let mut opt = |flag: &str, v: &Option<String>| {
        if let Some(v) = v {
            parts.push(flag.into());
            parts.push(shell_quote(v));
        }
    };
    opt("--s3-endpoint", &g.s3_endpoint);
    opt("--s3-region", &g.s3_region);
    opt("--s3-access-key-id", &g.s3_access_key_id);
    let secret = g
        .s3_secret_access_key_file
        .as_ref()
        .map(|p| std::path::absolute(p).map(|p| p.display().to_string()))
        .transpose()?;
    opt("--s3-secret-access-key-file", &secret);
    if g.s3_path_style {
        parts.push("--s3-path-style".into());
    }
    parts.push("-q".into());
    parts.push("wal-fetch".into());
    parts.push("%f".into());
    parts.push("%p".into());
    Ok(parts.join(" "))
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `seawall restore --pg-target` or `--pg-datadir`.
pub async fn restore(g: &Global, a: RestoreArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let checks = a.check.as_deref().map(ChecksFile::load).transpose()?;
    let progress = Arc::new(Progress::default());
    if let Some(target) = a.pg_target.clone() {
        let (id, snap) = find_backup(&repo, &a.snapshot, "logical", None).await?;
        let view = View::start(progress.clone(), "restore", !g.json && !g.quiet);
        let result = restore_logical_checked(
            repo,
            &snap,
            LogicalRestoreOptions {
                target_dsn: target.clone(),
                databases: a.database,
                globals: a.pg_globals,
                no_owner: a.no_owner,
                clean: a.pg_clean,
                jobs: a.jobs.unwrap_or_else(cores),
                tools: tools(g),
            },
            checks.as_ref(),
            progress.clone(),
        )
        .await;
        view.finish().await;
        let (report, reports) = result?;
        let bytes: u64 = report.databases.iter().map(|d| d.bytes).sum();
        if g.json {
            crate::output::json(
                &serde_json::json!({"snapshot": id, "restore": report, "checks": reports}),
            )?;
        } else if !g.quiet {
            for w in &report.warnings {
                eprintln!("note: {w}");
            }
            for d in &report.databases {
                println!(
                    "database {} restored into {}{} ({})",
                    d.source,
                    d.target,
                    if d.created { " (created)" } else { "" },
                    size(d.bytes)
                );
            }
            println!(
                "restored snapshot {} in {:.2}s ({})",
                id.short(),
                report.duration_secs,
                rate(bytes, report.duration_secs)
            );
            for r in &reports {
                print_checks(r);
            }
        }
        return Ok(checks_status(&reports));
    }
    let Some(datadir) = a.pg_datadir.clone() else {
        bail!("give --to DIR, --pg-target DSN or --pg-datadir DIR");
    };
    let (target, before) = match (&a.time, &a.lsn, a.immediate) {
        (Some(t), _, _) => {
            let at = parse_time(t)?;
            (
                RecoveryTarget::Time(at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()),
                Some(at),
            )
        }
        (None, Some(l), _) => (RecoveryTarget::Lsn(parse_lsn(l)?), None),
        (None, None, true) => (RecoveryTarget::Immediate, None),
        _ => (RecoveryTarget::Latest, None),
    };
    let (id, snap) = find_backup(&repo, &a.snapshot, "physical", before).await?;
    let restore_command = match a.restore_command.clone() {
        Some(c) => c,
        None => restore_command(g)?,
    };
    let run_as = match a.pg_user.clone() {
        Some(u) => Some(u),
        None if running_as_root() => Some("postgres".to_string()),
        None => None,
    };
    let view = View::start(progress.clone(), "restore", !g.json && !g.quiet);
    let result = restore_physical_checked(
        repo,
        &snap,
        PitrOptions {
            datadir: datadir.clone(),
            target,
            restore_command,
            start: a.start,
            run_as: run_as.clone(),
            port: a.pg_port,
            keep_archiving: a.pg_keep_archiving,
            ignore_wal_gap: a.ignore_wal_gap,
            verify_files: true,
            timeout: Duration::from_secs(a.recovery_timeout),
            tools: tools(g),
            settings: Vec::new(),
        },
        checks.as_ref(),
        progress,
    )
    .await;
    view.finish().await;
    let (report, reports) = result?;
    if g.json {
        crate::output::json(
            &serde_json::json!({"snapshot": id, "restore": report, "checks": reports}),
        )?;
    } else if !g.quiet {
        println!(
            "base backup {} laid down in {} ({}, {:.2}s){}",
            id.short(),
            datadir.display(),
            size(report.bytes),
            report.duration_secs,
            if report.files_verified {
                ", files verified against its manifest"
            } else {
                ""
            }
        );
        if let Some(r) = &report.wal_reach {
            println!("archived WAL reaches {r}");
        }
        match &report.dsn {
            Some(dsn) => println!("server recovered and promoted; connect with: {dsn}"),
            None => println!(
                "start the server to recover (pg_ctl -D {} start); recovery settings are in postgresql.auto.conf",
                datadir.display()
            ),
        }
        for r in &reports {
            print_checks(r);
        }
    }
    Ok(checks_status(&reports))
}

fn checks_status(reports: &[CheckReport]) -> u8 {
    if all_passed(reports) {
        0
    } else {
        1
    }
}

fn print_checks(r: &CheckReport) {
    let rows: i64 = r.tables.iter().map(|t| t.rows).sum();
    println!(
        "checks on database {}: {} tables, {} rows",
        r.database,
        r.tables.len(),
        rows
    );
    for c in &r.checks {
        println!(
            "  {} {}: {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
}

/// `seawall check postgres`.
pub async fn check(g: &Global, a: PgCheckArgs) -> anyhow::Result<u8> {
    let checks = match &a.checks {
        Some(p) => ChecksFile::load(p)?,
        None => ChecksFile::default(),
    };
    let report = check_postgres(
        &a.dsn,
        &checks,
        if a.no_amcheck {
            Depth::Counted
        } else {
            Depth::Amchecked
        },
        &tools(g),
    )
    .await?;
    if g.json {
        crate::output::json(&report)?;
    } else {
        for t in &report.tables {
            println!("{:>12}  {}", t.rows, t.table);
        }
        print_checks(&report);
    }
    Ok(checks_status(std::slice::from_ref(&report)))
}

fn spool(arg: &Option<PathBuf>) -> PathBuf {
    arg.clone().unwrap_or_else(default_root)
}

/// `seawall wal-push %p`.
pub async fn push(g: &Global, a: WalPushArgs) -> anyhow::Result<u8> {
    let opts = PushOptions {
        spool: spool(&a.spool),
        batch: a.batch.max(1),
        parallel: a.parallel.max(1),
    };
    let started = std::time::Instant::now();
    let report = wal_push(
        || async { repo_open::open(g).await.map_err(to_common) },
        &a.path,
        &opts,
    )
    .await
    .with_context(|| {
        format!(
            "archiving {} failed; PostgreSQL keeps it and will retry",
            a.path.display()
        )
    })?;
    tracing::info!(
        stored = report.stored.len(),
        already = report.already.len(),
        deferred = report.deferred.len(),
        from_spool = report.from_spool,
        secs = started.elapsed().as_secs_f64(),
        "wal-push"
    );
    if g.json {
        crate::output::json(&report)?;
    }
    Ok(0)
}

/// `seawall wal-fetch %f %p`.
pub async fn fetch(g: &Global, a: WalFetchArgs) -> anyhow::Result<u8> {
    let opts = FetchOptions {
        spool: spool(&a.spool),
        prefetch: a.prefetch,
    };
    match wal_fetch(
        || async { repo_open::open(g).await.map_err(to_common) },
        &a.file,
        &a.path,
        &opts,
    )
    .await
    {
        Ok(true) => Ok(0),
        Ok(false) => {
            if !g.quiet {
                eprintln!("seawall: {} is not in the WAL archive", a.file);
            }
            Ok(EXIT_WAL_NOT_FOUND)
        }
        Err(e) => {
            eprintln!(
                "seawall: error: fetching WAL file {} failed, so recovery stops here rather than end early: {}",
                a.file,
                crate::output::one_line(&anyhow::Error::from(e))
            );
            Ok(EXIT_WAL_FETCH_FAILED)
        }
    }
}

/// `seawall wal-stream`: runs until SIGTERM or Ctrl-C, then archives what is left.
pub async fn stream(g: &Global, a: WalStreamArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let opts = seawall_agent::engine::postgres::receive::StreamOptions {
        dsn: a.dsn,
        dir: a.dir,
        slot: a.slot,
        partial_every: Duration::from_secs(a.partial_every.max(1)),
        tools: tools(g),
    };
    let stats =
        seawall_agent::engine::postgres::receive::stream_wal(repo, opts, shutdown_signal()).await?;
    if g.json {
        crate::output::json(&stats)?;
    } else if !g.quiet {
        println!(
            "wal-stream stopped: {} segments and {} partial uploads archived",
            stats.segments, stats.partials
        );
    }
    Ok(0)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn to_common(e: anyhow::Error) -> seawall_common::Error {
    seawall_common::Error::new(seawall_common::ErrorKind::Io, crate::output::one_line(&e))
}
