//! The Prometheus endpoint both daemons serve (`GET /metrics`), fed by the
//! `metrics` crate's global recorder.

use crate::{Error, ErrorKind, Result};
use std::net::SocketAddr;

/// Installs the recorder and serves it on `addr` (host:port).
pub fn serve(addr: &str) -> Result<()> {
    let parsed: SocketAddr = addr.parse().map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("metrics_listen {addr:?} is not host:port: {e}"),
        )
    })?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(parsed)
        .install()
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot serve metrics on {addr}: {e}"),
            )
        })
}
