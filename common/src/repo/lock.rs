//! Repository locks. Backups take shared locks, prune takes an exclusive one.
//! A process writes its lock first and then looks for conflicting ones, so of
//! two racing processes at least one sees the other. Locks carry an expiry
//! that the holder refreshes; an expired lock, or one of a dead process on
//! this host, is stale and ignored.

use super::repository::Repository;
use crate::error::{Error, ErrorKind, Result};
use crate::storage::FileKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How long a lock stays valid without a refresh.
pub const LOCK_TTL: Duration = Duration::from_secs(30 * 60);
/// How often a holder refreshes its lock.
pub const LOCK_REFRESH: Duration = Duration::from_secs(5 * 60);

/// A lock's timing: how long it is valid, how often it is refreshed, and
/// how long before its expiry the holder stops trusting it (clocks of
/// other hosts may run ahead).
#[derive(Debug, Clone, Copy)]
pub struct LockTimes {
    /// Validity without a refresh.
    pub ttl: Duration,
    /// Refresh interval.
    pub refresh: Duration,
    /// Safety margin before the written expiry.
    pub margin: Duration,
}

impl Default for LockTimes {
    fn default() -> Self {
        LockTimes {
            ttl: LOCK_TTL,
            refresh: LOCK_REFRESH,
            margin: LOCK_REFRESH,
        }
    }
}

/// The content of a lock file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockInfo {
    /// Exclusive (prune) or shared (backup).
    pub exclusive: bool,
    /// Host of the holder.
    pub hostname: String,
    /// Process id of the holder.
    pub pid: u32,
    /// What the holder is doing.
    pub operation: String,
    /// When the lock was taken.
    pub created: DateTime<Utc>,
    /// When the lock lapses unless refreshed.
    pub expires: DateTime<Utc>,
}

impl LockInfo {
    /// A lock of this process, valid for [`LOCK_TTL`] from now.
    pub fn fresh(exclusive: bool, operation: &str) -> LockInfo {
        Self::valid_for(exclusive, operation, LOCK_TTL)
    }

    /// A lock of this process, valid for `ttl` from now.
    pub fn valid_for(exclusive: bool, operation: &str, ttl: Duration) -> LockInfo {
        let now = Utc::now();
        LockInfo {
            exclusive,
            hostname: super::hostname(),
            pid: std::process::id(),
            operation: operation.to_string(),
            created: now,
            expires: now + chrono::Duration::from_std(ttl).unwrap_or_default(),
        }
    }

    /// Whether the lock no longer protects anything.
    pub fn is_stale(&self) -> bool {
        if self.expires < Utc::now() {
            return true;
        }
        self.hostname == super::hostname() && !process_alive(self.pid)
    }
}

fn process_alive(pid: u32) -> bool {
    // /proc/<pid> exists while the process does; no signal needed.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A held lock; dropping it without [`RepoLock::release`] leaves it to expire.
pub struct RepoLock {
    repo: Arc<Repository>,
    name: Arc<tokio::sync::Mutex<String>>,
    refresher: tokio::task::JoinHandle<()>,
    /// The expiry of the last lock file written.
    held_until: Arc<std::sync::Mutex<DateTime<Utc>>>,
    margin: Duration,
}

impl RepoLock {
    /// Takes a lock, waiting up to `wait` for conflicting ones to go away.
    pub async fn acquire(
        repo: Arc<Repository>,
        exclusive: bool,
        operation: &str,
        wait: Duration,
    ) -> Result<RepoLock> {
        Self::acquire_with(repo, exclusive, operation, wait, LockTimes::default()).await
    }

    /// [`acquire`](Self::acquire) with other timings.
    pub async fn acquire_with(
        repo: Arc<Repository>,
        exclusive: bool,
        operation: &str,
        wait: Duration,
        times: LockTimes,
    ) -> Result<RepoLock> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match Self::try_acquire(&repo, exclusive, operation, times.ttl).await {
                Ok((name, expires)) => {
                    let name = Arc::new(tokio::sync::Mutex::new(name));
                    let held_until = Arc::new(std::sync::Mutex::new(expires));
                    let refresher = tokio::spawn(refresh_loop(
                        repo.clone(),
                        name.clone(),
                        held_until.clone(),
                        exclusive,
                        operation.to_string(),
                        times,
                    ));
                    return Ok(RepoLock {
                        repo,
                        name,
                        refresher,
                        held_until,
                        margin: times.margin,
                    });
                }
                Err(e)
                    if e.kind() == ErrorKind::Locked && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_acquire(
        repo: &Repository,
        exclusive: bool,
        operation: &str,
        ttl: Duration,
    ) -> Result<(String, DateTime<Utc>)> {
        let info = LockInfo::valid_for(exclusive, operation, ttl);
        let (own, _) = repo.write_json(FileKind::Lock, &info).await?;
        let own = own.to_hex();
        match find_conflict(repo, &own, exclusive).await {
            Ok(None) => Ok((own, info.expires)),
            Ok(Some(other)) => {
                repo.storage().remove(FileKind::Lock, &own).await?;
                Err(Error::new(
                    ErrorKind::Locked,
                    format!(
                        "repository is locked{} by `{}` on {} (pid {}) since {}; wait for it, or if that process is gone run `seawall unlock`",
                        if other.exclusive { " exclusively" } else { "" },
                        other.operation,
                        other.hostname,
                        other.pid,
                        other.created.format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                ))
            }
            Err(e) => {
                let _ = repo.storage().remove(FileKind::Lock, &own).await;
                Err(e)
            }
        }
    }

    /// Whether the lock still protects its holder: the expiry last written
    /// is more than the margin away. A holder whose refreshes kept failing
    /// must stop before a prune elsewhere may take its lock for stale, and
    /// above all before it commits a snapshot whose packs prune may delete.
    pub fn check(&self) -> Result<()> {
        let until = *self.held_until.lock().unwrap_or_else(|p| p.into_inner());
        let margin = chrono::Duration::from_std(self.margin).unwrap_or_default();
        if until - margin > Utc::now() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Locked,
            format!(
                "the repository lock could not be refreshed and lapses at {}: stopping before the snapshot is written (a prune elsewhere may take the lock for stale); check the storage and run the backup again",
                until.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        ))
    }

    /// Removes the lock.
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        let name = self.name.lock().await.clone();
        self.repo.storage().remove(FileKind::Lock, &name).await
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

async fn find_conflict(repo: &Repository, own: &str, exclusive: bool) -> Result<Option<LockInfo>> {
    for listed in repo.storage().list(FileKind::Lock).await? {
        if listed.name == own {
            continue;
        }
        let info: LockInfo = match repo.read_json(FileKind::Lock, &listed.name).await {
            Ok(i) => i,
            // Removed between list and read: it no longer conflicts.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            // Not sealed with this repository's key: no seawall wrote it,
            // so it locks nothing. `seawall unlock` removes it.
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                tracing::warn!(lock = %listed.name, error = %e, "ignoring a lock file that does not open; `seawall unlock` removes it");
                continue;
            }
            Err(e) => return Err(e),
        };
        if !info.is_stale() && (exclusive || info.exclusive) {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

async fn refresh_loop(
    repo: Arc<Repository>,
    name: Arc<tokio::sync::Mutex<String>>,
    held_until: Arc<std::sync::Mutex<DateTime<Utc>>>,
    exclusive: bool,
    operation: String,
    times: LockTimes,
) {
    loop {
        tokio::time::sleep(times.refresh).await;
        let info = LockInfo::valid_for(exclusive, &operation, times.ttl);
        let mut current = name.lock().await;
        match repo.write_json(FileKind::Lock, &info).await {
            Ok((id, _)) => {
                let old = std::mem::replace(&mut *current, id.to_hex());
                let _ = repo.storage().remove(FileKind::Lock, &old).await;
                *held_until.lock().unwrap_or_else(|p| p.into_inner()) = info.expires;
            }
            Err(e) => tracing::warn!(error = %e, "could not refresh repository lock"),
        }
    }
}

/// Removes stale locks; returns how many were removed.
pub async fn remove_stale(repo: &Repository, all: bool) -> Result<usize> {
    let mut removed = 0;
    for listed in repo.storage().list(FileKind::Lock).await? {
        let stale = match repo
            .read_json::<LockInfo>(FileKind::Lock, &listed.name)
            .await
        {
            Ok(info) => all || info.is_stale(),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            // A lock that cannot be decoded protects nothing; one that could not
            // be read (network, permissions) may be live and must stay.
            Err(e) if e.kind() == ErrorKind::Corrupt => true,
            Err(e) => return Err(e),
        };
        if stale {
            repo.storage().remove(FileKind::Lock, &listed.name).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

    #[tokio::test]
    async fn a_lock_whose_refreshes_fail_stops_protecting_before_it_lapses() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let storage: Arc<dyn crate::storage::Storage> = Arc::new(LocalStorage::new(&root));
        let repo = Arc::new(
            Repository::init_with_kdf(
                storage,
                b"pw",
                crate::crypto::KdfParams {
                    m_cost: 64,
                    t_cost: 1,
                    ..crate::crypto::KdfParams::default_fresh()
                },
            )
            .await
            .unwrap(),
        );
        let times = LockTimes {
            ttl: Duration::from_secs(3),
            refresh: Duration::from_millis(300),
            margin: Duration::from_secs(1),
        };
        let lock = RepoLock::acquire_with(repo.clone(), false, "backup", Duration::ZERO, times)
            .await
            .unwrap();
        // Refreshes succeed: still valid well past the first TTL.
        tokio::time::sleep(Duration::from_secs(4)).await;
        lock.check().unwrap();
        // The locks folder becomes unwritable (a file where it was).
        std::fs::rename(root.join("locks"), root.join("locks-away")).unwrap();
        std::fs::write(root.join("locks"), b"not a folder").unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let err = lock.check().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Locked);
        assert!(
            err.to_string()
                .contains("stopping before the snapshot is written"),
            "{err}"
        );
    }
}
