//! The replica's own Prometheus figures and the endpoint that serves every
//! layer's:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `seawall_leader` | gauge (1 while leading) | |
//! | `seawall_epoch` | gauge | |

/// Serves `/metrics` on `addr`.
pub fn serve(addr: &str) -> anyhow::Result<()> {
    Ok(seawall_common::metrics_endpoint::serve(addr)?)
}

/// Leadership gauges.
pub fn leading(epoch: Option<i64>) {
    metrics::gauge!("seawall_leader").set(if epoch.is_some() { 1.0 } else { 0.0 });
    if let Some(e) = epoch {
        metrics::gauge!("seawall_epoch").set(e as f64);
    }
}
