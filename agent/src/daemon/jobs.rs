//! Running the jobs the leader assigns. Each job is the `seawall` binary
//! itself run as a child process with the source's settings (the same code
//! paths as a manual `seawall backup`), so a job that crashes or leaks takes
//! nothing of the daemon with it, and a cancel is a signal. Progress comes
//! back as one JSON line a second on the child's stderr, the result as JSON
//! on its stdout.

use super::config::{AgentConfig, SourceConfig, SourceKind};
use seawall_proto::v1::{
    agent_message, AgentMessage, AssignJob, BackupLevel, JobKind, JobProgress, JobResult,
};
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// Messages jobs send up (progress and results).
pub type Uplink = mpsc::UnboundedSender<AgentMessage>;

/// Runs and tracks jobs.
pub struct JobRunner {
    exe: PathBuf,
    config: Arc<AgentConfig>,
    /// Running jobs and the means to stop each (taken by the first cancel;
    /// the entry goes when the job's result has been queued).
    running: Mutex<HashMap<String, Option<oneshot::Sender<()>>>>,
    draining: std::sync::atomic::AtomicBool,
}

impl JobRunner {
    /// Jobs run `exe` (this seawall) with `config`'s repository and sources.
    pub fn new(exe: PathBuf, config: Arc<AgentConfig>) -> Self {
        JobRunner {
            exe,
            config,
            running: Mutex::new(HashMap::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Takes no new job from now on (the agent is stopping; the leader
    /// retries what it refuses elsewhere or later).
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
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

    fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.config.sources.iter().find(|s| s.name == name)
    }

    /// The command line of a job, or why it cannot run here.
    pub fn command_line(&self, job: &AssignJob) -> Result<Vec<OsString>, String> {
        let src = self.source(&job.source).ok_or_else(|| {
            format!(
                "this agent has no source {:?} (it serves: {})",
                job.source,
                self.config
                    .sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let mut args = self.config.repository.global_args();
        let tags: Vec<OsString> = vec![
            "--tag".into(),
            format!("source={}", src.name).into(),
            "--tag".into(),
            format!("job={}", job.job_id).into(),
        ];
        match JobKind::try_from(job.kind).unwrap_or(JobKind::Unspecified) {
            JobKind::Backup => {
                let full = job.level == BackupLevel::Full as i32;
                match &src.kind {
                    SourceKind::Files { paths, exclude } => {
                        args.extend(["backup".into(), "files".into()]);
                        args.extend(paths.iter().map(|p| p.clone().into_os_string()));
                        for e in exclude {
                            args.extend(["--exclude".into(), e.into()]);
                        }
                        if full {
                            args.push("--force".into());
                        }
                    }
                    SourceKind::Postgres {
                        dsn,
                        physical,
                        pg_bin,
                    } => {
                        if let Some(bin) = pg_bin {
                            args.extend(["--pg-bin".into(), bin.clone().into_os_string()]);
                        }
                        args.extend([
                            "backup".into(),
                            "postgres".into(),
                            "--dsn".into(),
                            dsn.into(),
                        ]);
                        if *physical {
                            args.push("--physical".into());
                        }
                    }
                    SourceKind::Redis { url, keys } => {
                        args.extend(["backup".into(), "redis".into(), "--url".into(), url.into()]);
                        for k in keys {
                            args.extend(["--keys".into(), k.into()]);
                        }
                    }
                }
                args.extend(tags);
            }
            JobKind::Retention => {
                let r = src.retention.clone().ok_or_else(|| {
                    format!("source {:?} has no [sources.retention] rules", src.name)
                })?;
                args.extend([
                    "forget".into(),
                    "--tag".into(),
                    format!("source={}", src.name).into(),
                ]);
                for (flag, n) in [
                    ("--keep-last", r.keep_last),
                    ("--keep-hourly", r.keep_hourly),
                    ("--keep-daily", r.keep_daily),
                    ("--keep-weekly", r.keep_weekly),
                    ("--keep-monthly", r.keep_monthly),
                    ("--keep-yearly", r.keep_yearly),
                ] {
                    if n > 0 {
                        args.extend([flag.into(), n.to_string().into()]);
                    }
                }
                if let Some(within) = &r.keep_within {
                    args.extend(["--keep-within".into(), within.into()]);
                }
                args.push("--prune".into());
            }
            JobKind::Verify => args.push("verify".into()),
            JobKind::Unspecified => return Err("the job names no kind".into()),
        }
        Ok(args)
    }

    /// Starts a job; its progress and result go to `uplink`.
    pub fn start(
        self: &Arc<Self>,
        job: AssignJob,
        epoch: u64,
        uplink: Uplink,
    ) -> Result<(), String> {
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("the agent is shutting down: it takes no new job".into());
        }
        let args = self.command_line(&job)?;
        {
            let running = self
                .running
                .lock()
                .map_err(|_| "job table poisoned".to_string())?;
            if running.contains_key(&job.job_id) {
                // Already running (an assignment repeated after a reconnect).
                return Ok(());
            }
            if running.len() as u32 >= self.config.max_jobs {
                return Err(format!("busy: {} jobs running (max_jobs)", running.len()));
            }
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        if let Ok(mut r) = self.running.lock() {
            r.insert(job.job_id.clone(), Some(stop_tx));
        }
        let me = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = me.run(&job, args, stop_rx, &uplink).await;
            let kind = JobKind::try_from(job.kind)
                .unwrap_or(JobKind::Unspecified)
                .as_str_name();
            let outcome = if result.success {
                "succeeded"
            } else {
                "failed"
            };
            metrics::counter!("seawall_agent_jobs_total", "kind" => kind, "outcome" => outcome)
                .increment(1);
            metrics::histogram!("seawall_agent_job_duration_seconds", "kind" => kind)
                .record(started.elapsed().as_secs_f64());
            let _ = uplink.send(AgentMessage {
                body: Some(agent_message::Body::Result(JobResult { epoch, ..result })),
            });
            // Only now: a stopping agent waits for its table to empty and
            // then for the results queued to be acknowledged.
            if let Ok(mut r) = me.running.lock() {
                r.remove(&job.job_id);
            }
        });
        Ok(())
    }

    async fn run(
        &self,
        job: &AssignJob,
        args: Vec<OsString>,
        stop: oneshot::Receiver<()>,
        uplink: &Uplink,
    ) -> JobResult {
        let started = Instant::now();
        let failed = |error: String| JobResult {
            job_id: job.job_id.clone(),
            success: false,
            error,
            duration_secs: started.elapsed().as_secs_f64(),
            finished_unix_ms: chrono::Utc::now().timestamp_millis(),
            ..Default::default()
        };
        let mut child = match tokio::process::Command::new(&self.exe)
            .args(&args)
            .env("SEAWALL_PROGRESS", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return failed(format!("cannot start {}: {e}", self.exe.display())),
        };
        let mut stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let progress_up = uplink.clone();
        let job_id = job.job_id.clone();
        // Progress lines are forwarded; other lines are kept for the error.
        let tail = tokio::spawn(async move {
            let mut tail: VecDeque<String> = VecDeque::new();
            let Some(stderr) = stderr else { return tail };
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(p) = v.get("progress") {
                        let get = |k: &str| p.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
                        let _ = progress_up.send(AgentMessage {
                            body: Some(agent_message::Body::Progress(JobProgress {
                                job_id: job_id.clone(),
                                bytes_done: get("bytes_done"),
                                bytes_total: get("bytes_total"),
                                files_done: get("files_done"),
                            })),
                        });
                        continue;
                    }
                }
                tail.push_back(line);
                if tail.len() > 20 {
                    tail.pop_front();
                }
            }
            tail
        });
        let mut out = String::new();
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_string(&mut out).await;
            }
        };
        let status = tokio::select! {
            _ = stop => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return failed("cancelled".into());
            }
            (_, status) = async { tokio::join!(read_out, child.wait()) } => status,
        };
        let tail = tail.await.unwrap_or_default();
        match status {
            Ok(s) if s.success() => {
                let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
                let summary = &v["summary"];
                JobResult {
                    job_id: job.job_id.clone(),
                    success: true,
                    snapshot_id: v["snapshot"].as_str().unwrap_or_default().to_string(),
                    bytes_read: summary["bytes_read"].as_u64().unwrap_or(0),
                    bytes_added: summary["bytes_added"].as_u64().unwrap_or(0),
                    duration_secs: started.elapsed().as_secs_f64(),
                    finished_unix_ms: chrono::Utc::now().timestamp_millis(),
                    ..Default::default()
                }
            }
            Ok(s) => failed(format!(
                "{} (exit {}): {}",
                job.job_id,
                s.code()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "by signal".into()),
                tail.iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .cloned()
                    .unwrap_or_default()
            )),
            Err(e) => failed(format!("waiting for the job: {e}")),
        }
    }
}
