//! The drills' Prometheus figures:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `seawall_drills_total` | counter | service, scenario, kind, verdict |
//! | `seawall_drill_last_success_timestamp_seconds` | gauge (the last drill that met its objectives) | service, scenario |
//! | `seawall_drill_rto_seconds` | gauge (the last drill's achieved RTO) | service, scenario |
//! | `seawall_drill_rpo_seconds` | gauge (the last drill's achieved RPO; NaN: not measured) | service, scenario |

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
    if d.verdict == super::verdict::MET {
        metrics::gauge!("seawall_drill_last_success_timestamp_seconds", &labels)
            .set(d.finished_unix_ms as f64 / 1000.0);
    }
    if let Some(rto) = d.rto_ms {
        metrics::gauge!("seawall_drill_rto_seconds", &labels).set(rto as f64 / 1000.0);
    }
    metrics::gauge!("seawall_drill_rpo_seconds", &labels)
        .set(d.rpo_ms.map(|r| r as f64 / 1000.0).unwrap_or(f64::NAN));
}
