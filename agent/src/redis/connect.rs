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
