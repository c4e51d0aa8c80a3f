//! The fleet's Prometheus figures, named once:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `seawall_agents_connected` | gauge | |
//! | `seawall_agents_forged_epoch_total` | counter (results claiming an epoch never sent) | |
//! | `seawall_agent_certificate_expiry_timestamp_seconds` | gauge | region, agent |
//! | `seawall_worker_errors_total` | counter | worker |

/// Agents connected to this replica.
pub const AGENTS_CONNECTED: &str = "seawall_agents_connected";
/// Results claiming an epoch this replica never sent.
pub const AGENTS_FORGED_EPOCH_TOTAL: &str = "seawall_agents_forged_epoch_total";
/// When each connected agent's certificate expires.
pub const AGENT_CERTIFICATE_EXPIRY: &str = "seawall_agent_certificate_expiry_timestamp_seconds";
/// Failed steps of the leader's workers.
pub const WORKER_ERRORS_TOTAL: &str = "seawall_worker_errors_total";
