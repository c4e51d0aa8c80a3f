//! The backup engine: sources, pipeline, restore, verify, retention, and
//! the typed operations the CLI and the agent daemon run through it.

pub mod browse;
pub mod drill;
pub mod files;
pub mod forget;
pub mod mirror;
pub mod operation;
pub use seawall_common::percent;
pub mod pipeline;
pub mod postgres;
pub mod progress;
pub mod prune;
pub mod rds_snapshot_copy;
pub mod redis;
pub mod repair;
pub mod repo_state;
pub mod repository;
pub mod restore;
pub mod stream;
pub mod tag;
pub mod verify;

/// Runs `f` under the repository's shared backup lock, released whatever
/// `f` returns (its error first).
pub(crate) async fn under_backup_lock<T>(
    repo: &std::sync::Arc<seawall_common::Repository>,
    wait: std::time::Duration,
    f: impl AsyncFnOnce(&seawall_common::repo::lock::RepoLock) -> seawall_common::Result<T>,
) -> seawall_common::Result<T> {
    let lock =
        seawall_common::repo::lock::RepoLock::acquire(repo.clone(), false, "backup", wait).await?;
    let result = f(&lock).await;
    let released = lock.release().await;
    let outcome = result?;
    released?;
    Ok(outcome)
}

/// Records a committed snapshot in the repository's head. The snapshot is
/// already the commit point, so a failure here does not fail the backup:
/// it is logged, and `verify` lists the snapshot as not recorded.
pub async fn record_in_head(
    repo: &seawall_common::Repository,
    id: seawall_common::Id,
    time: chrono::DateTime<chrono::Utc>,
) {
    if let Err(e) = repo.head_add(id, time).await {
        tracing::warn!(snapshot = %id.short(), error = %e, "snapshot saved but not recorded in the head");
    }
}
