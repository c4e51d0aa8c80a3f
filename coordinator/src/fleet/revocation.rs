//! Revoked certificates. A certificate is revoked by its SHA-256 fingerprint
//! (`seawall revoke`), recorded in the fleet's store so every replica
//! refuses it: new calls at the gate, and an agent stream already open at
//! its next heartbeat. Revoking one certificate leaves its holder free to
//! get a new one; a CRL would have to be signed with the CA key, which
//! should stay offline.

use crate::store::{StateStore, StoreResult};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Key prefix of revocation records.
pub const PREFIX: &str = "revoked/";

/// How often a replica re-reads the revocations from the store (the
/// leader also applies its own at once).
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub fingerprint: String,
    /// Why, as the operator put it.
    pub reason: String,
    /// Who revoked it.
    pub by: String,
    /// When.
    pub at_ms: i64,
}

/// The store key of a fingerprint's record.
pub fn key(fingerprint: &str) -> String {
    format!("{PREFIX}{fingerprint}")
}

/// Checks a fingerprint is 64 lowercase hex digits (colons and case as
/// `openssl` prints them are accepted and normalised).
pub fn normalise(fingerprint: &str) -> Result<String, String> {
    let fp: String = fingerprint
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if fp.len() == 64 && fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(fp)
    } else {
        Err(format!(
            "{fingerprint:?} is not a SHA-256 certificate fingerprint: give 64 hex digits, as `seawall certs` prints or `openssl x509 -noout -fingerprint -sha256 -in CERT` shows"
        ))
    }
}

/// The revoked fingerprints this replica knows.
#[derive(Debug, Default)]
pub struct Revocations {
    known: RwLock<HashMap<String, Revocation>>,
}

impl Revocations {
    /// Whether `fingerprint` is revoked.
    pub fn is_revoked(&self, fingerprint: &str) -> bool {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(fingerprint)
    }

    /// Every revocation, oldest first.
    pub fn list(&self) -> Vec<Revocation> {
        let mut all: Vec<Revocation> = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| {
            a.at_ms
                .cmp(&b.at_ms)
                .then(a.fingerprint.cmp(&b.fingerprint))
        });
        all
    }

    /// How many are known: the list only grows, so a larger count means
    /// something new to tell the agents.
    pub fn count(&self) -> usize {
        self.known.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The newest `max` fingerprints (all, usually), for the agents.
    pub fn fingerprints(&self, max: usize) -> Vec<String> {
        let all = self.list();
        let skip = all.len().saturating_sub(max);
        all.into_iter().skip(skip).map(|r| r.fingerprint).collect()
    }

    /// Applies one revocation at once (the leader, after writing it).
    pub fn insert(&self, r: Revocation) {
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r.fingerprint.clone(), r);
    }

    /// Reads every revocation from the store. A record that does not
    /// parse still revokes the fingerprint its key names.
    pub async fn refresh(&self, store: &dyn StateStore) -> StoreResult<usize> {
        let entries = store.list(PREFIX).await?;
        let mut fresh = HashMap::new();
        for e in entries {
            let Some(fp) = e.key.strip_prefix(PREFIX) else {
                continue;
            };
            let r = serde_json::from_slice::<Revocation>(&e.value).unwrap_or_else(|_| Revocation {
                fingerprint: fp.to_string(),
                reason: "(record unreadable)".into(),
                by: String::new(),
                at_ms: 0,
            });
            fresh.insert(fp.to_string(), r);
        }
        // Revocations are never withdrawn, so a refresh only adds: one the
        // leader applied while this list was being read is not lost.
        let mut k = self.known.write().unwrap_or_else(|p| p.into_inner());
        k.extend(fresh);
        Ok(k.len())
    }

    /// Refreshes every [`REFRESH_EVERY`] until `stop`.
    pub fn spawn_refresher(self: &Arc<Self>, store: Arc<dyn StateStore>, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = me.refresh(store.as_ref()).await {
                    tracing::warn!(error = %e, "cannot read revoked certificates; keeping the last list");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(REFRESH_EVERY) => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn fingerprints_are_normalised_or_refused() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(normalise(&colons).expect("colons"), "ab".repeat(32));
        assert!(normalise("abc").is_err());
        assert!(normalise(&"zz".repeat(32)).is_err());
    }
}
