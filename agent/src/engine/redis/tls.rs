//! TLS for `rediss://` URLs: the CA that signed the server's certificate
//! (the system roots when none is given) and, for servers that set
//! `tls-auth-clients yes`, a client certificate and key. Files are read
//! once and checked up front, so a wrong path or a key that does not parse
//! is named before any connection is tried.

use seawall_common::{Error, ErrorKind, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Where the TLS files are; every field optional.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// PEM file of the CA certificate(s) to trust instead of the system roots.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (chain), for servers that check clients.
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key: Option<PathBuf>,
}

/// The TLS files' contents, read and parsed.
#[derive(Clone)]
pub struct TlsMaterial {
    ca_pem: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("cannot read the Redis {what} {}: {e}", path.display()),
        )
    })
}

fn certs(pem: &[u8], path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("the Redis {what} {} is not PEM: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the Redis {what} {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

impl RedisTls {
    /// Reads and checks the files and builds the client configuration.
    pub fn load(&self) -> Result<TlsMaterial> {
        let mut roots = RootCertStore::empty();
        let ca_pem = match &self.ca {
            Some(path) => {
                let pem = read(path, "CA file")?;
                for cert in certs(&pem, path, "CA file")? {
                    roots.add(cert).map_err(|e| {
                        Error::new(
                            ErrorKind::InvalidInput,
                            format!("the Redis CA file {} is not usable: {e}", path.display()),
                        )
                    })?;
                }
                Some(pem)
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                for cert in native.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        "no system CA certificates were found for rediss://: give the CA that signed the Redis server's certificate with --redis-ca FILE",
                    ));
                }
                None
            }
        };
        let builder = ClientConfig::builder().with_root_certificates(roots);
        let (config, client) = match (&self.cert, &self.key) {
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read(cert_path, "client certificate")?;
                let key_pem = read(key_path, "client key")?;
                let chain = certs(&cert_pem, cert_path, "client certificate")?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "the Redis client key {} holds no PEM private key: {e}",
                            key_path.display()
                        ),
                    )
                })?;
                let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "the Redis client key {} does not go with the certificate {}: {e}",
                            key_path.display(),
                            cert_path.display()
                        ),
                    )
                })?;
                (config, Some((cert_pem, key_pem)))
            }
            (None, None) => (builder.with_no_client_auth(), None),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "--redis-cert and --redis-key go together: give both or neither",
                ))
            }
        };
        Ok(TlsMaterial {
            ca_pem,
            client,
            config: Arc::new(config),
        })
    }
}

impl TlsMaterial {
    /// The rustls configuration for connections Seawall drives itself.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The same trust and identity in the form the redis crate takes.
    pub fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca_pem.clone(),
        }
    }
}
