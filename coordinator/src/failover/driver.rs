//! The failover worker and the driver of one failover. A step is marked
//! running (and written) before it acts and done after, so a leader that
//! dies in between leaves a running step its successor repeats; the
//! actions are idempotent, so a repeated promotion finds the store
//! promoted and says so.

use super::plan::Assessment;
use super::steps::{self, StepError};
use super::stored::{all, load, save};
use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::error::ActError;
use crate::model::failover::{FailoverRecord, FailoverState, StepRecord, StepState};
use seawall_proto::v1::FailoverRequest;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Attempts of a post-check before the failover is called failed.
const POST_CHECK_ATTEMPTS: u32 = 5;
/// Waits between attempts of a step that must finish.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What made the coordinator start a failover by itself.
#[derive(Debug, Clone)]
pub struct Detected {
    /// When the fault was first seen (the RTO counts from then).
    pub at_ms: i64,
    /// The one store kind that failed while its agent reported; None when
    /// the whole region was declared down.
    pub failed_store: Option<crate::model::topology::StoreKind>,
}

/// Records a new failover whose precheck (`assessed`) passed (a failback's
/// plan, whose precheck is a later step), and wakes the worker.
pub async fn create(
    coord: &Coordinator,
    lead: &Lead,
    req: &FailoverRequest,
    who: &str,
    assessed: &Assessment,
    detected: Option<Detected>,
) -> Result<FailoverRecord, ActError> {
    // The precheck is the first step: the clock starts when it began.
    let started = assessed.asked_ms;
    let prechecked = now_ms();
    let steps = steps::for_request(req)
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            if i == 0 && !req.failback {
                StepRecord {
                    state: StepState::Done,
                    started_unix_ms: started,
                    ended_unix_ms: prechecked,
                    detail: steps::precheck_detail(assessed),
                    evidence: steps::precheck_evidence(assessed),
                    attempts: 1,
                    ..StepRecord::pending(step)
                }
            } else {
                StepRecord::pending(step)
            }
        })
        .collect();
    let f = FailoverRecord {
        id: format!("{}-{started}", req.service),
        service: req.service.clone(),
        from: assessed.plan.from.clone(),
        to: assessed.plan.to.clone(),
        switchover: req.switchover || (req.failback && !req.standby_only),
        failback: req.failback,
        standby_only: req.failback && req.standby_only,
        allow_data_loss: req.allow_data_loss,
        state: FailoverState::Running,
        started_unix_ms: started,
        requested_by: who.to_string(),
        steps,
        expected_loss_bytes: assessed.expected_loss_bytes,
        expected_loss_ms: assessed.plan.expected_loss_ms,
        epochs: vec![lead.epoch()],
        automatic: detected.is_some(),
        detected_unix_ms: detected.as_ref().map_or(0, |d| d.at_ms),
        failed_store: detected
            .and_then(|d| d.failed_store)
            .map(|k| k.name().to_string())
            .unwrap_or_default(),
        ..Default::default()
    };
    save(
        coord,
        lead,
        &f,
        0,
        Some(format!(
            "{} {} of {} from {} to {} started by {who}{}{}",
            if f.failback { "failback" } else { "failover" },
            f.id,
            f.service,
            f.from,
            f.to,
            if f.standby_only {
                " (standby only)"
            } else if f.switchover {
                " (switchover)"
            } else {
                ""
            },
            if f.allow_data_loss {
                " with --allow-data-loss"
            } else {
                ""
            }
        )),
        Vec::new(),
    )
    .await?;
    super::metrics::outcome(&f.service, "started");
    coord.failover_wake.notify_one();
    Ok(f)
}

/// Starts the leader's failover worker: it drives every running failover,
/// one task each, resuming those a previous leader left.
pub fn start(coord: Arc<Coordinator>, lead: Arc<Lead>) {
    if coord.config.services.is_empty() {
        return;
    }
    let driving: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (board, tree) = (coord.workers.clone(), lead.tree.clone());
    crate::fleet::workers::spawn_worker(&tree, &board, "failover", move || {
        let (coord, lead, driving) = (coord.clone(), lead.clone(), driving.clone());
        async move {
            if !lead.leadership.is_valid() {
                return Ok(crate::fleet::workers::Next::Stop);
            }
            let running: Vec<FailoverRecord> = all(&coord)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|f| !f.is_final())
                .collect();
            for f in running {
                let fresh = driving
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(f.id.clone());
                if !fresh {
                    continue;
                }
                let (coord, lead, driving) = (coord.clone(), lead.clone(), driving.clone());
                let tree = lead.tree.clone();
                let span = tracing::info_span!("failover", id = %f.id, service = %f.service);
                tree.spawn(tracing::Instrument::instrument(
                    async move {
                        if let Err(e) = drive(&coord, &lead, &f.id).await {
                            tracing::warn!(error = %e, "failover driver stopped; the worker resumes it");
                        }
                        driving
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&f.id);
                    },
                    span,
                ));
            }
            tokio::select! {
                _ = coord.failover_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            Ok(crate::fleet::workers::Next::After(Duration::ZERO))
        }
    });
}

/// Drives failover `id` until it is final or this leader stops leading.
async fn drive(coord: &Coordinator, lead: &Lead, id: &str) -> Result<(), ActError> {
    let mut backoff = RETRY_MIN;
    loop {
        if !lead.leadership.is_valid() {
            return Ok(());
        }
        let Some((mut f, rev)) = load(coord, id).await? else {
            return Ok(());
        };
        if f.is_final() {
            return Ok(());
        }
        let Some(service) = coord.config.services.iter().find(|s| s.name == f.service) else {
            f.error = format!("service {} is no longer in the topology", f.service);
            return settle_failed(coord, lead, f, rev).await;
        };
        if !f.epochs.contains(&lead.epoch()) {
            f.epochs.push(lead.epoch());
        }
        let Some(index) = f
            .steps
            .iter()
            .position(|s| matches!(s.state, StepState::Pending | StepState::Running))
        else {
            return super::outcome::finish(coord, lead, service, f, rev).await;
        };
        if f.abort_requested {
            return settle_aborted(coord, lead, f, rev, index).await;
        }
        let record = &mut f.steps[index];
        if record.state == StepState::Pending {
            record.started_unix_ms = now_ms();
        }
        record.state = StepState::Running;
        record.attempts += 1;
        let (step, attempts) = (record.step, record.attempts);
        save(coord, lead, &f, rev, None, Vec::new()).await?;
        let outcome = steps::run(coord, lead, service, &f, step, attempts).await;
        let Some((mut f, rev)) = load(coord, id).await? else {
            return Ok(());
        };
        let record = &mut f.steps[index];
        match outcome {
            Ok(d) => {
                backoff = RETRY_MIN;
                record.state = if d.skipped {
                    StepState::Skipped
                } else {
                    StepState::Done
                };
                record.ended_unix_ms = now_ms();
                record.detail = d.detail;
                record.evidence = d.evidence;
                let state = record.state.name();
                let event = format!("failover {id}: {step} {state}: {}", record.detail);
                tracing::info!(%step, state, detail = %record.detail, "failover step");
                // From the passed post-check on, the new region serves:
                // the replication checks and rejoins follow it while the
                // old primary is rebuilt.
                let moved = if step == crate::model::failover::Step::PostCheck {
                    // Served again: the figures are final from here.
                    if !f.standby_only {
                        super::outcome::achieve(service, &mut f, now_ms());
                    }
                    vec![(
                        crate::replication::primaries::key(&f.service),
                        f.to.clone().into_bytes(),
                    )]
                } else {
                    Vec::new()
                };
                save(coord, lead, &f, rev, Some(event), moved).await?;
            }
            Err(e)
                if e.retryable()
                    || (step == crate::model::failover::Step::PostCheck
                        && attempts < POST_CHECK_ATTEMPTS) =>
            {
                record.detail = format!(
                    "waiting: attempt {attempts} failed: {e}; trying again in {}",
                    humantime::format_duration(backoff)
                );
                tracing::warn!(%step, error = %e, "failover step will be tried again");
                save(coord, lead, &f, rev, None, Vec::new()).await?;
                tokio::select! {
                    _ = lead.leadership.lost() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            Err(e) => return fail(coord, lead, service, f, rev, index, e).await,
        }
    }
}

/// Step `index` failed for good: says what was left in which state (and
/// lifts the fence when nothing was promoted), then records the failure.
async fn fail(
    coord: &Coordinator,
    lead: &Lead,
    service: &crate::model::topology::ServiceConfig,
    mut f: FailoverRecord,
    rev: i64,
    index: usize,
    e: StepError,
) -> Result<(), ActError> {
    let record = &mut f.steps[index];
    record.state = StepState::Failed;
    record.ended_unix_ms = now_ms();
    record.detail = e.to_string();
    f.error = format!("step {} failed: {e}", record.step);
    if !f.begun(crate::model::failover::Step::Fence) {
        f.error.push_str(&format!(
            "; nothing was fenced or promoted: {} stays {}'s primary region",
            f.from, f.service
        ));
    } else if !f.promoting() {
        // Nothing was promoted: the old primary takes writes again rather
        // than leave the service read-only.
        f.error
            .push_str(&steps::unfence(coord, lead, service, &f.from).await);
    } else {
        f.error.push_str(&format!(
            "; {} was promoted already: finish by hand (docs/operations.md, Failover) or fail back",
            f.to
        ));
    }
    super::metrics::outcome(&f.service, "failed");
    settle_failed(coord, lead, f, rev).await
}

/// An operator asked to stop: the failover ends before step `index`, and
/// what was done is named (not undone).
async fn settle_aborted(
    coord: &Coordinator,
    lead: &Lead,
    mut f: FailoverRecord,
    rev: i64,
    index: usize,
) -> Result<(), ActError> {
    let step = f.steps[index].step;
    f.state = FailoverState::Aborted;
    f.finished_unix_ms = now_ms();
    let done: Vec<String> = f
        .steps
        .iter()
        .filter(|s| s.state == StepState::Done)
        .map(|s| s.step.name())
        .collect();
    f.error = format!(
        "aborted before step {step}{}; done so far (not undone): {}",
        if f.error.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.error)
        },
        done.join(", ")
    );
    super::metrics::outcome(&f.service, "aborted");
    let event = format!("failover {}: {}", f.id, f.error);
    save(coord, lead, &f, rev, Some(event), Vec::new()).await?;
    Ok(())
}

/// Records `f` as failed (its error already set), with an audit line.
async fn settle_failed(
    coord: &Coordinator,
    lead: &Lead,
    mut f: FailoverRecord,
    rev: i64,
) -> Result<(), ActError> {
    f.state = FailoverState::Failed;
    f.finished_unix_ms = now_ms();
    let event = format!("failover {} failed: {}", f.id, f.error);
    save(coord, lead, &f, rev, Some(event), Vec::new()).await?;
    Ok(())
}
