//! Whether a store in another region answers at all: the automatic
//! failover's second signal, asked of an agent that is not in the region
//! suspected down. A protocol exchange, not a TCP connect, because a hung
//! server's kernel still accepts connections: PostgreSQL must answer an
//! SSL negotiation request, Redis a PING (any reply, even one asking for a
//! password, proves the server alive).

use seawall_common::{Error, ErrorKind, Result};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

/// Asks the store at `address` (host:port) of `kind` for a sign of life
/// within `deadline`.
pub async fn reach(address: &str, kind: &str, deadline: Duration) -> Result<()> {
    let attempt = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| Error::new(ErrorKind::Unreachable, format!("{address}: {e}")))?;
        let request: &[u8] = match kind {
            "postgres" => &PG_SSL_REQUEST,
            "redis" => b"PING\r\n",
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("no reach probe for {other:?} stores"),
                ))
            }
        };
        stream
            .write_all(request)
            .await
            .map_err(|e| Error::new(ErrorKind::Unreachable, format!("{address}: {e}")))?;
        let mut first = [0u8; 1];
        let n = stream
            .read(&mut first)
            .await
            .map_err(|e| Error::new(ErrorKind::Unreachable, format!("{address}: {e}")))?;
        let alive = n == 1
            && match kind {
                "postgres" => matches!(first[0], b'S' | b'N' | b'E'),
                _ => matches!(first[0], b'+' | b'-'),
            };
        if alive {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Unreachable,
                format!("{address} answered, but not as a {kind} server"),
            ))
        }
    };
    tokio::time::timeout(deadline, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Unreachable,
                format!("{address} did not answer within {deadline:?}"),
            ))
        })
}
