//! What the coordinator stores, as JSON under these keys:
//!
//! | key | record |
//! |---|---|
//! | `agents/<region>/<agent>` | [`AgentRecord`], bound to the leader's lease |
//! | `jobs/<job>` | [`JobRecord`] with its history |
//! | `schedules/<name>` | [`ScheduleState`]: the last slot fired |
//! | `backups/<region>/<source>/<finished ms>-<job>` | [`BackupRecord`] |
//! | `audit/<ms>-<random>` | [`AuditEntry`], append-only |

use super::clock::now_ms;
use super::config::{JobKind, Level};
use serde::{Deserialize, Serialize};

/// A connected agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Agent name (from its certificate).
    pub agent_id: String,
    /// Region (from its certificate).
    pub region: String,
    /// Its version.
    pub version: String,
    /// Its host.
    pub hostname: String,
    /// Source names it serves.
    pub sources: Vec<String>,
    /// When it connected.
    pub connected_ms: i64,
    /// The replica it is connected to.
    pub coordinator: String,
    /// SHA-256 fingerprint of the certificate it connected with.
    #[serde(default)]
    pub cert_fingerprint: String,
    /// When that certificate expires (ms since the epoch).
    #[serde(default)]
    pub cert_expires_ms: Option<i64>,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its time or for an agent.
    Pending,
    /// Assigned to an agent.
    Running,
    /// Done.
    Succeeded,
    /// Done and saved, with warnings to look at (not retried).
    #[serde(rename = "succeeded_with_warnings")]
    SucceededWithWarnings,
    /// Failed with no attempt left, or for a reason no retry can mend.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl JobState {
    /// Whether nothing more happens to the job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::SucceededWithWarnings
                | JobState::Failed
                | JobState::Cancelled
        )
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::SucceededWithWarnings => "succeeded_with_warnings",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// One step of a job's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// When.
    pub at_ms: i64,
    /// The state entered.
    pub state: JobState,
    /// The epoch of the leader that wrote it.
    pub epoch: i64,
    /// Why, in words.
    pub note: String,
}

/// A job and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Id (a schedule's jobs: `<schedule>-<slot ms>`, so a slot makes one job).
    pub job_id: String,
    /// Region.
    pub region: String,
    /// Source name.
    pub source: String,
    /// What to run.
    #[serde(with = "super::config::job_kind_name")]
    pub kind: JobKind,
    /// Full or incremental (backups).
    pub level: Option<Level>,
    /// The schedule that made it, if any.
    pub schedule: Option<String>,
    /// Current state.
    pub state: JobState,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Attempts allowed after the first failure.
    pub retries: u32,
    /// First retry delay in ms; doubled per attempt.
    pub retry_backoff_ms: i64,
    /// Not dispatched before this time (jitter, backoff).
    pub not_before_ms: i64,
    /// Run retention after success.
    pub retention_after: bool,
    /// The agent running or last running it.
    pub agent_id: Option<String>,
    /// Epoch of the assignment.
    pub epoch: i64,
    /// When created.
    pub created_ms: i64,
    /// When the current attempt started.
    pub started_ms: Option<i64>,
    /// When it ended.
    pub finished_ms: Option<i64>,
    /// Last news from the agent (progress or result).
    pub last_news_ms: Option<i64>,
    /// Last error.
    pub error: Option<String>,
    /// Its kind, as the agent classified it ("wrong_key", "unreachable").
    #[serde(default)]
    pub error_kind: Option<String>,
    /// The first warnings of a success with warnings.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// How many warnings there were.
    #[serde(default)]
    pub warning_count: u32,
    /// The snapshot made.
    pub snapshot_id: Option<String>,
    /// Bytes read so far / in all.
    pub bytes_done: u64,
    /// Bytes the repository grew by.
    pub bytes_added: u64,
    /// Every state change.
    pub history: Vec<JobEvent>,
    /// The agent that must run it (a drill restores from one agent's
    /// repository); any agent serving the source when unset.
    #[serde(default)]
    pub target_agent: Option<String>,
    /// A restore drill's part: which drill, and what it restores.
    #[serde(default)]
    pub drill: Option<DrillPart>,
    /// Times an agent was too busy to start it (each waits longer).
    #[serde(default)]
    pub busy_refusals: u32,
}

/// What a restore drill's job restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillPart {
    /// The drill's id.
    pub drill_id: String,
    /// latest | random-within DURATION | RFC 3339 time.
    pub point: String,
    /// PostgreSQL check file on the agent's host.
    #[serde(default)]
    pub check_file: Option<String>,
    /// Read every row and page too.
    #[serde(default)]
    pub deep: bool,
    /// Restored through the managed service (an RDS instance's automated
    /// backups), not from the repository.
    #[serde(default)]
    pub managed: bool,
}

impl JobRecord {
    /// A new job waiting for its first attempt, due now, with no retry
    /// and no history yet (callers set what differs, then `enter` it).
    pub fn pending(job_id: String, region: String, source: String, kind: JobKind) -> JobRecord {
        let now = now_ms();
        JobRecord {
            job_id,
            region,
            source,
            kind,
            level: None,
            schedule: None,
            state: JobState::Pending,
            attempt: 1,
            retries: 0,
            retry_backoff_ms: 30_000,
            not_before_ms: now,
            retention_after: false,
            agent_id: None,
            epoch: 0,
            created_ms: now,
            started_ms: None,
            finished_ms: None,
            last_news_ms: None,
            error: None,
            error_kind: None,
            warnings: Vec::new(),
            warning_count: 0,
            snapshot_id: None,
            bytes_done: 0,
            bytes_added: 0,
            history: Vec::new(),
            target_agent: None,
            drill: None,
            busy_refusals: 0,
        }
    }

    /// Moves to `state`, recording why and under which epoch.
    pub fn enter(&mut self, state: JobState, epoch: i64, note: impl Into<String>) {
        self.state = state;
        self.history.push(JobEvent {
            at_ms: now_ms(),
            state,
            epoch,
            note: note.into(),
        });
    }
}

/// A schedule's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The last slot a job was made for (ms).
    pub last_slot_ms: i64,
    /// That job.
    pub last_job: Option<String>,
}

/// A successful backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Region.
    pub region: String,
    /// Source name.
    pub source: String,
    /// Snapshot id in the region's repository.
    pub snapshot_id: String,
    /// The job.
    pub job_id: String,
    /// When it finished.
    pub finished_ms: i64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes added.
    pub bytes_added: u64,
    /// Seconds taken.
    pub duration_secs: f64,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When.
    pub at_ms: i64,
    /// Epoch of the writer.
    pub epoch: i64,
    /// Replica that wrote it.
    pub replica: String,
    /// Who asked (an operator, an agent, the scheduler).
    pub actor: String,
    /// What happened.
    pub event: String,
}

/// Key of an agent's registration.
pub fn agent_key(region: &str, agent: &str) -> String {
    format!("agents/{region}/{agent}")
}

/// Key of a job.
pub fn job_key(job: &str) -> String {
    format!("jobs/{job}")
}

/// Key of a schedule's state.
pub fn schedule_key(name: &str) -> String {
    format!("schedules/{name}")
}

/// Key of a backup record.
pub fn backup_key(b: &BackupRecord) -> String {
    format!(
        "backups/{}/{}/{:013}-{}",
        b.region, b.source, b.finished_ms, b.job_id
    )
}
