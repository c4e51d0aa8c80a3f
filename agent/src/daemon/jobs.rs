//! Running the operations the leader assigns. The typed request the
//! contract carries becomes the engine's [`OperationRequest`] with this
//! agent's source settings and repository (one match arm per operation),
//! and runs in a child `seawall run-operation` that reads it on stdin and
//! writes the typed outcome on stdout: a job that crashes or leaks takes
//! nothing of the daemon with it, and a cancel is a signal. Progress comes
//! back as one JSON line a second on the child's stderr.

use super::config::AgentConfig;
use super::result::{to_proto, Refusal};
use crate::engine::operation::{Operation, OperationOutcome, OperationRequest, SourceSpec};
use seawall_common::repo::snapshot::Origin;
use seawall_common::ErrorKind;
use seawall_proto::v1::{
    agent_message, operation, AgentMessage, AssignJob, BackupLevel, JobKind, JobProgress,
};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// Messages jobs send up (progress and results).
pub type Uplink = mpsc::UnboundedSender<AgentMessage>;

/// The hidden subcommand a child runs an operation with.
pub const CHILD_COMMAND: &str = "run-operation";

/// Runs and tracks jobs.
pub struct JobRunner {
    exe: PathBuf,
    config: Arc<AgentConfig>,
    /// Running jobs and the means to stop each (taken by the first cancel;
    /// the entry goes when the job's result has been queued).
    running: Mutex<HashMap<String, Option<oneshot::Sender<()>>>>,
    draining: std::sync::atomic::AtomicBool,
    /// Every job's task, so a stopping agent waits for them.
    tasks: tokio_util::task::TaskTracker,
    /// Results handed to the uplink that the link has not taken yet: a
    /// stopping agent waits for them before it waits for acknowledgements.
    queued: std::sync::atomic::AtomicUsize,
}

impl JobRunner {
    /// Jobs run `exe` (this seawall) with `config`'s repository and sources.
    pub fn new(exe: PathBuf, config: Arc<AgentConfig>) -> Self {
        JobRunner {
            exe,
            config,
            running: Mutex::new(HashMap::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
            tasks: tokio_util::task::TaskTracker::new(),
            queued: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Results queued for the link and not taken yet.
    pub fn results_queued(&self) -> usize {
        self.queued.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The link took a queued result (it now counts among the unacknowledged).
    pub fn result_taken(&self) {
        let _ = self.queued.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| Some(n.saturating_sub(1)),
        );
    }

    /// Takes no new job from now on (the agent is stopping; the leader
    /// retries what it refuses elsewhere or later).
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.tasks.close();
    }

    /// Resolves when every job has ended and its result is queued (after
    /// [`JobRunner::drain`]; before it, never).
    pub async fn ended(&self) {
        self.tasks.wait().await;
    }

    /// Stops every running job (their results report the cancellation).
    pub fn cancel_all(&self) -> usize {
        let ids = self.running_ids();
        for id in &ids {
            self.cancel(id);
        }
        ids.len()
    }

    /// Ids of the jobs running now.
    pub fn running_ids(&self) -> Vec<String> {
        self.running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops a job (its result reports the cancellation).
    pub fn cancel(&self, job_id: &str) {
        let stop = self
            .running
            .lock()
            .ok()
            .and_then(|mut r| r.get_mut(job_id).and_then(Option::take));
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }

    fn source(&self, name: &str) -> Result<&super::config::SourceConfig, Refusal> {
        self.config
            .sources
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                Refusal::new(
                    ErrorKind::InvalidInput,
                    false,
                    format!(
                        "agent {} has no source {name:?} (it serves: {}): add it to agent.toml or fix the schedule",
                        self.config.id,
                        self.config
                            .sources
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    /// The engine request for an assignment, with this agent's settings.
    pub fn request(&self, job: &AssignJob) -> Result<OperationRequest, Refusal> {
        let kind = job
            .operation
            .as_ref()
            .and_then(|o| o.kind.as_ref())
            .ok_or_else(|| {
                Refusal::new(
                    ErrorKind::InvalidInput,
                    false,
                    "the assignment names no operation: is the coordinator newer than this agent? upgrade the agent",
                )
            })?;
        let operation = match kind {
            operation::Kind::Backup(b) => Operation::Backup {
                source: b.source.clone(),
                spec: self.source(&b.source)?.spec(),
                full: b.level == BackupLevel::Full as i32,
                tags: Vec::new(),
            },
            operation::Kind::Retention(r) => {
                let src = self.source(&r.source)?;
                let rules = src.retention.as_ref().ok_or_else(|| {
                    Refusal::new(
                        ErrorKind::InvalidInput,
                        false,
                        format!(
                            "source {:?} has no [sources.retention] rules: add them to agent.toml",
                            src.name
                        ),
                    )
                })?;
                Operation::Retention {
                    source: src.name.clone(),
                    policy: rules.policy(),
                }
            }
            operation::Kind::RestoreDrill(d) => {
                let (scratch_root, pg_bin, redis_server) = self.config.drill_places();
                let request = crate::engine::drill::DrillRequest {
                    source: d.source.clone(),
                    point: if d.point.is_empty() {
                        "latest".into()
                    } else {
                        d.point.clone()
                    },
                    check_file: self
                        .config
                        .allowed_check_file(&d.check_file)
                        .map_err(|e| Refusal::new(e.kind(), false, e.to_string()))?,
                    drill_id: d.drill_id.clone(),
                    scratch_root,
                    pg_bin,
                    redis_server,
                    deep: d.deep,
                };
                if d.managed {
                    let src = self.source(&d.source)?;
                    let (Some(instance), SourceSpec::Postgres { dsn, .. }) = (&src.rds, src.spec())
                    else {
                        return Err(Refusal::new(
                            ErrorKind::InvalidInput,
                            false,
                            format!(
                                "source {:?} of agent {} is not an rds-postgres source: an RDS point-in-time drill restores an RDS instance's automated backups; drill it from the repository instead (drill = \"restore\")",
                                src.name, self.config.id
                            ),
                        ));
                    };
                    Operation::RdsPitrDrill {
                        request,
                        instance: instance.clone(),
                        dsn,
                    }
                } else {
                    Operation::RestoreDrill { request }
                }
            }
            operation::Kind::SnapshotCopy(c) => {
                let src = self.source(&c.source)?;
                let instance = src.rds.clone().ok_or_else(|| {
                    Refusal::new(
                        ErrorKind::InvalidInput,
                        false,
                        format!(
                            "source {:?} of agent {} is not an rds-postgres source: a snapshot_copy job copies an RDS instance's snapshots; fix the schedule's source",
                            src.name, self.config.id
                        ),
                    )
                })?;
                if instance.snapshot_copy.is_none() {
                    return Err(Refusal::new(
                        ErrorKind::InvalidInput,
                        false,
                        format!(
                            "source {:?} of agent {} has no snapshot_copy_region: name the cold region its snapshots go to (agent.toml)",
                            src.name, self.config.id
                        ),
                    ));
                }
                Operation::RdsSnapshotCopy { instance }
            }
            operation::Kind::Verify(v) => Operation::Verify {
                read_data: v.read_data,
            },
            operation::Kind::Mirror(m) => {
                let mirror = self
                    .config
                    .mirrors
                    .iter()
                    .find(|x| x.name == m.name)
                    .ok_or_else(|| {
                        Refusal::new(
                            ErrorKind::InvalidInput,
                            false,
                            format!(
                                "agent {} has no [[mirrors]] entry {:?}: add it to agent.toml or fix the schedule",
                                self.config.id, m.name
                            ),
                        )
                    })?;
                Operation::Mirror {
                    from: mirror.spec(),
                    prune: mirror.prune || m.prune,
                    check_only: mirror.check_only,
                }
            }
        };
        Ok(OperationRequest {
            job_id: job.job_id.clone(),
            origin: Origin {
                region: Some(self.config.region.clone()),
                agent: Some(self.config.id.clone()),
            },
            repository: self.config.repository.spec(),
            lock_wait_secs: 60,
            operation,
        })
    }

    /// Starts a job; its progress and result go to `uplink`.
    pub fn start(
        self: &Arc<Self>,
        job: AssignJob,
        epoch: u64,
        uplink: Uplink,
    ) -> Result<(), Refusal> {
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Refusal::busy(
                "the agent is shutting down: it takes no new job",
            ));
        }
        let request = self.request(&job)?;
        {
            let running = self
                .running
                .lock()
                .map_err(|_| Refusal::new(ErrorKind::Io, true, "job table poisoned"))?;
            if running.contains_key(&job.job_id) {
                // Already running (an assignment repeated after a reconnect).
                return Ok(());
            }
            if running.len() as u32 >= self.config.max_jobs {
                return Err(Refusal::busy(format!(
                    "busy: {} jobs running (max_jobs)",
                    running.len()
                )));
            }
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        if let Ok(mut r) = self.running.lock() {
            r.insert(job.job_id.clone(), Some(stop_tx));
        }
        let me = self.clone();
        let span = tracing::info_span!("job", job = %job.job_id, epoch);
        self.tasks.spawn(
            async move {
                let kind = job_kind(&request.operation);
                let outcome = me.run(&request, stop_rx, &uplink).await;
                let label = match outcome.status {
                    crate::engine::operation::Status::Succeeded => "succeeded",
                    crate::engine::operation::Status::SucceededWithWarnings => {
                        "succeeded_with_warnings"
                    }
                    crate::engine::operation::Status::Failed => "failed",
                    crate::engine::operation::Status::Cancelled => "cancelled",
                };
                tracing::info!(outcome = label, secs = outcome.duration_secs, "job ended");
                metrics::counter!(crate::daemon::metrics::JOBS_TOTAL, "kind" => kind, "outcome" => label)
                    .increment(1);
                metrics::histogram!(crate::daemon::metrics::JOB_DURATION_SECONDS, "kind" => kind)
                    .record(outcome.duration_secs);
                me.queued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = uplink.send(AgentMessage {
                    body: Some(agent_message::Body::Result(to_proto(
                        &job.job_id,
                        epoch,
                        &outcome,
                    ))),
                });
                // Only now: a stopping agent waits for its table to empty and
                // then for the results queued to be acknowledged.
                if let Ok(mut r) = me.running.lock() {
                    r.remove(&job.job_id);
                }
                // A drill killed, cancelled or failed mid-way may have left
                // its scratch instance: delete it now, not at the next sweep.
                if let Operation::RdsPitrDrill { instance, .. } = &request.operation {
                    crate::stores::rds::sweep::once(instance, &me.config.id, &me.running_ids())
                        .await;
                }
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Runs `request` in a child and returns its outcome, whatever happens.
    async fn run(
        &self,
        request: &OperationRequest,
        stop: oneshot::Receiver<()>,
        uplink: &Uplink,
    ) -> OperationOutcome {
        let started = std::time::Instant::now();
        let ended = |kind, retryable, message: String| {
            let mut o = OperationOutcome::failed(kind, retryable, message);
            o.duration_secs = started.elapsed().as_secs_f64();
            o
        };
        let input = match serde_json::to_vec(request) {
            Ok(v) => v,
            Err(e) => return ended(ErrorKind::InvalidInput, false, format!("request: {e}")),
        };
        let mut child = match tokio::process::Command::new(&self.exe)
            .arg(CHILD_COMMAND)
            .env("SEAWALL_PROGRESS", "json")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                return ended(
                    ErrorKind::Io,
                    true,
                    format!("cannot start {}: {e}", self.exe.display()),
                )
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            if let Err(e) = stdin.write_all(&input).await {
                let _ = child.start_kill();
                return ended(
                    ErrorKind::Io,
                    true,
                    format!("handing the request to the child: {e}"),
                );
            }
            // Dropped here: the child reads to the end of its input.
        }
        let mut stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let progress_up = uplink.clone();
        let job_id = request.job_id.clone();
        // Progress lines are forwarded; other lines are logged and the last
        // ones kept, in case the child dies without an outcome.
        let tail = tokio::spawn(
            async move {
                let mut tail: VecDeque<String> = VecDeque::new();
                let Some(stderr) = stderr else { return tail };
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(p) = progress_line(&line, &job_id) {
                        let _ = progress_up.send(AgentMessage {
                            body: Some(agent_message::Body::Progress(p)),
                        });
                        continue;
                    }
                    tracing::debug!(child = %line);
                    tail.push_back(line);
                    if tail.len() > 20 {
                        tail.pop_front();
                    }
                }
                tail
            }
            .in_current_span(),
        );
        let mut out = Vec::new();
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let status = tokio::select! {
            _ = stop => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let mut o = ended(ErrorKind::Io, true, "cancelled before its end".into());
                o.status = crate::engine::operation::Status::Cancelled;
                return o;
            }
            (_, status) = async { tokio::join!(read_out, child.wait()) } => status,
        };
        let tail = tail.await.unwrap_or_default();
        if let Ok(outcome) = serde_json::from_slice::<OperationOutcome>(&out) {
            return outcome;
        }
        let last = tail
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .cloned()
            .unwrap_or_default();
        let how = match status {
            Ok(s) => s
                .code()
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| "killed by a signal".into()),
            Err(e) => format!("not waited for: {e}"),
        };
        // A process that died without an outcome (out of memory, killed)
        // may well succeed on the next try.
        ended(
            ErrorKind::Io,
            true,
            format!("the operation's process ended without a result ({how}): {last}"),
        )
    }
}

/// The kind of an engine operation, as the contract names it (metric label).
fn job_kind(op: &Operation) -> &'static str {
    let kind = match op {
        Operation::Backup { .. } => JobKind::Backup,
        Operation::Retention { .. } => JobKind::Retention,
        Operation::Verify { .. } => JobKind::Verify,
        Operation::Mirror { .. } => JobKind::Mirror,
        Operation::RestoreDrill { .. } | Operation::RdsPitrDrill { .. } => JobKind::RestoreDrill,
        Operation::RdsSnapshotCopy { .. } => JobKind::SnapshotCopy,
    };
    seawall_proto::kinds::name(kind)
}

/// A progress line of the child, as the coordinator takes it.
fn progress_line(line: &str, job_id: &str) -> Option<JobProgress> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let p = v.get("progress")?;
    let get = |k: &str| p.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    Some(JobProgress {
        job_id: job_id.to_string(),
        bytes_done: get("bytes_done"),
        bytes_total: get("bytes_total"),
        files_done: get("files_done"),
    })
}
