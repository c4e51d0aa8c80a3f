//! The job state machine: a job is created once per id, saved with
//! compare-and-set on its revision, and settled by its agent's result (a
//! retry with backoff when one can help), by its timeout, or by an
//! operator's cancel. Every change is fenced by the lead's epoch.

use super::dispatch::kind_name;
use super::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::config::JobKind;
use crate::model::error::{ActError, StoreError};
use crate::model::records::{backup_key, job_key, BackupRecord, JobRecord, JobState};
use seawall_proto::v1::{
    coordinator_message, CancelJob, CoordinatorMessage, OperationResult, OperationStatus,
};

/// How long a job an agent was too busy to start first waits before it is
/// handed out again; doubled at each further refusal.
const BUSY_RETRY_MS: i64 = 2_000;
/// The longest such wait (a queue behind long jobs is not polled hard).
const BUSY_RETRY_MAX_MS: i64 = 60_000;

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

impl Coordinator {
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
            super::metrics::job_settled(kind_name(job.kind), "failed");
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
            super::metrics::job_warnings(kind_name(job.kind), u64::from(result.warning_count));
            "succeeded_with_warnings"
        } else {
            job.enter(JobState::Succeeded, epoch, "succeeded");
            "succeeded"
        };
        super::metrics::job_settled(kind_name(job.kind), outcome);
        super::metrics::job_duration(kind_name(job.kind), result.duration_secs);
        if job.kind == JobKind::Mirror {
            super::metrics::mirror_succeeded(&job.region, &job.source, now_ms());
        }
        if let Some(seawall_proto::v1::operation_result::Output::SnapshotCopy(c)) = &result.output {
            super::metrics::snapshot_copied(
                &job.region,
                &job.source,
                &c.region,
                c.snapshot_time_unix_ms,
            );
            job.snapshot_id = Some(c.copy.clone());
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
        super::metrics::backup_succeeded(&record);
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
