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
    CoordinatorMessage, Operation, OperationResult, OperationStatus, RetentionOperation,
    VerifyOperation,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Notify;

/// Assignments recorded and sent at once.
const DISPATCH_CONCURRENCY: usize = 64;

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
    /// Cancelled when the replica shuts down; every term's tree hangs on it.
    pub root: tokio_util::sync::CancellationToken,
    /// The leader workers' health.
    pub workers: crate::workers::Board,
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
            root: tokio_util::sync::CancellationToken::new(),
            workers: crate::workers::Board::default(),
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
            let Some(session) = self.registry.pick(&job.region, &job.source) else {
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
        if failure.retryable && job.attempt <= job.retries {
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
