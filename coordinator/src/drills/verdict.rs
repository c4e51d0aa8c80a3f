//! A drill's verdict against its scenario's objectives: failed when a
//! step failed or a figure could not be measured, missed when a figure is
//! over its objective, met otherwise; each reason names both figures.

use seawall_proto::v1::{Drill, FailoverStep};
use std::time::Duration;

/// The objectives were met.
pub const MET: &str = "met";
/// Everything ran, but a figure is over its objective.
pub const MISSED: &str = "missed";
/// Something did not work: the service did not come back as drilled.
pub const FAILED: &str = "failed";

fn secs(ms: i64) -> String {
    humantime::format_duration(Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// The verdict and its reasons for a drill's steps and achieved figures.
pub fn judge(
    steps: &[FailoverStep],
    rto_objective_ms: i64,
    rpo_objective_ms: i64,
    rto_ms: Option<i64>,
    rpo_ms: Option<i64>,
) -> (&'static str, Vec<String>) {
    let failed: Vec<String> = steps
        .iter()
        .filter(|s| s.state == "failed")
        .map(|s| format!("step {} failed: {}", s.name, s.detail))
        .collect();
    if !failed.is_empty() {
        return (FAILED, failed);
    }
    let Some(rto) = rto_ms else {
        return (FAILED, vec!["no RTO was measured".into()]);
    };
    let mut reasons = Vec::new();
    if rto > rto_objective_ms {
        reasons.push(format!(
            "RTO {} is over the objective of {}",
            secs(rto),
            secs(rto_objective_ms)
        ));
    }
    if let Some(rpo) = rpo_ms.filter(|rpo| *rpo > rpo_objective_ms) {
        reasons.push(format!(
            "RPO {} is over the objective of {}",
            secs(rpo),
            secs(rpo_objective_ms)
        ));
    }
    if reasons.is_empty() {
        (MET, reasons)
    } else {
        (MISSED, reasons)
    }
}

/// Sets `d`'s verdict and reasons from its steps and figures.
pub fn settle(d: &mut Drill) {
    let (verdict, reasons) = judge(
        &d.steps,
        d.rto_objective_ms,
        d.rpo_objective_ms,
        d.rto_ms,
        d.rpo_ms,
    );
    d.verdict = verdict.into();
    d.reasons = reasons;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, state: &str) -> FailoverStep {
        FailoverStep {
            name: name.into(),
            state: state.into(),
            detail: format!("{name} said so"),
            ..Default::default()
        }
    }

    #[test]
    fn within_the_objectives_is_met_over_one_is_missed_naming_both_figures() {
        let steps = vec![step("restore db", "done"), step("check db", "done")];
        assert_eq!(
            judge(&steps, 900_000, 300_000, Some(42_000), Some(0)),
            (MET, vec![])
        );
        let (v, why) = judge(&steps, 60_000, 300_000, Some(95_000), Some(301_000));
        assert_eq!(v, MISSED);
        assert_eq!(
            why,
            [
                "RTO 1m 35s is over the objective of 1m",
                "RPO 5m 1s is over the objective of 5m"
            ]
        );
    }

    #[test]
    fn a_failed_step_or_an_unmeasured_rto_fails_the_drill() {
        let steps = vec![step("restore db", "done"), step("check cache", "failed")];
        assert_eq!(
            judge(&steps, 900_000, 300_000, Some(1_000), Some(0)),
            (
                FAILED,
                vec!["step check cache failed: check cache said so".to_string()]
            )
        );
        let mut d = Drill {
            steps: vec![step("restore db", "done")],
            rto_objective_ms: 1,
            ..Default::default()
        };
        settle(&mut d);
        assert_eq!(d.verdict, FAILED);
        assert_eq!(d.reasons, ["no RTO was measured"]);
    }
}
