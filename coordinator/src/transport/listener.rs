//! Accepting connections without letting them exhaust the replica: at most
//! `max_connections` at once (each holds a slot until it closes), a TLS
//! handshake must finish within `handshake_timeout` (a socket that never
//! sends a ClientHello is closed), and handshakes run in their own tasks so
//! a slow one never holds up the next accept. After the handshake the
//! client has `handshake_timeout` again to send the HTTP/2 preface (a TLS
//! client that then says nothing is closed), and connections without a
//! client certificate (health probes, token-only operators) share a small
//! cap of their own, so silent anonymous clients cannot take every slot.
//! TCP keepalive runs from accept, so a peer that vanished is found.

use super::server_tls::ServerTls;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// What the listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (handshaking or established).
    pub max_connections: usize,
    /// Time a client has to complete the TLS handshake, and then again to
    /// send the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// Connections without a client certificate open at once.
    pub max_anonymous: usize,
}

/// The HTTP/2 client preface's length: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: usize = 24;
/// TCP keepalive: first probe after this idle time, then every interval.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The preface still owed, and until when.
struct Preface {
    owed: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// A connection past its handshake, holding its slot (and, without a
/// client certificate, an anonymous slot) until dropped.
pub struct Admitted {
    stream: TlsStream<TcpStream>,
    preface: Option<Preface>,
    _slot: OwnedSemaphorePermit,
    _anonymous: Option<OwnedSemaphorePermit>,
}

impl Connected for Admitted {
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        // The services read the peer's certificate from this, as they would
        // from tonic's own TLS.
        self.stream.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(p) = &mut this.preface {
                    let got = buf.filled().len() - before;
                    p.owed = p.owed.saturating_sub(got);
                    // Paid, or the client closed (an EOF reads nothing).
                    if p.owed == 0 || got == 0 {
                        this.preface = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let late = this
                    .preface
                    .as_mut()
                    .is_some_and(|p| p.deadline.as_mut().poll(cx).is_ready());
                if !late {
                    return Poll::Pending;
                }
                this.preface = None;
                metrics::counter!(crate::transport::metrics::TLS_HANDSHAKES_FAILED_TOTAL, "why" => "silent")
                    .increment(1);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface in time after the TLS handshake",
                )))
            }
            failed => failed,
        }
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Connections that completed their handshake, for tonic's
/// `serve_with_incoming`, until `stop`.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    limits: Limits,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<Admitted>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let anonymous = Arc::new(Semaphore::new(limits.max_anonymous.max(1)));
    tokio::spawn(async move {
        loop {
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                s = slots.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => break,
                },
            };
            metrics::gauge!(crate::transport::metrics::CONNECTIONS_OPEN)
                .set((limits.max_connections - slots.available_permits() - 1) as f64);
            let (tcp, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, or a connection reset before
                        // accept: wait a moment instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        drop(slot);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(
                &socket2::TcpKeepalive::new()
                    .with_time(KEEPALIVE_IDLE)
                    .with_interval(KEEPALIVE_INTERVAL),
            );
            let acceptor = TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            let anonymous = anonymous.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let certified = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty());
                        let anonymous_slot = if certified {
                            None
                        } else {
                            match anonymous.try_acquire_owned() {
                                Ok(s) => Some(s),
                                Err(_) => {
                                    metrics::counter!(crate::transport::metrics::TLS_HANDSHAKES_FAILED_TOTAL, "why" => "anonymous_cap")
                                        .increment(1);
                                    tracing::debug!(%peer, "over the cap on connections without a certificate; closed");
                                    return;
                                }
                            }
                        };
                        let preface = Preface {
                            owed: PREFACE_LEN,
                            deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
                        };
                        let _ = tx
                            .send(Ok(Admitted {
                                stream,
                                preface: Some(preface),
                                _slot: slot,
                                _anonymous: anonymous_slot,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => {
                        metrics::counter!(crate::transport::metrics::TLS_HANDSHAKES_FAILED_TOTAL, "why" => "refused")
                            .increment(1);
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!(crate::transport::metrics::TLS_HANDSHAKES_FAILED_TOTAL, "why" => "timeout")
                            .increment(1);
                        tracing::debug!(%peer, "no TLS handshake in time; closed");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Raises this process's open-file limit to its hard limit (as Go's
/// runtime does): every connection is a descriptor, and the soft default
/// (often 1,024) is below what a fleet under load needs. Returns the limit
/// in force.
pub fn raise_open_files() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// The connection cap that fits the descriptors available: what the
/// configuration asks, less a reserve for the store, the metrics endpoint
/// and files.
pub fn fitted_cap(configured: usize, open_files: u64) -> usize {
    let room = open_files.saturating_sub(256).max(64);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}
