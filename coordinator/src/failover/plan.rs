//! What a failover would do and whether it may: the live state of both
//! regions' stores (read now, through their agents), the lag, the expected
//! loss, and the refusals (the lag gate, a standby that does not follow, an
//! old primary that cannot be fenced). `failover plan` shows it; `failover
//! run` is refused while it refuses.

use crate::jobs::{Coordinator, Lead};
use crate::model::topology::{RegionRole, ServiceConfig, StoreConfig, StoreKind};
use seawall_proto::v1::{FailoverPlan, FailoverRequest, StoreProbe, StoreReport};
use std::time::Duration;

/// How long a store has to answer a plan's probe.
const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// A plan, with what the workflow keeps of it.
pub struct Assessment {
    /// The plan as operators see it.
    pub plan: FailoverPlan,
    /// Bytes the standby trails by (the worst store), when known.
    pub expected_loss_bytes: Option<i64>,
    /// Whether the old primary region's agents answered.
    pub from_reachable: bool,
    /// When the assessment began: a failover's clock starts here.
    pub asked_ms: i64,
}

/// Reads one store's replication state through its agent, now.
pub async fn probe(
    coord: &Coordinator,
    lead: &Lead,
    store: &StoreConfig,
) -> Result<StoreReport, String> {
    let probe = StoreProbe {
        source: store.source.clone(),
        replication: true,
        ..Default::default()
    };
    ask_store(coord, lead, store, probe, PROBE_DEADLINE).await
}

/// How often a probe an agent refused as busy is asked again.
const BUSY_TRIES: u32 = 4;
/// The wait between those tries.
const BUSY_WAIT: Duration = Duration::from_millis(250);

/// Sends `probe` to `store`'s agent and returns the store's answer (an
/// error when the agent or the store did not answer). An agent still busy
/// with earlier probe rounds is asked again a few times: a switchover must
/// not be refused as "unreachable" because a replication round was running.
pub async fn ask_store(
    coord: &Coordinator,
    lead: &Lead,
    store: &StoreConfig,
    probe: StoreProbe,
    deadline: Duration,
) -> Result<StoreReport, String> {
    let mut tries = 0;
    loop {
        tries += 1;
        let session =
            crate::fleet::pending::session_of(&coord.registry, &store.region, &store.agent)
                .map_err(|e| e.to_string())?;
        let reply = coord
            .probes
            .ask(&session, lead.epoch(), vec![probe.clone()], None, deadline)
            .await
            .map_err(|e| e.to_string())?;
        let report = reply
            .reports
            .into_iter()
            .next()
            .ok_or_else(|| format!("agent {}/{} sent no report", store.region, store.agent))?;
        if report.error.is_empty() {
            return Ok(report);
        }
        let busy = report.error_kind == seawall_proto::v1::ErrorKind::Locked as i32;
        if !busy || tries >= BUSY_TRIES {
            return Err(report.error);
        }
        tokio::time::sleep(BUSY_WAIT).await;
    }
}

/// The stores of `service` in `region`.
pub fn stores_in<'a>(service: &'a ServiceConfig, region: &str) -> Vec<&'a StoreConfig> {
    service
        .stores
        .iter()
        .filter(|s| s.region == region)
        .collect()
}

/// The store of `kind` in `region`.
pub fn store_of<'a>(
    service: &'a ServiceConfig,
    region: &str,
    kind: StoreKind,
) -> Option<&'a StoreConfig> {
    service
        .stores
        .iter()
        .find(|s| s.region == region && s.kind == kind)
}

fn mib(bytes: i64) -> String {
    if bytes < 1 << 20 {
        format!("{bytes} bytes")
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

/// Assesses a failover of `service` from `from` to `req.to`; `from_down`:
/// the region was declared down (its stores are not asked again).
pub async fn assess(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    from: &str,
    req: &FailoverRequest,
    from_down: bool,
) -> Assessment {
    let asked_ms = crate::model::clock::now_ms();
    let to = req.to.as_str();
    let mut plan = FailoverPlan {
        service: service.name.clone(),
        from: from.to_string(),
        to: to.to_string(),
        switchover: req.switchover,
        ..Default::default()
    };
    let refuse = |why: String, plan: &mut FailoverPlan| plan.refusals.push(why);
    match coord.config.regions.iter().find(|r| r.name == to) {
        None => refuse(format!("region {to:?} is not in the topology ([[regions]])"), &mut plan),
        Some(r) if r.role == RegionRole::Cold => refuse(
            format!("region {to} is cold (backups only): it has no live stores to promote; restore there instead"),
            &mut plan,
        ),
        Some(_) => {}
    }
    if to == from {
        refuse(
            format!("{to} is already {}'s primary region", service.name),
            &mut plan,
        );
    }
    let kinds: Vec<StoreKind> = stores_in(service, from).iter().map(|s| s.kind).collect();
    for kind in &kinds {
        if store_of(service, to, *kind).is_none() {
            refuse(
                format!(
                    "{to} has no {} store for {}: nothing to promote",
                    kind.name(),
                    service.name
                ),
                &mut plan,
            );
        }
    }
    // The promoted PostgreSQL's agent must agree to read the check file,
    // or the post-check fails after the promotion, not before it.
    if let Some(file) = &service.check_file {
        for store in stores_in(service, to)
            .into_iter()
            .filter(|s| s.kind == StoreKind::Postgres)
        {
            let Ok(session) =
                crate::fleet::pending::session_of(&coord.registry, &store.region, &store.agent)
            else {
                continue; // unreachable: refused below with why
            };
            if !session.check_files.iter().any(|f| f == file) {
                refuse(
                    format!(
                        "agent {}/{} does not list the check file {file} in its check_files (agent.toml), so it would refuse the post-check after promoting: add it there",
                        store.region, store.agent
                    ),
                    &mut plan,
                );
            }
        }
    }
    // Both regions' stores, read now.
    let pairs: Vec<(StoreKind, Option<&StoreConfig>, Option<&StoreConfig>)> = kinds
        .iter()
        .map(|k| (*k, store_of(service, from, *k), store_of(service, to, *k)))
        .collect();
    let reads = futures_util::future::join_all(pairs.iter().map(|(_, a, b)| async move {
        let a = match a {
            Some(_) if from_down => Some(Err("the region was declared down".to_string())),
            Some(a) => Some(probe(coord, lead, a).await),
            None => None,
        };
        let b = match b {
            Some(b) => Some(probe(coord, lead, b).await),
            None => None,
        };
        (a, b)
    }))
    .await;
    let report = crate::replication::stored(coord)
        .await
        .ok()
        .and_then(|all| all.into_iter().find(|r| r.service == service.name));
    let mut from_reachable = true;
    let mut unreachable_why: Option<String> = None;
    let mut worst_bytes: Option<i64> = None;
    let mut unknown = false;
    // A managed PostgreSQL (its RDS instance) is fenced, promoted and
    // rebuilt through its cloud's API: the plan says so. A managed store's
    // view comes from the answer read now, else from the last replication
    // check.
    let managed_of = |kind: StoreKind, region: &str, first: bool| {
        pairs
            .iter()
            .zip(&reads)
            .find(|((k, _, _), _)| *k == kind)
            .and_then(|(_, read)| {
                let read = if first { &read.0 } else { &read.1 };
                read.as_ref()?.as_ref().ok()?.managed.clone()
            })
            .or_else(|| {
                report.as_ref()?.stores.iter().find_map(|st| {
                    (st.region == region && st.kind == kind.name())
                        .then(|| st.managed.clone())
                        .flatten()
                })
            })
            .filter(|m| !m.instance.is_empty())
    };
    let from_rds = managed_of(StoreKind::Postgres, from, true).map(|m| m.instance);
    let to_rds = managed_of(StoreKind::Postgres, to, false).map(|m| m.instance);
    // ElastiCache and Aurora are checked, not failed over: refuse before
    // anything is fenced.
    for (kind, region, first) in [
        (StoreKind::Postgres, from, true),
        (StoreKind::Postgres, to, false),
        (StoreKind::Redis, from, true),
        (StoreKind::Redis, to, false),
    ] {
        let Some(m) = managed_of(kind, region, first) else {
            continue;
        };
        let how = match m.service.as_str() {
            "elasticache" => "move its Global Datastore's primary with `aws elasticache failover-global-replication-group` (Seawall does not call FailoverGlobalReplicationGroup yet)",
            "aurora" => "move its global cluster's writer with `aws rds switchover-global-cluster` (or `failover-global-cluster --allow-data-loss` when its region is down; Seawall calls neither yet)",
            _ => continue,
        };
        let what = if m.service == "aurora" {
            "Aurora cluster"
        } else {
            "ElastiCache replication group"
        };
        refuse(format!("{region}'s {} is {what} {}: Seawall checks it but does not fail it over; {how}, and keep it in a service of its own so that this one fails over without it", kind.name(), m.instance), &mut plan);
    }
    for ((kind, a, b), (ra, rb)) in pairs.iter().zip(reads) {
        let (Some(a), Some(b)) = (a, b) else { continue };
        let a_state = match ra {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                from_reachable = false;
                let why = format!(
                    "{from}'s {} ({}/{}) is unreachable: {e}",
                    kind.name(),
                    a.agent,
                    a.source
                );
                unreachable_why.get_or_insert_with(|| why.clone());
                plan.notes.push(why);
                None
            }
            None => None,
        };
        let b_state = match rb {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                refuse(
                    format!(
                        "{to}'s {} ({}/{}) is unreachable: {e}",
                        kind.name(),
                        b.agent,
                        b.source
                    ),
                    &mut plan,
                );
                continue;
            }
            None => continue,
        };
        let bytes = match crate::replication::kinds::rules(*kind).trails(
            &b_state,
            a_state.as_ref(),
            to,
            from,
        ) {
            Ok(bytes) => bytes,
            Err(refusal) => {
                refuse(refusal, &mut plan);
                continue;
            }
        };
        match bytes {
            Some(n) => {
                plan.notes
                    .push(format!("{}: {to} trails {from} by {}", kind.name(), mib(n)));
                worst_bytes = Some(worst_bytes.unwrap_or(0).max(n));
            }
            None => unknown = true,
        }
    }
    plan.lag_bytes = worst_bytes;
    // Seconds: the replication checks' figures for the new region's stores
    // (canary exposure, replay lag), aged by the report's age when the old
    // region cannot be asked.
    let now = crate::model::clock::now_ms();
    if let Some(r) = &report {
        let secs = r
            .stores
            .iter()
            .filter(|s| s.region == to)
            .filter_map(crate::replication::assess::behind_ms)
            .max();
        if let Some(ms) = secs {
            let aged = if from_reachable {
                ms
            } else {
                ms + (now - r.checked_unix_ms).max(0)
            };
            plan.lag_secs = Some(aged as f64 / 1000.0);
            plan.expected_loss_ms = Some(aged);
        }
    }
    let bound_ms = service.max_lag.unwrap_or(service.rpo).as_millis() as i64;
    if let Some(b) = worst_bytes {
        if b > service.max_lag_bytes as i64 && !req.allow_data_loss {
            refuse(format!("the standby trails by {}, over the bound of {} (max_lag_bytes): wait for it to catch up, or pass --allow-data-loss and lose it", mib(b), mib(service.max_lag_bytes as i64)), &mut plan);
        }
    }
    if let Some(ms) = plan.expected_loss_ms {
        if ms > bound_ms && !req.allow_data_loss {
            refuse(format!("the standby is {:.1} s behind, over the bound of {:.0} s (max_lag, default the RPO): wait, or pass --allow-data-loss", ms as f64 / 1000.0, bound_ms as f64 / 1000.0), &mut plan);
        }
    }
    if req.switchover && from_reachable {
        // The lag says how long the catch-up may take, not what is lost.
        plan.expected_loss_ms = Some(0);
        plan.notes.push(format!(
            "expected loss 0 (switchover: {to} catches up to {from}'s fence position before it is promoted, within catch_up_timeout {:?}; the lag above is that wait)",
            service.catch_up_timeout
        ));
    }
    if !from_reachable {
        if req.switchover {
            refuse(format!("a switchover fences {from} and waits for {to} to catch up, so it needs {from} reachable ({}); for a region that is down, run without --switchover", unreachable_why.as_deref().unwrap_or("its stores did not answer")), &mut plan);
        } else if !service.failover_unfenced && service.auto_failover.is_none() {
            refuse(format!("{from} cannot be reached to be fenced, so its stores may still take writes: set failover_unfenced = true for {} (only for a region known to be down) or bring {from}'s agents back", service.name), &mut plan);
        }
        if unknown && plan.expected_loss_ms.is_none() && !req.allow_data_loss {
            refuse(format!("with {from} unreachable and no replication figures, the loss is unknown: pass --allow-data-loss to accept it"), &mut plan);
        }
    }
    // The steps, in words.
    let names = |kind| {
        let a = store_of(service, from, kind).map(|s| format!("{}/{}", s.agent, s.source));
        let b = store_of(service, to, kind).map(|s| format!("{}/{}", s.agent, s.source));
        (a, b)
    };
    plan.steps.push(format!(
        "precheck: {to}'s agents connected, its standbys following, lag within the bound"
    ));
    let pg_fence = match &from_rds {
        Some(id) => format!("{from}'s PostgreSQL (RDS instance {id}) locked out: its application roles lose LOGIN and their sessions are ended"),
        None => format!("{from}'s PostgreSQL stopped with standby.signal in place (no client can write to it, also after a restart)"),
    };
    plan.steps.push(if from_reachable {
        format!("fence: {pg_fence}, its Redis refusing every write (min-replicas-to-write, kept by CONFIG REWRITE)")
    } else if service.auto_failover.is_some() {
        format!("fence: not possible ({from} unreachable): its agents fence its stores themselves when their lease lapses; nothing is promoted before that moment")
    } else {
        format!("fence: not possible ({from} unreachable): recorded as not fenced")
    });
    plan.steps.push(if req.switchover {
        format!("catch up: wait until {to} has replayed {from}'s last LSN and reached its Redis offset (at most {})", humantime::format_duration(service.catch_up_timeout))
    } else {
        "catch up: skipped (not a switchover: promote what the standby has)".into()
    });
    for kind in StoreKind::ALL {
        if let (_, Some(b)) = names(kind) {
            let how = match (&to_rds, kind) {
                (Some(id), StoreKind::Postgres) => format!("PromoteReadReplica of RDS instance {id} ({b}), waited for until RDS says available and the server left recovery; LOGIN given back to its application roles"),
                _ => crate::replication::kinds::rules(kind).promote_step(&b),
            };
            plan.steps.push(format!("promote {}: {how}", kind.name()));
        }
    }
    plan.steps.push(match &service.dns {
        Some(d) if d.style == "failover" => format!(
            "dns: the failover records of {} keep their values; the PRIMARY's health check is inverted (or the inversion cleared) so Route 53 answers {:?}",
            d.name,
            d.values.get(to).map(|v| v.to_string()).unwrap_or_default()
        ),
        Some(d) => format!(
            "dns: {} {} from {:?} to {:?} in zone {} (one batch: DELETE the exact old record, CREATE the new), waited for INSYNC",
            d.record_type,
            d.name,
            d.values.get(from).map(|v| v.to_string()).unwrap_or_default(),
            d.values.get(to).map(|v| v.to_string()).unwrap_or_default(),
            d.zone_id
        ),
        None => "dns: skipped (no [services.dns])".into(),
    });
    plan.steps.push(format!(
        "post-check: a write and a read through {to}'s promoted stores{}",
        service
            .check_file
            .as_ref()
            .map(|f| format!(", and the check file {f}"))
            .unwrap_or_default()
    ));
    plan.steps.push(if from_reachable {
        format!(
            "demote: {from}'s PostgreSQL {}, its Redis becomes a replica of {to}'s",
            if from_rds.is_some() {
                "stays locked out (an RDS instance cannot follow another)"
            } else if service.fence == crate::model::topology::FenceMode::Stop {
                "stays stopped until failback (fence = \"stop\")"
            } else {
                "started again as a standby (reads only)"
            }
        )
    } else {
        format!("demote: not possible ({from} unreachable): its agent fences its stores when it returns; `seawall failover run {} --failback` brings the service back later", service.name)
    });
    if req.switchover {
        let pg_follow = match &from_rds {
            Some(id) => format!("{from}'s RDS instance {id} renamed to {id}-diverged-<time> (kept) and a new read replica of {to}'s made under its name"),
            None => format!("{from}'s PostgreSQL rewound (pg_rewind, or a base backup) and started as a standby of {to}"),
        };
        plan.steps.push(format!(
            "follow: {pg_follow}; its Redis waited for until it follows"
        ));
    }
    Assessment {
        plan,
        expected_loss_bytes: worst_bytes,
        from_reachable,
        asked_ms,
    }
}

/// Assesses a failback of `service` from its primary region `from` to
/// `to`: `to`'s stores rebuilt as standbys of `from`'s, then (unless
/// `standby_only`) a switchover to them. Nothing is changed.
pub async fn assess_failback(
    coord: &Coordinator,
    lead: &Lead,
    service: &ServiceConfig,
    from: &str,
    to: &str,
    standby_only: bool,
) -> Assessment {
    let asked_ms = crate::model::clock::now_ms();
    let mut plan = FailoverPlan {
        service: service.name.clone(),
        from: from.to_string(),
        to: to.to_string(),
        switchover: !standby_only,
        ..Default::default()
    };
    match coord.config.regions.iter().find(|r| r.name == to) {
        None => plan.refusals.push(format!(
            "region {to:?} is not in the topology ([[regions]])"
        )),
        Some(r) if r.role == RegionRole::Cold => plan.refusals.push(format!(
            "region {to} is cold (backups only): it has no live stores to fail back to"
        )),
        Some(_) => {}
    }
    if to == from {
        plan.refusals.push(format!(
            "{to} is {}'s primary region already: nothing to fail back",
            service.name
        ));
    }
    let mut from_reachable = true;
    // Stores that are RDS instances: rebuilt as new read replicas.
    let mut rebuilt_rds: Vec<(StoreKind, String)> = Vec::new();
    for kind in StoreKind::ALL {
        let (Some(a), Some(b)) = (store_of(service, from, kind), store_of(service, to, kind))
        else {
            continue;
        };
        if a.address.is_none() {
            plan.refusals.push(format!(
                "{from}'s {} store ({}/{}) has no address in the topology: set address (host:port, as {to} reaches it) so the rebuilt standby can follow it",
                kind.name(),
                a.agent,
                a.source
            ));
        }
        match probe(coord, lead, a).await {
            Ok(r) => {
                if !crate::replication::kinds::rules(kind).acts_as_primary(&r) {
                    plan.refusals.push(format!(
                        "{from}'s {} is not a primary: fail back from the region that runs the service",
                        kind.name()
                    ));
                }
            }
            Err(e) => {
                from_reachable = false;
                plan.refusals.push(format!(
                    "{from}'s {} ({}/{}) is unreachable ({e}): failback copies from it",
                    kind.name(),
                    a.agent,
                    a.source
                ));
            }
        }
        if let Err(e) = crate::fleet::pending::session_of(&coord.registry, &b.region, &b.agent) {
            plan.refusals
                .push(format!("{to}'s {} cannot be rebuilt: {e}", kind.name()));
            continue;
        }
        plan.notes.push(match probe(coord, lead, b).await {
            Ok(r) if r.managed.as_ref().is_some_and(|m| !m.instance.is_empty()) => {
                let id = r
                    .managed
                    .as_ref()
                    .map(|m| m.instance.clone())
                    .unwrap_or_default();
                rebuilt_rds.push((kind, id.clone()));
                format!(
                    "{to}'s {} is RDS instance {id}: RDS cannot make it follow {from} in place",
                    kind.name()
                )
            }
            Ok(r) => crate::replication::kinds::rules(kind).rebuild_note(&r, to, from),
            Err(e) => format!(
                "{to}'s {} does not answer ({e}): its agent rebuilds it from its data directory",
                kind.name()
            ),
        });
    }
    let address = |kind| {
        store_of(service, from, kind)
            .and_then(|s| s.address.clone())
            .unwrap_or_default()
    };
    for kind in StoreKind::ALL {
        if store_of(service, to, kind).is_some() {
            let how = match rebuilt_rds.iter().find(|(k, _)| *k == kind) {
                Some((_, id)) => format!("RDS instance {id} renamed to {id}-diverged-<time> (kept, with what it wrote) and a new read replica of {from}'s instance made under its name, waited for until available and replaying (at most {})", humantime::format_duration(service.rebuild_timeout)),
                None => crate::replication::kinds::rules(kind).rebuild_step(
                    to,
                    &address(kind),
                    service.rebuild_timeout,
                ),
            };
            plan.steps.push(format!("rebuild {}: {how}", kind.name()));
        }
    }
    plan.steps.push(format!(
        "precheck: the rebuilt standbys follow {from} and are within the lag bound (waited for at most {})",
        humantime::format_duration(service.catch_up_timeout)
    ));
    if !standby_only {
        plan.steps.push(format!(
            "then a switchover from {from} to {to}: fence, catch up, promote, dns, post-check, demote"
        ));
    }
    Assessment {
        plan,
        expected_loss_bytes: None,
        from_reachable,
        asked_ms,
    }
}
