//! TLS on Seawall's own PostgreSQL connections, as libpq does it for
//! `pg_dump` and `pg_basebackup` with the same DSN: `sslmode` (disable,
//! allow, prefer, require, verify-ca, verify-full), `sslrootcert` (a file,
//! or `system`), `sslcert`/`sslkey`, and their `PGSSL*` environment
//! variables and `~/.postgresql/` defaults. tokio-postgres does not know
//! these parameters, so they are taken out of the DSN before it parses it.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use seawall_common::{Error, ErrorKind, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The libpq parameters Seawall reads itself.
pub const KEYS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslcrldir",
    "sslpassword",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
];

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, certificate not checked (libpq's
    /// `allow` tries plain text first; Seawall treats it as `prefer`).
    Prefer,
    /// TLS required; the certificate is checked against `sslrootcert` only
    /// when one is given or `~/.postgresql/root.crt` exists, as in libpq.
    Require,
    /// TLS, certificate signed by `sslrootcert`.
    VerifyCa,
    /// TLS, certificate signed by `sslrootcert` and naming the host.
    VerifyFull,
}

impl Mode {
    fn parse(text: &str) -> Result<Mode> {
        Ok(match text {
            "disable" => Mode::Disable,
            "allow" | "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"),
                ))
            }
        })
    }

    /// The name, as in a DSN.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether TLS may be skipped.
    pub fn tokio_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            Mode::Disable => tokio_postgres::config::SslMode::Disable,
            Mode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// Where trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    /// The operating system's store (`sslrootcert=system`).
    System,
    /// A PEM file.
    File(PathBuf),
}

/// The TLS settings of one connection.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The mode.
    pub mode: Mode,
    roots: Option<Roots>,
    client: Option<(PathBuf, PathBuf)>,
}

fn home_file(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("HOME")?)
        .join(".postgresql")
        .join(name);
    path.is_file().then_some(path)
}

/// Reads the settings from the DSN's parameters, then the environment,
/// then libpq's default files.
pub fn settings(params: &[(String, String)]) -> Result<Settings> {
    let get = |key: &str, env: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(env).ok())
            .filter(|v| !v.is_empty())
    };
    for (key, env) in [
        ("sslcrl", "PGSSLCRL"),
        ("sslcrldir", "PGSSLCRLDIR"),
        ("sslpassword", "PGSSLPASSWORD"),
    ] {
        if get(key, env).is_some() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{key} is not supported on Seawall's own PostgreSQL connection: remove it (use an unencrypted sslkey file, 0600; revoke by replacing the server's certificate)"),
            ));
        }
    }
    let mode = Mode::parse(&get("sslmode", "PGSSLMODE").unwrap_or_else(|| "prefer".into()))?;
    let roots = match get("sslrootcert", "PGSSLROOTCERT") {
        Some(s) if s == "system" => Some(Roots::System),
        Some(path) => Some(Roots::File(PathBuf::from(path))),
        None => home_file("root.crt").map(Roots::File),
    };
    if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) && roots.is_none() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "sslmode={} needs the CA that signed the server's certificate: add sslrootcert=/path/to/ca.pem (or system) to the DSN",
                mode.name()
            ),
        ));
    }
    let client = match (get("sslcert", "PGSSLCERT"), get("sslkey", "PGSSLKEY")) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "sslcert and sslkey go together: give both or neither",
            ))
        }
        (None, None) => match (home_file("postgresql.crt"), home_file("postgresql.key")) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        },
    };
    Ok(Settings {
        mode,
        roots,
        client,
    })
}

fn invalid(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("{what} {}: {e}", path.display()),
    )
}

impl Settings {
    /// The connector, or `None` for `sslmode=disable`.
    pub fn connector(&self) -> Result<Option<MakeRustlsConnect>> {
        if self.mode == Mode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.roots, self.mode) {
            // As libpq: prefer never checks; require checks only with a CA.
            (_, Mode::Prefer) | (None, Mode::Require) => Arc::new(Unchecked {
                provider: provider.clone(),
            }),
            (Some(roots), mode) => {
                let store = Arc::new(self.root_store(roots)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                    .build()
                    .map_err(|e| {
                        Error::new(ErrorKind::InvalidInput, format!("sslrootcert: {e}"))
                    })?;
                if mode == Mode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly { inner: webpki })
                }
            }
            (None, mode) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("sslmode={} needs sslrootcert", mode.name()),
                ))
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let pem =
                    std::fs::read(cert).map_err(|e| invalid("cannot read sslcert", cert, e))?;
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| invalid("sslcert", cert, e))?;
                let key_pem = seawall_common::secret::read_secret_file(key, "sslkey")?;
                let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| invalid("sslkey", key, e))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| invalid("sslcert with sslkey", cert, e))?
            }
        };
        Ok(Some(MakeRustlsConnect::new(config)))
    }

    fn root_store(&self, roots: &Roots) -> Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        match roots {
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        "sslrootcert=system, but the system has no CA certificates: install ca-certificates or name a file",
                    ));
                }
            }
            Roots::File(path) => {
                let pem =
                    std::fs::read(path).map_err(|e| invalid("cannot read sslrootcert", path, e))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| invalid("sslrootcert", path, e))?;
                    store
                        .add(cert)
                        .map_err(|e| invalid("sslrootcert", path, e))?;
                }
                if store.is_empty() {
                    return Err(invalid("sslrootcert", path, "holds no PEM certificate"));
                }
            }
        }
        Ok(store)
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `prefer`, and `require` without a CA: encrypted, but any certificate is
/// accepted (what libpq does). The handshake's signatures are still checked.
#[derive(Debug)]
struct Unchecked {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::postgres::conn::take_params;

    fn of(dsn: &str) -> Result<Settings> {
        settings(&take_params(dsn, KEYS).1)
    }

    #[test]
    fn libpq_tls_parameters_are_read_from_both_dsn_forms() {
        let s = of("host=db sslmode=verify-full sslrootcert='/etc/ca.pem'").expect("kv");
        assert_eq!(s.mode, Mode::VerifyFull);
        assert_eq!(s.roots, Some(Roots::File("/etc/ca.pem".into())));
        let s = of("postgresql://u@db/app?sslmode=verify-ca&sslrootcert=system&application_name=x")
            .expect("url");
        assert_eq!(s.mode, Mode::VerifyCa);
        assert_eq!(s.roots, Some(Roots::System));
        let (rest, _) = take_params(
            "postgresql://u:pw@db/app?sslmode=require&connect_timeout=3",
            KEYS,
        );
        assert_eq!(rest, "postgresql://u:pw@db/app?connect_timeout=3");
        if home_file("root.crt").is_none() {
            // An empty value is no value: no CA to verify with.
            let err = of("host=db sslmode=verify-full sslrootcert=")
                .expect_err("no CA")
                .to_string();
            assert!(err.contains("sslrootcert=/path"), "{err}");
        }
        let err = of("host=db sslmode=sometimes")
            .expect_err("bad mode")
            .to_string();
        assert!(err.contains("verify-full"), "{err}");
        let err = of("host=db sslcrl=/x.crl").expect_err("crl").to_string();
        assert!(err.contains("not supported"), "{err}");
        let err = of("host=db sslcert=/c.pem").expect_err("half").to_string();
        assert!(err.contains("go together"), "{err}");
    }
}
