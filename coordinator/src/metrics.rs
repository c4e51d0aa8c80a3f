//! The coordinator's Prometheus figures, through the `metrics` crate:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `seawall_leader` | gauge (1 while leading) | |
//! | `seawall_epoch` | gauge | |
//! | `seawall_agents_connected` | gauge | |
//! | `seawall_jobs_total` | counter | kind, outcome |
//! | `seawall_job_duration_seconds` | histogram | kind |
//! | `seawall_backup_bytes_added_total` | counter | region, source |
//! | `seawall_backup_last_success_timestamp_seconds` | gauge | region, source |
//! | `seawall_backup_age_seconds` | gauge (the RPO alert's figure) | region, source |
//! | `seawall_mirror_last_success_timestamp_seconds` | gauge | region, source (the mirror entry) |
//! | `seawall_schedule_interval_seconds` | gauge (time between two slots) | schedule, kind, region, source |
//! | `seawall_replication_verdict` | gauge (0 ok, 1 at risk, 2 broken) | service |
//! | `seawall_replication_exposure_seconds` | gauge (data lost if the primary region vanished now) | service |
//! | `seawall_replication_checked_timestamp_seconds` | gauge | service |
//! | `seawall_service_rpo_seconds` | gauge | service |
//! | `seawall_replication_store_verdict` | gauge (0 ok, 1 at risk, 2 broken) | service, region, kind, source |
//! | `seawall_replication_lag_bytes` | gauge (NaN: unknown) | service, region, kind, source |
//! | `seawall_replication_lag_seconds` | gauge (NaN: unknown) | service, region, kind, source |
//! | `seawall_replication_canary_exposure_seconds` | gauge (age of the newest canary visible; NaN: none) | service, region, kind, source |
//! | `seawall_replication_canary_delay_seconds` | gauge (write to visible) | service, region, kind, source |
//! | `seawall_replication_repository_verdict` | gauge (0 ok, 1 at risk, 2 broken, 3 not read) | service, region |
//! | `seawall_replication_repository_behind_seconds` | gauge (newest backups older than the primary's; NaN: unknown) | service, region |
//! | `seawall_replication_repository_gaps` | gauge (objects of the primary's repository missing or different) | service, region |
//! | `seawall_etcd_errors_total` | counter | op |
//! | `seawall_history_pruned_total` | counter | kind (jobs, backups, audit, failovers, drills) |
//! | `seawall_drills_total` | counter | service, scenario, kind, verdict |
//! | `seawall_drill_last_success_timestamp_seconds` | gauge (the last drill that met its objectives) | service, scenario |
//! | `seawall_drill_rto_seconds` | gauge (the last drill's achieved RTO) | service, scenario |
//! | `seawall_drill_rpo_seconds` | gauge (the last drill's achieved RPO; NaN: not measured) | service, scenario |

use crate::records::{now_ms, BackupRecord};
use std::collections::HashMap;
use std::sync::Mutex;

/// Newest success per (region, source), for the age gauge.
static NEWEST: Mutex<Option<HashMap<(String, String), i64>>> = Mutex::new(None);

/// Serves `/metrics` on `addr`.
pub fn serve(addr: &str) -> anyhow::Result<()> {
    Ok(seawall_common::metrics_endpoint::serve(addr)?)
}

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

/// A service's replication figures. An unknown figure is NaN, never zero:
/// an unreachable standby must not look caught up.
pub fn replication(r: &seawall_proto::v1::ServiceReplication) {
    let service = [("service", r.service.clone())];
    metrics::gauge!("seawall_replication_verdict", &service)
        .set(f64::from(crate::replication::assess::severity(&r.verdict)));
    metrics::gauge!("seawall_replication_exposure_seconds", &service)
        .set(r.exposure_ms.map(|m| m as f64 / 1000.0).unwrap_or(f64::NAN));
    metrics::gauge!("seawall_replication_checked_timestamp_seconds", &service)
        .set(r.checked_unix_ms as f64 / 1000.0);
    metrics::gauge!("seawall_service_rpo_seconds", &service).set(r.rpo_ms as f64 / 1000.0);
    for s in &r.stores {
        let labels = [
            ("service", r.service.clone()),
            ("region", s.region.clone()),
            ("kind", s.kind.clone()),
            ("source", s.source.clone()),
        ];
        let or_nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        metrics::gauge!("seawall_replication_store_verdict", &labels)
            .set(f64::from(crate::replication::assess::severity(&s.verdict)));
        if s.role == "standby" {
            metrics::gauge!("seawall_replication_lag_bytes", &labels)
                .set(or_nan(s.lag_bytes.map(|b| b as f64)));
            metrics::gauge!("seawall_replication_lag_seconds", &labels).set(or_nan(s.lag_secs));
            metrics::gauge!("seawall_replication_canary_exposure_seconds", &labels)
                .set(or_nan(s.canary_exposure_ms.map(|m| m as f64 / 1000.0)));
            metrics::gauge!("seawall_replication_canary_delay_seconds", &labels)
                .set(or_nan(s.canary_delay_ms.map(|m| m as f64 / 1000.0)));
        }
    }
    for repo in &r.repositories {
        let labels = [
            ("service", r.service.clone()),
            ("region", repo.region.clone()),
        ];
        metrics::gauge!("seawall_replication_repository_verdict", &labels).set(f64::from(
            crate::replication::assess::severity(&repo.verdict),
        ));
        if repo.role != "primary" {
            metrics::gauge!("seawall_replication_repository_behind_seconds", &labels).set(
                repo.behind_ms
                    .map(|m| m as f64 / 1000.0)
                    .unwrap_or(f64::NAN),
            );
            metrics::gauge!("seawall_replication_repository_gaps", &labels)
                .set(f64::from(repo.gap_count));
        }
    }
}

/// Leadership gauges.
pub fn leading(epoch: Option<i64>) {
    metrics::gauge!("seawall_leader").set(if epoch.is_some() { 1.0 } else { 0.0 });
    if let Some(e) = epoch {
        metrics::gauge!("seawall_epoch").set(e as f64);
    }
}

/// Exports a finished drill's verdict and figures. A drill run by hand
/// (no scenario) is labelled by its kind.
pub fn drill_finished(d: &seawall_proto::v1::Drill) {
    let scenario = if d.scenario.is_empty() {
        format!("{} drill", d.kind)
    } else {
        d.scenario.clone()
    };
    metrics::counter!(
        "seawall_drills_total",
        "service" => d.service.clone(),
        "scenario" => scenario.clone(),
        "kind" => d.kind.clone(),
        "verdict" => d.verdict.clone()
    )
    .increment(1);
    drill_seen(d);
}

/// Takes a finished drill into the last-drill gauges (a new leader reads
/// each scenario's newest from the journal).
pub fn drill_seen(d: &seawall_proto::v1::Drill) {
    let scenario = if d.scenario.is_empty() {
        format!("{} drill", d.kind)
    } else {
        d.scenario.clone()
    };
    let labels = [("service", d.service.clone()), ("scenario", scenario)];
    if d.verdict == crate::drills::verdict::MET {
        metrics::gauge!("seawall_drill_last_success_timestamp_seconds", &labels)
            .set(d.finished_unix_ms as f64 / 1000.0);
    }
    if let Some(rto) = d.rto_ms {
        metrics::gauge!("seawall_drill_rto_seconds", &labels).set(rto as f64 / 1000.0);
    }
    metrics::gauge!("seawall_drill_rpo_seconds", &labels)
        .set(d.rpo_ms.map(|r| r as f64 / 1000.0).unwrap_or(f64::NAN));
}
