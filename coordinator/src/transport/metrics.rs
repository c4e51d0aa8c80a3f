//! The transport's Prometheus figures, named once:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `seawall_connections_open` | gauge | |
//! | `seawall_tls_handshakes_failed_total` | counter | why (refused, timeout, silent: no HTTP/2 preface in time, anonymous_cap: over the cap on connections without a certificate) |
//! | `seawall_calls_refused_total` | counter | why (revoked, anonymous) |
//! | `seawall_certificate_expiry_timestamp_seconds` | gauge | holder |

/// Connections open now.
pub const CONNECTIONS_OPEN: &str = "seawall_connections_open";
/// TLS handshakes that failed, by why.
pub const TLS_HANDSHAKES_FAILED_TOTAL: &str = "seawall_tls_handshakes_failed_total";
/// Calls refused before their body was read, by why.
pub const CALLS_REFUSED_TOTAL: &str = "seawall_calls_refused_total";
/// When the coordinator's certificate expires.
pub const CERTIFICATE_EXPIRY: &str = "seawall_certificate_expiry_timestamp_seconds";
