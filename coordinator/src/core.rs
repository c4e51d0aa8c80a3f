//! The coordinator replica's shared state: configuration, store, connected
//! agents, and while it leads, the leadership and the active jobs. Every
//! state change goes through here, fenced by the leadership's epoch.

use crate::auth::OperatorAuth;
use crate::config::{CoordinatorConfig, JobKind};
use crate::records::{backup_key, job_key, now_ms, AuditEntry, BackupRecord, JobRecord, JobState};
use crate::registry::Registry;
use crate::store::{Fence, LeaderInfo, Leadership, StateStore, StoreError};
use futures_util::StreamExt;
use seawall_proto::v1::{
    coordinator_message, operation, AssignJob, BackupLevel, BackupOperation, CancelJob,
    CoordinatorMessage, MirrorOperation, Operation, OperationResult, OperationStatus,
    RestoreDrillOperation, RetentionOperation, VerifyOperation,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

/// Assignments recorded and sent at once.
const DISPATCH_CONCURRENCY: usize = 64;

/// How long a job an agent was too busy to start first waits before it is
/// handed out again; doubled at each further refusal.
const BUSY_RETRY_MS: i64 = 2_000;
/// The longest such wait (a queue behind long jobs is not polled hard).
const BUSY_RETRY_MAX_MS: i64 = 60_000;

/// What the leader holds while it leads.
pub struct Lead {
    /// The leadership; every action checks it first.
    pub leadership: Leadership,
    /// Jobs not yet final, with their store revisions.
    pub active: Mutex<HashMap<String, (JobRecord, i64)>>,
    /// This term's tasks (leader workers, agent sessions): cancelled and
    /// waited for when the lead is lost.
    pub tree: crate::workers::Tree,
}

impl Lead {
    /// The write fence.
    pub fn fence(&self) -> &Fence {
        &self.leadership.fence
    }

    /// The epoch, as sent to agents.
    pub fn epoch(&self) -> u64 {
        self.leadership.fence.epoch.max(0) as u64
    }
}

/// One coordinator replica.
pub struct Coordinator {
    /// Its configuration.
    pub config: CoordinatorConfig,
    /// Where state lives.
    pub store: Arc<dyn StateStore>,
    /// This replica as the election knows it.
    pub me: LeaderInfo,
    /// Connected agents (while leading).
    pub registry: Registry,
    /// Operator credentials check.
    pub operator_auth: OperatorAuth,
    /// Wakes the dispatcher.
    pub wake: Notify,
    /// Wakes the failover worker (a failover started or aborted).
    pub failover_wake: Notify,
    /// Wakes the drill worker (a drill started, a drill's job settled).
    pub drill_wake: Notify,
    /// Cancelled when the replica shuts down; every term's tree hangs on it.
    pub root: tokio_util::sync::CancellationToken,
    /// The leader workers' health.
    pub workers: crate::workers::Board,
    /// Certificates refused however valid their signature.
    pub revoked: Arc<crate::revocation::Revocations>,
    /// Replication probes awaiting their agents' answers.
    pub probes: crate::replication::ask::Pending<seawall_proto::v1::ProbeReply>,
    /// Failover actions awaiting their agents' answers.
    pub actions: crate::replication::ask::Pending<seawall_proto::v1::ActionReply>,
    lead: RwLock<Option<Arc<Lead>>>,
}

/// Why a leader-only action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// This replica does not lead (any more).
    #[error("this replica is not the leader")]
    NotLeader,
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// A record could not be encoded: nothing was written.
    #[error("a record could not be encoded, so nothing was written: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The one mapping from the coordinator's errors to gRPC statuses.
impl From<ActError> for tonic::Status {
    fn from(e: ActError) -> tonic::Status {
        match e {
            ActError::NotLeader => tonic::Status::failed_precondition(e.to_string()),
            ActError::Store(s) => s.into(),
            ActError::Invalid(m) => tonic::Status::invalid_argument(m),
            ActError::Encode(_) => tonic::Status::internal(e.to_string()),
        }
    }
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> tonic::Status {
        match e {
            StoreError::Fenced { .. } => tonic::Status::failed_precondition(e.to_string()),
            StoreError::Conflict { .. } => {
                tonic::Status::aborted(format!("{e}: another change landed first; try again"))
            }
            StoreError::Unavailable(_) => tonic::Status::unavailable(e.to_string()),
        }
    }
}

/// Why an attempt at a job failed, and whether another attempt can help.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFailure {
    /// What went wrong, in words.
    pub message: String,
    /// Its kind as the agent classified it ("wrong_key"), when known.
    pub kind: Option<String>,
    /// Whether a retry can succeed without a change by the operator.
    pub retryable: bool,
}

impl AttemptFailure {
    /// A failure the coordinator saw itself (a silent agent, a lost
    /// connection): worth another attempt.
    pub fn transient(message: impl Into<String>) -> AttemptFailure {
        AttemptFailure {
            message: message.into(),
            kind: None,
            retryable: true,
        }
    }

    /// The failure an agent reported.
    pub fn reported(r: &OperationResult) -> AttemptFailure {
        let kind = seawall_proto::v1::ErrorKind::try_from(r.error_kind)
            .ok()
            .filter(|k| *k != seawall_proto::v1::ErrorKind::Unspecified)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("ERROR_KIND_")
                    .to_lowercase()
            });
        AttemptFailure {
            message: if r.error.is_empty() {
                "the agent reported a failure without a message".into()
            } else {
                r.error.clone()
            },
            kind,
            retryable: r.retryable,
        }
    }
}

/// The operation a job asks of its agent: one arm per kind.
pub fn operation_for(job: &JobRecord) -> Operation {
    let kind = match job.kind {
        JobKind::Backup => operation::Kind::Backup(BackupOperation {
            source: job.source.clone(),
            level: match job.level {
                Some(crate::config::Level::Full) => BackupLevel::Full as i32,
                Some(crate::config::Level::Incremental) => BackupLevel::Incremental as i32,
                None => BackupLevel::Unspecified as i32,
            },
        }),
        JobKind::Retention => operation::Kind::Retention(RetentionOperation {
            source: job.source.clone(),
        }),
        JobKind::Mirror => operation::Kind::Mirror(MirrorOperation {
            name: job.source.clone(),
            prune: false,
        }),
        JobKind::RestoreDrill => {
            let part = job.drill.clone();
            operation::Kind::RestoreDrill(RestoreDrillOperation {
                source: job.source.clone(),
                point: part
                    .as_ref()
                    .map(|d| d.point.clone())
                    .unwrap_or_else(|| "latest".into()),
                check_file: part
                    .as_ref()
                    .and_then(|d| d.check_file.clone())
                    .unwrap_or_default(),
                deep: part.as_ref().is_some_and(|d| d.deep),
                drill_id: part.map(|d| d.drill_id).unwrap_or_default(),
            })
        }
        JobKind::Verify | JobKind::Unspecified => {
            operation::Kind::Verify(VerifyOperation { read_data: false })
        }
    };
    Operation { kind: Some(kind) }
}

impl Coordinator {
    /// A replica that does not lead yet.
    pub fn new(
        config: CoordinatorConfig,
        store: Arc<dyn StateStore>,
        token: Option<String>,
    ) -> Self {
        let me = LeaderInfo {
            id: config.id.clone(),
            address: config.advertised(),
            epoch: 0,
        };
        Coordinator {
            config,
            store,
            me,
            registry: Registry::default(),
            operator_auth: OperatorAuth::new(token),
            wake: Notify::new(),
            failover_wake: Notify::new(),
            drill_wake: Notify::new(),
            root: tokio_util::sync::CancellationToken::new(),
            workers: crate::workers::Board::default(),
            revoked: Arc::default(),
            probes: Default::default(),
            actions: Default::default(),
            lead: RwLock::new(None),
        }
    }

    /// The lead, while it is valid.
    pub fn lead(&self) -> Option<Arc<Lead>> {
        let lead = self.lead.read().ok()?.clone()?;
        lead.leadership.is_valid().then_some(lead)
    }

    /// Starts leading: loads the active jobs.
    pub async fn take_lead(&self, leadership: Leadership) -> Result<Arc<Lead>, StoreError> {
        let mut active = HashMap::new();
        for e in self.store.list("jobs/").await? {
            if let Ok(job) = serde_json::from_slice::<JobRecord>(&e.value) {
                if !job.state.is_final() {
                    active.insert(job.job_id.clone(), (job, e.revision));
                }
            }
        }
        // The RPO gauge starts from the stored records, not from the next
        // success: an alert must not go blind because a leader changed.
        for e in self.store.list("backups/").await? {
            if let Ok(b) = serde_json::from_slice::<BackupRecord>(&e.value) {
                crate::metrics::backup_seen(&b);
            }
        }
        self.workers.clear();
        let lead = Arc::new(Lead {
            leadership,
            active: Mutex::new(active),
            tree: crate::workers::Tree::child_of(&self.root),
        });
        if let Ok(mut slot) = self.lead.write() {
            *slot = Some(lead.clone());
        }
        Ok(lead)
    }

    /// Stops leading: forgets the lead and drops every agent session.
    pub fn step_down(&self) {
        if let Ok(mut slot) = self.lead.write() {
            *slot = None;
        }
        self.registry.clear();
    }

    /// An audit line's key and value, to write alone or beside a change.
    fn audit_line(
        &self,
        lead: &Lead,
        actor: &str,
        event: String,
    ) -> Result<(String, Vec<u8>), ActError> {
        let entry = AuditEntry {
            at_ms: now_ms(),
            epoch: lead.fence().epoch,
            replica: self.me.id.clone(),
            actor: actor.to_string(),
            event,
        };
        let key = format!("audit/{:013}-{:08x}", entry.at_ms, rand::random::<u32>());
        Ok((key, serde_json::to_vec(&entry)?))
    }

    /// Appends to the audit log (best effort: a failure is logged).
    pub async fn audit(&self, lead: &Lead, actor: &str, event: String) {
        let written = match self.audit_line(lead, actor, event) {
            Ok((key, value)) => self
                .store
                .put(lead.fence(), &key, &value, Some(0))
                .await
                .map(|_| ())
                .map_err(ActError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "audit entry not written");
        }
    }

    /// Records a certificate as revoked and applies it at once; false in
    /// the pair when it was revoked already.
    pub async fn revoke(
        &self,
        lead: &Lead,
        fingerprint: &str,
        actor: &str,
        reason: &str,
    ) -> Result<(crate::revocation::Revocation, bool), ActError> {
        use crate::revocation::{key, Revocation};
        let key = key(fingerprint);
        if let Some(e) = self.store.get(&key).await? {
            if let Ok(r) = serde_json::from_slice::<Revocation>(&e.value) {
                self.revoked.insert(r.clone());
                return Ok((r, false));
            }
        }
        let r = Revocation {
            fingerprint: fingerprint.to_string(),
            reason: if reason.is_empty() {
                "no reason given".into()
            } else {
                reason.to_string()
            },
            by: actor.to_string(),
            at_ms: now_ms(),
        };
        self.store
            .put_bound(lead.fence(), &key, &serde_json::to_vec(&r)?)
            .await?;
        self.revoked.insert(r.clone());
        self.audit(
            lead,
            actor,
            format!("revoked certificate {fingerprint}: {}", r.reason),
        )
        .await;
        Ok((r, true))
    }

    /// Creates a job unless one with its id exists; true when created.
    pub async fn create_job(
        &self,
        lead: &Lead,
        mut job: JobRecord,
        actor: &str,
    ) -> Result<bool, ActError> {
        if !lead.leadership.is_valid() {
            return Err(ActError::NotLeader);
        }
        job.epoch = lead.fence().epoch;
        let value = serde_json::to_vec(&job)?;
        let audit = self.audit_line(lead, actor, format!("created job {}", job.job_id))?;
        match self
            .store
            .put_with(
                lead.fence(),
                &job_key(&job.job_id),
                &value,
                Some(0),
                &[audit],
            )
            .await
        {
            Ok(rev) => {
                if let Ok(mut active) = lead.active.lock() {
                    active.insert(job.job_id.clone(), (job, rev));
                }
                self.wake.notify_one();
                Ok(true)
            }
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Cancels a schedule's older jobs still waiting for an agent: after an
    /// outage one run catches up, not one per slot that passed.
    pub async fn supersede(&self, lead: &Lead, schedule: &str, newest: &str) {
        let older: Vec<(JobRecord, i64)> = match lead.active.lock() {
            Ok(active) => active
                .values()
                .filter(|(j, _)| {
                    j.state == JobState::Pending
                        && j.schedule.as_deref() == Some(schedule)
                        && j.job_id != newest
                        && j.started_ms.is_none()
                })
                .cloned()
                .collect(),
            Err(_) => return,
        };
        for (mut job, rev) in older {
            job.enter(
                JobState::Cancelled,
                lead.fence().epoch,
                format!("superseded by {newest} before it could run"),
            );
            let _ = self.save_job(lead, job, rev).await;
        }
    }

    /// Writes a changed job with compare-and-set on its revision.
    pub async fn save_job(&self, lead: &Lead, job: JobRecord, rev: i64) -> Result<i64, ActError> {
        self.save_job_with(lead, job, rev, &[]).await
    }

    /// [`save_job`](Self::save_job), writing `extra` keys in the same
    /// transaction (a backup record with the success it records).
    pub async fn save_job_with(
        &self,
        lead: &Lead,
        job: JobRecord,
        rev: i64,
        extra: &[(String, Vec<u8>)],
    ) -> Result<i64, ActError> {
        if !lead.leadership.is_valid() {
            return Err(ActError::NotLeader);
        }
        let value = serde_json::to_vec(&job)?;
        let new_rev = self
            .store
            .put_with(
                lead.fence(),
                &job_key(&job.job_id),
                &value,
                Some(rev),
                extra,
            )
            .await?;
        if let Ok(mut active) = lead.active.lock() {
            if job.state.is_final() {
                active.remove(&job.job_id);
            } else {
                active.insert(job.job_id.clone(), (job, new_rev));
            }
        }
        Ok(new_rev)
    }

    /// Cancels an active job; a running one is stopped by its agent (whose
    /// result then finds the job settled). Returns the cancelled record.
    pub async fn cancel_job(
        &self,
        lead: &Lead,
        job_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<JobRecord, ActError> {
        let Some((mut job, rev)) = self.active_job(lead, job_id) else {
            return Err(ActError::Invalid(format!(
                "job {job_id:?} is not pending or running: only those can be cancelled"
            )));
        };
        let running_on = (job.state == JobState::Running)
            .then(|| job.agent_id.clone())
            .flatten();
        job.finished_ms = Some(now_ms());
        job.error = Some(format!("cancelled by {actor}: {reason}"));
        job.enter(
            JobState::Cancelled,
            lead.fence().epoch,
            format!("cancelled by {actor}: {reason}"),
        );
        self.save_job(lead, job.clone(), rev).await?;
        self.audit(lead, actor, format!("cancelled job {job_id}: {reason}"))
            .await;
        if let Some(session) = running_on.and_then(|a| self.registry.get(&job.region, &a)) {
            let cancel = CoordinatorMessage {
                epoch: lead.epoch(),
                body: Some(coordinator_message::Body::Cancel(CancelJob {
                    job_id: job_id.to_string(),
                })),
            };
            // Never wait on an agent that does not read its stream: the
            // job is cancelled in the store either way.
            if session.outbox.try_send(Ok(cancel)).is_err() {
                tracing::warn!(job = %job_id, agent = %session.agent_id, "cancellation not sent: the agent's stream is full or closed");
            }
        }
        Ok(job)
    }

    /// An active job.
    pub fn active_job(&self, lead: &Lead, job_id: &str) -> Option<(JobRecord, i64)> {
        lead.active.lock().ok()?.get(job_id).cloned()
    }

    /// Hands due pending jobs to agents; returns how many were sent.
    pub async fn dispatch(&self, lead: &Lead) -> usize {
        let now = now_ms();
        let due: Vec<(JobRecord, i64)> = match lead.active.lock() {
            Ok(active) => active
                .values()
                .filter(|(j, _)| j.state == JobState::Pending && j.not_before_ms <= now)
                .cloned()
                .collect(),
            Err(_) => return 0,
        };
        // Choose agents first (counting each choice), then record and send
        // the assignments concurrently: they are independent, and etcd
        // batches concurrent transactions.
        let mut plan = Vec::with_capacity(due.len());
        for (job, rev) in due {
            let session = match &job.target_agent {
                Some(agent) => self
                    .registry
                    .get(&job.region, agent)
                    .filter(|s| s.takes_jobs()),
                None => self.registry.pick(&job.region, &job.source),
            };
            let Some(session) = session else {
                continue;
            };
            session
                .running
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            plan.push((job, rev, session));
        }
        let sent = std::sync::atomic::AtomicUsize::new(0);
        futures_util::stream::iter(plan)
            .for_each_concurrent(DISPATCH_CONCURRENCY, |(job, rev, session)| {
                let sent = &sent;
                async move {
                    if self.assign(lead, job, rev, &session).await {
                        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        session
                            .running
                            .fetch_update(
                                std::sync::atomic::Ordering::Relaxed,
                                std::sync::atomic::Ordering::Relaxed,
                                |n| Some(n.saturating_sub(1)),
                            )
                            .ok();
                    }
                }
            })
            .await;
        sent.into_inner()
    }

    /// Records one assignment, then sends it; false when it was not sent.
    async fn assign(
        &self,
        lead: &Lead,
        mut job: JobRecord,
        rev: i64,
        session: &crate::registry::Session,
    ) -> bool {
        if !lead.leadership.is_valid() {
            return false;
        }
        job.agent_id = Some(session.agent_id.clone());
        job.attempt = job.attempt.max(1);
        job.started_ms = Some(now_ms());
        job.last_news_ms = Some(now_ms());
        job.epoch = lead.fence().epoch;
        job.enter(
            JobState::Running,
            lead.fence().epoch,
            format!("assigned to {} (attempt {})", session.agent_id, job.attempt),
        );
        let assign = CoordinatorMessage {
            epoch: lead.epoch(),
            body: Some(coordinator_message::Body::Assign(AssignJob {
                job_id: job.job_id.clone(),
                attempt: job.attempt,
                operation: Some(operation_for(&job)),
            })),
        };
        // A place in the agent's queue first, without waiting: an agent
        // that does not read its stream must not hold up dispatch to every
        // other agent. Its job stays pending for the next pass (or another
        // agent of the region).
        let Ok(slot) = session.outbox.try_reserve() else {
            tracing::warn!(job = %job.job_id, agent = %session.agent_id, "the agent's stream is full or closed: assignment deferred");
            return false;
        };
        // Record the assignment, then send it: a crash between the two
        // leaves a running job the timeout or the agent's hello settles,
        // never a job run twice.
        let job_id = job.job_id.clone();
        if let Err(e) = self.save_job(lead, job, rev).await {
            tracing::warn!(job = %job_id, error = %e, "assignment not recorded");
            return false;
        }
        if !lead.leadership.is_valid() {
            return false;
        }
        slot.send(Ok(assign));
        true
    }

    /// Settles a job after a failed attempt: retried after backoff when a
    /// retry can help and attempts are left, else failed.
    pub async fn job_failed(
        &self,
        lead: &Lead,
        job_id: &str,
        failure: &AttemptFailure,
    ) -> Result<(), ActError> {
        let Some((mut job, rev)) = self.active_job(lead, job_id) else {
            return Ok(());
        };
        let epoch = lead.fence().epoch;
        let error = &failure.message;
        job.error = Some(error.clone());
        job.error_kind = failure.kind.clone();
        job.finished_ms = Some(now_ms());
        let kind = failure
            .kind
            .as_deref()
            .map(|k| format!(" [{k}]"))
            .unwrap_or_default();
        if failure.kind.as_deref() == Some("busy") {
            // Not started, so not an attempt: handed out again shortly, to
            // this agent once it has room or to another of the region.
            let delay = (BUSY_RETRY_MS << job.busy_refusals.min(5)).min(BUSY_RETRY_MAX_MS);
            job.busy_refusals = job.busy_refusals.saturating_add(1);
            job.not_before_ms = now_ms() + delay;
            job.enter(
                JobState::Pending,
                epoch,
                format!("the agent was busy ({error}); handed out again in {delay} ms"),
            );
        } else if failure.retryable && job.attempt <= job.retries {
            let delay = job
                .retry_backoff_ms
                .saturating_mul(1 << (job.attempt - 1).min(16));
            job.not_before_ms = now_ms() + delay;
            job.attempt += 1;
            // The agent stays named until another is assigned: a result it
            // sends late (after a timeout) is a real one and is recorded,
            // not dropped as a stranger's.
            job.enter(
                JobState::Pending,
                epoch,
                format!(
                    "attempt failed{kind} ({error}); retry {} in {} ms",
                    job.attempt, delay
                ),
            );
        } else {
            let why = if failure.retryable {
                "no attempt left"
            } else {
                "not retried: a retry cannot help until the cause is fixed"
            };
            job.enter(
                JobState::Failed,
                epoch,
                format!("failed{kind}: {error} ({why})"),
            );
            metrics::counter!("seawall_jobs_total", "kind" => kind_name(job.kind), "outcome" => "failed").increment(1);
        }
        self.save_job(lead, job, rev).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Records a success (with or without warnings) and, for a backup, its
    /// backup record and, when asked, a retention job.
    pub async fn job_succeeded(
        &self,
        lead: &Lead,
        job_id: &str,
        result: &OperationResult,
    ) -> Result<(), ActError> {
        let Some((mut job, rev)) = self.active_job(lead, job_id) else {
            return Ok(());
        };
        let epoch = lead.fence().epoch;
        let backup = match &result.output {
            Some(seawall_proto::v1::operation_result::Output::Backup(b)) => Some(b.clone()),
            _ => None,
        };
        job.finished_ms = Some(now_ms());
        if let Some(b) = &backup {
            job.snapshot_id = (!b.snapshot_id.is_empty()).then(|| b.snapshot_id.clone());
            job.bytes_done = b.bytes_read;
            job.bytes_added = b.bytes_added;
        }
        job.error = None;
        job.error_kind = None;
        job.warnings = result.warnings.clone();
        job.warning_count = result.warning_count;
        let warned = result.status == OperationStatus::SucceededWithWarnings as i32;
        let outcome = if warned {
            job.enter(
                JobState::SucceededWithWarnings,
                epoch,
                format!(
                    "succeeded with {} warning(s), the first: {}",
                    result.warning_count,
                    result.warnings.first().map(String::as_str).unwrap_or("")
                ),
            );
            metrics::counter!("seawall_job_warnings_total", "kind" => kind_name(job.kind))
                .increment(u64::from(result.warning_count));
            "succeeded_with_warnings"
        } else {
            job.enter(JobState::Succeeded, epoch, "succeeded");
            "succeeded"
        };
        let labels = [("kind", kind_name(job.kind)), ("outcome", outcome)];
        metrics::counter!("seawall_jobs_total", &labels).increment(1);
        metrics::histogram!("seawall_job_duration_seconds", "kind" => kind_name(job.kind))
            .record(result.duration_secs);
        if job.kind == JobKind::Mirror {
            crate::metrics::mirror_succeeded(&job.region, &job.source, now_ms());
        }
        let finished = job.clone();
        let Some(backup) = backup.filter(|_| finished.kind == JobKind::Backup) else {
            self.save_job(lead, job, rev).await?;
            self.wake.notify_one();
            return Ok(());
        };
        // The success and its backup record land together or not at all.
        let record = BackupRecord {
            region: finished.region.clone(),
            source: finished.source.clone(),
            snapshot_id: backup.snapshot_id.clone(),
            job_id: finished.job_id.clone(),
            finished_ms: if result.finished_unix_ms > 0 {
                result.finished_unix_ms
            } else {
                now_ms()
            },
            bytes_read: backup.bytes_read,
            bytes_added: backup.bytes_added,
            duration_secs: result.duration_secs,
        };
        let value = serde_json::to_vec(&record)?;
        self.save_job_with(lead, job, rev, &[(backup_key(&record), value)])
            .await?;
        crate::metrics::backup_succeeded(&record);
        if finished.retention_after {
            let mut retention = JobRecord {
                schedule: finished.schedule.clone(),
                retries: finished.retries,
                retry_backoff_ms: finished.retry_backoff_ms,
                ..JobRecord::pending(
                    format!("{}-retention", finished.job_id),
                    finished.region.clone(),
                    finished.source.clone(),
                    JobKind::Retention,
                )
            };
            retention.enter(
                JobState::Pending,
                epoch,
                format!("after {}", finished.job_id),
            );
            self.create_job(lead, retention, "scheduler").await?;
        }
        self.wake.notify_one();
        Ok(())
    }
}

/// Kind as a metric label.
pub fn kind_name(kind: JobKind) -> &'static str {
    seawall_proto::kinds::name(kind)
}

#[cfg(test)]
mod tests {
    // The coordinator core on the embedded store with paused time: dispatch,
    // retries by error kind, a new leader picking up the jobs, and a lost lead
    // stopping every worker. The store is wrapped to count write attempts and
    // to hand out a leadership the test can take away.

    use super::{AttemptFailure, Coordinator};
    use crate::config::{CoordinatorConfig, JobKind, Level};
    use crate::records::{JobRecord, JobState};
    use crate::registry::{next_session_id, Session};
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{Entry, Fence, LeaderInfo, Leadership, StateStore, StoreResult};
    use async_trait::async_trait;
    use seawall_proto::v1::{coordinator_message, operation, BackupLevel};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::watch;

    /// The embedded store, counting writes, with a leadership the test controls.
    struct TestStore {
        inner: EmbeddedStore,
        writes: AtomicUsize,
        campaigns: AtomicUsize,
        lost: Mutex<Option<watch::Receiver<bool>>>,
    }

    impl TestStore {
        fn writes(&self) -> usize {
            self.writes.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl StateStore for TestStore {
        fn kind(&self) -> &'static str {
            "embedded"
        }
        async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> StoreResult<Vec<Entry>> {
            self.inner.list(prefix).await
        }
        async fn put_with(
            &self,
            fence: &Fence,
            key: &str,
            value: &[u8],
            expected: Option<i64>,
            extra: &[(String, Vec<u8>)],
        ) -> StoreResult<i64> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner
                .put_with(fence, key, value, expected, extra)
                .await
        }
        async fn put_bound(&self, fence: &Fence, key: &str, value: &[u8]) -> StoreResult<i64> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.put_bound(fence, key, value).await
        }
        async fn delete(&self, fence: &Fence, key: &str) -> StoreResult<()> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.delete(fence, key).await
        }
        async fn campaign(&self, me: &LeaderInfo) -> StoreResult<Leadership> {
            // The first campaign wins with a leadership the test can take
            // away; later ones wait for ever (another replica leads).
            if self.campaigns.fetch_add(1, Ordering::SeqCst) > 0 {
                std::future::pending::<()>().await;
            }
            let won = self.inner.campaign(me).await?;
            let lost = self
                .lost
                .lock()
                .unwrap()
                .take()
                .unwrap_or_else(|| watch::channel(false).1);
            let (_keep, deadline) =
                watch::channel(tokio::time::Instant::now() + Duration::from_secs(365 * 86400));
            std::mem::forget(_keep);
            Ok(Leadership::new(won.fence.clone(), lost, deadline))
        }
        async fn resign(&self, leadership: &Leadership) -> StoreResult<()> {
            self.inner.resign(leadership).await
        }
        async fn leader(&self) -> StoreResult<Option<LeaderInfo>> {
            self.inner.leader().await
        }
        fn lease_ttl(&self) -> Duration {
            self.inner.lease_ttl()
        }
    }

    fn config(schedules: &str) -> CoordinatorConfig {
        toml::from_str(&format!(
            "id = \"c1\"\nlisten = \"127.0.0.1:7443\"\n[tls]\nca = \"ca.pem\"\ncert = \"c1.pem\"\nkey = \"c1.key\"\n{schedules}"
        ))
        .unwrap()
    }

    struct Setup {
        coord: Arc<Coordinator>,
        store: Arc<TestStore>,
        lose: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    fn setup(schedules: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (lose, lost) = watch::channel(false);
        let store = Arc::new(TestStore {
            inner: EmbeddedStore::open(&dir.path().join("state.redb")).unwrap(),
            writes: AtomicUsize::new(0),
            campaigns: AtomicUsize::new(0),
            lost: Mutex::new(Some(lost)),
        });
        let coord = Arc::new(Coordinator::new(config(schedules), store.clone(), None));
        Setup {
            coord,
            store,
            lose,
            _dir: dir,
        }
    }

    /// The setup's coordinator, leading.
    async fn leading(s: &Setup) -> Arc<super::Lead> {
        let leadership = s.store.campaign(&s.coord.me).await.unwrap();
        s.coord.take_lead(leadership).await.unwrap()
    }

    /// A connected agent of `region` serving `source`, and its command stream.
    fn agent(
        coord: &Coordinator,
        region: &str,
        source: &str,
    ) -> tokio::sync::mpsc::Receiver<Result<seawall_proto::v1::CoordinatorMessage, tonic::Status>>
    {
        agent_with(coord, &format!("{region}-agent"), region, source, 16).1
    }

    fn backup_job(id: &str) -> JobRecord {
        JobRecord {
            level: Some(Level::Full),
            retries: 2,
            retry_backoff_ms: 1000,
            ..JobRecord::pending(id.into(), "eu".into(), "app".into(), JobKind::Backup)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn losing_the_lead_stops_every_worker_within_a_second_and_nothing_more_is_written() {
        // A schedule firing every second keeps the scheduler writing.
        let s = setup(
            "[[schedules]]\nname = \"often\"\nregion = \"eu\"\nsource = \"app\"\ncron = \"* * * * * *\"\n",
        );
        let leading = tokio::spawn(crate::server::lead_loop(s.coord.clone()));
        // The embedded store's I/O runs on blocking threads, which paused time
        // does not wait for: poll for the scheduler's writes instead.
        for _ in 0..600 {
            if s.store.writes() > 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(s.coord.lead().is_some());
        let names: Vec<String> = s
            .coord
            .workers
            .snapshot()
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(names, ["dispatcher", "history", "scheduler"]);
        assert!(s.coord.workers.snapshot().iter().all(|w| w.running));
        assert!(s.store.writes() > 2, "the scheduler wrote nothing");

        s.lose.send(true).unwrap();
        let lost_at = tokio::time::Instant::now();
        while s.coord.workers.any_running() {
            assert!(
                lost_at.elapsed() < Duration::from_secs(1),
                "workers still running: {:?}",
                s.coord.workers.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(s.coord.lead().is_none());
        let written = s.store.writes();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            s.store.writes(),
            written,
            "a write was attempted after the lead was lost"
        );
        leading.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_is_dispatched_as_a_typed_operation_and_retried_only_when_a_retry_can_help() {
        let s = setup("");
        let lead = leading(&s).await;
        // No agent of the region: nothing is sent.
        s.coord
            .create_job(&lead, backup_job("j1"), "test")
            .await
            .unwrap();
        assert_eq!(s.coord.dispatch(&lead).await, 0);

        let mut commands = agent(&s.coord, "eu", "app");
        assert_eq!(s.coord.dispatch(&lead).await, 1);
        let sent = commands.recv().await.unwrap().unwrap();
        let Some(coordinator_message::Body::Assign(assign)) = sent.body else {
            panic!("not an assignment: {sent:?}")
        };
        let Some(operation::Kind::Backup(b)) = assign.operation.and_then(|o| o.kind) else {
            panic!("not a backup operation")
        };
        assert_eq!(
            (b.source.as_str(), b.level),
            ("app", BackupLevel::Full as i32)
        );
        assert_eq!(sent.epoch, lead.epoch());

        // An unreachable bucket: retried after the backoff, as attempt 2.
        let unreachable = AttemptFailure {
            message: "bucket unreachable".into(),
            kind: Some("unreachable".into()),
            retryable: true,
        };
        s.coord.job_failed(&lead, "j1", &unreachable).await.unwrap();
        let (job, _) = s.coord.active_job(&lead, "j1").unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Pending, 2));
        assert_eq!(
            s.coord.dispatch(&lead).await,
            0,
            "dispatched before its backoff"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(s.coord.dispatch(&lead).await, 1);

        // A wrong password: failed at once, attempts left or not.
        let wrong_key = AttemptFailure {
            message: "the password does not open the repository".into(),
            kind: Some("wrong_key".into()),
            retryable: false,
        };
        s.coord.job_failed(&lead, "j1", &wrong_key).await.unwrap();
        assert!(s.coord.active_job(&lead, "j1").is_none());
        let stored: JobRecord =
            serde_json::from_slice(&s.store.get("jobs/j1").await.unwrap().unwrap().value).unwrap();
        assert_eq!(stored.state, JobState::Failed);
        assert_eq!(stored.attempt, 2);
        assert_eq!(stored.error_kind.as_deref(), Some("wrong_key"));
        assert!(
            stored.history.last().unwrap().note.contains("not retried"),
            "{:?}",
            stored.history
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_takes_up_the_jobs_its_predecessor_left() {
        let s = setup("");
        let lead = leading(&s).await;
        s.coord
            .create_job(&lead, backup_job("left"), "test")
            .await
            .unwrap();
        let _commands = agent(&s.coord, "eu", "app");
        assert_eq!(s.coord.dispatch(&lead).await, 1);
        s.coord.step_down();

        // Another replica over the same store finds the running job and, when
        // its agent's hello does not list it, retries it.
        let next = Coordinator::new(config(""), s.store.clone(), None);
        let won = s.store.inner.campaign(&next.me).await.unwrap();
        let lead2 = next.take_lead(won).await.unwrap();
        assert!(lead2.epoch() > lead.epoch());
        let (job, _) = next
            .active_job(&lead2, "left")
            .expect("the job was not taken up");
        assert_eq!(job.state, JobState::Running);
        next.job_failed(
            &lead2,
            "left",
            &AttemptFailure::transient("the agent restarted while running it"),
        )
        .await
        .unwrap();
        let (job, _) = next.active_job(&lead2, "left").unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Pending, 2));
    }

    /// An agent session with a command queue of `capacity`, and its receiver.
    fn agent_with(
        coord: &Coordinator,
        name: &str,
        region: &str,
        source: &str,
        capacity: usize,
    ) -> (
        Arc<Session>,
        tokio::sync::mpsc::Receiver<Result<seawall_proto::v1::CoordinatorMessage, tonic::Status>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let session = Arc::new(Session {
            session_id: next_session_id(),
            agent_id: name.into(),
            region: region.into(),
            sources: vec![source.into()],
            version: "test".into(),
            hostname: "h".into(),
            connected_ms: 0,
            last_heartbeat_ms: 0.into(),
            running: 0.into(),
            max_jobs: 0,
            outbox: tx,
            fingerprint: String::new(),
            cert_expires_ms: i64::MAX,
            ended: Default::default(),
            ready: true.into(),
        });
        coord.registry.insert(session.clone());
        (session, rx)
    }

    fn job_in(id: &str, region: &str) -> JobRecord {
        JobRecord::pending(id.into(), region.into(), "app".into(), JobKind::Backup)
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_that_reads_nothing_holds_up_no_other_regions_dispatch() {
        let s = setup("");
        let lead = leading(&s).await;
        // eu's agent has a queue of one, already full, and never reads it.
        let (stuck, _never_read) = agent_with(&s.coord, "db-1", "eu", "app", 1);
        stuck.outbox.try_send(Err(tonic::Status::ok(""))).unwrap();
        let (_us, mut us_commands) = agent_with(&s.coord, "db-2", "us", "app", 8);
        s.coord
            .create_job(&lead, job_in("eu-job", "eu"), "test")
            .await
            .unwrap();
        s.coord
            .create_job(&lead, job_in("us-job", "us"), "test")
            .await
            .unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(2), s.coord.dispatch(&lead))
            .await
            .expect("dispatch waited on the stuck agent");
        assert_eq!(sent, 1);
        assert!(us_commands.try_recv().is_ok());
        // The stuck agent's job was not recorded as running: it waits.
        let (eu, _) = s.coord.active_job(&lead, "eu-job").unwrap();
        assert_eq!(eu.state, JobState::Pending);
    }

    #[tokio::test(start_paused = true)]
    async fn agents_of_the_same_name_in_two_regions_keep_their_own_jobs() {
        let s = setup("");
        let lead = leading(&s).await;
        let (eu, _eu_rx) = agent_with(&s.coord, "db-1", "eu", "app", 8);
        let (us, _us_rx) = agent_with(&s.coord, "db-1", "us", "app", 8);
        assert_eq!(s.coord.registry.len(), 2, "one replaced the other");
        let job = JobRecord {
            retries: 2,
            ..job_in("eu-job", "eu")
        };
        s.coord.create_job(&lead, job, "test").await.unwrap();
        assert_eq!(s.coord.dispatch(&lead).await, 1);
        let (job, _) = s.coord.active_job(&lead, "eu-job").unwrap();
        assert_eq!(job.state, JobState::Running);

        // us/db-1 refuses eu/db-1's job, with a huge reason: ignored.
        let refusal = |reason: String| seawall_proto::v1::AgentMessage {
            body: Some(seawall_proto::v1::agent_message::Body::Refused(
                seawall_proto::v1::CommandRefused {
                    job_id: "eu-job".into(),
                    epoch: 1,
                    newest_epoch: 0,
                    reason,
                },
            )),
        };
        let written = s.store.writes();
        crate::api::agents::handle(&s.coord, &lead, &us, refusal("x".repeat(1 << 20))).await;
        assert_eq!(
            s.store.writes(),
            written,
            "a foreign refusal wrote something"
        );
        let (job, _) = s.coord.active_job(&lead, "eu-job").unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Running, 1));

        // Its own agent's refusal counts, its reason capped in the audit log.
        crate::api::agents::handle(&s.coord, &lead, &eu, refusal("y".repeat(1 << 20))).await;
        let (job, _) = s.coord.active_job(&lead, "eu-job").unwrap();
        assert_eq!(job.state, JobState::Pending);
        let longest = s
            .store
            .list("audit/")
            .await
            .unwrap()
            .iter()
            .map(|e| e.value.len())
            .max()
            .unwrap();
        assert!(longest < 2048, "an audit line of {longest} bytes");
        assert!(job.error.unwrap().len() < 2048);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_result_after_a_timeout_is_recorded_not_dropped() {
        let s = setup("");
        let lead = leading(&s).await;
        let (eu, _rx) = agent_with(&s.coord, "db-1", "eu", "app", 8);
        let job = JobRecord {
            retries: 2,
            ..job_in("slow", "eu")
        };
        s.coord.create_job(&lead, job, "test").await.unwrap();
        assert_eq!(s.coord.dispatch(&lead).await, 1);
        // The leader gave up waiting and queued a retry...
        s.coord
            .job_failed(
                &lead,
                "slow",
                &AttemptFailure::transient("no news within job_timeout"),
            )
            .await
            .unwrap();
        // ...when the agent's real result arrives.
        let result = seawall_proto::v1::AgentMessage {
            body: Some(seawall_proto::v1::agent_message::Body::Result(
                seawall_proto::v1::OperationResult {
                    job_id: "slow".into(),
                    epoch: lead.epoch(),
                    status: seawall_proto::v1::OperationStatus::Succeeded as i32,
                    output: Some(seawall_proto::v1::operation_result::Output::Backup(
                        seawall_proto::v1::BackupOutput {
                            snapshot_id: "ab".repeat(32),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
            )),
        };
        crate::api::agents::handle(&s.coord, &lead, &eu, result).await;
        assert!(
            s.coord.active_job(&lead, "slow").is_none(),
            "the result was dropped"
        );
        let stored: JobRecord =
            serde_json::from_slice(&s.store.get("jobs/slow").await.unwrap().unwrap().value)
                .unwrap();
        assert_eq!(stored.state, JobState::Succeeded);
        assert_eq!(s.store.list("backups/").await.unwrap().len(), 1);
    }
}
