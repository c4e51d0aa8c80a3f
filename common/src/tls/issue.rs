//! A private CA and the certificates it issues for a first install and for
//! tests: ECDSA P-256 keys, the holder's identity as a URI SAN, host names
//! and addresses for coordinators, and key usages fitted to each role.

use super::identity::Identity;
use crate::{Error, ErrorKind, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

/// A certificate and its private key, PEM-encoded.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (keep it 0600).
    pub key_pem: String,
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidInput, format!("{what}: {e}"))
}

fn validity(params: &mut CertificateParams, valid_for: std::time::Duration) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for clocks that run a little behind.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::seconds(valid_for.as_secs().min(i64::MAX as u64) as i64);
}

/// `days` as a validity period.
pub fn days(days: u32) -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(days) * 86_400)
}

/// Creates a CA named `name`, valid for `valid_for`.
pub fn new_ca(name: &str, valid_for: std::time::Duration) -> Result<Issued> {
    let key = KeyPair::generate().map_err(|e| failed("generating the CA key", e))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Seawall");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, valid_for);
    let cert = params
        .self_signed(&key)
        .map_err(|e| failed("signing the CA certificate", e))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a certificate for `identity`, signed by the CA; `hosts` (DNS
/// names or IP addresses) are added for coordinators, which serve TLS.
pub fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    identity: &Identity,
    hosts: &[String],
    valid_for: std::time::Duration,
) -> Result<Issued> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| failed("reading the CA key", e))?;
    let ca_params = CertificateParams::from_ca_cert_pem(ca_cert_pem)
        .map_err(|e| failed("reading the CA certificate", e))?;
    let ca_der = rustls_pki_types::CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
        .map_err(|e| failed("reading the CA certificate", e))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&ca_der)
        .map_err(|e| failed("reading the CA certificate", e))?;
    if parsed.public_key().raw != ca_key.public_key_der().as_slice() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the CA key does not belong to the CA certificate: give the ca.key created with ca.pem",
        ));
    }
    let ca = ca_params
        .self_signed(&ca_key)
        .map_err(|e| failed("the CA key does not go with the CA certificate", e))?;

    let key = KeyPair::generate().map_err(|e| failed("generating a key", e))?;
    let mut params = CertificateParams::new(hosts.to_vec())
        .map_err(|e| failed("a host name is not valid", e))?;
    let uri = identity
        .uri()
        .try_into()
        .map_err(|e| failed("the identity is not a valid URI", e))?;
    params.subject_alt_names.push(SanType::URI(uri));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.name());
    dn.push(DnType::OrganizationalUnitName, identity.role());
    if let Identity::Agent { region, .. } = identity {
        dn.push(DnType::LocalityName, region.as_str());
    }
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match identity {
        Identity::Coordinator { .. } => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, valid_for);
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .map_err(|e| failed("signing the certificate", e))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_identity() {
        let ca = new_ca("test CA", days(30)).unwrap();
        let id = Identity::Agent {
            region: "eu-west-1".into(),
            name: "db-1".into(),
        };
        let leaf = issue(&ca.cert_pem, &ca.key_pem, &id, &[], days(30)).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes());
        assert_eq!(Identity::from_der(&der.unwrap()).unwrap(), id);
        let other = new_ca("other", days(30)).unwrap();
        let err = issue(&ca.cert_pem, &other.key_pem, &id, &[], days(30))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not belong"), "{err}");
        let coord = Identity::Coordinator { name: "c1".into() };
        let hosts = ["localhost".to_string(), "127.0.0.1".to_string()];
        assert!(issue(&ca.cert_pem, &ca.key_pem, &coord, &hosts, days(30)).is_ok());
    }
}
