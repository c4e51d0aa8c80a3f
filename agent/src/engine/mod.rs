//! The backup engine: sources, pipeline, restore, verify, retention, and
//! the typed operations the CLI and the agent daemon run through it.

pub mod browse;
pub mod canary;
pub mod drill;
pub mod files;
pub mod forget;
pub mod mirror;
pub mod operation;
pub use seawall_common::percent;
pub mod pipeline;
pub mod postgres;
pub mod progress;
pub mod promotion;
pub mod prune;
pub mod reach;
pub mod redis;
pub mod repair;
pub mod replication;
pub mod repo_state;
pub mod repository;
pub mod restore;
pub mod stream;
pub mod tag;
pub mod verify;

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
