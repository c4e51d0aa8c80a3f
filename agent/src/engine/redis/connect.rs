//! Connections to a Redis server, plain or TLS: a byte stream for the
//! replication handshake Seawall speaks itself, and a redis crate
//! connection for commands (INFO, SCAN, DUMP, RESTORE).

use super::tls::{RedisTls, TlsMaterial};
use super::url::RedisUrl;
use redis::aio::MultiplexedConnection;
use seawall_common::{Error, ErrorKind, Result};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

/// How long a TCP connection (and its TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one reply may take: DUMP or RESTORE of a large key is slow,
/// and the redis crate's default (500 ms) would fail it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether a connection error came from the TLS layer (the redis crate
/// reports it as an I/O error, with rustls' words).
fn is_tls_failure(text: &str) -> bool {
    [
        "alert",
        "certificate",
        "Certificate",
        "handshake",
        "UnknownIssuer",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// A byte stream to the server, plain or TLS.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// A Redis server and how to reach it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The parsed URL.
    pub url: RedisUrl,
    tls: Option<TlsMaterial>,
}

impl Endpoint {
    /// Parses the URL and, for `rediss://`, reads the TLS files.
    pub fn new(url: &str, tls: &RedisTls) -> Result<Endpoint> {
        let url = RedisUrl::parse(url)?;
        let given = tls.ca.is_some() || tls.cert.is_some() || tls.key.is_some();
        let tls = if url.tls {
            Some(tls.load()?)
        } else if given {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "--redis-ca, --redis-cert and --redis-key are for TLS: write the URL as rediss://",
            ));
        } else {
            None
        };
        Ok(Endpoint { url, tls })
    }

    /// The same credentials, database and TLS at another `host:port` (a
    /// cluster's other primaries).
    pub fn at(&self, host: &str, port: u16) -> Result<Endpoint> {
        let raw = &self.url.raw;
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "the Redis URL has no scheme"))?;
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (format!("{a}@"), h),
            None => (String::new(), rest),
        };
        let db = hostpart
            .split_once('/')
            .map(|(_, d)| format!("/{d}"))
            .unwrap_or_default();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let mut url = RedisUrl::parse(&format!("{scheme}://{auth}{host}:{port}{db}"))?;
        url.tls = self.url.tls;
        Ok(Endpoint {
            url,
            tls: self.tls.clone(),
        })
    }

    /// The server's address without credentials.
    pub fn describe(&self) -> String {
        self.url.describe()
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::Unreachable,
            format!("cannot connect to Redis at {}: {e}", self.describe()),
        )
    }

    /// A failed TLS handshake, with the flags that usually fix it.
    fn handshake_failed(&self, e: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::Unreachable,
            format!(
                "TLS handshake with Redis at {} failed: {e} (check --redis-ca, and --redis-cert/--redis-key when the server sets tls-auth-clients)",
                self.describe()
            ),
        )
    }

    /// A raw byte stream, TLS-wrapped for `rediss://`.
    pub async fn stream(&self) -> Result<Box<dyn Duplex>> {
        let target = &self.url.target;
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| self.unreachable("no answer within 10 s"))?
        .map_err(|e| self.unreachable(e))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = ServerName::try_from(target.host.clone()).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{} is not a valid TLS server name: {e}", target.host),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(tls.config());
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| self.unreachable("the TLS handshake did not finish within 10 s"))?
            .map_err(|e| self.handshake_failed(e))?;
        Ok(Box::new(stream))
    }

    /// A command connection on the URL's database.
    pub async fn connection(&self) -> Result<MultiplexedConnection> {
        let bad = |e: redis::RedisError| {
            Error::new(ErrorKind::InvalidInput, format!("--url is not usable: {e}"))
        };
        let client = match &self.tls {
            Some(tls) => redis::Client::build_with_tls(self.url.raw.as_str(), tls.certificates())
                .map_err(bad)?,
            None => redis::Client::open(self.url.raw.as_str()).map_err(bad)?,
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(REPLY_TIMEOUT));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| match e.kind() {
                redis::ErrorKind::AuthenticationFailed => Error::new(
                    ErrorKind::Denied,
                    format!(
                        "Redis at {} refused the credentials: check the user and password in --url",
                        self.describe()
                    ),
                ),
                _ if self.tls.is_some() && is_tls_failure(&e.to_string()) => {
                    self.handshake_failed(e)
                }
                _ => self.unreachable(e),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_node_keeps_the_credentials_and_database() {
        let e = Endpoint::new(
            "redis://backup:s%40cret@10.0.0.1:7000/0",
            &RedisTls::default(),
        )
        .unwrap();
        let other = e.at("10.0.0.2", 7001).unwrap();
        assert_eq!(other.url.target.host, "10.0.0.2");
        assert_eq!(other.url.target.port, 7001);
        assert_eq!(other.url.target.user.as_deref(), Some("backup"));
        assert_eq!(other.url.target.password.as_deref(), Some("s@cret"));
        assert_eq!(other.url.db, Some(0));
        assert_eq!(other.url.raw, "redis://backup:s%40cret@10.0.0.2:7001/0");
        let v6 = e.at("::1", 7002).unwrap();
        assert_eq!(v6.url.target.host, "::1");
    }
}
