//! The three PEM files every daemon and operator holds (the CA, its own
//! certificate, its key), read once and checked: present, parseable, the
//! key private to its owner, and the certificate naming a Seawall identity.

use super::identity::Identity;
use crate::{Error, ErrorKind, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the PEM files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The Seawall CA certificate.
    pub ca: PathBuf,
    /// This holder's certificate.
    pub cert: PathBuf,
    /// This holder's private key (mode 0600).
    pub key: PathBuf,
}

/// The files' contents, checked.
#[derive(Clone)]
pub struct TlsPem {
    /// CA certificate, PEM.
    pub ca: Vec<u8>,
    /// Own certificate, PEM.
    pub cert: Vec<u8>,
    /// Own key, PEM.
    pub key: Vec<u8>,
    /// Who the certificate says this holder is.
    pub identity: Identity,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPem")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "cannot read the {what} {}: {e} (create one with `seawall certs`)",
                path.display()
            ),
        )
    })
}

fn first_cert(pem: &[u8], path: &Path, what: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the {what} {} holds no PEM certificate: {e}",
                path.display()
            ),
        )
    })
}

impl TlsFiles {
    /// The files `seawall certs` writes for `name` in `dir`.
    pub fn in_dir(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }

    /// Reads and checks the three files.
    pub fn load(&self) -> Result<TlsPem> {
        let ca = read(&self.ca, "CA certificate")?;
        first_cert(&ca, &self.ca, "CA certificate")?;
        let cert = read(&self.cert, "certificate")?;
        let der = first_cert(&cert, &self.cert, "certificate")?;
        let identity = Identity::from_der(&der).map_err(|e| e.context(self.cert.display()))?;
        check_private(&self.key)?;
        let key = read(&self.key, "private key")?;
        PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the private key {} holds no PEM key: {e}",
                    self.key.display()
                ),
            )
        })?;
        Ok(TlsPem {
            ca,
            cert,
            key,
            identity,
        })
    }
}

/// Refuses a key file others can read. As PostgreSQL does for its server
/// key, group read is allowed when root owns the file: that is how volume
/// drivers (cert-manager's csi-driver with fs-group) hand a key to a
/// non-root daemon.
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "cannot read the private key {}: {e} (create one with `seawall certs`)",
                path.display()
            ),
        )
    })?;
    let mode = meta.permissions().mode();
    if !key_mode_is_private(mode, meta.uid()) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the private key {} can be read by other users (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

/// Whether `mode` keeps a key owned by `uid` private (see [`check_private`]).
fn key_mode_is_private(mode: u32, uid: u32) -> bool {
    let group_ok = mode & 0o070 == 0 || (uid == 0 && mode & 0o030 == 0);
    mode & 0o007 == 0 && group_ok
}

#[cfg(test)]
mod tests {
    use super::key_mode_is_private;

    #[test]
    fn group_read_is_private_only_for_root_owned_keys() {
        assert!(key_mode_is_private(0o600, 1000));
        assert!(key_mode_is_private(0o400, 0));
        assert!(key_mode_is_private(0o640, 0));
        assert!(!key_mode_is_private(0o640, 1000));
        assert!(!key_mode_is_private(0o660, 0));
        assert!(!key_mode_is_private(0o604, 0));
        assert!(!key_mode_is_private(0o644, 1000));
    }
}
