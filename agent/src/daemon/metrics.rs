//! The agent daemon's Prometheus figures, named once (served on
//! `metrics_listen`):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `seawall_agent_connected` | gauge (1 while a leader's stream is up) | |
//! | `seawall_agent_refused_commands_total` | counter (commands of a deposed leader) | |
//! | `seawall_agent_results_unacknowledged` | gauge | |
//! | `seawall_agent_jobs_total` | counter | kind, outcome |
//! | `seawall_agent_job_duration_seconds` | histogram | kind |
//! | `seawall_agent_wal_mirrored_total` | counter | mirror |
//! | `seawall_agent_wal_mirror_errors_total` | counter | mirror |
//! | `seawall_agent_wal_mirror_last_success_timestamp_seconds` | gauge | mirror |
//! | `seawall_certificate_expiry_timestamp_seconds` | gauge | holder |
//! | `seawall_agent_self_fences_total` | counter (primaries fenced on a lapsed lease) | |

/// Whether a leader's stream is up.
pub const CONNECTED: &str = "seawall_agent_connected";
/// Commands refused for an old epoch.
pub const REFUSED_COMMANDS_TOTAL: &str = "seawall_agent_refused_commands_total";
/// Results sent and not yet acknowledged.
pub const RESULTS_UNACKNOWLEDGED: &str = "seawall_agent_results_unacknowledged";
/// Jobs by kind and outcome.
pub const JOBS_TOTAL: &str = "seawall_agent_jobs_total";
/// How long jobs ran.
pub const JOB_DURATION_SECONDS: &str = "seawall_agent_job_duration_seconds";
/// WAL segments mirrored.
pub const WAL_MIRRORED_TOTAL: &str = "seawall_agent_wal_mirrored_total";
/// WAL mirror rounds that failed.
pub const WAL_MIRROR_ERRORS_TOTAL: &str = "seawall_agent_wal_mirror_errors_total";
/// The last WAL mirror round that succeeded.
pub const WAL_MIRROR_LAST_SUCCESS: &str = "seawall_agent_wal_mirror_last_success_timestamp_seconds";
/// When the agent's certificate expires.
pub const CERTIFICATE_EXPIRY: &str = "seawall_certificate_expiry_timestamp_seconds";
/// Primaries the agent fenced itself when its lease lapsed.
pub const SELF_FENCES_TOTAL: &str = "seawall_agent_self_fences_total";
