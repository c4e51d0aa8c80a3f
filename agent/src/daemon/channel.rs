//! A mutual-TLS channel from the agent to a coordinator replica: the
//! link's stream and the self-fence's leadership questions both open one.

use super::certs::AgentTls;
use super::revoked::RevokedCertificates;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use seawall_common::tls::certinfo::fingerprint;
use seawall_common::tls::Identity;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Endpoint;

/// `https://host:port` from an address with or without scheme.
pub fn url_of(address: &str) -> String {
    if address.starts_with("https://") || address.starts_with("http://") {
        address.to_string()
    } else {
        format!("https://{address}")
    }
}

/// The host of a URL, for the TLS server name.
pub fn host_of(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = hostport.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6).to_string();
    }
    hostport
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(hostport)
        .to_string()
}

/// A mutual-TLS channel to a coordinator, opened within `timeout`. The
/// server must present a coordinator's certificate from the fleet's CA,
/// for the host dialled, and not one the leader said is revoked; every
/// reconnection of the channel is checked the same way.
pub async fn open_channel(
    tls: &Arc<AgentTls>,
    url: &str,
    timeout: Duration,
) -> Result<tonic::transport::Channel, String> {
    Ok(open_watched(tls, url, timeout).await?.0)
}

/// The fingerprint of the coordinator certificate a channel last accepted.
pub type Accepted = Arc<std::sync::Mutex<Option<String>>>;

/// [`open_channel`], with the certificate the coordinator presented (so a
/// revocation arriving later can end the session).
pub async fn open_watched(
    tls: &Arc<AgentTls>,
    url: &str,
    timeout: Duration,
) -> Result<(tonic::transport::Channel, Accepted), String> {
    let host = host_of(url);
    let accepted = Accepted::default();
    let config =
        Arc::new(client_config(tls, accepted.clone()).map_err(|e| format!("TLS settings: {e}"))?);
    let server_name = ServerName::try_from(host.clone())
        .map_err(|e| format!("{host} is not a valid server name: {e}"))?;
    // TLS is done by the connector below (tonic's own cannot check a
    // revocation list), so the endpoint itself is plain HTTP/2.
    let plain = url.replacen("https://", "http://", 1);
    let endpoint = Endpoint::from_shared(plain)
        .map_err(|e| format!("{url} is not a valid address: {e}"))?
        .connect_timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let connector = tower::service_fn(move |uri: tonic::codegen::http::Uri| {
        let (config, server_name) = (config.clone(), server_name.clone());
        async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    // A coordinator whose kernel accepts the connection while the process
    // is stopped (a deposed leader, SIGSTOPped) would hold the TLS
    // handshake forever.
    let channel = tokio::time::timeout(timeout, endpoint.connect_with_connector(connector))
        .await
        .map_err(|_| format!("no TLS handshake within {timeout:?}"))?
        .map_err(|e| {
            format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )
        })?;
    Ok((channel, accepted))
}

/// The agent's side of the handshake: its certificate, the fleet's CA,
/// HTTP/2, and [`CoordinatorOnly`] deciding whom to trust.
fn client_config(tls: &AgentTls, accepted: Accepted) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let pem = tls.current();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&pem.ca) {
        let ca = ca.map_err(|e| format!("CA certificate: {e}"))?;
        roots.add(ca).map_err(|e| format!("CA certificate: {e}"))?;
    }
    let chain = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| format!("key: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("CA certificate: {e}"))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CoordinatorOnly {
            inner: webpki,
            revoked: tls.revoked.clone(),
            accepted,
        }))
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The CA's verdict, then: a coordinator's certificate, not revoked.
#[derive(Debug)]
struct CoordinatorOnly {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    revoked: Arc<RevokedCertificates>,
    accepted: Accepted,
}

impl ServerCertVerifier for CoordinatorOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let fp = fingerprint(end_entity.as_ref());
        if self.revoked.contains(&fp) {
            tracing::error!(fingerprint = %fp, server = ?server_name, "this coordinator's certificate is revoked: not connecting");
            return Err(rustls::Error::General(format!(
                "the coordinator's certificate {fp} is revoked (seawall revoke): it may not command this agent"
            )));
        }
        match Identity::from_der(end_entity.as_ref()) {
            Ok(Identity::Coordinator { .. }) => {
                *self.accepted.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp);
                Ok(verified)
            }
            Ok(other) => Err(rustls::Error::General(format!(
                "the server presented {other}'s certificate, not a coordinator's"
            ))),
            Err(e) => Err(rustls::Error::General(format!(
                "the server's certificate names no Seawall identity: {e}"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
