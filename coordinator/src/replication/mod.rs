//! The leader's replication checks. Every interval, for every service in the
//! topology: each store's agent reads its replication state and, where the
//! service has canaries, the primaries write a marker; then the standbys read
//! the newest marker they can see. The verdicts and figures go into the
//! store (`replication/SERVICE`), the gauges and `seawall replication`.

pub mod assess;
pub mod kinds;
pub mod metrics;
pub mod primaries;
pub mod repositories;

use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::topology::{store_role, RegionRole};
use assess::Seen;
use seawall_proto::v1::{CanaryMarker, ServiceReplication, StoreProbe, StoreReport};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Store prefix of the reports.
pub const PREFIX: &str = "replication/";

/// The key of `service`'s report.
pub fn key(service: &str) -> String {
    format!("{PREFIX}{service}")
}

/// What the worker carries from one round to the next.
#[derive(Default)]
struct Memory {
    loaded: bool,
    previous: HashMap<String, ServiceReplication>,
    /// The newest canary each service's primaries acknowledged.
    canary: HashMap<String, (u64, i64)>,
}

/// Starts the checks for `lead`'s term (nothing to do without services).
pub fn start(coord: Arc<Coordinator>, lead: Arc<Lead>) {
    if coord.config.services.is_empty() {
        return;
    }
    let memory = Arc::new(tokio::sync::Mutex::new(Memory::default()));
    let latest = repositories::Latest::default();
    repositories::start(coord.clone(), lead.clone(), latest.clone());
    let (board, tree) = (coord.workers.clone(), lead.tree.clone());
    crate::fleet::workers::spawn_worker(&tree, &board, "replication", move || {
        let (coord, lead, memory, latest) =
            (coord.clone(), lead.clone(), memory.clone(), latest.clone());
        async move {
            if !lead.leadership.is_valid() {
                return Ok(crate::fleet::workers::Next::Stop);
            }
            let started = Instant::now();
            let mut memory = memory.lock().await;
            round(&coord, &lead, &mut memory, &latest).await?;
            let interval = coord.config.replication.interval;
            Ok(crate::fleet::workers::Next::After(
                interval.saturating_sub(started.elapsed()),
            ))
        }
    });
}

/// One store to ask, and where its answer goes.
struct Ask {
    service: usize,
    store: usize,
    probe: StoreProbe,
}

/// Sends each agent its probes at once and returns the answers by
/// (service, store), with the time each came.
async fn ask_all(
    coord: &Coordinator,
    lead: &Lead,
    asks: Vec<(String, String, Ask)>,
) -> HashMap<(usize, usize), (Result<StoreReport, String>, i64)> {
    let deadline = coord.config.replication.deadline();
    let mut by_agent: HashMap<(String, String), Vec<Ask>> = HashMap::new();
    for (region, agent, a) in asks {
        by_agent.entry((region, agent)).or_default().push(a);
    }
    let rounds = by_agent
        .into_iter()
        .map(|((region, agent), asks)| async move {
            let probes: Vec<StoreProbe> = asks.iter().map(|a| a.probe.clone()).collect();
            let answer = match crate::fleet::pending::session_of(&coord.registry, &region, &agent) {
                Err(e) => Err(e.to_string()),
                Ok(session) => coord
                    .probes
                    .ask(&session, lead.epoch(), probes, None, deadline)
                    .await
                    .map_err(|e| format!("agent {region}/{agent}: {e}"))
                    .and_then(|reply| {
                        if reply.reports.len() == asks.len() {
                            Ok(reply.reports)
                        } else {
                            Err(format!(
                                "agent {region}/{agent} answered {} probes of {}",
                                reply.reports.len(),
                                asks.len()
                            ))
                        }
                    }),
            };
            let at = now_ms();
            asks.into_iter()
                .enumerate()
                .map(|(i, a)| {
                    let r = match &answer {
                        Ok(reports) => Ok(reports[i].clone()),
                        Err(e) => Err(e.clone()),
                    };
                    ((a.service, a.store), (r, at))
                })
                .collect::<Vec<_>>()
        });
    futures_util::future::join_all(rounds)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn round(
    coord: &Coordinator,
    lead: &Lead,
    memory: &mut Memory,
    latest: &repositories::Latest,
) -> Result<(), String> {
    let config = &coord.config;
    if !memory.loaded {
        load(coord, memory).await?;
    }
    // Roles as failovers left them: a service's primary may have moved.
    let moved = crate::replication::primaries::moved(coord)
        .await
        .map_err(|e| format!("reading the services' primary regions: {e}"))?;
    let regions: Vec<Vec<crate::model::topology::RegionConfig>> = config
        .services
        .iter()
        .map(|s| {
            crate::replication::primaries::effective(
                &config.regions,
                moved.get(&s.name).map(String::as_str),
            )
        })
        .collect();
    let asked_ms = now_ms();
    // Phase one: every store's replication state; the primaries write
    // this round's canary.
    let mut asks = Vec::new();
    let mut seqs: HashMap<usize, u64> = HashMap::new();
    for (si, service) in config.services.iter().enumerate() {
        let seq = service.canary.then(|| {
            let last = memory.canary.get(&service.name).map(|c| c.0).unwrap_or(0);
            (asked_ms.max(0) as u64).max(last + 1)
        });
        if let Some(seq) = seq {
            seqs.insert(si, seq);
        }
        for (ti, store) in service.stores.iter().enumerate() {
            let primary = store_role(&regions[si], store) == Some(RegionRole::Primary);
            let probe = StoreProbe {
                source: store.source.clone(),
                replication: true,
                canary_write: seq.filter(|_| primary).map(|seq| CanaryMarker {
                    service: service.name.clone(),
                    seq,
                    written_unix_ms: asked_ms,
                }),
                ..Default::default()
            };
            asks.push((
                store.region.clone(),
                store.agent.clone(),
                Ask {
                    service: si,
                    store: ti,
                    probe,
                },
            ));
        }
    }
    let first = ask_all(coord, lead, asks).await;
    for (si, seq) in &seqs {
        let acked = first.iter().any(|((s, _), (r, _))| {
            *s == *si
                && matches!(r, Ok(rep) if rep.error.is_empty() && rep.canary_error.is_empty()
                    && rep.canary.as_ref().is_some_and(|c| c.seq == *seq))
        });
        if acked {
            memory
                .canary
                .insert(config.services[*si].name.clone(), (*seq, asked_ms));
        }
    }
    // Phase two: the standbys read the newest canary they can see, right
    // after it was written, so a healthy path shows its real delay.
    let mut reads = Vec::new();
    for (si, service) in config.services.iter().enumerate() {
        if !service.canary {
            continue;
        }
        for (ti, store) in service.stores.iter().enumerate() {
            if store_role(&regions[si], store) == Some(RegionRole::Standby) {
                reads.push((
                    store.region.clone(),
                    store.agent.clone(),
                    Ask {
                        service: si,
                        store: ti,
                        probe: StoreProbe {
                            source: store.source.clone(),
                            canary_read: service.name.clone(),
                            ..Default::default()
                        },
                    },
                ));
            }
        }
    }
    let second = if reads.is_empty() {
        HashMap::new()
    } else {
        ask_all(coord, lead, reads).await
    };
    let now = now_ms();
    let repository_answers = latest.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut reports = Vec::new();
    for (si, service) in config.services.iter().enumerate() {
        let seen: Vec<Seen> = (0..service.stores.len())
            .map(|ti| {
                let (answer, at_ms) = first
                    .get(&(si, ti))
                    .cloned()
                    .unwrap_or_else(|| (Err("not asked".into()), now));
                Seen {
                    answer,
                    at_ms,
                    canary: second.get(&(si, ti)).cloned(),
                }
            })
            .collect();
        let report = assess::assess(
            &regions[si],
            service,
            &seen,
            memory.previous.get(&service.name),
            memory.canary.get(&service.name).copied(),
            repositories::assess_all(&regions[si], service, &repository_answers),
            now,
        );
        metrics::report(&report);
        reports.push(report);
    }
    // What was seen is remembered even when a report was not stored.
    let saved = save(coord, lead, &reports).await;
    for r in reports {
        memory.previous.insert(r.service.clone(), r);
    }
    saved
}

/// The last reports a previous leader stored, so positions and canary
/// sequences carry over a leader change.
async fn load(coord: &Coordinator, memory: &mut Memory) -> Result<(), String> {
    let stored = coord
        .store
        .list(PREFIX)
        .await
        .map_err(|e| format!("reading the last replication reports: {e}"))?;
    for e in stored {
        if let Ok(r) = serde_json::from_slice::<ServiceReplication>(&e.value) {
            if r.canary_seq > 0 {
                memory
                    .canary
                    .insert(r.service.clone(), (r.canary_seq, r.canary_written_unix_ms));
            }
            memory.previous.insert(r.service.clone(), r);
        }
    }
    memory.loaded = true;
    Ok(())
}

/// Writes each service's report on its own, all at once: one service's
/// report that cannot be stored (too large, refused) leaves the others'
/// fresh. The errors are named by service.
async fn save(
    coord: &Coordinator,
    lead: &Lead,
    reports: &[ServiceReplication],
) -> Result<(), String> {
    let writes = reports.iter().map(|r| async move {
        let v = serde_json::to_vec(r).map_err(|e| format!("{}: not encoded: {e}", r.service))?;
        coord
            .store
            .put(lead.fence(), &key(&r.service), &v, None)
            .await
            .map_err(|e| format!("{}: {e}", r.service))
    });
    let failed: Vec<String> = futures_util::future::join_all(writes)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "replication reports not stored: {}",
            failed.join("; ")
        ))
    }
}

/// The stored reports (any replica can answer).
pub async fn stored(
    coord: &Coordinator,
) -> Result<Vec<ServiceReplication>, crate::model::error::StoreError> {
    let entries = coord.store.list(PREFIX).await?;
    let known: Vec<&str> = coord
        .config
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let mut out: Vec<ServiceReplication> = entries
        .iter()
        .filter_map(|e| serde_json::from_slice::<ServiceReplication>(&e.value).ok())
        .filter(|r| known.contains(&r.service.as_str()))
        .collect();
    // A service never checked yet is listed as such.
    for s in &coord.config.services {
        if !out.iter().any(|r| r.service == s.name) {
            out.push(ServiceReplication {
                service: s.name.clone(),
                verdict: assess::UNKNOWN.into(),
                rpo_ms: s.rpo.as_millis() as i64,
                rto_ms: s.rto.as_millis() as i64,
                ..Default::default()
            });
        }
    }
    out.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(out)
}
