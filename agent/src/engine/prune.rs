//! `prune`: removes data no snapshot needs, under an exclusive lock so no
//! backup runs beside it. Mark: walk every snapshot's trees and streams.
//! Sweep: packs with nothing used are deleted; packs mostly unused are
//! repacked (their used blobs copied sealed as they are into new packs).
//! Order keeps the repository whole at every step: new packs, then a new
//! index that supersedes the old ones, then old index files, then old packs.

use seawall_common::repo::index::{IndexFile, IndexPack};
use seawall_common::repo::lock::RepoLock;
use seawall_common::repo::pack::PackBuilder;
use seawall_common::repo::tree::NodeKind;
use seawall_common::storage::FileKind;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// What prune did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Blobs still used by a snapshot.
    pub blobs_used: u64,
    /// Blobs no snapshot uses.
    pub blobs_unused: u64,
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Packs rewritten.
    pub packs_repacked: u64,
    /// Packs no index named (left by interrupted backups), deleted.
    pub unindexed_packs_deleted: u64,
    /// Packs no index names yet that are too young to delete (a backup may
    /// still be writing them).
    pub unindexed_packs_kept: u64,
    /// Temporary files of writes a crash interrupted, deleted.
    pub temporaries_deleted: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Archived WAL older than the oldest kept base backup needs.
    pub wal: crate::engine::postgres::continuity::WalRetention,
    /// Whether nothing was changed (dry run).
    pub dry_run: bool,
}

/// Age from which a temporary file is taken for a crash's leftover: no
/// backup writes under prune's exclusive lock, and the margin spares a
/// lock-free `wal-push` writing at this moment.
const STALE_TEMPORARY: Duration = Duration::from_secs(600);

/// Share of unused bytes above which a pack is rewritten.
const REPACK_UNUSED_RATIO: f64 = 0.2;

/// Collects every blob id the snapshots need, following trees.
pub async fn used_blobs(repo: &Repository) -> Result<HashSet<Id>> {
    let mut used = HashSet::new();
    for (sid, snap) in repo.snapshots().await? {
        for s in &snap.streams {
            used.extend(s.content.iter().copied());
        }
        let mut stack: Vec<Id> = snap.tree.into_iter().collect();
        while let Some(tid) = stack.pop() {
            if !used.insert(tid) {
                continue;
            }
            let tree = repo.load_tree(&tid).await.map_err(|e| {
                e.context(format!(
                    "snapshot {} needs tree {} which cannot be read; prune stops so nothing it needs is lost (run `seawall verify`)",
                    sid.short(),
                    tid.short()
                ))
            })?;
            for node in tree.nodes {
                match node.kind {
                    NodeKind::Dir => stack.extend(node.subtree),
                    NodeKind::File => used.extend(node.content),
                    NodeKind::Symlink
                    | NodeKind::Fifo
                    | NodeKind::CharDevice
                    | NodeKind::BlockDevice => {}
                }
            }
        }
    }
    Ok(used)
}

/// Prunes the repository; with `dry_run` only reports.
pub async fn prune(
    repo: Arc<Repository>,
    dry_run: bool,
    lock_wait: Duration,
) -> Result<PruneReport> {
    let lock = RepoLock::acquire(repo.clone(), true, "prune", lock_wait).await?;
    let result = prune_locked(&repo, dry_run).await;
    let released = lock.release().await;
    let report = result?;
    released?;
    Ok(report)
}

async fn prune_locked(repo: &Arc<Repository>, dry_run: bool) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run,
        ..Default::default()
    };
    repo.load_index().await?;
    let index_files = repo.read_index_files().await?;
    let used = used_blobs(repo).await?;
    let snapshots = repo.snapshots().await?;
    report.wal =
        crate::engine::postgres::continuity::retain_wal(repo.clone(), &snapshots, dry_run).await?;
    let index = repo.index().clone();
    for b in &used {
        if !index.contains(b) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("a snapshot needs blob {} which no index lists; prune stops (run `seawall verify`)", b.short()),
            ));
        }
    }

    // Each used blob is kept in exactly one place: the one the merged index chose.
    let mut keep_packs: Vec<IndexPack> = Vec::new();
    let mut repack: Vec<IndexPack> = Vec::new();
    let mut delete: Vec<(Id, u64)> = Vec::new();
    let mut seen_packs = HashSet::new();
    for (_, file) in &index_files {
        for pack in &file.packs {
            if !seen_packs.insert(pack.id) {
                continue;
            }
            let live: Vec<_> = pack
                .blobs
                .iter()
                .filter(|b| {
                    used.contains(&b.id) && index.get(&b.id).is_some_and(|l| l.pack == pack.id)
                })
                .copied()
                .collect();
            let live_bytes: u64 = live.iter().map(|b| b.length as u64).sum();
            let total: u64 = pack
                .blobs
                .iter()
                .map(|b| b.length as u64)
                .sum::<u64>()
                .max(1);
            report.blobs_used += live.len() as u64;
            report.blobs_unused += (pack.blobs.len() - live.len()) as u64;
            if live.is_empty() {
                delete.push((pack.id, pack.size));
            } else if 1.0 - (live_bytes as f64 / total as f64) > REPACK_UNUSED_RATIO {
                repack.push(IndexPack {
                    id: pack.id,
                    size: pack.size,
                    blobs: live,
                });
            } else {
                keep_packs.push(IndexPack {
                    id: pack.id,
                    size: pack.size,
                    blobs: live,
                });
            }
        }
    }
    // A pack no index lists is an interrupted backup's leftover only once
    // it is older than any lock could still be valid: younger, it may be a
    // live backup's (one whose lock refresh failed and that prune could not
    // see), whose index is still to come.
    let young_before = std::time::SystemTime::now() - seawall_common::repo::lock::LOCK_TTL;
    let mut unindexed: Vec<(Id, u64)> = Vec::new();
    for l in repo.storage().list(FileKind::Pack).await? {
        let Ok(id) = l.name.parse::<Id>() else {
            continue;
        };
        if seen_packs.contains(&id) {
            continue;
        }
        if l.modified.is_some_and(|m| m < young_before) {
            unindexed.push((id, l.size));
        } else {
            report.unindexed_packs_kept += 1;
        }
    }
    report.packs_deleted = delete.len() as u64;
    report.packs_repacked = repack.len() as u64;
    report.unindexed_packs_deleted = unindexed.len() as u64;
    report.bytes_freed = delete
        .iter()
        .chain(unindexed.iter())
        .map(|(_, s)| s)
        .sum::<u64>();
    if dry_run {
        return Ok(report);
    }
    let (temporaries, bytes) = repo
        .storage()
        .remove_stale_temporaries(STALE_TEMPORARY)
        .await?;
    report.temporaries_deleted = temporaries;
    report.bytes_freed += bytes;

    let pack_size = repo.config().pack_size as usize;
    let mut builder = PackBuilder::with_capacity(pack_size);
    for pack in &repack {
        let data = repo
            .storage()
            .read(FileKind::Pack, &pack.id.to_hex())
            .await?;
        for b in &pack.blobs {
            let sealed = data
                .get(b.offset as usize..(b.offset + b.length) as usize)
                .ok_or_else(|| {
                    Error::corrupt(format!(
                        "pack {} is shorter than its index says",
                        pack.id.short()
                    ))
                })?;
            builder.add(b.kind, b.id, sealed, b.raw_length);
            if builder.len() >= pack_size {
                let full = std::mem::replace(&mut builder, PackBuilder::with_capacity(pack_size));
                keep_packs.push(write_pack(repo, full).await?);
            }
        }
        report.bytes_freed += pack.size;
    }
    if !builder.is_empty() {
        keep_packs.push(write_pack(repo, builder).await?);
    }
    if repack.is_empty() && delete.is_empty() && unindexed.is_empty() && index_files.len() <= 1 {
        return Ok(report);
    }
    let new_index = IndexFile {
        supersedes: index_files.iter().map(|(id, _)| *id).collect(),
        packs: keep_packs,
    };
    let (new_id, _) = repo.write_json(FileKind::Index, &new_index).await?;
    for (id, _) in &index_files {
        if *id != new_id {
            repo.storage().remove(FileKind::Index, &id.to_hex()).await?;
        }
    }
    for (id, _) in delete.iter().chain(unindexed.iter()) {
        repo.storage().remove(FileKind::Pack, &id.to_hex()).await?;
    }
    for pack in &repack {
        repo.storage()
            .remove(FileKind::Pack, &pack.id.to_hex())
            .await?;
    }
    Ok(report)
}

async fn write_pack(repo: &Repository, builder: PackBuilder) -> Result<IndexPack> {
    let finished = builder.finish(repo.key());
    let record =
        IndexPack::from_entries(finished.id, finished.bytes.len() as u64, &finished.entries);
    repo.storage()
        .write(
            FileKind::Pack,
            &finished.id.to_hex(),
            bytes::Bytes::from(finished.bytes),
        )
        .await?;
    Ok(record)
}
