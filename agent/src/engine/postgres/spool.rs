//! A private local directory that makes `wal-push` and `wal-fetch` cheap:
//! markers for segments already pushed in a batch (PostgreSQL's next call
//! for them returns at once) and segments fetched ahead of recovery.
//! Losing it costs only speed, so it may live in /tmp; it must be ours
//! alone, or another user could fake a marker and lose us WAL.

use nix::unistd::geteuid;
use seawall_common::{Error, ErrorKind, Result};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Markers and prefetched files older than this are stale.
const STALE: Duration = Duration::from_secs(24 * 3600);

/// The spool of one `pg_wal` directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// The default spool root: `$TMPDIR/seawall-spool-<uid>`.
pub fn default_root() -> PathBuf {
    std::env::temp_dir().join(format!("seawall-spool-{}", geteuid()))
}

fn private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(Error::io(format!("creating spool {}", dir.display()), e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir.display(), e))?;
    if !meta.is_dir() || meta.uid() != geteuid().as_raw() || meta.permissions().mode() & 0o077 != 0
    {
        return Err(Error::new(
            ErrorKind::Denied,
            format!(
                "spool {} must be a directory owned by this user with mode 0700: remove it or pass --spool DIR",
                dir.display()
            ),
        ));
    }
    Ok(())
}

impl Spool {
    /// Opens the spool for the WAL directory `wal_dir` under `root`.
    pub fn open(root: &Path, wal_dir: &Path) -> Result<Spool> {
        let canonical = std::fs::canonicalize(wal_dir).unwrap_or_else(|_| wal_dir.to_path_buf());
        let scope = hex::encode(&Sha256::digest(canonical.as_os_str().as_encoded_bytes())[..8]);
        private_dir(root)?;
        let dir = root.join(scope);
        for sub in ["pushed", "prefetch"] {
            private_dir(&dir.join(sub))?;
        }
        Ok(Spool { dir })
    }

    fn pushed(&self, name: &str) -> PathBuf {
        self.dir.join("pushed").join(name)
    }

    fn prefetched(&self, name: &str) -> PathBuf {
        self.dir.join("prefetch").join(name)
    }

    /// Whether `name` was pushed in an earlier batch; forgets the marker.
    pub fn take_pushed(&self, name: &str) -> bool {
        std::fs::remove_file(self.pushed(name)).is_ok()
    }

    /// Records that `name` is safely archived.
    pub fn mark_pushed(&self, name: &str) -> Result<()> {
        let p = self.pushed(name);
        std::fs::write(&p, b"").map_err(|e| Error::io(p.display(), e))
    }

    /// Keeps a segment fetched ahead.
    pub fn store_prefetched(&self, name: &str, data: &[u8]) -> Result<()> {
        let p = self.prefetched(name);
        let tmp = self.dir.join("prefetch").join(format!(".tmp-{name}"));
        std::fs::write(&tmp, data).map_err(|e| Error::io(tmp.display(), e))?;
        std::fs::rename(&tmp, &p).map_err(|e| Error::io(p.display(), e))
    }

    /// Whether a segment was fetched ahead.
    pub fn has_prefetched(&self, name: &str) -> bool {
        self.prefetched(name).is_file()
    }

    /// Takes a segment fetched ahead, if there is one.
    pub fn take_prefetched(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let p = self.prefetched(name);
        match std::fs::read(&p) {
            Ok(data) => {
                let _ = std::fs::remove_file(&p);
                Ok(Some(data))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p.display(), e)),
        }
    }

    /// Removes prefetched files recovery has passed and stale markers.
    pub fn tidy(&self, passed: &str) {
        for sub in ["pushed", "prefetch"] {
            let Ok(entries) = std::fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > STALE);
                let behind = sub == "prefetch" && name.len() == passed.len() && *name < *passed;
                if old || behind {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Records the outcome of the last archive attempt, for monitoring.
    pub fn record(&self, name: &str, error: Option<&str>) {
        let status = self.dir.join("last-push.json");
        let body = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339(),
            "file": name,
            "ok": error.is_none(),
            "error": error,
        });
        let _ = std::fs::write(&status, body.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_prefetch_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let wal = tempfile::tempdir().unwrap();
        let s = Spool::open(&root.path().join("spool"), wal.path()).unwrap();
        assert!(!s.take_pushed("000000010000000000000001"));
        s.mark_pushed("000000010000000000000001").unwrap();
        assert!(s.take_pushed("000000010000000000000001"));
        assert!(!s.take_pushed("000000010000000000000001"));
        s.store_prefetched("000000010000000000000002", b"x")
            .unwrap();
        s.store_prefetched("000000010000000000000003", b"y")
            .unwrap();
        s.tidy("000000010000000000000003");
        assert!(!s.has_prefetched("000000010000000000000002"));
        assert_eq!(
            s.take_prefetched("000000010000000000000003").unwrap(),
            Some(b"y".to_vec())
        );
    }

    #[test]
    fn refuses_a_shared_spool() {
        let root = tempfile::tempdir().unwrap();
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Spool::open(&open, root.path()).unwrap_err();
        assert!(err.to_string().contains("mode 0700"), "{err}");
    }
}
