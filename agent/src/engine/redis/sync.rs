//! The replication handshake that makes a Redis server send a consistent
//! RDB to a client, as `redis-cli --rdb` does: AUTH, `REPLCONF capa eof`
//! (only when a diskless transfer is wanted),
//! `PSYNC ? -1`, then the payload in either of its two forms: sized
//! (`$<len>`) after a BGSAVE to disk, or diskless (`$EOF:<40-byte mark>`,
//! ended by the same mark). No shell access to the Redis host is needed,
//! and the connection may be TLS.

use super::connect::{Duplex, Endpoint};
use seawall_common::{Error, ErrorKind, Result};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf, Take,
};

/// What the server said before the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullResync {
    /// Replication id of the master.
    pub replid: String,
    /// Replication offset the RDB corresponds to.
    pub offset: u64,
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Result<String> {
    let mut buf = Vec::new();
    let n = r
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| Error::new(ErrorKind::Unreachable, format!("reading from Redis: {e}")))?;
    if n == 0 {
        return Err(Error::new(
            ErrorKind::Unreachable,
            "Redis closed the connection during the replication handshake",
        ));
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
}

fn refused(cmd: &str, reply: &str) -> Error {
    let reply = reply.trim_start_matches('-');
    if reply.starts_with("NOPERM") {
        Error::new(
            ErrorKind::Denied,
            format!(
                "Redis refused {cmd}: {reply}; give the backup user the replication commands (ACL SETUSER <user> +psync +sync +replconf) or use another user"
            ),
        )
    } else if reply.starts_with("NOAUTH") || reply.starts_with("WRONGPASS") {
        Error::new(
            ErrorKind::Denied,
            format!("Redis refused {cmd}: {reply}; check the user and password in --url"),
        )
    } else {
        Error::new(ErrorKind::Io, format!("Redis refused {cmd}: {reply}"))
    }
}

/// The payload of a full resynchronisation, read as a stream.
pub struct RdbPayload {
    form: Form,
}

enum Form {
    /// `$<len>`: exactly that many bytes follow.
    Sized(Take<BufReader<Box<dyn Duplex>>>),
    /// `$EOF:<mark>`: bytes until the 40-byte mark.
    Marked(Marked),
}

struct Marked {
    inner: BufReader<Box<dyn Duplex>>,
    mark: Vec<u8>,
    /// Bytes read but not yet given out: the last `mark.len()` may be the mark.
    held: Vec<u8>,
    /// Read buffer, allocated once.
    scratch: Vec<u8>,
    done: bool,
}

impl Marked {
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mark_len = self.mark.len();
        loop {
            if self.done || self.held.len() > mark_len {
                let n = self
                    .held
                    .len()
                    .saturating_sub(mark_len)
                    .min(buf.remaining());
                buf.put_slice(&self.held[..n]);
                self.held.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut self.scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "Redis closed the connection before the RDB end mark",
                    )));
                }
                Poll::Ready(Ok(())) => {
                    self.held.extend_from_slice(rb.filled());
                    if self.held.len() >= mark_len
                        && self.held[self.held.len() - mark_len..] == self.mark[..]
                    {
                        self.done = true;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncRead for RdbPayload {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.form {
            Form::Sized(take) => {
                let before = buf.filled().len();
                match Pin::new(&mut *take).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) if buf.filled().len() == before && take.limit() > 0 => {
                        Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!(
                                "Redis closed the connection with {} RDB bytes still to come",
                                take.limit()
                            ),
                        )))
                    }
                    other => other,
                }
            }
            Form::Marked(m) => m.poll_read(cx, buf),
        }
    }
}

/// Connects, authenticates and asks for a full resynchronisation. With
/// `diskless`, the server may stream the RDB without writing it to its disk
/// (it then waits `repl-diskless-sync-delay`, 5 s by default, for other
/// replicas first); without, it saves the RDB to its disk and sends the file.
pub async fn full_sync(endpoint: &Endpoint, diskless: bool) -> Result<(FullResync, RdbPayload)> {
    let target = &endpoint.url.target;
    let mut r = BufReader::new(endpoint.stream().await?);
    let send = |args: Vec<Vec<u8>>| {
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        encode(&refs)
    };
    if let Some(pass) = &target.password {
        let cmd = match &target.user {
            Some(u) => send(vec![
                b"AUTH".to_vec(),
                u.as_bytes().to_vec(),
                pass.as_bytes().to_vec(),
            ]),
            None => send(vec![b"AUTH".to_vec(), pass.as_bytes().to_vec()]),
        };
        r.get_mut()
            .write_all(&cmd)
            .await
            .map_err(|e| Error::io("writing to Redis", e))?;
        let reply = line(&mut r).await?;
        if !reply.starts_with('+') {
            return Err(refused("AUTH", &reply));
        }
    }
    // Only the RDB is wanted: the server then neither keeps a backlog for
    // this "replica" nor streams writes to it after the payload (Redis 7+;
    // older servers refuse the option, which changes nothing here).
    let rdb_only = send(vec![
        b"REPLCONF".to_vec(),
        b"rdb-only".to_vec(),
        b"1".to_vec(),
    ]);
    r.get_mut()
        .write_all(&rdb_only)
        .await
        .map_err(|e| Error::io("writing to Redis", e))?;
    let reply = line(&mut r).await?;
    if reply.starts_with("-NOPERM") {
        return Err(refused("REPLCONF", &reply));
    }
    if diskless {
        let capa = send(vec![
            b"REPLCONF".to_vec(),
            b"capa".to_vec(),
            b"eof".to_vec(),
        ]);
        r.get_mut()
            .write_all(&capa)
            .await
            .map_err(|e| Error::io("writing to Redis", e))?;
        let reply = line(&mut r).await?;
        if !reply.starts_with('+') {
            return Err(refused("REPLCONF", &reply));
        }
    }
    let psync = send(vec![b"PSYNC".to_vec(), b"?".to_vec(), b"-1".to_vec()]);
    r.get_mut()
        .write_all(&psync)
        .await
        .map_err(|e| Error::io("writing to Redis", e))?;
    // Newlines are keepalives while the server prepares the RDB.
    let mut reply = line(&mut r).await?;
    while reply.is_empty() {
        reply = line(&mut r).await?;
    }
    let Some(rest) = reply.strip_prefix("+FULLRESYNC ") else {
        return Err(refused("PSYNC", &reply));
    };
    let mut parts = rest.split_whitespace();
    let resync = FullResync {
        replid: parts.next().unwrap_or_default().to_string(),
        offset: parts.next().and_then(|o| o.parse().ok()).unwrap_or(0),
    };
    let mut header = line(&mut r).await?;
    while header.is_empty() {
        header = line(&mut r).await?;
    }
    let payload = if let Some(mark) = header.strip_prefix("$EOF:") {
        RdbPayload {
            form: Form::Marked(Marked {
                inner: r,
                mark: mark.as_bytes().to_vec(),
                held: Vec::new(),
                scratch: vec![0u8; 64 * 1024],
                done: false,
            }),
        }
    } else if let Some(len) = header.strip_prefix('$').and_then(|l| l.parse::<u64>().ok()) {
        RdbPayload {
            form: Form::Sized(r.take(len)),
        }
    } else {
        return Err(Error::new(
            ErrorKind::Io,
            format!("Redis answered PSYNC with an unexpected payload header {header:?}"),
        ));
    };
    Ok((resync, payload))
}
