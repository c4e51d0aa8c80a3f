//! Coordinator certificates this agent no longer trusts. The leader sends
//! the fleet's revoked fingerprints down the stream; the agent keeps them
//! in its state directory (only ever adding), and its TLS connections
//! refuse a coordinator presenting one, so a stolen coordinator certificate
//! cannot command the agent, even after a restart or with the leader gone.

use seawall_common::{Error, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// The file, in the state directory.
const FILE: &str = "revoked-certificates";
/// Most fingerprints kept (64 hex digits each: 640 KB at most).
const MAX_KEPT: usize = 10_000;

/// The revoked fingerprints, persisted.
#[derive(Debug)]
pub struct RevokedCertificates {
    path: PathBuf,
    known: RwLock<BTreeSet<String>>,
}

impl RevokedCertificates {
    /// Those kept in `state_dir` (none when the file is absent).
    pub fn open(state_dir: &Path) -> Result<RevokedCertificates> {
        let path = state_dir.join(FILE);
        let known = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| is_fingerprint(l))
                .map(str::to_string)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        Ok(RevokedCertificates {
            path,
            known: RwLock::new(known),
        })
    }

    /// Whether `fingerprint` (lowercase hex SHA-256 of the DER) is revoked.
    pub fn contains(&self, fingerprint: &str) -> bool {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(fingerprint)
    }

    /// Adds what the leader sent and keeps it on disk; the number new.
    pub fn add(&self, fingerprints: &[String]) -> Result<usize> {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        let before = known.len();
        for fp in fingerprints.iter().filter(|f| is_fingerprint(f)) {
            if known.len() >= MAX_KEPT {
                break;
            }
            known.insert(fp.clone());
        }
        let added = known.len() - before;
        if added > 0 {
            let text: String = known.iter().map(|f| format!("{f}\n")).collect();
            super::durable::write(&self.path, text.as_bytes())?;
        }
        Ok(added)
    }
}

fn is_fingerprint(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_are_kept_across_restarts_and_junk_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let r = RevokedCertificates::open(dir.path()).unwrap();
        let fp = "ab".repeat(32);
        assert!(!r.contains(&fp));
        let sent = vec![fp.clone(), "not a fingerprint".into(), "AB".repeat(32)];
        assert_eq!(r.add(&sent).unwrap(), 1);
        assert_eq!(r.add(&sent).unwrap(), 0);
        let again = RevokedCertificates::open(dir.path()).unwrap();
        assert!(again.contains(&fp));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
