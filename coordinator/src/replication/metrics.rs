//! The replication checks' Prometheus figures:
//!
//! | name | type | labels |
//! |---|---|---|
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

/// A service's replication figures. An unknown figure is NaN, never zero:
/// an unreachable standby must not look caught up.
pub fn report(r: &seawall_proto::v1::ServiceReplication) {
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
