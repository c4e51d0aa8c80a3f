//! `seawall backup files`.

use crate::args::{BackupArgs, BackupSource, FilesArgs, Global};
use crate::output::{rate, size};
use crate::progress_view::View;
use crate::repo_open;
use seawall_agent::engine::files::{backup_files, BackupOptions, ParentChoice};
use seawall_agent::engine::progress::Progress;
use std::sync::Arc;
use std::time::Duration;

/// Runs a backup of the chosen source.
pub async fn run(g: &Global, args: BackupArgs) -> anyhow::Result<u8> {
    if args.source.is_some()
        && (args.now
            || args.region.is_some()
            || args.source_name.is_some()
            || args.full
            || args.wait)
    {
        anyhow::bail!(
            "--now, --region, --source, --full and --wait ask the coordinator and take no source: use `backup --now --region R --source S`, or `backup files|postgres|redis ...` alone (a full files backup is `backup files --force`)"
        );
    }
    match args.source {
        Some(BackupSource::Files(f)) => files(g, f).await,
        Some(BackupSource::Postgres(p)) => super::postgres::backup(g, p).await,
        Some(BackupSource::Redis(r)) => super::redis::backup(g, r).await,
        None if args.now => super::operator::backup_now(g, args).await,
        None => anyhow::bail!(
            "give a source (backup files|postgres|redis ...), or --now --region R --source S to ask the coordinator"
        ),
    }
}

async fn files(g: &Global, a: FilesArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let parent = match (&a.parent, a.force) {
        (_, true) => ParentChoice::None,
        (Some(p), _) => ParentChoice::Snapshot(repo.find_snapshot(p).await?.0),
        (None, false) => ParentChoice::Auto,
    };
    let mut opts = BackupOptions {
        paths: a.paths,
        excludes: a.exclude,
        tags: a.tag,
        parent,
        one_file_system: a.one_file_system,
        compression_level: a.compression_level,
        scan: !g.json && !g.quiet,
        lock_wait: Duration::from_secs(g.lock_wait),
        ..BackupOptions::default()
    };
    if let Some(t) = a.threads {
        opts.threads = t.max(1);
    }
    let progress = Arc::new(Progress::default());
    let view = View::start(progress.clone(), "backup", !g.json && !g.quiet);
    let result = backup_files(repo, opts, progress).await;
    view.finish().await;
    let outcome = result?;
    let s = &outcome.snapshot.summary;
    if g.json {
        crate::output::json(&serde_json::json!({
            "snapshot": outcome.id,
            "parent": outcome.snapshot.parent,
            "backup_type": outcome.snapshot.backup_type,
            "summary": s,
        }))?;
    } else if !g.quiet {
        for w in &s.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "files: {} new, {} changed, {} unchanged; {} directories",
            s.files_new, s.files_changed, s.files_unchanged, s.dirs
        );
        println!(
            "read {} of {} in {:.2}s ({}), added {} to the repository",
            size(s.bytes_read),
            size(s.bytes_total),
            s.duration_secs,
            rate(s.bytes_read, s.duration_secs),
            size(s.bytes_added)
        );
        println!("snapshot {} saved", outcome.id.short());
    }
    Ok(if s.warnings.is_empty() {
        0
    } else {
        crate::EXIT_INCOMPLETE
    })
}
