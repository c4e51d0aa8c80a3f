//! The failover workflow: the record, the worker that drives it, and each
//! step. A step is marked running (and written) before it acts and done
//! after, so a leader that dies in between leaves a running step its
//! successor repeats; the actions are idempotent, so a repeated promotion
//! finds the store promoted and says so.

use super::plan::{store_of, stores_in, Assessment};
use super::{dns, primaries};
use crate::core::{ActError, Coordinator, Lead};
use crate::records::now_ms;
use crate::topology::{ServiceConfig, StoreConfig, StoreKind};
use seawall_proto::v1::{
    action_request::Action, coordinator_message, ActionReply, ActionRequest, CatchUpAction,
    CoordinatorMessage, Failover, FailoverRequest, FailoverStep, FenceAction, PostCheckAction,
    PromoteAction, RebuildAction, StoreProbe,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Store prefix of the records.
pub const PREFIX: &str = "failovers/";

/// The key of failover `id`.
pub fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// The steps, in order.
pub const STEPS: [&str; 8] = [
    "precheck",
    "fence",
    "catch up",
    "promote postgres",
    "promote redis",
    "dns",
    "post-check",
    "demote",
];

/// A failback's first steps: the old primary region's stores rebuilt as
/// standbys of the current primary (then a switchover to them).
const REBUILD_STEPS: [&str; 2] = ["rebuild postgres", "rebuild redis"];

/// A switchover's last steps: the old primary, reachable by definition,
/// ends as a standby of the new one (as after a Patroni switchover).
const FOLLOW_STEPS: [&str; 2] = ["follow postgres", "follow redis"];

/// The steps of a failover as `req` asks for it, in order.
fn step_names(req: &FailoverRequest) -> Vec<&'static str> {
    if req.failback && req.standby_only {
        // Stops once the rebuilt standbys follow.
        return [REBUILD_STEPS.as_slice(), &["precheck"]].concat();
    }
    let mut names = Vec::new();
    if req.failback {
        names.extend(REBUILD_STEPS);
    }
    names.extend(STEPS);
    if req.switchover || req.failback {
        names.extend(FOLLOW_STEPS);
    }
    names
}

/// Failover states.
pub mod state {
    /// Being driven.
    pub const RUNNING: &str = "running";
    /// Every step done.
    pub const SUCCEEDED: &str = "succeeded";
    /// A step failed for good.
    pub const FAILED: &str = "failed";
    /// Stopped by an operator before a step.
    pub const ABORTED: &str = "aborted";
}

/// Whether a failover's state is final.
pub fn is_final(f: &Failover) -> bool {
    f.state != state::RUNNING
}

/// How long a store action may take.
const ACTION_DEADLINE: Duration = Duration::from_secs(30);
/// How long fencing a store may take (a reachable one takes milliseconds).
const FENCE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a promotion may take.
const PROMOTE_DEADLINE: Duration = Duration::from_secs(60);
/// Attempts of a post-check before the failover is called failed.
const POST_CHECK_ATTEMPTS: u32 = 5;
/// Waits between attempts of a step that must finish.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Loads failover `id` with its revision.
pub async fn load(coord: &Coordinator, id: &str) -> Result<Option<(Failover, i64)>, ActError> {
    crate::records::load_json(coord.store.as_ref(), &key(id)).await
}

/// Every failover, newest first.
pub async fn all(coord: &Coordinator) -> Result<Vec<Failover>, ActError> {
    let mut out: Vec<Failover> = crate::records::list_json(coord.store.as_ref(), PREFIX)
        .await?
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    out.sort_by_key(|f: &Failover| std::cmp::Reverse(f.started_unix_ms));
    Ok(out)
}

/// Writes `f` if it is still at `rev`, with an audit line; the new revision.
async fn save(
    coord: &Coordinator,
    lead: &Lead,
    f: &Failover,
    rev: i64,
    event: Option<String>,
    extra: Vec<(String, Vec<u8>)>,
) -> Result<i64, ActError> {
    let mut extra = extra;
    if let Some(event) = event {
        let entry = crate::records::AuditEntry {
            at_ms: now_ms(),
            epoch: lead.fence().epoch,
            replica: coord.me.id.clone(),
            actor: "failover".into(),
            event,
        };
        extra.push((
            format!("audit/{:013}-{:08x}", entry.at_ms, rand::random::<u32>()),
            serde_json::to_vec(&entry)?,
        ));
    }
    let value = serde_json::to_vec(f)?;
    Ok(coord
        .store
        .put_with(lead.fence(), &key(&f.id), &value, Some(rev), &extra)
        .await?)
}

/// What a passed precheck records.
fn precheck_evidence(assessed: &Assessment) -> BTreeMap<String, String> {
    let mut evidence = BTreeMap::new();
    if let Some(b) = assessed.expected_loss_bytes {
        evidence.insert("lag_bytes".into(), b.to_string());
    }
    if let Some(ms) = assessed.plan.expected_loss_ms {
        evidence.insert("expected_loss_ms".into(), ms.to_string());
    }
    evidence.insert("from_reachable".into(), assessed.from_reachable.to_string());
    evidence
}

fn precheck_detail(assessed: &Assessment) -> String {
    if assessed.plan.notes.is_empty() {
        "passed".into()
    } else {
        format!("passed: {}", assessed.plan.notes.join("; "))
    }
}

/// Records a new failover whose precheck (`assessed`) passed (a failback's
/// plan, whose precheck is a later step), and wakes the worker.
pub async fn create(
    coord: &Coordinator,
    lead: &Lead,
    req: &FailoverRequest,
    who: &str,
    assessed: &Assessment,
    detected_ms: Option<i64>,
) -> Result<Failover, ActError> {
    // The precheck is the first step: the clock starts when it began.
    let started = assessed.asked_ms;
    let prechecked = now_ms();
    let steps = step_names(req)
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if i == 0 && !req.failback {
                FailoverStep {
                    name: name.to_string(),
                    state: "done".into(),
                    started_unix_ms: started,
                    ended_unix_ms: prechecked,
                    detail: precheck_detail(assessed),
                    evidence: precheck_evidence(assessed),
                    attempts: 1,
                }
            } else {
                FailoverStep {
                    name: name.to_string(),
                    state: "pending".into(),
                    ..Default::default()
                }
            }
        })
        .collect();
    let f = Failover {
        id: format!("{}-{started}", req.service),
        service: req.service.clone(),
        from: assessed.plan.from.clone(),
        to: assessed.plan.to.clone(),
        switchover: req.switchover || (req.failback && !req.standby_only),
        failback: req.failback,
        standby_only: req.failback && req.standby_only,
        allow_data_loss: req.allow_data_loss,
        state: state::RUNNING.into(),
        started_unix_ms: started,
        requested_by: who.to_string(),
        steps,
        expected_loss_bytes: assessed.expected_loss_bytes,
        expected_loss_ms: assessed.plan.expected_loss_ms,
        epochs: vec![lead.epoch()],
        automatic: detected_ms.is_some(),
        detected_unix_ms: detected_ms.unwrap_or(0),
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
    metrics::counter!("seawall_failovers_total", "service" => f.service.clone(), "outcome" => "started").increment(1);
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
    crate::workers::spawn_worker(&tree, &board, "failover", move || {
        let (coord, lead, driving) = (coord.clone(), lead.clone(), driving.clone());
        async move {
            if !lead.leadership.is_valid() {
                return Ok(crate::workers::Next::Stop);
            }
            let running: Vec<Failover> = all(&coord)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|f| !is_final(f))
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
                tree.spawn(async move {
                    if let Err(e) = drive(&coord, &lead, &f.id).await {
                        tracing::warn!(failover = %f.id, error = %e, "failover driver stopped; the worker resumes it");
                    }
                    driving
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&f.id);
                });
            }
            tokio::select! {
                _ = coord.failover_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            Ok(crate::workers::Next::After(Duration::ZERO))
        }
    });
}

/// Why a step did not finish.
pub(super) struct StepError {
    /// What went wrong.
    pub(super) message: String,
    /// Another attempt may succeed (an agent reconnecting, Route 53 back).
    retry: bool,
}

fn fatal(message: impl Into<String>) -> StepError {
    StepError {
        message: message.into(),
        retry: false,
    }
}

fn transient(message: impl Into<String>) -> StepError {
    StepError {
        message: message.into(),
        retry: true,
    }
}

/// What a finished step says.
struct StepDone {
    skipped: bool,
    detail: String,
    evidence: BTreeMap<String, String>,
}

fn done(detail: impl Into<String>, evidence: BTreeMap<String, String>) -> StepDone {
    StepDone {
        skipped: false,
        detail: detail.into(),
        evidence,
    }
}

fn skipped(detail: impl Into<String>) -> StepDone {
    StepDone {
        skipped: true,
        detail: detail.into(),
        evidence: BTreeMap::new(),
    }
}

/// Whether a promotion has begun (from then on the failover must finish).
fn promoting(f: &Failover) -> bool {
    f.steps
        .iter()
        .any(|s| s.name.starts_with("promote") && s.state != "pending")
}

/// Whether the fence step has begun (the old primary may be fenced).
fn fenced(f: &Failover) -> bool {
    f.steps
        .iter()
        .any(|s| s.name == "fence" && s.state != "pending")
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
        if is_final(&f) {
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
            .position(|s| s.state == "pending" || s.state == "running")
        else {
            return finish(coord, lead, service, f, rev).await;
        };
        if f.abort_requested {
            let step = f.steps[index].name.clone();
            f.state = state::ABORTED.into();
            f.finished_unix_ms = now_ms();
            let done: Vec<String> = f
                .steps
                .iter()
                .filter(|s| s.state == "done")
                .map(|s| s.name.clone())
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
            metrics::counter!("seawall_failovers_total", "service" => f.service.clone(), "outcome" => "aborted").increment(1);
            save(
                coord,
                lead,
                &f,
                rev,
                Some(format!("failover {id}: {}", f.error)),
                Vec::new(),
            )
            .await?;
            return Ok(());
        }
        let step = &mut f.steps[index];
        if step.state == "pending" {
            step.started_unix_ms = now_ms();
        }
        step.state = "running".into();
        step.attempts += 1;
        let attempts = step.attempts;
        let name = step.name.clone();
        save(coord, lead, &f, rev, None, Vec::new()).await?;
        let outcome = run_step(coord, lead, service, &f, &name, attempts).await;
        let Some((mut f, rev)) = load(coord, id).await? else {
            return Ok(());
        };
        let step = &mut f.steps[index];
        match outcome {
            Ok(d) => {
                backoff = RETRY_MIN;
                step.state = if d.skipped { "skipped" } else { "done" }.into();
                step.ended_unix_ms = now_ms();
                step.detail = d.detail;
                step.evidence.extend(d.evidence);
                let event = format!("failover {id}: {} {}: {}", name, step.state, step.detail);
                tracing::info!(failover = %id, step = %name, state = %step.state, detail = %step.detail, "failover step");
                // From the passed post-check on, the new region serves:
                // the replication checks and rejoins follow it while the
                // old primary is rebuilt.
                let moved = if name == "post-check" {
                    vec![(primaries::key(&f.service), f.to.clone().into_bytes())]
                } else {
                    Vec::new()
                };
                save(coord, lead, &f, rev, Some(event), moved).await?;
            }
            Err(e) if e.retry || (name == "post-check" && attempts < POST_CHECK_ATTEMPTS) => {
                step.detail = format!(
                    "waiting: attempt {attempts} failed: {}; trying again in {}",
                    e.message,
                    humantime::format_duration(backoff)
                );
                tracing::warn!(failover = %id, step = %name, error = %e.message, "failover step will be tried again");
                save(coord, lead, &f, rev, None, Vec::new()).await?;
                tokio::select! {
                    _ = lead.leadership.lost() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            Err(e) => {
                step.state = "failed".into();
                step.ended_unix_ms = now_ms();
                step.detail = e.message.clone();
                f.error = format!("step {name} failed: {}", e.message);
                if !fenced(&f) {
                    f.error.push_str(&format!(
                        "; nothing was fenced or promoted: {} stays {}'s primary region",
                        f.from, f.service
                    ));
                } else if !promoting(&f) {
                    // Nothing was promoted: the old primary takes writes
                    // again rather than leave the service read-only.
                    f.error
                        .push_str(&unfence(coord, lead, service, &f.from).await);
                } else {
                    f.error.push_str(&format!(
                        "; {} was promoted already: finish by hand (docs/operations.md, Failover) or fail back",
                        f.to
                    ));
                }
                metrics::counter!("seawall_failovers_total", "service" => f.service.clone(), "outcome" => "failed").increment(1);
                return settle_failed(coord, lead, f, rev).await;
            }
        }
    }
}

/// Records `f` as failed (its error already set), with an audit line.
async fn settle_failed(
    coord: &Coordinator,
    lead: &Lead,
    mut f: Failover,
    rev: i64,
) -> Result<(), ActError> {
    f.state = state::FAILED.into();
    f.finished_unix_ms = now_ms();
    let event = format!("failover {} failed: {}", f.id, f.error);
    save(coord, lead, &f, rev, Some(event), Vec::new()).await?;
    Ok(())
}

/// Sends `action` for `store` to its agent and waits for the answer.
pub(super) async fn act(
    coord: &Coordinator,
    lead: &Lead,
    store: &StoreConfig,
    action: Action,
    deadline: Duration,
) -> Result<ActionReply, StepError> {
    let session = crate::replication::ask::session_of(&coord.registry, &store.region, &store.agent)
        .map_err(transient)?;
    let reply = coord
        .actions
        .request(
            &session,
            |id| CoordinatorMessage {
                epoch: lead.epoch(),
                body: Some(coordinator_message::Body::Action(ActionRequest {
                    action_id: id,
                    deadline_ms: crate::replication::ask::deadline_ms(deadline),
                    source: store.source.clone(),
                    action: Some(action),
                })),
            },
            deadline + Duration::from_secs(2),
        )
        .await
        .map_err(|e| transient(format!("agent {}/{}: {e}", store.region, store.agent)))?;
    if reply.error.is_empty() {
        Ok(reply)
    } else {
        let unreachable = reply.error_kind == seawall_proto::v1::ErrorKind::Unreachable as i32;
        Err(StepError {
            message: format!(
                "{} ({}/{}): {}",
                store.kind.name(),
                store.agent,
                store.source,
                reply.error
            ),
            retry: unreachable,
        })
    }
}

fn evidence_of(
    kind: StoreKind,
    what: &str,
    reply: &ActionReply,
    into: &mut BTreeMap<String, String>,
) {
    match kind {
        StoreKind::Postgres => {
            into.insert(format!("postgres_{what}_lsn"), reply.lsn.clone());
            if reply.timeline > 0 {
                into.insert(
                    format!("postgres_{what}_timeline"),
                    reply.timeline.to_string(),
                );
            }
        }
        StoreKind::Redis => {
            into.insert(format!("redis_{what}_offset"), reply.offset.to_string());
        }
    }
}

fn step_evidence<'a>(f: &'a Failover, step: &str, key: &str) -> Option<&'a String> {
    f.steps
        .iter()
        .find(|s| s.name == step)
        .and_then(|s| s.evidence.get(key))
}

async fn run_step(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    f: &Failover,
    name: &str,
    attempts: u32,
) -> Result<StepDone, StepError> {
    match name {
        "fence" => {
            let mut evidence = BTreeMap::new();
            let mut details = Vec::new();
            if f.automatic {
                // Declared down by two signals: asking it again only costs
                // time; its agent fences it when it returns.
                for store in stores_in(service, &f.from) {
                    evidence.insert(format!("{}_fenced", store.kind.name()), "false".into());
                }
                return Ok(done(
                    format!("not fenced: {} was declared down (its stores are fenced when its agent returns)", f.from),
                    evidence,
                ));
            }
            for store in stores_in(service, &f.from) {
                // Paused until the demote step makes it a replica, or a
                // failover that promoted nothing unfences it: a fence that
                // lapses by itself would let the old master take writes.
                let action = Action::Fence(FenceAction {
                    redis_pause_ms: u32::MAX,
                    stop_postgres: service.fence == crate::topology::FenceMode::Stop,
                });
                match act(coord, lead, store, action, FENCE_DEADLINE).await {
                    Ok(reply) => {
                        evidence_of(store.kind, "fence", &reply, &mut evidence);
                        details.push(format!("{}: {}", store.kind.name(), reply.detail));
                    }
                    Err(e)
                        if e.retry
                            && (service.failover_unfenced || f.automatic)
                            && !f.switchover =>
                    {
                        evidence.insert(format!("{}_fenced", store.kind.name()), "false".into());
                        details.push(format!(
                            "{}: not fenced: unreachable ({})",
                            store.kind.name(),
                            e.message
                        ));
                    }
                    Err(e) => {
                        return Err(fatal(format!(
                            "{} could not be fenced: {}{}",
                            f.from,
                            e.message,
                            if service.failover_unfenced {
                                ""
                            } else {
                                " (failover_unfenced is off for this service)"
                            }
                        )))
                    }
                }
            }
            Ok(done(details.join("; "), evidence))
        }
        "catch up" => {
            if !f.switchover {
                return Ok(skipped(
                    "not a switchover: the standby is promoted with what it has",
                ));
            }
            let mut evidence = BTreeMap::new();
            let mut details = Vec::new();
            for store in stores_in(service, &f.to) {
                let action = match store.kind {
                    StoreKind::Postgres => Action::CatchUp(CatchUpAction {
                        lsn: step_evidence(f, "fence", "postgres_fence_lsn")
                            .cloned()
                            .unwrap_or_default(),
                        offset: 0,
                    }),
                    StoreKind::Redis => Action::CatchUp(CatchUpAction {
                        lsn: String::new(),
                        offset: step_evidence(f, "fence", "redis_fence_offset")
                            .and_then(|o| o.parse().ok())
                            .unwrap_or(0),
                    }),
                };
                let reply = act(coord, lead, store, action, service.catch_up_timeout)
                    .await
                    .map_err(|e| fatal(e.message))?;
                evidence_of(store.kind, "caught_up", &reply, &mut evidence);
                details.push(format!("{}: {}", store.kind.name(), reply.detail));
            }
            Ok(done(details.join("; "), evidence))
        }
        "promote postgres" | "promote redis" => {
            let kind = if name == "promote postgres" {
                StoreKind::Postgres
            } else {
                StoreKind::Redis
            };
            let Some(store) = store_of(service, &f.to, kind) else {
                return Ok(skipped(format!("{} has no {} store", f.to, kind.name())));
            };
            let reply = act(
                coord,
                lead,
                store,
                Action::Promote(PromoteAction {}),
                PROMOTE_DEADLINE,
            )
            .await?;
            let mut evidence = BTreeMap::new();
            evidence_of(kind, "promoted", &reply, &mut evidence);
            evidence.insert("already".into(), reply.already_done.to_string());
            Ok(done(reply.detail, evidence))
        }
        "dns" => {
            let Some(d) = &service.dns else {
                return Ok(skipped("no [services.dns] for this service"));
            };
            let (Some(from), Some(to)) = (d.values.get(&f.from), d.values.get(&f.to)) else {
                return Err(fatal(format!(
                    "[services.dns.values] lacks {} or {}",
                    f.from, f.to
                )));
            };
            let client = dns::client(d).await.map_err(fatal)?;
            let flipped = dns::flip(&client, d, from, to, Duration::from_secs(60))
                .await
                .map_err(|e| {
                    // A record someone else changed is not mended by waiting.
                    if e.contains("someone else changed it") {
                        fatal(e)
                    } else {
                        transient(format!("Route 53 (attempt {attempts}): {e}"))
                    }
                })?;
            let mut evidence = BTreeMap::new();
            evidence.insert("value".into(), flipped.value.clone());
            if let Some(id) = &flipped.change_id {
                evidence.insert("change_id".into(), id.clone());
            }
            let how = if d.style == "failover" {
                format!(
                    "the failover records of {} answer {to} ({})",
                    d.name,
                    flipped.change_id.clone().unwrap_or_default()
                )
            } else {
                format!(
                    "{} {} now {to} (was {from}), change INSYNC",
                    d.record_type, d.name
                )
            };
            Ok(done(
                if flipped.already {
                    format!("already: {how}")
                } else {
                    how
                },
                evidence,
            ))
        }
        "post-check" => {
            let mut evidence = BTreeMap::new();
            let mut details = Vec::new();
            for store in stores_in(service, &f.to) {
                let action = Action::PostCheck(PostCheckAction {
                    service: service.name.clone(),
                    check_file: match store.kind {
                        StoreKind::Postgres => service.check_file.clone().unwrap_or_default(),
                        StoreKind::Redis => String::new(),
                    },
                });
                let reply = act(coord, lead, store, action, ACTION_DEADLINE).await?;
                evidence_of(store.kind, "post_check", &reply, &mut evidence);
                details.push(format!("{}: {}", store.kind.name(), reply.detail));
            }
            Ok(done(details.join("; "), evidence))
        }
        "rebuild postgres" | "rebuild redis" => {
            let kind = if name == "rebuild postgres" {
                StoreKind::Postgres
            } else {
                StoreKind::Redis
            };
            rebuild(coord, lead, service, kind, &f.to, &f.from)
                .await
                .map_err(fatal)
        }
        "follow postgres" | "follow redis" => {
            // The service runs in the new region already: a rebuild that
            // cannot be done now is reported, not a failed failover.
            let kind = if name == "follow postgres" {
                StoreKind::Postgres
            } else {
                StoreKind::Redis
            };
            Ok(
                match rebuild(coord, lead, service, kind, &f.from, &f.to).await {
                    Ok(d) => d,
                    Err(e) => skipped(format!(
                        "not rebuilt as a standby: {e}; `seawall failover run {} --failback --to {} --standby-only` tries again",
                        service.name, f.from
                    )),
                },
            )
        }
        "precheck" => {
            // A failback's: the rebuilt standbys must follow and catch up
            // before the switchover to them begins.
            let req = FailoverRequest {
                service: service.name.clone(),
                to: f.to.clone(),
                switchover: true,
                allow_data_loss: f.allow_data_loss,
                ..Default::default()
            };
            let until = tokio::time::Instant::now() + service.catch_up_timeout;
            loop {
                let assessed =
                    super::plan::assess(coord, lead, service, &f.from, &req, false).await;
                if assessed.plan.refusals.is_empty() {
                    return Ok(done(
                        precheck_detail(&assessed),
                        precheck_evidence(&assessed),
                    ));
                }
                if tokio::time::Instant::now() >= until {
                    return Err(fatal(format!(
                        "the rebuilt standbys in {} are not ready within {}: {}",
                        f.to,
                        humantime::format_duration(service.catch_up_timeout),
                        assessed.plan.refusals.join("; ")
                    )));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        "demote" => {
            // The service runs in the new region already: this step
            // records what it could not do rather than fail.
            if f.automatic {
                return Ok(skipped(format!(
                    "{} was declared down: its stores are fenced when its agent returns",
                    f.from
                )));
            }
            let mut details = Vec::new();
            for store in stores_in(service, &f.from) {
                let kind = store.kind.name();
                if step_evidence(f, "fence", &format!("{kind}_fenced")).map(String::as_str)
                    == Some("false")
                {
                    details.push(format!(
                        "{kind}: not fenced (unreachable): fenced when its agent returns"
                    ));
                    continue;
                }
                let action = super::rejoin::demotion(service, &f.to, store);
                match act(coord, lead, store, action, ACTION_DEADLINE).await {
                    Ok(reply) => details.push(format!("{kind}: {}", reply.detail)),
                    Err(e) => details.push(format!(
                        "{kind}: not demoted ({}); it stays fenced",
                        e.message
                    )),
                }
            }
            Ok(done(details.join("; "), BTreeMap::new()))
        }
        other => Err(fatal(format!("unknown step {other:?}"))),
    }
}

/// Rebuilds `region`'s store of `kind` as a standby of `primary_region`'s.
async fn rebuild(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    kind: StoreKind,
    region: &str,
    primary_region: &str,
) -> Result<StepDone, String> {
    let Some(store) = store_of(service, region, kind) else {
        return Ok(skipped(format!("{region} has no {} store", kind.name())));
    };
    let Some(primary) = store_of(service, primary_region, kind).and_then(|s| s.address.clone())
    else {
        return Err(format!(
            "{primary_region}'s {} store has no address in the topology: the rebuilt standby cannot be pointed at it",
            kind.name()
        ));
    };
    let action = Action::Rebuild(RebuildAction {
        primary,
        rewind_only: false,
    });
    let reply = act(coord, lead, store, action, service.rebuild_timeout)
        .await
        .map_err(|e| e.message)?;
    let mut evidence = BTreeMap::new();
    evidence_of(kind, "rebuilt", &reply, &mut evidence);
    evidence.insert("already".into(), reply.already_done.to_string());
    evidence.insert("took_ms".into(), reply.took_ms.to_string());
    Ok(done(reply.detail, evidence))
}

/// Makes the old primary region's stores take writes again after a
/// failover that promoted nothing; returns what happened, for the error.
async fn unfence(coord: &Coordinator, lead: &Lead, service: &ServiceConfig, from: &str) -> String {
    let mut out = Vec::new();
    for store in stores_in(service, from) {
        match act(
            coord,
            lead,
            store,
            Action::Promote(PromoteAction {}),
            ACTION_DEADLINE,
        )
        .await
        {
            Ok(_) => out.push(format!("{} takes writes again", store.kind.name())),
            Err(e) => out.push(format!(
                "{} could not be unfenced ({}): it stays read-only",
                store.kind.name(),
                e.message
            )),
        }
    }
    if out.is_empty() {
        String::new()
    } else {
        format!(
            "; nothing was promoted, so {from} was unfenced: {}",
            out.join(", ")
        )
    }
}

/// The newest canary the new primary region holds, per kind.
async fn canaries_in(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    region: &str,
) -> Vec<Option<i64>> {
    let mut out = Vec::new();
    for store in stores_in(service, region) {
        let probe = StoreProbe {
            source: store.source.clone(),
            canary_read: service.name.clone(),
            ..Default::default()
        };
        let seen = super::plan::ask_store(coord, lead, store, probe, Duration::from_secs(5))
            .await
            .ok()
            .and_then(|r| r.canary)
            .map(|c| c.written_unix_ms);
        out.push(seen);
    }
    out
}

/// Every step is done: the achieved figures, the new primary recorded.
async fn finish(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    mut f: Failover,
    rev: i64,
) -> Result<(), ActError> {
    let now = now_ms();
    if f.standby_only {
        f.state = state::SUCCEEDED.into();
        f.finished_unix_ms = now;
        let event = format!(
            "failback {} succeeded: {}'s stores in {} are standbys of {} again",
            f.id, f.service, f.to, f.from
        );
        save(coord, lead, &f, rev, Some(event), Vec::new()).await?;
        return Ok(());
    }
    let post_checked = f
        .steps
        .iter()
        .find(|s| s.name == "post-check")
        .map(|s| s.ended_unix_ms)
        .filter(|t| *t > 0)
        .unwrap_or(now);
    // An automatic failover's clock starts when the fault was first seen;
    // a failback's when its switchover began (its precheck).
    let from = if f.automatic && f.detected_unix_ms > 0 {
        f.detected_unix_ms
    } else {
        f.steps
            .iter()
            .find(|s| s.name == "precheck")
            .map(|s| s.started_unix_ms)
            .filter(|t| *t > 0)
            .unwrap_or(f.started_unix_ms)
    };
    f.rto_ms = Some(post_checked - from);
    let gap =
        |fence: Option<&String>, promoted: Option<&String>, parse: fn(&str) -> Option<i64>| {
            let (a, b) = (parse(fence?)?, parse(promoted?)?);
            Some((a - b).max(0))
        };
    f.lsn_gap_bytes = gap(
        step_evidence(&f, "fence", "postgres_fence_lsn"),
        step_evidence(&f, "catch up", "postgres_caught_up_lsn").or(step_evidence(
            &f,
            "promote postgres",
            "postgres_promoted_lsn",
        )),
        crate::replication::assess::lsn,
    );
    f.offset_gap = gap(
        step_evidence(&f, "fence", "redis_fence_offset"),
        step_evidence(&f, "catch up", "redis_caught_up_offset").or(step_evidence(
            &f,
            "promote redis",
            "redis_promoted_offset",
        )),
        |s| s.parse().ok(),
    );
    // RPO from the canaries: the newest the old primaries acknowledged
    // against the newest the new primaries hold.
    if service.canary {
        let acked = crate::replication::stored(coord)
            .await
            .ok()
            .and_then(|all| all.into_iter().find(|r| r.service == service.name))
            .map(|r| r.canary_written_unix_ms)
            .filter(|t| *t > 0);
        if let Some(acked) = acked {
            let seen = canaries_in(coord, lead, service, &f.to).await;
            f.rpo_ms = seen
                .iter()
                .map(|s| match s {
                    Some(t) => (acked - t).max(0),
                    // Nothing arrived: everything since canaries began.
                    None => (acked - f.started_unix_ms).max(0),
                })
                .max();
        }
    }
    f.state = state::SUCCEEDED.into();
    f.finished_unix_ms = now;
    let rto = f.rto_ms.unwrap_or(0);
    metrics::counter!("seawall_failovers_total", "service" => f.service.clone(), "outcome" => "succeeded").increment(1);
    metrics::gauge!("seawall_failover_last_rto_seconds", "service" => f.service.clone())
        .set(rto as f64 / 1000.0);
    if let Some(rpo) = f.rpo_ms {
        metrics::gauge!("seawall_failover_last_rpo_seconds", "service" => f.service.clone())
            .set(rpo as f64 / 1000.0);
    }
    let event = format!(
        "failover {} succeeded: {} is {}'s primary region; RTO {:.2} s{}",
        f.id,
        f.to,
        f.service,
        rto as f64 / 1000.0,
        f.rpo_ms
            .map(|r| format!(", RPO {:.2} s", r as f64 / 1000.0))
            .unwrap_or_default()
    );
    save(
        coord,
        lead,
        &f,
        rev,
        Some(event),
        vec![(primaries::key(&f.service), f.to.clone().into_bytes())],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failover_has_its_steps_in_order() {
        let req = |switchover, failback, standby_only| FailoverRequest {
            switchover,
            failback,
            standby_only,
            ..Default::default()
        };
        assert_eq!(step_names(&req(false, false, false)), STEPS);
        let switchover = step_names(&req(true, false, false));
        assert_eq!(&switchover[..8], STEPS);
        assert_eq!(&switchover[8..], ["follow postgres", "follow redis"]);
        let back = step_names(&req(false, true, false));
        assert_eq!(&back[..2], ["rebuild postgres", "rebuild redis"]);
        assert_eq!(&back[2..], switchover.as_slice());
        assert_eq!(
            step_names(&req(false, true, true)),
            ["rebuild postgres", "rebuild redis", "precheck"]
        );
    }
}
