//! `seawall prune`, `unlock` and `repair`: keeping a repository tidy and whole.

use crate::args::{Global, PruneArgs, RepairArgs, RepairWhat, UnlockArgs};
use crate::output::size;
use crate::repo_open;
use seawall_agent::engine::prune::PruneReport;
use std::time::Duration;

/// Removes unneeded data.
pub async fn prune(g: &Global, a: PruneArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let report =
        seawall_agent::engine::prune::prune(repo, a.dry_run, Duration::from_secs(g.lock_wait))
            .await?;
    if g.json {
        crate::output::json(&report)?;
    } else if !g.quiet {
        print_prune(&report);
    }
    Ok(0)
}

/// Prints a prune report for people.
pub fn print_prune(r: &PruneReport) {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    println!(
        "{} blobs used, {} unused; {verb} {} packs and {} unindexed packs, repacked {}; {} freed",
        r.blobs_used,
        r.blobs_unused,
        r.packs_deleted,
        r.unindexed_packs_deleted,
        r.packs_repacked,
        size(r.bytes_freed)
    );
    if r.temporaries_deleted > 0 {
        println!(
            "deleted {} temporary files left by interrupted writes",
            r.temporaries_deleted
        );
    }
    if let Some(oldest) = &r.wal.oldest_kept {
        println!(
            "WAL: {verb} {} files ({}) older than segment {oldest}, the oldest a kept base backup needs",
            r.wal.files_deleted,
            size(r.wal.bytes_freed)
        );
    }
}

/// Removes stale locks.
pub async fn unlock(g: &Global, a: UnlockArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    let n = seawall_common::repo::lock::remove_stale(&repo, a.remove_all).await?;
    if g.json {
        crate::output::json(&serde_json::json!({ "removed": n }))?;
    } else if !g.quiet {
        println!("removed {n} locks");
    }
    Ok(0)
}

/// Rebuilds metadata.
pub async fn repair(g: &Global, a: RepairArgs) -> anyhow::Result<u8> {
    let repo = repo_open::open(g).await?;
    match a.what {
        RepairWhat::Index => {
            let r =
                seawall_agent::engine::repair::repair_index(repo, Duration::from_secs(g.lock_wait))
                    .await?;
            if g.json {
                crate::output::json(&r)?;
            } else if !g.quiet {
                println!(
                    "indexed {} packs, replaced {} index files",
                    r.packs_indexed, r.index_files_replaced
                );
                for p in &r.packs_unreadable {
                    eprintln!("unreadable pack left out: {p}");
                }
            }
        }
    }
    Ok(0)
}
