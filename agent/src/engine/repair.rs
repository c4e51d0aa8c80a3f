//! `repair index`: rebuilds the index from the packs' own headers, for when
//! index files are lost or damaged. The new index supersedes every old one.

use seawall_common::repo::index::{IndexFile, IndexPack};
use seawall_common::repo::lock::RepoLock;
use seawall_common::repo::pack::parse_header;
use seawall_common::storage::FileKind;
use seawall_common::{Id, Repository, Result};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// What the rebuild found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Packs whose headers were read into the new index.
    pub packs_indexed: u64,
    /// Packs whose header is unreadable, left out.
    pub packs_unreadable: Vec<String>,
    /// Index files replaced.
    pub index_files_replaced: u64,
}

/// Rebuilds the index from every pack's header, under an exclusive lock.
pub async fn repair_index(repo: Arc<Repository>, lock_wait: Duration) -> Result<RepairReport> {
    let lock = RepoLock::acquire(repo.clone(), true, "repair index", lock_wait).await?;
    let result = rebuild(&repo).await;
    let released = lock.release().await;
    let report = result?;
    released?;
    Ok(report)
}

async fn rebuild(repo: &Repository) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    let mut packs = Vec::new();
    for listed in repo.storage().list(FileKind::Pack).await? {
        let Ok(id) = listed.name.parse::<Id>() else {
            continue;
        };
        let data = repo.storage().read(FileKind::Pack, &listed.name).await?;
        match parse_header(repo.key(), &data) {
            Ok(entries) => {
                packs.push(IndexPack::from_entries(id, data.len() as u64, &entries));
                report.packs_indexed += 1;
            }
            Err(e) => report.packs_unreadable.push(format!("{id}: {e}")),
        }
    }
    let old: Vec<Id> = repo
        .storage()
        .list(FileKind::Index)
        .await?
        .into_iter()
        .filter_map(|l| l.name.parse().ok())
        .collect();
    let (new_id, _) = repo
        .write_json(
            FileKind::Index,
            &IndexFile {
                supersedes: old.clone(),
                packs,
            },
        )
        .await?;
    for id in old.iter().filter(|id| **id != new_id) {
        repo.storage().remove(FileKind::Index, &id.to_hex()).await?;
        report.index_files_replaced += 1;
    }
    Ok(report)
}
