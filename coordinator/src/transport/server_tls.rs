//! The replica's TLS settings, rebuilt whenever its certificate, key or CA
//! change on disk. Each new connection takes the settings current at its
//! handshake; established connections keep theirs.

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use seawall_common::tls::certinfo::not_after;
use seawall_common::tls::{Identity, TlsFiles, TlsPem, WatchedTls};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the files are checked for a renewal.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The current server settings and the files they came from.
pub struct ServerTls {
    watched: WatchedTls,
    replica: String,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Loads the files; refuses a certificate that is not this replica's.
    pub fn load(files: &TlsFiles, replica: &str) -> anyhow::Result<Arc<ServerTls>> {
        let watched = WatchedTls::new(files.clone());
        let pem = watched
            .load_if_changed()?
            .ok_or_else(|| anyhow::anyhow!("{} could not be read", files.cert.display()))?;
        let config = build(&pem, files, replica)?;
        Ok(Arc::new(ServerTls {
            watched,
            replica: replica.to_string(),
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// The settings for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads when the files changed; true when new settings are in use.
    /// Bad new files are logged and the old settings kept.
    pub fn reload(&self) -> bool {
        let pem = match self.watched.load_if_changed() {
            Ok(Some(pem)) => pem,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "renewed certificate files not usable yet; keeping the current ones");
                return false;
            }
        };
        match build(&pem, self.watched.files(), &self.replica) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                tracing::info!(cert = %self.watched.files().cert.display(), "certificate files changed: new connections use them");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewed certificate files refused; keeping the current ones");
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_EVERY`] until `stop`.
    pub fn spawn_reloader(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(RELOAD_EVERY) => {}
                }
                let this = me.clone();
                // File reads and key parsing are blocking work.
                let _ = tokio::task::spawn_blocking(move || this.reload()).await;
            }
        });
    }
}

/// Server settings from checked PEM: this replica's chain and key, client
/// certificates verified against the CA file (which may hold several CAs
/// while one is rotated), anonymous clients let through to the gate (the
/// operator token), HTTP/2 only.
fn build(pem: &TlsPem, files: &TlsFiles, replica: &str) -> anyhow::Result<ServerConfig> {
    match &pem.identity {
        Identity::Coordinator { name } if name == replica => {}
        other => anyhow::bail!(
            "{} is the certificate of {other}, but this replica is coordinator {replica}: issue one with `seawall certs coordinator --name {replica}`",
            files.cert.display()
        ),
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem.ca) {
        let cert = cert.map_err(|e| anyhow::anyhow!("{}: {e}", files.ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("{} is not a usable CA: {e}", files.ca.display()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| anyhow::anyhow!("client verification from {}: {e}", files.ca.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.cert.display()))?;
    if let Some(leaf) = chain.first() {
        if let Ok(at) = not_after(leaf) {
            metrics::gauge!(crate::transport::metrics::CERTIFICATE_EXPIRY, "holder" => "coordinator")
                .set(at as f64);
        }
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.key.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            anyhow::anyhow!("{} with {}: {e}", files.cert.display(), files.key.display())
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
