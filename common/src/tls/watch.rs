//! Certificates renewed on disk (cert-manager, a cron job running `seawall
//! certs --force`, an operator's `mv`) are picked up without a restart: the
//! holder asks now and then whether the files changed and reloads them.

use super::files::{TlsFiles, TlsPem};
use crate::Result;
use std::sync::Mutex;

/// TLS files and a digest of what was last loaded from them.
pub struct WatchedTls {
    files: TlsFiles,
    seen: Mutex<Option<blake3::Hash>>,
}

impl WatchedTls {
    /// Watches `files`; nothing is read yet.
    pub fn new(files: TlsFiles) -> Self {
        WatchedTls {
            files,
            seen: Mutex::new(None),
        }
    }

    /// The files watched.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Loads and checks the files when their bytes differ from the last
    /// successful load (always, the first time); `None` when unchanged.
    /// A half-renewed set (a key that does not parse yet) is an error and
    /// is tried again next time, so the caller keeps what it has.
    pub fn load_if_changed(&self) -> Result<Option<TlsPem>> {
        let digest = self.digest();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if digest.is_some() && *seen == digest {
            return Ok(None);
        }
        let pem = self.files.load()?;
        if !pem_matches(&pem) {
            return Err(crate::Error::new(
                crate::ErrorKind::InvalidInput,
                format!(
                    "the key {} does not belong to the certificate {} (a renewal half done?)",
                    self.files.key.display(),
                    self.files.cert.display()
                ),
            ));
        }
        *seen = Some(blake3::hash(
            &[pem.ca.as_slice(), &pem.cert, &pem.key].concat(),
        ));
        Ok(Some(pem))
    }

    fn digest(&self) -> Option<blake3::Hash> {
        let mut all = Vec::new();
        for path in [&self.files.ca, &self.files.cert, &self.files.key] {
            all.extend(std::fs::read(path).ok()?);
        }
        Some(blake3::hash(&all))
    }
}

/// Whether the key in `pem` signs for the certificate's public key: a cert
/// renewed on disk before its key (or the reverse) must not be used.
fn pem_matches(pem: &TlsPem) -> bool {
    use rustls_pki_types::pem::PemObject;
    let (Ok(cert), Ok(key)) = (
        rustls_pki_types::CertificateDer::from_pem_slice(&pem.cert),
        rcgen::KeyPair::from_pem(&String::from_utf8_lossy(&pem.key)),
    ) else {
        return false;
    };
    match x509_parser::parse_x509_certificate(&cert) {
        Ok((_, parsed)) => parsed.public_key().raw == key.public_key_der().as_slice(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::issue::{days, issue, new_ca};
    use crate::tls::Identity;

    fn write(dir: &std::path::Path, name: &str, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    #[test]
    fn reloads_only_a_complete_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = new_ca("t", days(1)).expect("ca");
        let id = Identity::Operator { name: "ann".into() };
        let first = issue(&ca.cert_pem, &ca.key_pem, &id, &[], days(1)).expect("issue");
        write(dir.path(), "ca.pem", &ca.cert_pem);
        write(dir.path(), "ann.pem", &first.cert_pem);
        write(dir.path(), "ann.key", &first.key_pem);
        let watched = WatchedTls::new(TlsFiles::in_dir(dir.path(), "ann"));
        assert!(watched.load_if_changed().expect("first").is_some());
        assert!(watched.load_if_changed().expect("same").is_none());
        // The certificate renewed, its key not yet: refused, tried again.
        let second = issue(&ca.cert_pem, &ca.key_pem, &id, &[], days(2)).expect("issue");
        write(dir.path(), "ann.pem", &second.cert_pem);
        let err = watched.load_if_changed().expect_err("mismatch").to_string();
        assert!(err.contains("does not belong"), "{err}");
        write(dir.path(), "ann.key", &second.key_pem);
        let pem = watched
            .load_if_changed()
            .expect("renewed")
            .expect("changed");
        assert_eq!(pem.cert, second.cert_pem.as_bytes());
        assert!(watched.load_if_changed().expect("same").is_none());
    }
}
