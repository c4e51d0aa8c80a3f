//! Automatic failover, for services that opt in. The primary region is
//! declared down only when two independent signals agree, `after` checks in
//! a row, while this coordinator still holds its etcd quorum:
//!
//! 1. every agent of the region's stores is silent (no session, or no
//!    heartbeat for two intervals), and
//! 2. the target region's agent cannot get an answer from any of the
//!    region's stores at their addresses (a protocol exchange, so a hung
//!    server counts as down).
//!
//! An agent that died beside a healthy database is one signal: nothing
//! happens. The failover then runs like an operator's, unfenced (the region
//! is down), and its RTO counts from when the region's agents were last
//! heard from (or, when none had a session, the first check that saw both
//! signals).
//!
//! One store down while its agent still reports (a dead database beside a
//! live agent and a live Redis; `on_store_failure`, on by default) is the
//! other case: its own agent AND the target region's agent both get no
//! answer at its address, `after` checks in a row. The service fails over
//! by the fenced workflow (its agents answer: the failed store is fenced
//! from its data directory, the others as in a switchover), and its RTO
//! counts from the start of the last check that did not see it (the fault
//! came after that).

use super::plan::{store_of, stores_in};
use super::{driver, stored};
use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::topology::{RegionRole, ServiceConfig, StoreKind};
use crate::replication::primaries;
use seawall_proto::v1::{FailoverRequest, StoreProbe};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a reach probe waits for the other region's store.
const REACH_DEADLINE: Duration = Duration::from_millis(500);

/// The region `service` fails over to from `primary`.
pub fn target(coord: &Coordinator, service: &ServiceConfig, primary: &str) -> Option<String> {
    if let Some(to) = service.auto_failover.as_ref().and_then(|a| a.to.clone()) {
        if to != primary {
            return Some(to);
        }
    }
    let kinds: Vec<_> = stores_in(service, primary).iter().map(|s| s.kind).collect();
    let mut candidates: Vec<String> = coord
        .config
        .regions
        .iter()
        .filter(|r| r.name != primary && r.role != RegionRole::Cold)
        .filter(|r| {
            kinds
                .iter()
                .all(|k| store_of(service, &r.name, *k).is_some())
        })
        .map(|r| r.name.clone())
        .collect();
    // The configured primary first, when a failover moved away from it.
    candidates
        .sort_by_key(|r| r != &primaries::configured(&coord.config.regions).unwrap_or_default());
    candidates.into_iter().next()
}

/// What the two signals say about a region.
struct Verdict {
    down: bool,
    /// What was seen, for the log and the audit line.
    seen: String,
    /// When the region's agents were last heard from (the fault's start,
    /// as near as the coordinator can tell).
    silent_since: Option<i64>,
    /// The one store kind that is down while its agent reports.
    failed_store: Option<StoreKind>,
}

fn up(seen: String) -> Verdict {
    Verdict {
        down: false,
        seen,
        silent_since: None,
        failed_store: None,
    }
}

/// Whether the store at `address` answers, as `region`'s `agent` sees it:
/// Ok(false) when it does not, Err when the agent cannot be asked.
async fn reaches(
    coord: &Coordinator,
    lead: &Lead,
    region: &str,
    agent: &str,
    address: &str,
    kind: StoreKind,
) -> Result<bool, String> {
    let session = crate::fleet::pending::session_of(&coord.registry, region, agent)
        .map_err(|_| format!("{region}'s agent {agent} is not connected: cannot confirm"))?;
    let probe = StoreProbe {
        reach_address: address.to_string(),
        reach_kind: kind.name().into(),
        ..Default::default()
    };
    match coord
        .probes
        .ask(&session, lead.epoch(), vec![probe], None, REACH_DEADLINE)
        .await
    {
        Ok(reply) => match reply.reports.first() {
            Some(r) if r.reached => Ok(true),
            // A busy agent's refusal says nothing of the store.
            Some(r) if r.error_kind == seawall_proto::v1::ErrorKind::Locked as i32 => {
                Err(format!("{region}'s agent {agent} was busy: {}", r.error))
            }
            Some(_) => Ok(false),
            None => Err(format!("{region}'s agent {agent} sent no report")),
        },
        Err(e) => Err(format!(
            "{region}'s agent {agent} did not answer the check: {e}"
        )),
    }
}

/// Whether one of `region`'s stores is down while its agent reports: its
/// own agent and `to`'s agent both get no answer at its address.
async fn store_down(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    region: &str,
    to: &str,
) -> Verdict {
    let checks = stores_in(service, region).into_iter().map(|store| async move {
        let address = store.address.as_deref()?;
        // Both at once, so a check costs one reach deadline at most.
        let checker = store_of(service, to, store.kind)?;
        let (own, other) = tokio::join!(
            reaches(coord, lead, region, &store.agent, address, store.kind),
            reaches(coord, lead, to, &checker.agent, address, store.kind)
        );
        match (own, other) {
            (Ok(false), Ok(false)) => Some((
                store.kind,
                format!(
                    "{region}'s {} at {address} answers neither its agent {} (which still reports) nor {to}'s",
                    store.kind.name(),
                    store.agent
                ),
            )),
            _ => None,
        }
    });
    let down: Vec<(StoreKind, String)> = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect();
    match down.into_iter().next() {
        Some((kind, seen)) => Verdict {
            down: true,
            seen,
            silent_since: None,
            failed_store: Some(kind),
        },
        None => up(format!(
            "{region}'s agents report and its stores answer them"
        )),
    }
}

/// The first signal: every agent of `region`'s stores is silent (past the
/// silence limit); Ok(when the last was heard), Err(which one reports).
/// An agent that keeps a lease is silent sooner: once its lease (and the
/// margin) has run out without a heartbeat got, it has fenced itself or is
/// gone, whatever the fleet's heartbeat interval says.
fn silence(
    coord: &Coordinator,
    service: &ServiceConfig,
    region: &str,
) -> Result<Option<i64>, String> {
    let fleet_ms = crate::fleet::registry::silence_limit(coord.config.heartbeat).as_millis() as i64;
    let leased_ms = service.auto_failover.as_ref().map_or(fleet_ms, |a| {
        crate::model::self_fence::earliest_automatic_promotion(
            coord.config.heartbeat,
            a.self_fence_after,
        )
        .as_millis() as i64
    });
    let now = now_ms();
    let mut silent_since: Option<i64> = None;
    for store in stores_in(service, region) {
        if let Ok(s) = crate::fleet::pending::session_of(&coord.registry, region, &store.agent) {
            let last = s
                .last_heartbeat_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            let silence_ms = if s.leased.load(std::sync::atomic::Ordering::Relaxed) {
                leased_ms
            } else {
                fleet_ms
            };
            if now - last <= silence_ms {
                return Err(format!("agent {region}/{} still reports", store.agent));
            }
            silent_since = Some(silent_since.unwrap_or(0).max(last));
        } else if let Some(last) = coord.registry.last_heard(region, &store.agent) {
            silent_since = Some(silent_since.unwrap_or(0).max(last));
        }
    }
    Ok(silent_since)
}

/// The second signal: `to`'s agent gets no answer from any of `region`'s
/// stores at their addresses.
async fn unreachable_from(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    region: &str,
    to: &str,
) -> Result<(), String> {
    // Every store of the region at once: a hung one costs its deadline.
    let checks = stores_in(service, region)
        .into_iter()
        .map(|store| async move {
            let Some(address) = &store.address else {
                return Err(format!("{region}/{} has no address to check", store.source));
            };
            let Some(checker) = store_of(service, to, store.kind) else {
                return Err(format!(
                    "{to} has no {} store to check from",
                    store.kind.name()
                ));
            };
            match reaches(coord, lead, to, &checker.agent, address, store.kind).await? {
                false => Ok(()),
                true => Err(format!(
                    "{region}'s {} at {address} answers",
                    store.kind.name()
                )),
            }
        });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .collect()
}

/// Starts the watchdog for `lead`'s term, if any service opts in.
pub fn start(coord: Arc<Coordinator>, lead: Arc<Lead>) {
    let watched: Vec<usize> = coord
        .config
        .services
        .iter()
        .enumerate()
        .filter(|(_, s)| s.auto_failover.is_some())
        .map(|(i, _)| i)
        .collect();
    if watched.is_empty() {
        return;
    }
    let interval = watched
        .iter()
        .filter_map(|i| {
            coord.config.services[*i]
                .auto_failover
                .as_ref()
                .map(|a| a.interval)
        })
        .min()
        .unwrap_or(Duration::from_secs(1));
    // Per service: checks in a row with a signal that counts, and when
    // the first was; and checks in a row in which the target region
    // reached none of the primary's stores (counted while its agents may
    // still be inside the silence limit, so the two signals run at once).
    let streaks: Arc<tokio::sync::Mutex<HashMap<String, (u32, i64)>>> = Arc::default();
    let unreached: Arc<tokio::sync::Mutex<HashMap<String, u32>>> = Arc::default();
    // Per service: when the last check that did not see it down began. A
    // store's fault came after it, so an RTO counted from it never reads
    // less than the outage clients saw.
    let clear: Arc<tokio::sync::Mutex<HashMap<String, i64>>> = Arc::default();
    let (board, tree) = (coord.workers.clone(), lead.tree.clone());
    crate::fleet::workers::spawn_worker(&tree, &board, "auto failover", move || {
        let (coord, lead, streaks, unreached, clear, watched) = (
            coord.clone(),
            lead.clone(),
            streaks.clone(),
            unreached.clone(),
            clear.clone(),
            watched.clone(),
        );
        async move {
            if !lead.leadership.is_valid() {
                return Ok(crate::fleet::workers::Next::Stop);
            }
            let running: Vec<String> = stored::all(&coord)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|f| !f.is_final())
                .map(|f| f.service)
                .collect();
            let started = std::time::Instant::now();
            let mut streaks = streaks.lock().await;
            let mut unreached = unreached.lock().await;
            let mut clear = clear.lock().await;
            for i in &watched {
                let service = &coord.config.services[*i];
                let check_began = now_ms();
                let Some(auto) = &service.auto_failover else {
                    continue;
                };
                if running.contains(&service.name) {
                    streaks.remove(&service.name);
                    unreached.remove(&service.name);
                    continue;
                }
                let primary = primaries::current(&coord, service)
                    .await
                    .map_err(|e| e.to_string())?
                    .unwrap_or_default();
                let Some(to) = target(&coord, service, &primary) else {
                    continue;
                };
                let silent = silence(&coord, service, &primary);
                let one_store = async {
                    match &silent {
                        Err(_) if auto.on_store_failure => {
                            Some(store_down(&coord, &lead, service, &primary, &to).await)
                        }
                        _ => None,
                    }
                };
                let (reach, one_store) = tokio::join!(
                    unreachable_from(&coord, &lead, service, &primary, &to),
                    one_store
                );
                let unreached_checks = unreached.entry(service.name.clone()).or_default();
                *unreached_checks = if reach.is_ok() {
                    *unreached_checks + 1
                } else {
                    0
                };
                let unreached_checks = *unreached_checks;
                let verdict = match (silent, reach) {
                    (Ok(silent_since), Ok(())) => Verdict {
                        down: true,
                        seen: format!(
                            "{primary}'s agents silent and its stores unreachable from {to} ({unreached_checks} checks in a row)"
                        ),
                        silent_since,
                        failed_store: None,
                    },
                    (Err(seen), _) => one_store.unwrap_or_else(|| up(seen)),
                    (Ok(_), Err(seen)) => up(seen),
                };
                let (down, seen) = (verdict.down, verdict.seen.clone());
                // The third condition: this replica still holds the quorum
                // (a leader cut off from etcd must not act on what it sees).
                let quorum = lead.leadership.is_valid()
                    && matches!(coord.store.leader().await, Ok(Some(l)) if l.id == coord.me.id);
                if !(down && quorum) {
                    streaks.remove(&service.name);
                    clear.insert(service.name.clone(), check_began);
                    continue;
                }
                let last_clear = clear.get(&service.name).copied().unwrap_or(check_began);
                let streak = streaks
                    .entry(service.name.clone())
                    .or_insert((0, verdict.silent_since.unwrap_or(last_clear)));
                streak.0 += 1;
                // A region: its stores unreached `after` checks in a row,
                // its agents past the silence limit now (both signals held
                // for at least that long). One store: `after` checks in a
                // row in which both agents saw it down.
                let checks = match verdict.failed_store {
                    None => unreached_checks,
                    Some(_) => streak.0,
                };
                tracing::warn!(service = %service.name, region = %primary, checks, needed = auto.after, "{seen}");
                if checks < auto.after {
                    continue;
                }
                let detected = streak.1;
                streaks.remove(&service.name);
                unreached.remove(&service.name);
                let req = FailoverRequest {
                    service: service.name.clone(),
                    to: to.clone(),
                    ..Default::default()
                };
                let assessed =
                    super::plan::assess(&coord, &lead, service, &primary, &req, true).await;
                if !assessed.plan.refusals.is_empty() {
                    super::metrics::outcome(&service.name, "refused");
                    coord
                        .audit(
                            &lead,
                            "automatic failover",
                            format!(
                                "{primary} declared down ({seen}), but the failover of {} to {to} is refused: {}",
                                service.name,
                                assessed.plan.refusals.join("; ")
                            ),
                        )
                        .await;
                    continue;
                }
                coord
                    .audit(
                        &lead,
                        "automatic failover",
                        format!(
                            "{primary} declared down after {} checks: {seen}",
                            auto.after
                        ),
                    )
                    .await;
                let detected = driver::Detected {
                    at_ms: detected,
                    failed_store: verdict.failed_store,
                };
                driver::create(&coord, &lead, &req, "automatic", &assessed, Some(detected))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(crate::fleet::workers::Next::After(
                interval.saturating_sub(started.elapsed()),
            ))
        }
    });
}
