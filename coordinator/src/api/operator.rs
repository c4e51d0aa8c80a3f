//! The operator API. Reads are answered by any replica from the store;
//! a trigger needs the leader, and a follower refuses it with
//! FAILED_PRECONDITION naming the leader in the `seawall-leader` metadata.

use crate::fleet::revocation::{normalise, Revocation};
use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::config::{JobKind, Level};
use crate::model::cron::{next_slot, parse_cron, parse_tz};
use crate::model::error::ActError;
use crate::model::failover::StepState;
use crate::model::records::{AgentRecord, BackupRecord, JobRecord, JobState, ScheduleState};
use seawall_common::tls::check_label;
use seawall_proto::v1::operator_service_server::OperatorService;
use seawall_proto::v1::*;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The OperatorService implementation.
pub struct OperatorApi {
    coord: Arc<Coordinator>,
}

impl OperatorApi {
    /// Serves operators for `coord`.
    pub fn new(coord: Arc<Coordinator>) -> Self {
        OperatorApi { coord }
    }
}

fn store_failed(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("state store: {e}"))
}

fn job_message(j: &JobRecord) -> Job {
    Job {
        job_id: j.job_id.clone(),
        region: j.region.clone(),
        source: j.source.clone(),
        kind: crate::jobs::dispatch::kind_name(j.kind).into(),
        level: match j.level {
            Some(Level::Full) => "full".into(),
            Some(Level::Incremental) => "incremental".into(),
            None => String::new(),
        },
        state: j.state.as_str().into(),
        agent_id: j.agent_id.clone().unwrap_or_default(),
        attempt: j.attempt,
        schedule: j.schedule.clone().unwrap_or_default(),
        created_unix_ms: j.created_ms,
        started_unix_ms: j.started_ms.unwrap_or(0),
        finished_unix_ms: j.finished_ms.unwrap_or(0),
        error: j.error.clone().unwrap_or_default(),
        snapshot_id: j.snapshot_id.clone().unwrap_or_default(),
        bytes_done: j.bytes_done,
        bytes_added: j.bytes_added,
        epoch: j.epoch.max(0) as u64,
        error_kind: j.error_kind.clone().unwrap_or_default(),
        warning_count: j.warning_count,
        warnings: j.warnings.clone(),
    }
}

fn revoked_message(r: Revocation) -> Revoked {
    Revoked {
        fingerprint: r.fingerprint,
        reason: r.reason,
        by: r.by,
        at_unix_ms: r.at_ms,
    }
}

impl OperatorApi {
    /// The lead, or FAILED_PRECONDITION naming the leader (also in the
    /// `seawall-leader` metadata entry, for clients that follow it).
    async fn leader_only(&self) -> Result<Arc<Lead>, Status> {
        if let Some(lead) = self.coord.lead() {
            return Ok(lead);
        }
        let leader = self.coord.store.leader().await.ok().flatten();
        let mut status = Status::failed_precondition(format!(
            "this replica is not the leader; ask {}",
            leader
                .as_ref()
                .map(|l| l.address.as_str())
                .unwrap_or("the leader (none elected yet)")
        ));
        if let Some(l) = leader {
            if let Ok(v) = l.address.parse() {
                status.metadata_mut().insert("seawall-leader", v);
            }
        }
        Err(status)
    }

    async fn decode_all<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, Status> {
        Ok(self
            .coord
            .store
            .list(prefix)
            .await
            .map_err(store_failed)?
            .into_iter()
            .filter_map(|e| serde_json::from_slice(&e.value).ok())
            .collect())
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, Status> {
        Ok(self
            .coord
            .store
            .get(&crate::model::records::job_key(id))
            .await
            .map_err(store_failed)?
            .and_then(|e| serde_json::from_slice(&e.value).ok()))
    }
}

type JobStream = Pin<Box<dyn Stream<Item = Result<Job, Status>> + Send>>;

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        self.coord.operator_auth.check(&request)?;
        let leader = self.coord.store.leader().await.map_err(store_failed)?;
        let lead = self.coord.lead();
        let agents: Vec<AgentRecord> = self.decode_all("agents/").await?;
        let backups: Vec<BackupRecord> = self.decode_all("backups/").await?;
        let mut newest: BTreeMap<(String, String), BackupRecord> = BTreeMap::new();
        for b in backups {
            let key = (b.region.clone(), b.source.clone());
            if newest
                .get(&key)
                .is_none_or(|n| n.finished_ms < b.finished_ms)
            {
                newest.insert(key, b);
            }
        }
        let now = now_ms();
        let jobs: Vec<JobRecord> = self.decode_all("jobs/").await?;
        let running = jobs.iter().filter(|j| j.state == JobState::Running).count();
        let sources = newest
            .into_values()
            .map(|b| SourceStatus {
                region: b.region,
                source: b.source,
                last_success_job: b.job_id,
                last_success_unix_ms: b.finished_ms,
                last_snapshot_id: b.snapshot_id,
                age_secs: (now - b.finished_ms) / 1000,
                last_outcome: "succeeded".into(),
            })
            .collect();
        let failovers_running = crate::failover::stored::all(&self.coord)
            .await?
            .into_iter()
            .filter(|f| !f.is_final())
            .map(|f| {
                let step = f
                    .steps
                    .iter()
                    .find(|s| matches!(s.state, StepState::Running | StepState::Pending))
                    .map(|s| format!("{} ({})", s.step, s.state.name()))
                    .unwrap_or_else(|| "finishing".into());
                format!(
                    "{}: {} {} -> {}, step {step}",
                    f.id, f.service, f.from, f.to
                )
            })
            .collect();
        Ok(Response::new(StatusReply {
            failovers_running,
            replica_id: self.coord.me.id.clone(),
            is_leader: lead.is_some(),
            leader_id: leader.as_ref().map(|l| l.id.clone()).unwrap_or_default(),
            leader_address: leader
                .as_ref()
                .map(|l| l.address.clone())
                .unwrap_or_default(),
            epoch: leader.map(|l| l.epoch.max(0) as u64).unwrap_or(0),
            agents_connected: agents.len() as u32,
            jobs_running: running as u32,
            sources,
            store: self.coord.store.kind().into(),
            workers: if lead.is_some() {
                self.coord.workers.snapshot()
            } else {
                Vec::new()
            },
        }))
    }

    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsReply>, Status> {
        self.coord.operator_auth.check(&request)?;
        let region = request.into_inner().region;
        let prefix = if region.is_empty() {
            "agents/".to_string()
        } else {
            format!("agents/{region}/")
        };
        let records: Vec<AgentRecord> = self.decode_all(&prefix).await?;
        let agents = records
            .into_iter()
            .map(|a| {
                let live = self.coord.registry.get(&a.region, &a.agent_id);
                Agent {
                    last_heartbeat_unix_ms: live
                        .as_ref()
                        .map(|s| {
                            s.last_heartbeat_ms
                                .load(std::sync::atomic::Ordering::Relaxed)
                        })
                        .unwrap_or(0),
                    running_jobs: live
                        .map(|s| s.running.load(std::sync::atomic::Ordering::Relaxed))
                        .unwrap_or(0),
                    agent_id: a.agent_id,
                    region: a.region,
                    version: a.version,
                    hostname: a.hostname,
                    sources: a.sources,
                    connected_unix_ms: a.connected_ms,
                    cert_fingerprint: a.cert_fingerprint,
                    cert_expires_unix_ms: a.cert_expires_ms.unwrap_or(0),
                }
            })
            .collect();
        Ok(Response::new(ListAgentsReply { agents }))
    }

    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesReply>, Status> {
        self.coord.operator_auth.check(&request)?;
        let mut schedules = Vec::new();
        for s in &self.coord.config.schedules {
            let state: ScheduleState = self
                .coord
                .store
                .get(&crate::model::records::schedule_key(&s.name))
                .await
                .map_err(store_failed)?
                .and_then(|e| serde_json::from_slice(&e.value).ok())
                .unwrap_or_default();
            let next = match (parse_cron(&s.cron), parse_tz(&s.timezone)) {
                (Ok(c), Ok(tz)) => next_slot(&c, tz, state.last_slot_ms.max(now_ms())).unwrap_or(0),
                _ => 0,
            };
            schedules.push(Schedule {
                name: s.name.clone(),
                region: s.region.clone(),
                source: s.source.clone(),
                kind: crate::jobs::dispatch::kind_name(s.kind).into(),
                level: match s.level {
                    Some(Level::Full) => "full".into(),
                    Some(Level::Incremental) => "incremental".into(),
                    None => String::new(),
                },
                cron: s.cron.clone(),
                timezone: s.timezone.clone(),
                jitter_secs: s.jitter.as_secs() as u32,
                last_fired_unix_ms: if state.last_job.is_some() {
                    state.last_slot_ms
                } else {
                    0
                },
                next_unix_ms: next,
            });
        }
        Ok(Response::new(ListSchedulesReply { schedules }))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsReply>, Status> {
        self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        let mut jobs: Vec<JobRecord> = self.decode_all("jobs/").await?;
        jobs.retain(|j| req.region.is_empty() || j.region == req.region);
        jobs.sort_by_key(|j| std::cmp::Reverse(j.created_ms));
        let limit = if req.limit == 0 {
            50
        } else {
            req.limit.min(10_000)
        } as usize;
        Ok(Response::new(ListJobsReply {
            jobs: jobs.iter().take(limit).map(job_message).collect(),
        }))
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditReply>, Status> {
        self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit.min(10_000)
        } as usize;
        // Keys sort by time: read newest first, a page at a time, until
        // enough, or older than asked (never the whole log at once).
        let mut entries = Vec::with_capacity(limit.min(1024));
        let mut before = (!req.before.is_empty()).then_some(req.before);
        'pages: loop {
            let asked = (limit - entries.len()).min(256);
            let page = self
                .coord
                .store
                .list_newest("audit/", before.as_deref(), asked)
                .await
                .map_err(store_failed)?;
            let Some(last) = page.last() else { break };
            before = Some(last.key.clone());
            let exhausted = page.len() < asked;
            for e in page {
                let Ok(a) = serde_json::from_slice::<crate::model::records::AuditEntry>(&e.value)
                else {
                    continue;
                };
                if a.at_ms < req.since_unix_ms {
                    break 'pages;
                }
                entries.push(AuditEntry {
                    at_unix_ms: a.at_ms,
                    epoch: a.epoch,
                    replica: a.replica,
                    actor: a.actor,
                    event: a.event,
                    key: e.key,
                });
            }
            if entries.len() >= limit || exhausted {
                break;
            }
        }
        Ok(Response::new(ListAuditReply { entries }))
    }

    async fn list_backups(
        &self,
        request: Request<ListBackupsRequest>,
    ) -> Result<Response<ListBackupsReply>, Status> {
        self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        let prefix = match (req.region.is_empty(), req.source.is_empty()) {
            (true, _) => "backups/".to_string(),
            (false, true) => format!("backups/{}/", req.region),
            (false, false) => format!("backups/{}/{}/", req.region, req.source),
        };
        let records: Vec<BackupRecord> = self.decode_all(&prefix).await?;
        Ok(Response::new(ListBackupsReply {
            backups: records
                .into_iter()
                .map(|b| Backup {
                    region: b.region,
                    source: b.source,
                    snapshot_id: b.snapshot_id,
                    job_id: b.job_id,
                    finished_unix_ms: b.finished_ms,
                    bytes_read: b.bytes_read,
                    bytes_added: b.bytes_added,
                    duration_secs: b.duration_secs,
                })
                .collect(),
        }))
    }

    async fn trigger_backup(
        &self,
        request: Request<TriggerBackupRequest>,
    ) -> Result<Response<TriggerBackupReply>, Status> {
        let actor = self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        check_label("region", &req.region).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if req.source.is_empty() || req.source.len() > 128 {
            return Err(Status::invalid_argument(
                "source must be 1 to 128 characters",
            ));
        }
        let level = match req.level.as_str() {
            "" | "incremental" => Level::Incremental,
            "full" => Level::Full,
            other => {
                return Err(Status::invalid_argument(format!(
                    "level {other:?} is not \"full\" or \"incremental\""
                )))
            }
        };
        let lead = self.leader_only().await?;
        // Refuse at once what no agent can run, rather than queue it forever.
        let agents: Vec<AgentRecord> = self.decode_all(&format!("agents/{}/", req.region)).await?;
        if !agents.iter().any(|a| a.sources.contains(&req.source)) {
            let serving: Vec<String> = agents
                .iter()
                .map(|a| format!("{} serves {}", a.agent_id, a.sources.join(",")))
                .collect();
            return Err(Status::failed_precondition(format!(
                "no connected agent of region {} serves source {:?} ({})",
                req.region,
                req.source,
                if serving.is_empty() {
                    "no agent of that region is connected".to_string()
                } else {
                    serving.join("; ")
                }
            )));
        }
        let mut job = JobRecord {
            level: Some(level),
            epoch: lead.fence().epoch,
            ..JobRecord::pending(
                format!(
                    "manual-{}-{:06x}",
                    now_ms(),
                    rand::random::<u32>() & 0xff_ffff
                ),
                req.region,
                req.source,
                JobKind::Backup,
            )
        };
        job.enter(
            JobState::Pending,
            lead.fence().epoch,
            format!("triggered by {actor}"),
        );
        let message = job_message(&job);
        self.coord
            .create_job(&lead, job, &actor)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(TriggerBackupReply { job: Some(message) }))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobReply>, Status> {
        let actor = self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        if req.job_id.is_empty() || req.job_id.len() > 256 || req.reason.len() > 1024 {
            return Err(Status::invalid_argument(
                "job_id must be 1 to 256 characters and reason at most 1024",
            ));
        }
        let lead = self.leader_only().await?;
        let reason = if req.reason.is_empty() {
            "no reason given"
        } else {
            req.reason.as_str()
        };
        match self
            .coord
            .cancel_job(&lead, &req.job_id, &actor, reason)
            .await
        {
            Ok(job) => Ok(Response::new(CancelJobReply {
                job: Some(job_message(&job)),
            })),
            Err(ActError::Invalid(why)) => match self.job(&req.job_id).await? {
                Some(job) => Err(Status::failed_precondition(format!(
                    "{why}; it is {}",
                    job.state.as_str()
                ))),
                None => Err(Status::not_found(format!("no job {:?}", req.job_id))),
            },
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn revoke_certificate(
        &self,
        request: Request<RevokeCertificateRequest>,
    ) -> Result<Response<RevokeCertificateReply>, Status> {
        let actor = self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        let fingerprint = normalise(&req.fingerprint).map_err(Status::invalid_argument)?;
        if req.reason.len() > 1024 {
            return Err(Status::invalid_argument(
                "reason must be at most 1024 characters",
            ));
        }
        let lead = self.leader_only().await?;
        let (revoked, newly) = self
            .coord
            .revoke(&lead, &fingerprint, &actor, &req.reason)
            .await?;
        Ok(Response::new(RevokeCertificateReply {
            revoked: Some(revoked_message(revoked)),
            newly,
        }))
    }

    async fn list_revoked(
        &self,
        request: Request<ListRevokedRequest>,
    ) -> Result<Response<ListRevokedReply>, Status> {
        self.coord.operator_auth.check(&request)?;
        // From the store, not the cache: a replica that just started has
        // not read it yet.
        self.coord
            .revoked
            .refresh(self.coord.store.as_ref())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let revoked = self
            .coord
            .revoked
            .list()
            .into_iter()
            .map(revoked_message)
            .collect();
        Ok(Response::new(ListRevokedReply { revoked }))
    }

    async fn get_replication(
        &self,
        request: Request<GetReplicationRequest>,
    ) -> Result<Response<GetReplicationReply>, Status> {
        self.coord.operator_auth.check(&request)?;
        let wanted = request.into_inner().service;
        if !wanted.is_empty() && !self.coord.config.services.iter().any(|s| s.name == wanted) {
            return Err(Status::not_found(format!(
                "no service {wanted:?} in the topology; [[services]] in coordinator.toml lists them"
            )));
        }
        let mut services = crate::replication::stored(&self.coord).await?;
        if !wanted.is_empty() {
            services.retain(|s| s.service == wanted);
        }
        Ok(Response::new(GetReplicationReply {
            services,
            interval_ms: self.coord.config.replication.interval.as_millis() as i64,
        }))
    }

    async fn plan_failover(
        &self,
        request: Request<FailoverRequest>,
    ) -> Result<Response<FailoverPlan>, Status> {
        self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        let lead = self.leader_only().await?;
        let (service, from) = crate::failover::start::target(&self.coord, &req).await?;
        let assessed =
            crate::failover::start::assess(&self.coord, &lead, service, &from, &req).await;
        Ok(Response::new(assessed.plan))
    }

    async fn start_failover(
        &self,
        request: Request<FailoverRequest>,
    ) -> Result<Response<Failover>, Status> {
        let actor = self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        let lead = self.leader_only().await?;
        let f = crate::failover::start::start(&self.coord, &lead, &req, &actor).await?;
        Ok(Response::new(crate::api::failovers::to_proto(&f)))
    }

    async fn get_failover(
        &self,
        request: Request<GetFailoverRequest>,
    ) -> Result<Response<Failover>, Status> {
        self.coord.operator_auth.check(&request)?;
        let id = request.into_inner().id;
        let found = if id.is_empty() {
            crate::failover::stored::all(&self.coord)
                .await?
                .into_iter()
                .next()
        } else {
            crate::failover::stored::load(&self.coord, &id)
                .await?
                .map(|(f, _)| f)
        };
        found
            .map(|f| Response::new(crate::api::failovers::to_proto(&f)))
            .ok_or_else(|| {
                Status::not_found(if id.is_empty() {
                    "no failover has been run".to_string()
                } else {
                    format!("no failover {id}: `seawall failover list` names them")
                })
            })
    }

    async fn list_failovers(
        &self,
        request: Request<ListFailoversRequest>,
    ) -> Result<Response<ListFailoversReply>, Status> {
        self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        let mut failovers: Vec<Failover> = crate::failover::stored::all(&self.coord)
            .await?
            .into_iter()
            .filter(|f| req.service.is_empty() || f.service == req.service)
            .map(|f| crate::api::failovers::to_proto(&f))
            .collect();
        failovers.truncate(if req.limit == 0 {
            50
        } else {
            req.limit as usize
        });
        Ok(Response::new(ListFailoversReply { failovers }))
    }

    async fn abort_failover(
        &self,
        request: Request<AbortFailoverRequest>,
    ) -> Result<Response<Failover>, Status> {
        let actor = self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        let lead = self.leader_only().await?;
        loop {
            let Some((mut f, rev)) = crate::failover::stored::load(&self.coord, &req.id).await?
            else {
                return Err(Status::not_found(format!("no failover {}", req.id)));
            };
            if f.is_final() {
                return Err(Status::failed_precondition(format!(
                    "failover {} is {} already",
                    f.id,
                    f.state.name()
                )));
            }
            f.abort_requested = true;
            f.error = format!(
                "abort requested by {actor}{}",
                if req.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", req.reason)
                }
            );
            let value = serde_json::to_vec(&f).map_err(|e| Status::internal(e.to_string()))?;
            match self
                .coord
                .store
                .put(
                    lead.fence(),
                    &crate::model::failover::key(&f.id),
                    &value,
                    Some(rev),
                )
                .await
            {
                Ok(_) => {
                    self.coord
                        .audit(&lead, &actor, format!("failover {}: {}", f.id, f.error))
                        .await;
                    self.coord.failover_wake.notify_one();
                    return Ok(Response::new(crate::api::failovers::to_proto(&f)));
                }
                // The driver wrote a step in between: read it again.
                Err(crate::model::error::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn start_drill(&self, request: Request<DrillRequest>) -> Result<Response<Drill>, Status> {
        let actor = self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        let lead = self.leader_only().await?;
        let d = crate::drills::launch::launch(&self.coord, &lead, &req, None, &actor).await?;
        Ok(Response::new(d))
    }

    async fn get_drill(
        &self,
        request: Request<GetDrillRequest>,
    ) -> Result<Response<Drill>, Status> {
        self.coord.operator_auth.check(&request)?;
        let id = request.into_inner().id;
        let found = if id.is_empty() {
            crate::drills::journal::all(&self.coord)
                .await?
                .into_iter()
                .next()
        } else {
            crate::drills::journal::load(&self.coord, &id)
                .await?
                .map(|(d, _)| d)
        };
        found.map(Response::new).ok_or_else(|| {
            Status::not_found(if id.is_empty() {
                "no drill has been run".to_string()
            } else {
                format!("no drill {id}: `seawall drill list` names them")
            })
        })
    }

    async fn list_drills(
        &self,
        request: Request<ListDrillsRequest>,
    ) -> Result<Response<ListDrillsReply>, Status> {
        self.coord.operator_auth.check(&request)?;
        let req = request.into_inner();
        let mut drills: Vec<Drill> = crate::drills::journal::all(&self.coord)
            .await?
            .into_iter()
            .filter(|d| req.service.is_empty() || d.service == req.service)
            .collect();
        drills.truncate(if req.limit == 0 {
            50
        } else {
            req.limit as usize
        });
        Ok(Response::new(ListDrillsReply { drills }))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<JobStream>, Status> {
        self.coord.operator_auth.check(&request)?;
        let id = request.into_inner().job_id;
        if id.is_empty() || id.len() > 256 {
            return Err(Status::invalid_argument(
                "job_id must be 1 to 256 characters",
            ));
        }
        let Some(first) = self.job(&id).await? else {
            return Err(Status::not_found(format!("no job {id:?}")));
        };
        let store = self.coord.store.clone();
        let stream = async_stream_jobs(store, id, first);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The job now, then at every change until it is final.
fn async_stream_jobs(
    store: Arc<dyn crate::store::StateStore>,
    id: String,
    first: JobRecord,
) -> impl Stream<Item = Result<Job, Status>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut last = first.clone();
        if tx.send(Ok(job_message(&first))).await.is_err() || first.state.is_final() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = match store.get(&crate::model::records::job_key(&id)).await {
                Ok(Some(e)) => serde_json::from_slice::<JobRecord>(&e.value).ok(),
                Ok(None) => None,
                Err(e) => {
                    let _ = tx.send(Err(store_failed(e))).await;
                    return;
                }
            };
            let Some(now) = now else { return };
            if now != last {
                if tx.send(Ok(job_message(&now))).await.is_err() {
                    return;
                }
                if now.state.is_final() {
                    return;
                }
                last = now;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
