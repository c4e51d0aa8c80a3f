//! `seawall restore`.

use crate::args::{Global, RestoreArgs};
use crate::output::{rate, size};
use crate::progress_view::View;
use crate::repo_open;
use seawall_agent::engine::progress::Progress;
use seawall_agent::engine::restore::{restore, RestoreOptions};
use std::sync::Arc;

/// Restores a snapshot into a directory.
pub async fn run(g: &Global, a: RestoreArgs) -> anyhow::Result<u8> {
    if a.redis_target.is_some() {
        return super::redis::restore_keys(g, a).await;
    }
    if a.redis_datadir.is_some() {
        return super::redis::restore(g, a).await;
    }
    if a.start && a.pg_datadir.is_none() {
        anyhow::bail!("--start goes with --pg-datadir or --redis-datadir");
    }
    if a.pg_target.is_some() || a.pg_datadir.is_some() {
        return super::postgres::restore(g, a).await;
    }
    let Some(to) = a.to.clone() else {
        anyhow::bail!(
            "give --to DIR to restore files (or --pg-target / --pg-datadir for PostgreSQL)"
        );
    };
    let repo = repo_open::open(g).await?;
    let (id, snap) = repo.find_snapshot(&a.snapshot).await?;
    let progress = Arc::new(Progress::default());
    let view = View::start(progress.clone(), "restore", !g.json && !g.quiet);
    let threads = a
        .threads
        .unwrap_or_else(seawall_agent::engine::restore::default_threads);
    let result = restore(
        repo,
        &snap,
        RestoreOptions {
            target: to.clone(),
            include: a.include,
            threads,
            fingerprint: false,
        },
        progress,
    )
    .await;
    view.finish().await;
    let summary = result?;
    if g.json {
        crate::output::json(&serde_json::json!({ "snapshot": id, "summary": summary }))?;
    } else if !g.quiet {
        let more = match (summary.hardlinks, summary.specials) {
            (0, 0) => String::new(),
            (h, s) => format!(", {h} hard links, {s} special files"),
        };
        println!(
            "restored snapshot {} to {}: {} files, {} directories, {} symlinks{more}, {} in {:.2}s ({})",
            id.short(),
            to.display(),
            summary.files,
            summary.dirs,
            summary.symlinks,
            size(summary.bytes),
            summary.duration_secs,
            rate(summary.bytes, summary.duration_secs)
        );
    }
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    for f in &summary.failed {
        eprintln!("error: not restored: {f}");
    }
    if summary.failed.is_empty() {
        Ok(0)
    } else {
        anyhow::bail!(
            "{} entries could not be restored, each named above: a damaged repository (run `seawall verify --read-data`), or what this user may not make (a device node needs root)",
            summary.failed.len()
        )
    }
}
