//! The agent's certificate, renewed on disk while it runs: checked every
//! few seconds, and when new files name this same agent the session is
//! reopened with them, long before the old certificate expires. Beside it,
//! the coordinator certificates the agent no longer trusts.

use seawall_common::tls::certinfo::not_after;
use seawall_common::tls::{Identity, TlsFiles, TlsPem, WatchedTls};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the files are checked.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The certificate files and what was last loaded from them.
pub struct AgentTls {
    watched: WatchedTls,
    current: Mutex<TlsPem>,
    identity: Identity,
    /// Coordinator certificates no longer trusted.
    pub revoked: Arc<super::revoked::RevokedCertificates>,
}

impl AgentTls {
    /// Starts from `pem`, loaded and checked from `files` by `prepare`.
    pub fn new(
        files: TlsFiles,
        pem: TlsPem,
        revoked: Arc<super::revoked::RevokedCertificates>,
    ) -> Arc<AgentTls> {
        let watched = WatchedTls::new(files);
        // Prime the digest, so the files just read do not count as renewed.
        let _ = watched.load_if_changed();
        record_expiry(&pem);
        Arc::new(AgentTls {
            watched,
            identity: pem.identity.clone(),
            current: Mutex::new(pem),
            revoked,
        })
    }

    /// The certificate to connect with.
    pub fn current(&self) -> TlsPem {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads renewed files; true when they are now current. Files naming
    /// another identity are refused and the current ones kept.
    pub async fn renewed(self: &Arc<Self>) -> bool {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.reload())
            .await
            .unwrap_or(false)
    }

    fn reload(&self) -> bool {
        let pem = match self.watched.load_if_changed() {
            Ok(Some(pem)) => pem,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "renewed certificate files not usable yet; keeping the current ones");
                return false;
            }
        };
        if pem.identity != self.identity {
            tracing::warn!(
                cert = %self.watched.files().cert.display(),
                found = %pem.identity,
                expected = %self.identity,
                "the renewed certificate names another holder; keeping the current one"
            );
            return false;
        }
        record_expiry(&pem);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = pem;
        tracing::info!(cert = %self.watched.files().cert.display(), "certificate renewed on disk: reconnecting with it");
        true
    }
}

fn record_expiry(pem: &TlsPem) {
    use rustls_pki_types::pem::PemObject;
    let at = rustls_pki_types::CertificateDer::from_pem_slice(&pem.cert)
        .ok()
        .and_then(|der| not_after(&der).ok());
    if let Some(at) = at {
        metrics::gauge!(crate::daemon::metrics::CERTIFICATE_EXPIRY, "holder" => "agent")
            .set(at as f64);
    }
}
