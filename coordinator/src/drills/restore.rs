//! The restore drill as the coordinator runs it: each source of a service
//! becomes a restore-drill job for the agent whose repository is in the
//! drill's region (an RDS drill: for the agent of each PostgreSQL store in
//! the region, which restores its instance's automated backups through
//! RDS), and a placeholder step named after the source. The
//! agent's report replaces the placeholder with its timed phases
//! (`<source>: restore`, `<source>: check`, ...); a job that ends without
//! a report fails its placeholder. The drill settles when no placeholder
//! is left: RTO from the drill's start to the last source restored and
//! checked, RPO (for the latest point) from the drill's start back to the
//! oldest recovery point restored.

use super::journal;
use super::verdict;
use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::error::ActError;
use crate::model::records::{DrillPart, JobRecord, JobState};
use crate::model::scenarios::{default_region, ms, DrillKind, ScenarioConfig};
use crate::model::topology::StoreKind;
use seawall_common::point::Point;
use seawall_proto::v1::{Drill, DrillRequest, FailoverStep, JobKind, RestoreDrillOutput};
use std::collections::{BTreeMap, BTreeSet};

/// Evidence key naming a placeholder's job.
const JOB: &str = "job";
/// Evidence key of a source's recovery point (ms), on its first phase.
const RECOVERY_POINT: &str = "recovery_point_unix_ms";
/// Steady-state key of the drill's point.
const POINT: &str = "point";

/// A restore drill with everything needed to start it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The scenario, if any.
    pub scenario: String,
    /// The service.
    pub service: String,
    /// The region whose repository (or RDS instances) is restored from.
    pub region: String,
    /// Each source restored, with the agent that restores it.
    pub sources: Vec<(String, String)>,
    /// The recovery point.
    pub point: String,
    /// Objectives (ms).
    pub rto_ms: i64,
    /// ...
    pub rpo_ms: i64,
    /// The service's PostgreSQL check file.
    pub check_file: Option<String>,
    /// Read every row and page too (the request's or the scenario's).
    pub deep: bool,
    /// Through RDS's point-in-time restore of each instance, not from the
    /// repository.
    pub managed: bool,
}

impl Resolved {
    /// The drill's kind as the journal names it.
    fn kind(&self) -> DrillKind {
        if self.managed {
            DrillKind::RdsPitr
        } else {
            DrillKind::Restore
        }
    }
}

/// Reads a request (`scenario`, found by the caller, or a service or
/// source by hand) into a restore drill (from a repository, or through
/// RDS), or says what is wrong with it.
pub async fn resolve(
    coord: &Coordinator,
    req: &DrillRequest,
    scenario: Option<&ScenarioConfig>,
) -> Result<Resolved, ActError> {
    let cfg = &coord.config;
    let invalid = |m: String| ActError::Invalid(m);
    let deep = req.deep || scenario.is_some_and(|s| s.deep);
    let kind = match scenario {
        Some(s) => s.drill,
        None => match req.kind.as_str() {
            "" | "restore" => DrillKind::Restore,
            "rds-pitr" => DrillKind::RdsPitr,
            other => {
                return Err(invalid(format!(
                    "kind {other:?} is not a restore drill (restore, rds-pitr)"
                )))
            }
        },
    };
    if kind == DrillKind::Failover {
        return Err(invalid(format!(
            "scenario {:?} is a failover drill, not a restore drill",
            req.scenario
        )));
    }
    let (scenario, service, named, point, rto, rpo, only) = if let Some(s) = scenario {
        let t = s
            .target(&cfg.regions, &cfg.services, &req.region)
            .map_err(invalid)?;
        let point = if req.point.is_empty() {
            s.point.clone().unwrap_or_else(|| "latest".into())
        } else {
            req.point.clone()
        };
        let named = if req.region.is_empty() {
            s.region.clone()
        } else {
            Some(req.region.clone())
        };
        (
            s.name.clone(),
            t.service,
            named,
            point,
            t.rto_ms,
            t.rpo_ms,
            None,
        )
    } else {
        let (service, only) = match cfg.services.iter().find(|s| s.name == req.service) {
            Some(s) => (s, None),
            None => {
                let owner = cfg
                    .services
                    .iter()
                    .find(|s| {
                        s.backup_sources(&cfg.regions).contains(&req.service)
                            || s.stores.iter().any(|x| x.source == req.service)
                    })
                    .ok_or_else(|| {
                        invalid(format!(
                            "no service or backed-up source named {:?} (services: {})",
                            req.service,
                            cfg.services
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                (owner, Some(req.service.clone()))
            }
        };
        let point = if req.point.is_empty() {
            "latest".to_string()
        } else {
            req.point.clone()
        };
        (
            String::new(),
            service,
            (!req.region.is_empty()).then(|| req.region.clone()),
            point,
            ms(service.rto),
            ms(service.rpo),
            only,
        )
    };
    Point::parse(&point).map_err(invalid)?;
    let region = match (named, kind) {
        (Some(r), _) => Some(r),
        // RDS restores the instance that is primary now: a replica keeps
        // no automated backups of its own.
        (None, DrillKind::RdsPitr) => {
            crate::replication::primaries::current(coord, service).await?
        }
        (None, _) => default_region(kind, &cfg.regions, service),
    };
    let region = region.ok_or_else(|| {
        invalid(format!(
            "{} has no [[services.repositories]] to restore from: add one",
            service.name
        ))
    })?;
    let sources: Vec<(String, String)> = if kind == DrillKind::RdsPitr {
        let found: Vec<(String, String)> = service
            .stores
            .iter()
            .filter(|x| x.region == region && x.kind == StoreKind::Postgres)
            .filter(|x| only.as_ref().is_none_or(|o| o == &x.source))
            .map(|x| (x.source.clone(), x.agent.clone()))
            .collect();
        if found.is_empty() {
            return Err(invalid(format!(
                "{} has no postgres store{} in {region} ([[services.stores]]) whose RDS instance could be restored: name the region of an rds-postgres source",
                service.name,
                only.as_ref().map(|o| format!(" {o:?}")).unwrap_or_default()
            )));
        }
        found
    } else {
        let agent = service
            .repositories
            .iter()
            .find(|r| r.region == region)
            .map(|r| r.agent.clone())
            .ok_or_else(|| {
                invalid(format!(
                    "{} has no repository in {region} ([[services.repositories]]): name a region that has one",
                    service.name
                ))
            })?;
        let sources = match only {
            Some(s) => vec![s],
            None => service.backup_sources(&cfg.regions),
        };
        if sources.is_empty() {
            return Err(invalid(format!(
                "{} has no sources to restore: list them in its backups, or give it primary-region stores",
                service.name
            )));
        }
        sources.into_iter().map(|s| (s, agent.clone())).collect()
    };
    Ok(Resolved {
        scenario,
        service: service.name.clone(),
        region,
        sources,
        point,
        rto_ms: rto,
        rpo_ms: rpo,
        check_file: service.check_file.clone(),
        deep,
        managed: kind == DrillKind::RdsPitr,
    })
}

/// The newest backup of each source, before the drill touches anything.
async fn steady_state(coord: &Coordinator, r: &Resolved) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(POINT.to_string(), r.point.clone());
    if r.managed {
        for (source, agent) in &r.sources {
            out.insert(
                format!("{source} restored by"),
                format!("RDS point-in-time restore through {}/{agent}", r.region),
            );
        }
        return out;
    }
    let agents: BTreeSet<&str> = r.sources.iter().map(|(_, a)| a.as_str()).collect();
    out.insert(
        "repository".into(),
        format!(
            "{} ({})",
            r.region,
            agents.into_iter().collect::<Vec<_>>().join(", ")
        ),
    );
    let Ok(entries) = coord.store.list("backups/").await else {
        return out;
    };
    for (source, _) in &r.sources {
        let newest = entries
            .iter()
            .filter_map(|e| {
                serde_json::from_slice::<crate::model::records::BackupRecord>(&e.value).ok()
            })
            .filter(|b| &b.source == source)
            .max_by_key(|b| b.finished_ms);
        if let Some(b) = newest {
            let at = chrono::DateTime::from_timestamp_millis(b.finished_ms)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            out.insert(
                format!("newest backup of {source}"),
                format!("{} at {at} ({})", short(&b.snapshot_id), b.region),
            );
        }
    }
    out
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Records a restore drill and makes its jobs; a drill of the same id that
/// exists already (a schedule's slot seen twice) is returned as it is.
pub async fn start(
    coord: &Coordinator,
    lead: &Lead,
    r: &Resolved,
    id: String,
    who: &str,
) -> Result<Drill, ActError> {
    if let Some((existing, _)) = journal::load(coord, &id).await? {
        // A leader that stopped between the journal and its jobs left
        // them to whoever sees the slot next: make the missing ones.
        if existing.state == journal::RUNNING {
            create_jobs(coord, lead, r, &id, who).await?;
        }
        return Ok(existing);
    }
    // The agent refuses a drill naming a check file its agent.toml does
    // not list: say so now rather than in every source's failed job.
    let agents: BTreeSet<&str> = r.sources.iter().map(|(_, a)| a.as_str()).collect();
    for agent in agents {
        if let (Some(file), Ok(session)) = (
            &r.check_file,
            crate::fleet::pending::session_of(&coord.registry, &r.region, agent),
        ) {
            if !session.check_files.iter().any(|f| f == file) {
                return Err(ActError::Invalid(format!(
                    "agent {}/{agent} does not list the check file {file} in its check_files (agent.toml), so it would refuse the drill: add it there",
                    r.region
                )));
            }
        }
    }
    let started = now_ms();
    let d = Drill {
        id: id.clone(),
        scenario: r.scenario.clone(),
        service: r.service.clone(),
        kind: r.kind().name().into(),
        region: r.region.clone(),
        rto_objective_ms: r.rto_ms,
        rpo_objective_ms: r.rpo_ms,
        steady_state: steady_state(coord, r).await,
        steps: r
            .sources
            .iter()
            .map(|(s, agent)| FailoverStep {
                name: s.clone(),
                state: "pending".into(),
                detail: format!("waiting for {agent} to restore it"),
                evidence: [(JOB.to_string(), job_id(&id, s))].into(),
                ..Default::default()
            })
            .collect(),
        state: journal::RUNNING.into(),
        started_unix_ms: started,
        requested_by: who.to_string(),
        ..Default::default()
    };
    match journal::save(
        coord,
        lead,
        &d,
        0,
        Some(format!(
            "{} drill {id} of {} from {}'s {} ({}) started by {who}",
            r.kind().name(),
            r.service,
            r.region,
            if r.managed {
                "RDS instances"
            } else {
                "repository"
            },
            r.sources
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    )
    .await
    {
        Ok(_) => {}
        Err(ActError::Store(crate::model::error::StoreError::Conflict { .. })) => {
            if let Some((existing, _)) = journal::load(coord, &id).await? {
                return Ok(existing);
            }
        }
        Err(e) => return Err(e),
    }
    create_jobs(coord, lead, r, &id, who).await?;
    coord.drill_wake.notify_one();
    Ok(d)
}

/// The id of drill `drill`'s job for `source`.
fn job_id(drill: &str, source: &str) -> String {
    format!("{drill}.{source}")
}

/// The drill's job for each source; one that exists already is left as it
/// is (the job ids are the drill's).
async fn create_jobs(
    coord: &Coordinator,
    lead: &Lead,
    r: &Resolved,
    id: &str,
    who: &str,
) -> Result<(), ActError> {
    for (source, agent) in &r.sources {
        let mut job = JobRecord {
            target_agent: Some(agent.clone()),
            drill: Some(DrillPart {
                drill_id: id.to_string(),
                point: r.point.clone(),
                check_file: r.check_file.clone(),
                deep: r.deep,
                managed: r.managed,
            }),
            ..JobRecord::pending(
                job_id(id, source),
                r.region.clone(),
                source.clone(),
                JobKind::RestoreDrill,
            )
        };
        job.enter(
            JobState::Pending,
            lead.fence().epoch,
            format!("{} drill {id}", r.kind().name()),
        );
        coord.create_job(lead, job, who).await?;
    }
    Ok(())
}

/// The steps an agent's report makes of one source's placeholder.
fn phase_steps(out: &RestoreDrillOutput, job: &str) -> Vec<FailoverStep> {
    out.phases
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut evidence = p.evidence.clone();
            if i == 0 {
                evidence.insert(JOB.into(), job.to_string());
                evidence.insert(
                    RECOVERY_POINT.into(),
                    out.recovery_point_unix_ms.to_string(),
                );
                if !out.snapshot_id.is_empty() {
                    evidence.insert("snapshot".into(), out.snapshot_id.clone());
                }
            }
            FailoverStep {
                name: format!("{}: {}", out.source, p.name),
                state: p.state.clone(),
                started_unix_ms: p.started_unix_ms,
                ended_unix_ms: p.ended_unix_ms,
                detail: p.detail.clone(),
                evidence,
                attempts: 1,
            }
        })
        .collect()
}

/// Takes an agent's report into its drill's journal (before the job is
/// settled, so the worker never sees a finished job without its report).
pub async fn record(
    coord: &Coordinator,
    lead: &Lead,
    job: &JobRecord,
    out: &RestoreDrillOutput,
) -> Result<(), ActError> {
    let Some(part) = &job.drill else {
        return Ok(());
    };
    // Two sources' reports may land at once: reload and retry on a conflict.
    for _ in 0..10 {
        let Some((mut d, rev)) = journal::load(coord, &part.drill_id).await? else {
            return Ok(());
        };
        let Some(at) = d
            .steps
            .iter()
            .position(|s| s.name == job.source && s.evidence.get(JOB) == Some(&job.job_id))
        else {
            return Ok(());
        };
        let steps = phase_steps(out, &job.job_id);
        d.steps.splice(at..=at, steps);
        match journal::save(coord, lead, &d, rev, None).await {
            Ok(_) => {
                coord.drill_wake.notify_one();
                return Ok(());
            }
            Err(ActError::Store(crate::model::error::StoreError::Conflict { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ActError::Invalid(format!(
        "drill {} kept changing while its report from {} was recorded",
        part.drill_id, job.source
    )))
}

/// How long a drill's job may be missing after its start before its step
/// fails as gone (the journal is written first, then the jobs).
const JOB_CREATION_GRACE_MS: i64 = 60_000;

/// Moves a running restore drill on: placeholders follow their jobs, and
/// the drill settles once none is left. Whether it changed.
pub async fn advance(coord: &Coordinator, lead: &Lead, d: &mut Drill) -> Result<bool, ActError> {
    let mut changed = false;
    for step in d.steps.iter_mut() {
        let Some(job_id) = step.evidence.get(JOB).cloned() else {
            continue;
        };
        // Only placeholders wait: an agent's phases are done or failed.
        if !matches!(step.state.as_str(), "pending" | "running") {
            continue;
        }
        let job = match coord.active_job(lead, &job_id) {
            Some((j, _)) => Some(j),
            None => coord
                .store
                .get(&crate::model::records::job_key(&job_id))
                .await?
                .and_then(|e| serde_json::from_slice::<JobRecord>(&e.value).ok()),
        };
        let Some(job) = job else {
            // The journal is written before its jobs: a job not there yet
            // is on its way, unless the drill is long past its start.
            if now_ms() - d.started_unix_ms < JOB_CREATION_GRACE_MS {
                continue;
            }
            step.state = "failed".into();
            step.detail = format!("its job {job_id} is gone");
            step.ended_unix_ms = now_ms();
            changed = true;
            continue;
        };
        match job.state {
            JobState::Running if step.state == "pending" => {
                step.state = "running".into();
                step.started_unix_ms = job.started_ms.unwrap_or_else(now_ms);
                step.detail = format!("{} restores it", job.agent_id.clone().unwrap_or_default());
                changed = true;
            }
            s if s.is_final() => {
                step.state = "failed".into();
                step.ended_unix_ms = job.finished_ms.unwrap_or_else(now_ms);
                step.detail = match (&job.error, s) {
                    (Some(e), _) => e.clone(),
                    (None, JobState::Cancelled) => "its job was cancelled".into(),
                    _ => "the agent's report was lost".into(),
                };
                changed = true;
            }
            _ => {}
        }
    }
    let open = d
        .steps
        .iter()
        .any(|s| matches!(s.state.as_str(), "pending" | "running"));
    if !open {
        settle(d);
        changed = true;
    }
    Ok(changed)
}

/// The figures and the verdict of a drill whose steps all ended.
fn settle(d: &mut Drill) {
    let restored_by = d
        .steps
        .iter()
        .filter(|s| !s.name.ends_with(": teardown"))
        .map(|s| s.ended_unix_ms)
        .max();
    d.rto_ms = restored_by.map(|t| (t - d.started_unix_ms).max(0));
    let latest = d.steady_state.get(POINT).is_none_or(|p| p == "latest");
    d.rpo_ms = if latest {
        d.steps
            .iter()
            .filter_map(|s| s.evidence.get(RECOVERY_POINT)?.parse::<i64>().ok())
            .filter(|t| *t > 0)
            .min()
            .map(|oldest| (d.started_unix_ms - oldest).max(0))
    } else {
        None
    };
    d.finished_unix_ms = now_ms();
    d.state = journal::FINISHED.into();
    verdict::settle(d);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, state: &str, from: i64, to: i64, point: Option<i64>) -> FailoverStep {
        FailoverStep {
            name: name.into(),
            state: state.into(),
            started_unix_ms: from,
            ended_unix_ms: to,
            evidence: point
                .map(|p| [(RECOVERY_POINT.to_string(), p.to_string())].into())
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    fn drill(point: &str, steps: Vec<FailoverStep>) -> Drill {
        Drill {
            kind: "restore".into(),
            started_unix_ms: 10_000,
            rto_objective_ms: 60_000,
            rpo_objective_ms: 3_600_000,
            steady_state: [(POINT.to_string(), point.to_string())].into(),
            steps,
            ..Default::default()
        }
    }

    #[test]
    fn the_rto_ends_at_the_last_check_and_the_rpo_goes_back_to_the_oldest_point() {
        let mut d = drill(
            "latest",
            vec![
                step("db: choose", "done", 10_100, 10_200, Some(4_000)),
                step("db: check", "done", 20_000, 25_000, None),
                step("db: teardown", "done", 25_000, 90_000, None),
                step("docs: choose", "done", 10_100, 10_150, Some(7_000)),
                step("docs: check", "done", 12_000, 13_000, None),
            ],
        );
        settle(&mut d);
        // Teardown is not part of the time to recover.
        assert_eq!(d.rto_ms, Some(15_000));
        assert_eq!(d.rpo_ms, Some(6_000));
        assert_eq!(d.verdict, verdict::MET);
        assert_eq!(d.state, journal::FINISHED);
        // A point picked at random says nothing about the data at risk.
        let mut random = drill("random-within 7d", d.steps.clone());
        settle(&mut random);
        assert_eq!(random.rpo_ms, None);
        assert_eq!(random.rto_ms, Some(15_000));
    }
}
