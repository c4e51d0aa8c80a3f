//! The engine's operation outcome in the contract's terms, as the agent
//! reports it to the leader.

use crate::engine::operation::{OperationOutcome, Output, Status};
use seawall_common::ErrorKind;
use seawall_proto::v1::{
    operation_result, BackupOutput, DrillPhase, ErrorKind as WireKind, MirrorOutput,
    OperationResult, OperationStatus, RestoreDrillOutput, RetentionOutput, SnapshotCopyOutput,
    VerifyOutput,
};

/// Why a job was not started.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// What kind of problem.
    pub kind: ErrorKind,
    /// Whether another try (later, or on another agent) can succeed.
    pub retryable: bool,
    /// What is wrong and what to do.
    pub message: String,
    /// The job was not started because the agent is full or stopping: it
    /// is no attempt, and the leader hands it out again.
    pub busy: bool,
}

impl Refusal {
    pub(super) fn new(kind: ErrorKind, retryable: bool, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            retryable,
            message: message.into(),
            busy: false,
        }
    }

    /// A refusal that says "later", not "no".
    pub(super) fn busy(message: impl Into<String>) -> Refusal {
        Refusal {
            busy: true,
            ..Refusal::new(ErrorKind::Locked, true, message)
        }
    }
}

/// The engine's error kind on the wire.
pub fn wire_kind(kind: seawall_common::ErrorKind) -> WireKind {
    use seawall_common::ErrorKind as K;
    match kind {
        K::NotFound => WireKind::NotFound,
        K::Unreachable => WireKind::Unreachable,
        K::Denied => WireKind::Denied,
        K::Corrupt => WireKind::Corrupt,
        K::WrongKey => WireKind::WrongKey,
        K::Locked => WireKind::Locked,
        K::InvalidInput => WireKind::InvalidInput,
        K::NoSpace => WireKind::NoSpace,
        K::Io => WireKind::Io,
        K::Conflict => WireKind::Conflict,
    }
}

/// `outcome` of job `job_id`, answering a command of `epoch`.
pub fn to_proto(job_id: &str, epoch: u64, outcome: &OperationOutcome) -> OperationResult {
    let status = match outcome.status {
        Status::Succeeded => OperationStatus::Succeeded,
        Status::SucceededWithWarnings => OperationStatus::SucceededWithWarnings,
        Status::Failed => OperationStatus::Failed,
        Status::Cancelled => OperationStatus::Cancelled,
    };
    let output = outcome.output.as_ref().map(|o| match o {
        Output::Backup {
            snapshot_id,
            backup_type,
            bytes_read,
            bytes_added,
            files_new,
            files_changed,
            files_unchanged,
        } => operation_result::Output::Backup(BackupOutput {
            snapshot_id: snapshot_id.clone(),
            bytes_read: *bytes_read,
            bytes_added: *bytes_added,
            files_new: *files_new,
            files_changed: *files_changed,
            files_unchanged: *files_unchanged,
            backup_type: backup_type.clone(),
        }),
        Output::Retention {
            kept,
            removed,
            packs_removed,
            bytes_freed,
        } => operation_result::Output::Retention(RetentionOutput {
            snapshots_kept: *kept,
            snapshots_removed: *removed,
            packs_removed: *packs_removed,
            bytes_freed: *bytes_freed,
        }),
        Output::Mirror {
            copied,
            bytes,
            present,
            pruned,
            replaced,
        } => operation_result::Output::Mirror(MirrorOutput {
            objects_copied: *copied,
            bytes_copied: *bytes,
            objects_present: *present,
            objects_pruned: *pruned,
            replaced: replaced.clone(),
        }),
        Output::RestoreDrill(r) => operation_result::Output::RestoreDrill(RestoreDrillOutput {
            source: r.source.clone(),
            source_kind: r.source_kind.clone(),
            snapshot_id: r.snapshot_id.clone(),
            recovery_point_unix_ms: r.recovery_point_unix_ms,
            phases: r
                .phases
                .iter()
                .map(|p| DrillPhase {
                    name: p.name.clone(),
                    started_unix_ms: p.started_unix_ms,
                    ended_unix_ms: p.ended_unix_ms,
                    state: p.state.clone(),
                    detail: p.detail.clone(),
                    evidence: p.evidence.clone(),
                })
                .collect(),
            leftovers: r.leftovers.clone(),
        }),
        Output::SnapshotCopy(c) => operation_result::Output::SnapshotCopy(SnapshotCopyOutput {
            snapshot: c.snapshot.clone(),
            copy: c.copy.clone(),
            region: c.region.clone(),
            snapshot_time_unix_ms: c.snapshot_time_unix_ms,
            deleted: c.deleted.clone(),
        }),
        Output::Verify {
            snapshots,
            packs_read,
            bytes_read,
            problems,
            problem_count,
        } => operation_result::Output::Verify(VerifyOutput {
            snapshots: *snapshots,
            packs_read: *packs_read,
            bytes_read: *bytes_read,
            problems: problems.clone(),
            problem_count: *problem_count,
        }),
    });
    let failure = outcome.failure.as_ref();
    OperationResult {
        job_id: job_id.to_string(),
        epoch,
        status: status as i32,
        error_kind: failure
            .map(|f| wire_kind(f.kind) as i32)
            .unwrap_or(WireKind::Unspecified as i32),
        retryable: failure.is_some_and(|f| f.retryable),
        error: failure.map(|f| f.message.clone()).unwrap_or_default(),
        warnings: outcome.warnings.clone(),
        warning_count: outcome.warning_count,
        duration_secs: outcome.duration_secs,
        finished_unix_ms: outcome.finished_unix_ms,
        output,
    }
}

/// A result for a job that was refused before it started.
pub fn refused(job_id: &str, epoch: u64, refusal: &Refusal) -> OperationResult {
    OperationResult {
        job_id: job_id.to_string(),
        epoch,
        status: OperationStatus::Failed as i32,
        error_kind: if refusal.busy {
            WireKind::Busy as i32
        } else {
            wire_kind(refusal.kind) as i32
        },
        retryable: refusal.retryable,
        error: refusal.message.clone(),
        finished_unix_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    }
}
