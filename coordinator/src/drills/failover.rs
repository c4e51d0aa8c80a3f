//! The failover drill: a planned switchover of a service to another region
//! with its post-checks, then failback to the region it started in, each a
//! failover record of its own (`failover_ids`), driven by the failover
//! worker like any other. The drill's steps follow those records; its
//! figures are the worse of the two directions' achieved RTO and RPO, and
//! each direction's are in its step's evidence. A direction that fails
//! ends the drill: failback is not attempted after a failed switchover,
//! and a failed failback says the service is left where it is.

use super::journal;
use super::verdict;
use crate::failover::stored as failovers;
use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::error::ActError;
use crate::model::failover::FailoverState;
use seawall_proto::v1::{Drill, FailoverRequest, FailoverStep};
use std::collections::BTreeMap;

/// Evidence key of the failover a step runs.
const FAILOVER: &str = "failover";
/// Steady-state key of the region the service started in.
const HOME: &str = "primary before";

/// Records a failover drill of `service` to `to` and back; the first step
/// starts on the drill worker's next pass.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    coord: &Coordinator,
    lead: &Lead,
    scenario: &str,
    service: &str,
    to: &str,
    objectives: (i64, i64),
    id: String,
    who: &str,
) -> Result<Drill, ActError> {
    if let Some((existing, _)) = journal::load(coord, &id).await? {
        return Ok(existing);
    }
    let config = coord
        .config
        .services
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| ActError::Invalid(format!("no service {service:?} in [[services]]")))?;
    let home = crate::replication::primaries::current(coord, config)
        .await?
        .ok_or_else(|| ActError::Invalid("the topology has no primary region".into()))?;
    if home == to {
        return Err(ActError::Invalid(format!(
            "{service}'s primary is in {to} already: a failover drill goes to another region and back"
        )));
    }
    let mut steady = BTreeMap::new();
    steady.insert(HOME.to_string(), home.clone());
    if let Ok(stored) = crate::replication::stored(coord).await {
        if let Some(r) = stored.iter().find(|r| r.service == service) {
            steady.insert("replication verdict".into(), r.verdict.clone());
            steady.insert(
                "replication checked".into(),
                chrono::DateTime::from_timestamp_millis(r.checked_unix_ms)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
            );
        }
    }
    let pending = |name: String| FailoverStep {
        name,
        state: "pending".into(),
        ..Default::default()
    };
    let d = Drill {
        id: id.clone(),
        scenario: scenario.to_string(),
        service: service.to_string(),
        kind: "failover".into(),
        region: to.to_string(),
        rto_objective_ms: objectives.0,
        rpo_objective_ms: objectives.1,
        steady_state: steady,
        steps: vec![
            pending(format!("switchover to {to}")),
            pending(format!("failback to {home}")),
        ],
        state: journal::RUNNING.into(),
        started_unix_ms: now_ms(),
        requested_by: who.to_string(),
        ..Default::default()
    };
    journal::save(
        coord,
        lead,
        &d,
        0,
        Some(format!(
            "failover drill {id} of {service}: {home} -> {to} -> {home}, started by {who}"
        )),
    )
    .await?;
    coord.drill_wake.notify_one();
    Ok(d)
}

/// The request of step `i` of drill `d`.
fn request(d: &Drill, i: usize) -> FailoverRequest {
    let home = d.steady_state.get(HOME).cloned().unwrap_or_default();
    if i == 0 {
        FailoverRequest {
            service: d.service.clone(),
            to: d.region.clone(),
            switchover: true,
            ..Default::default()
        }
    } else {
        FailoverRequest {
            service: d.service.clone(),
            to: home,
            failback: true,
            ..Default::default()
        }
    }
}

/// Moves a failover drill on by at most one step change; whether it changed.
pub async fn advance(coord: &Coordinator, lead: &Lead, d: &mut Drill) -> Result<bool, ActError> {
    let Some(i) = d
        .steps
        .iter()
        .position(|s| matches!(s.state.as_str(), "pending" | "running"))
    else {
        settle(d);
        return Ok(true);
    };
    if d.steps[i].state == "pending" {
        let req = request(d, i);
        let who = format!("drill {}", d.id);
        let step = &mut d.steps[i];
        step.started_unix_ms = now_ms();
        match crate::failover::start::start(coord, lead, &req, &who).await {
            Ok(f) => {
                step.state = "running".into();
                step.started_unix_ms = f.started_unix_ms;
                step.detail = format!("failover {} running", f.id);
                step.evidence.insert(FAILOVER.into(), f.id.clone());
                d.failover_ids.push(f.id);
            }
            Err(e) => {
                step.state = "failed".into();
                step.ended_unix_ms = now_ms();
                step.detail = format!("not started: {e}");
                skip_rest(d, i);
            }
        }
        return Ok(true);
    }
    let Some(id) = d.steps[i].evidence.get(FAILOVER).cloned() else {
        return Ok(false);
    };
    let Some((f, _)) = failovers::load(coord, &id).await? else {
        let step = &mut d.steps[i];
        step.state = "failed".into();
        step.detail = format!("its failover {id} is gone");
        skip_rest(d, i);
        return Ok(true);
    };
    if !f.is_final() {
        return Ok(false);
    }
    let step = &mut d.steps[i];
    step.ended_unix_ms = f.finished_unix_ms.max(f.started_unix_ms);
    step.attempts = 1;
    if let Some(rto) = f.rto_ms {
        step.evidence.insert("rto_ms".into(), rto.to_string());
    }
    if let Some(rpo) = f.rpo_ms {
        step.evidence.insert("rpo_ms".into(), rpo.to_string());
    }
    if let Some(gap) = f.lsn_gap_bytes {
        step.evidence
            .insert("lsn_gap_bytes".into(), gap.to_string());
    }
    if let Some(gap) = f.offset_gap {
        step.evidence.insert("offset_gap".into(), gap.to_string());
    }
    if f.state == FailoverState::Succeeded {
        step.state = "done".into();
        step.detail = format!(
            "failover {id}: {} -> {}, RTO {}, RPO {}",
            f.from,
            f.to,
            shown(f.rto_ms),
            shown(f.rpo_ms)
        );
    } else {
        step.state = "failed".into();
        step.detail = format!(
            "failover {id} {}: {}{}",
            f.state.name(),
            f.error,
            if i == 0 {
                String::new()
            } else {
                format!("; {} is left in {}", d.service, f.from)
            }
        );
        skip_rest(d, i);
    }
    Ok(true)
}

fn shown(ms: Option<i64>) -> String {
    ms.map(|m| format!("{:.2} s", m as f64 / 1000.0))
        .unwrap_or_else(|| "not measured".into())
}

fn skip_rest(d: &mut Drill, after: usize) {
    for s in d.steps.iter_mut().skip(after + 1) {
        if s.state == "pending" {
            s.state = "skipped".into();
            s.detail = "not run: an earlier step failed".into();
        }
    }
}

/// The figures (the worse direction) and the verdict.
fn settle(d: &mut Drill) {
    let figure = |key: &str| {
        let all: Vec<i64> = d
            .steps
            .iter()
            .map(|s| s.evidence.get(key).and_then(|v| v.parse().ok()))
            .collect::<Option<Vec<i64>>>()?;
        all.into_iter().max()
    };
    d.rto_ms = figure("rto_ms");
    d.rpo_ms = figure("rpo_ms");
    d.finished_unix_ms = now_ms();
    d.state = journal::FINISHED.into();
    verdict::settle(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(state: &str, rto: Option<i64>, rpo: Option<i64>) -> FailoverStep {
        let mut evidence = BTreeMap::new();
        if let Some(r) = rto {
            evidence.insert("rto_ms".into(), r.to_string());
        }
        if let Some(r) = rpo {
            evidence.insert("rpo_ms".into(), r.to_string());
        }
        FailoverStep {
            state: state.into(),
            evidence,
            ..Default::default()
        }
    }

    #[test]
    fn the_figures_are_the_worse_direction_and_a_missing_one_is_not_a_figure() {
        let mut d = Drill {
            rto_objective_ms: 1_000,
            rpo_objective_ms: 0,
            steps: vec![
                step("done", Some(170), Some(0)),
                step("done", Some(420), Some(0)),
            ],
            ..Default::default()
        };
        settle(&mut d);
        assert_eq!((d.rto_ms, d.rpo_ms), (Some(420), Some(0)));
        assert_eq!(d.verdict, verdict::MET);
        let mut failed = Drill {
            rto_objective_ms: 1_000,
            steps: vec![step("failed", None, None), step("skipped", None, None)],
            ..Default::default()
        };
        settle(&mut failed);
        assert_eq!(failed.rto_ms, None);
        assert_eq!(failed.verdict, verdict::FAILED);
    }
}
