//! Changing the tags of existing snapshots. A snapshot's name is the hash
//! of its bytes, so a retagged snapshot is written anew (same content, new
//! tags, new id) and the old file removed, under the exclusive lock like
//! `forget`, with the head updated to match.

use seawall_common::repo::lock::RepoLock;
use seawall_common::storage::FileKind;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use std::sync::Arc;

/// How tags change.
#[derive(Debug, Clone, Default)]
pub struct TagChange {
    /// Tags added.
    pub add: Vec<String>,
    /// Tags removed.
    pub remove: Vec<String>,
    /// Tags replacing all others, when given.
    pub set: Option<Vec<String>>,
}

/// Applies `change` to each snapshot `specs` names; returns (old, new) ids
/// of those whose tags changed.
pub async fn retag(
    repo: &Arc<Repository>,
    specs: &[String],
    change: &TagChange,
    lock_wait: std::time::Duration,
) -> Result<Vec<(Id, Id)>> {
    if change.add.is_empty() && change.remove.is_empty() && change.set.is_none() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "nothing to change: give --add, --remove or --set",
        ));
    }
    let lock = RepoLock::acquire(repo.clone(), true, "tag", lock_wait).await?;
    let outcome: Result<Vec<(Id, Id)>> = async {
        let mut done = Vec::new();
        for spec in specs {
            let (old, mut snap) = repo.find_snapshot(spec).await?;
            let mut tags = match &change.set {
                Some(set) => set.clone(),
                None => snap.tags.clone(),
            };
            tags.retain(|t| !change.remove.contains(t));
            for t in &change.add {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
            if tags == snap.tags {
                continue;
            }
            snap.tags = tags;
            lock.check()?;
            let (new, _) = repo.write_json(FileKind::Snapshot, &snap).await?;
            repo.head_add(new, snap.time).await?;
            repo.storage()
                .remove(FileKind::Snapshot, &old.to_hex())
                .await?;
            repo.head_remove(&[old]).await?;
            done.push((old, new));
        }
        Ok(done)
    }
    .await;
    lock.release().await?;
    outcome
}
