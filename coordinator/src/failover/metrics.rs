//! The failover subsystem's Prometheus figures, named once:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `seawall_failovers_total` | counter | service, outcome (started, refused, aborted, failed, succeeded) |
//! | `seawall_failover_last_rto_seconds` | gauge (the last successful failover's achieved RTO) | service |
//! | `seawall_failover_last_rpo_seconds` | gauge (its achieved RPO, when measured) | service |
//! | `seawall_rejoins_total` | counter (old primaries fenced when their agent returned) | service |

/// Failovers by outcome.
pub const FAILOVERS_TOTAL: &str = "seawall_failovers_total";
/// The last successful failover's achieved RTO.
pub const LAST_RTO_SECONDS: &str = "seawall_failover_last_rto_seconds";
/// The last successful failover's achieved RPO.
pub const LAST_RPO_SECONDS: &str = "seawall_failover_last_rpo_seconds";
/// Old primaries fenced on their agent's return.
pub const REJOINS_TOTAL: &str = "seawall_rejoins_total";

/// Counts a failover of `service` that reached `outcome` (started,
/// refused, aborted, failed, succeeded).
pub fn outcome(service: &str, outcome: &'static str) {
    metrics::counter!(FAILOVERS_TOTAL, "service" => service.to_string(), "outcome" => outcome)
        .increment(1);
}

/// Sets the achieved figures of `service`'s last successful failover.
pub fn achieved(service: &str, rto_ms: i64, rpo_ms: Option<i64>) {
    metrics::gauge!(LAST_RTO_SECONDS, "service" => service.to_string()).set(rto_ms as f64 / 1000.0);
    if let Some(rpo) = rpo_ms {
        metrics::gauge!(LAST_RPO_SECONDS, "service" => service.to_string())
            .set(rpo as f64 / 1000.0);
    }
}

/// Counts an old primary fenced when its agent returned.
pub fn rejoined(service: &str) {
    metrics::counter!(REJOINS_TOTAL, "service" => service.to_string()).increment(1);
}
