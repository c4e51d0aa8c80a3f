//! What an operator needs to know about one certificate beyond its
//! identity: a fingerprint to revoke it by, and when it expires.

use crate::{Error, ErrorKind, Result};
use sha2::{Digest, Sha256};

/// The SHA-256 of a certificate's DER, lowercase hex: the name revocation
/// uses, the same value `openssl x509 -fingerprint -sha256` prints (without
/// the colons).
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// When the certificate stops being valid, in seconds since the epoch.
pub fn not_after(der: &[u8]) -> Result<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("the certificate does not parse: {e}"),
        )
    })?;
    Ok(cert.validity().not_after.timestamp())
}

/// The fingerprint of the first certificate in a PEM file's contents.
pub fn pem_fingerprint(pem: &[u8]) -> Result<String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("no PEM certificate found: {e}"),
        )
    })?;
    Ok(fingerprint(&der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_certificate_expires_when_it_was_issued_to() {
        let ca = crate::tls::issue::new_ca("test", crate::tls::issue::days(1)).expect("ca");
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(ca.cert_pem.as_bytes())
            .map(|d: rustls_pki_types::CertificateDer<'static>| d)
            .expect("pem");
        let left = not_after(&der).expect("parse") - chrono::Utc::now().timestamp();
        assert!((86_000..=86_400).contains(&left), "{left}");
        assert_eq!(fingerprint(&der).len(), 64);
        assert_eq!(
            pem_fingerprint(ca.cert_pem.as_bytes()).expect("fp"),
            fingerprint(&der)
        );
    }
}
