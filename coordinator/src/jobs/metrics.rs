//! The jobs layer's Prometheus figures, through the `metrics` crate:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `seawall_jobs_total` | counter | kind, outcome |
//! | `seawall_job_duration_seconds` | histogram | kind |
//! | `seawall_job_warnings_total` | counter | kind |
//! | `seawall_backup_bytes_added_total` | counter | region, source |
//! | `seawall_backup_last_success_timestamp_seconds` | gauge | region, source |
//! | `seawall_backup_age_seconds` | gauge (the RPO alert's figure) | region, source |
//! | `seawall_mirror_last_success_timestamp_seconds` | gauge | region, source (the mirror entry) |
//! | `seawall_schedule_interval_seconds` | gauge (time between two slots) | schedule, kind, region, source |
//!
//! The other layers keep their own: `fleet::registry`, `store::etcd`,
//! `replication::metrics`, `failover::metrics`, `drills::metrics`,
//! `history`, `transport` and `server::metrics` (leadership).

use crate::model::clock::now_ms;
use crate::model::records::BackupRecord;
use std::collections::HashMap;
use std::sync::Mutex;

/// Newest success per (region, source), for the age gauge.
static NEWEST: Mutex<Option<HashMap<(String, String), i64>>> = Mutex::new(None);

/// Records a successful backup.
pub fn backup_succeeded(b: &BackupRecord) {
    let labels = [("region", b.region.clone()), ("source", b.source.clone())];
    metrics::counter!("seawall_backup_bytes_added_total", &labels).increment(b.bytes_added);
    backup_seen(b);
}

/// Takes a stored backup into the newest-success and age gauges.
pub fn backup_seen(b: &BackupRecord) {
    let labels = [("region", b.region.clone()), ("source", b.source.clone())];
    if let Ok(mut newest) = NEWEST.lock() {
        let map = newest.get_or_insert_with(HashMap::new);
        let at = map.entry((b.region.clone(), b.source.clone())).or_insert(0);
        *at = (*at).max(b.finished_ms);
        metrics::gauge!("seawall_backup_last_success_timestamp_seconds", &labels)
            .set(*at as f64 / 1000.0);
    }
    refresh_ages();
}

/// Sets the age gauges to now minus each source's newest success.
pub fn refresh_ages() {
    let now = now_ms();
    if let Ok(newest) = NEWEST.lock() {
        for ((region, source), at) in newest.iter().flatten() {
            let labels = [("region", region.clone()), ("source", source.clone())];
            metrics::gauge!("seawall_backup_age_seconds", &labels)
                .set((now - at).max(0) as f64 / 1000.0);
        }
    }
}

/// Records a successful mirror run into `region`'s repository.
pub fn mirror_succeeded(region: &str, source: &str, at_ms: i64) {
    let labels = [
        ("region", region.to_string()),
        ("source", source.to_string()),
    ];
    metrics::gauge!("seawall_mirror_last_success_timestamp_seconds", &labels)
        .set(at_ms as f64 / 1000.0);
}

/// Records a snapshot copy of `region`'s `source` that reached AWS region
/// `to`: the data it holds is from `taken_ms`, so the alert on its age is
/// the cold region's RPO.
pub fn snapshot_copied(region: &str, source: &str, to: &str, taken_ms: i64) {
    let labels = [
        ("region", region.to_string()),
        ("source", source.to_string()),
        ("to", to.to_string()),
    ];
    metrics::gauge!("seawall_rds_snapshot_copy_taken_timestamp_seconds", &labels)
        .set(taken_ms as f64 / 1000.0);
}

/// The time between two slots of a schedule, so alerts can say "older than
/// its schedule allows" without knowing cron.
pub fn schedule_interval(schedule: &str, kind: &str, region: &str, source: &str, secs: f64) {
    let labels = [
        ("schedule", schedule.to_string()),
        ("kind", kind.to_string()),
        ("region", region.to_string()),
        ("source", source.to_string()),
    ];
    metrics::gauge!("seawall_schedule_interval_seconds", &labels).set(secs);
}

/// Counts a job that settled with `outcome` (succeeded, failed, ...).
pub fn job_settled(kind: &'static str, outcome: &'static str) {
    metrics::counter!("seawall_jobs_total", "kind" => kind, "outcome" => outcome).increment(1);
}

/// Records how long a settled job ran.
pub fn job_duration(kind: &'static str, secs: f64) {
    metrics::histogram!("seawall_job_duration_seconds", "kind" => kind).record(secs);
}

/// Counts the warnings of a job that succeeded with them.
pub fn job_warnings(kind: &'static str, count: u64) {
    metrics::counter!("seawall_job_warnings_total", "kind" => kind).increment(count);
}
