//! Handing due jobs to the agents that serve them, as typed operations,
//! many at once; an agent too busy to read holds up no other.

use super::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::config::JobKind;
use crate::model::records::{JobRecord, JobState};
use futures_util::StreamExt;
use seawall_proto::v1::{
    coordinator_message, operation, AssignJob, BackupLevel, BackupOperation, CoordinatorMessage,
    MirrorOperation, Operation, RestoreDrillOperation, RetentionOperation, SnapshotCopyOperation,
    VerifyOperation,
};
use std::sync::Arc;
use std::time::Duration;

/// Assignments recorded and sent at once.
const DISPATCH_CONCURRENCY: usize = 64;

/// The operation a job asks of its agent: one arm per kind.
pub fn operation_for(job: &JobRecord) -> Operation {
    let kind = match job.kind {
        JobKind::Backup => operation::Kind::Backup(BackupOperation {
            source: job.source.clone(),
            level: match job.level {
                Some(crate::model::config::Level::Full) => BackupLevel::Full as i32,
                Some(crate::model::config::Level::Incremental) => BackupLevel::Incremental as i32,
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
                managed: part.as_ref().is_some_and(|d| d.managed),
                drill_id: part.map(|d| d.drill_id).unwrap_or_default(),
            })
        }
        JobKind::SnapshotCopy => operation::Kind::SnapshotCopy(SnapshotCopyOperation {
            source: job.source.clone(),
        }),
        JobKind::Verify | JobKind::Unspecified => {
            operation::Kind::Verify(VerifyOperation { read_data: false })
        }
    };
    Operation { kind: Some(kind) }
}

/// Kind as a metric label.
pub fn kind_name(kind: JobKind) -> &'static str {
    seawall_proto::kinds::name(kind)
}

impl Coordinator {
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
        session: &crate::fleet::registry::Session,
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
}

/// Starts the dispatcher of `lead`'s term: sends due jobs to agents and
/// fails jobs whose agent went silent.
pub fn start(coord: Arc<Coordinator>, lead: Arc<Lead>) {
    let (board, tree) = (coord.workers.clone(), lead.tree.clone());
    crate::fleet::workers::spawn_worker(&tree, &board, "dispatcher", move || {
        let (coord, lead) = (coord.clone(), lead.clone());
        async move {
            tokio::select! {
                _ = coord.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if !lead.leadership.is_valid() {
                return Ok(crate::fleet::workers::Next::Stop);
            }
            dispatch_once(&coord, &lead).await;
            Ok(crate::fleet::workers::Next::After(Duration::ZERO))
        }
    });
}

/// One dispatch pass, then the timeouts.
async fn dispatch_once(coord: &Coordinator, lead: &Lead) {
    let timeout_ms = coord.config.job_timeout.as_millis() as i64;
    {
        coord.dispatch(lead).await;
        let now = now_ms();
        let mut overdue: Vec<(String, String)> = Vec::new();
        if let Ok(active) = lead.active.lock() {
            for (j, _) in active.values() {
                if j.state == JobState::Running
                    && now - j.last_news_ms.or(j.started_ms).unwrap_or(now) > timeout_ms
                {
                    overdue.push((
                        j.job_id.clone(),
                        "no news from its agent within job_timeout".into(),
                    ));
                } else if j.state == JobState::Pending && now - j.not_before_ms > timeout_ms {
                    overdue.push((
                        j.job_id.clone(),
                        format!(
                            "no agent of region {} serving {} was connected within job_timeout",
                            j.region, j.source
                        ),
                    ));
                }
            }
        }
        for (job, why) in overdue {
            let _ = coord
                .job_failed(lead, &job, &super::AttemptFailure::transient(why))
                .await;
        }
    }
}
