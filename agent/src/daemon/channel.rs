//! A mutual-TLS channel from the agent to a coordinator replica: the
//! link's stream and the self-fence's leadership questions both open one.

use super::certs::AgentTls;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

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

/// A mutual-TLS channel to a coordinator, opened within `timeout`.
pub async fn open_channel(
    tls: &Arc<AgentTls>,
    url: &str,
    timeout: Duration,
) -> Result<tonic::transport::Channel, String> {
    let pem = tls.current();
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pem.ca))
        .identity(Identity::from_pem(&pem.cert, &pem.key))
        .domain_name(host_of(url));
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("{url} is not a valid address: {e}"))?
        .tls_config(config)
        .map_err(|e| format!("TLS settings: {e}"))?
        .connect_timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    // A coordinator whose kernel accepts the connection while the process
    // is stopped (a deposed leader, SIGSTOPped) would hold the TLS
    // handshake forever.
    tokio::time::timeout(timeout, endpoint.connect())
        .await
        .map_err(|_| format!("no TLS handshake within {timeout:?}"))?
        .map_err(|e| {
            format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )
        })
}
