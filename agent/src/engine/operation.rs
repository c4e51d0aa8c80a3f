//! Typed operations: what the agent daemon asks the engine to do for a job
//! (backup, retention, verify), and what comes back: a status that tells a
//! saved-with-warnings backup from a failure, the error's kind and whether a
//! retry can help, and a typed output per operation. The daemon runs a
//! request in a child process (`seawall run-operation` reads it as JSON on
//! stdin and writes the outcome on stdout) for crash containment and
//! cancellation; the child calls the same engine functions as the CLI.

use crate::engine::files::{backup_files, BackupOptions, ParentChoice};
use crate::engine::forget::{forget, KeepPolicy};
use crate::engine::postgres::{
    backup_datadir, backup_logical, backup_physical, DatadirOptions, LogicalOptions, PgTools,
    PhysicalOptions,
};
use crate::engine::progress::Progress;
use crate::engine::redis::keys::{backup_redis_keys, KeySelection, KeysOptions};
use crate::engine::redis::{backup_redis, RedisOptions, Transfer};
use crate::engine::repository::RepositorySpec;
use crate::engine::stream::StreamSettings;
use seawall_common::repo::snapshot::{Origin, Snapshot};
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Warnings and problems carried back in full at most this many; the
/// counts are always exact.
pub const SAMPLE: usize = 20;

/// One operation with everything needed to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRequest {
    /// The job it runs for (tags the snapshot, names the logs).
    pub job_id: String,
    /// The agent and region, recorded in manifests.
    pub origin: Origin,
    /// The region's repository.
    pub repository: RepositorySpec,
    /// How long to wait for a conflicting repository lock.
    pub lock_wait_secs: u64,
    /// What to do.
    pub operation: Operation,
}

/// The work itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    /// Back up a source.
    Backup {
        /// The source's name (tags its snapshots `source=<name>`).
        source: String,
        /// How to read it.
        spec: SourceSpec,
        /// Read everything instead of reusing the parent snapshot.
        full: bool,
        /// Tags beside `source=` and `job=` (a failback's `diverged`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<String>,
    },
    /// Forget by the source's rules, then prune.
    Retention {
        /// The source's name: only its snapshots are considered.
        source: String,
        /// What to keep.
        policy: KeepPolicy,
    },
    /// Check the repository.
    Verify {
        /// Read every pack.
        read_data: bool,
    },
    /// Make the request's repository a replica of `from`.
    Mirror {
        /// The repository copied from (another region's).
        from: crate::engine::repository::RepositorySpec,
        /// Delete what `from` no longer holds.
        prune: bool,
        /// Compare only (something else, such as S3 replication, copies).
        #[serde(default)]
        check_only: bool,
    },
    /// Restore a source's recovery point into a scratch instance, check
    /// it, tear it down.
    RestoreDrill {
        /// What and where.
        request: crate::engine::drill::DrillRequest,
    },
    /// Snapshot an RDS source's instance and copy the snapshot into the cold
    /// region (the repository is not read).
    RdsSnapshotCopy {
        /// The source's instance (with its `snapshot_copy`).
        instance: crate::cloud::rds::config::RdsInstance,
    },
    /// Restore an RDS source's automated backups to a point into a scratch
    /// instance, check it, delete it (the repository is not read).
    RdsPitrDrill {
        /// What (`source`, `point`, `check_file`, `deep`, `pg_bin`).
        request: crate::engine::drill::DrillRequest,
        /// The source's instance.
        instance: crate::cloud::rds::config::RdsInstance,
        /// The source's DSN.
        dsn: String,
    },
}

/// A source, as the engine reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceSpec {
    /// Files and directories.
    Files {
        /// Paths to back up.
        paths: Vec<PathBuf>,
        /// Exclusion globs.
        exclude: Vec<String>,
    },
    /// A PostgreSQL server.
    Postgres {
        /// Connection string.
        dsn: String,
        /// Base backup instead of logical dumps.
        physical: bool,
        /// Read the data directory on this host instead of running
        /// pg_basebackup: where it is (empty: ask the server).
        file_level: Option<PathBuf>,
        /// Directory of the PostgreSQL programs.
        pg_bin: Option<PathBuf>,
    },
    /// A Redis server.
    Redis {
        /// redis[s]:// URL.
        url: String,
        /// Key patterns; empty for a whole RDB.
        keys: Vec<String>,
    },
}

impl SourceSpec {
    /// The kind's name, as an agent's hello reports it.
    pub fn name(&self) -> &'static str {
        match self {
            SourceSpec::Files { .. } => "files",
            SourceSpec::Postgres { physical: true, .. } => "postgres-physical",
            SourceSpec::Postgres { .. } => "postgres",
            SourceSpec::Redis { keys, .. } if !keys.is_empty() => "redis-keys",
            SourceSpec::Redis { .. } => "redis",
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Done.
    Succeeded,
    /// Done and saved, with warnings to look at; not to be retried.
    SucceededWithWarnings,
    /// Not done.
    Failed,
    /// Stopped before its end by the daemon (an operator's cancel, or the
    /// agent stopping).
    Cancelled,
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Whether trying again, without a change by the operator, can succeed.
    pub retryable: bool,
    /// The sentence naming the problem and the fix.
    pub message: String,
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Failure {
        Failure {
            kind: e.kind(),
            retryable: e.kind().is_retryable(),
            message: e.to_string(),
        }
    }
}

/// What an operation produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Output {
    /// A saved snapshot.
    Backup {
        /// Its id.
        snapshot_id: String,
        /// "full" or "incremental".
        backup_type: String,
        /// Bytes read from the source.
        bytes_read: u64,
        /// Bytes the repository grew by.
        bytes_added: u64,
        /// Files new, changed and unchanged (files sources).
        files_new: u64,
        /// Files changed since the parent.
        files_changed: u64,
        /// Files reused from the parent.
        files_unchanged: u64,
    },
    /// Retention's effect.
    Retention {
        /// Snapshots kept.
        kept: u32,
        /// Snapshots removed.
        removed: u32,
        /// Packs deleted by prune.
        packs_removed: u64,
        /// Bytes freed by prune.
        bytes_freed: u64,
    },
    /// What a mirror run copied.
    Mirror {
        /// Objects copied.
        copied: u64,
        /// Bytes copied.
        bytes: u64,
        /// Objects the replica held already.
        present: u64,
        /// Objects deleted (prune).
        pruned: u64,
        /// Damaged objects of the replica that were replaced.
        replaced: Vec<String>,
    },
    /// A restore drill's phases and findings.
    RestoreDrill(crate::engine::drill::DrillReport),
    /// What a snapshot copy made.
    SnapshotCopy(crate::engine::rds_snapshot_copy::CopyReport),
    /// What verify checked.
    Verify {
        /// Snapshots checked.
        snapshots: u32,
        /// Packs read.
        packs_read: u64,
        /// Bytes read.
        bytes_read: u64,
        /// The first problems.
        problems: Vec<String>,
        /// How many problems.
        problem_count: u32,
    },
}

/// An operation's end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationOutcome {
    /// How it ended.
    pub status: Status,
    /// Why it failed (when it did).
    pub failure: Option<Failure>,
    /// The first warnings.
    pub warnings: Vec<String>,
    /// How many warnings.
    pub warning_count: u32,
    /// Seconds it took.
    pub duration_secs: f64,
    /// When its data was read (ms since the epoch).
    pub finished_unix_ms: i64,
    /// What it produced (also on failure where there is something: a
    /// verify's problems).
    pub output: Option<Output>,
}

/// Runs `req`, reporting progress to `progress`; never fails: a failure
/// is an outcome.
pub async fn run(req: &OperationRequest, progress: Arc<Progress>) -> OperationOutcome {
    let started = Instant::now();
    let (status, failure, warnings, output) = match execute(req, progress).await {
        Ok(Done {
            output,
            warnings,
            failure: Some(failure),
        }) => (Status::Failed, Some(failure), warnings, Some(output)),
        Ok(Done {
            output, warnings, ..
        }) if !warnings.is_empty() => (Status::SucceededWithWarnings, None, warnings, Some(output)),
        Ok(Done { output, .. }) => (Status::Succeeded, None, vec![], Some(output)),
        Err(e) => (Status::Failed, Some(Failure::from(&e)), vec![], None),
    };
    OperationOutcome {
        status,
        failure,
        warning_count: warnings.len() as u32,
        warnings: warnings.into_iter().take(SAMPLE).collect(),
        duration_secs: started.elapsed().as_secs_f64(),
        finished_unix_ms: chrono::Utc::now().timestamp_millis(),
        output,
    }
}

/// What an operation that ran to its end found.
struct Done {
    output: Output,
    warnings: Vec<String>,
    /// Set when the work ran but its finding is a failure (verify found damage).
    failure: Option<Failure>,
}

/// Copies what the request's repository lacks from `from`.
async fn mirror_into(
    req: &OperationRequest,
    from: &crate::engine::repository::RepositorySpec,
    prune: bool,
    check_only: bool,
) -> Result<Done> {
    let opts = crate::engine::mirror::MirrorOptions {
        prune,
        check_only,
        concurrency: 8,
    };
    let mut report =
        crate::engine::mirror::mirror(from.storage().await?, req.repository.storage().await?, opts)
            .await?;
    if !check_only {
        crate::engine::mirror::retire_keys(&req.repository, &mut report).await?;
    }
    Ok(Done {
        output: Output::Mirror {
            copied: report.copied.values().sum(),
            bytes: report.bytes_copied,
            present: report.present,
            pruned: report.pruned,
            replaced: report
                .gaps
                .iter()
                .take(SAMPLE)
                .map(|g| format!("{} {}", g.object, g.problem))
                .collect(),
        },
        warnings: if check_only {
            vec![]
        } else {
            report
                .gaps
                .iter()
                .map(|g| format!("replaced {} in the replica: {}", g.object, g.problem))
                .chain(report.kept_keys())
                .collect()
        },
        failure: if let Some(message) = report.not_mirrored() {
            Some(Failure {
                kind: ErrorKind::Corrupt,
                retryable: false,
                message,
            })
        } else {
            (check_only && !report.gaps.is_empty()).then(|| Failure {
            kind: ErrorKind::NotFound,
            retryable: false,
            message: format!(
                "the replica lacks {} object(s) its source holds, the first: {} {}; check the bucket replication, or mirror it",
                report.gaps.len(),
                report.gaps[0].object,
                report.gaps[0].problem
            ),
            })
        },
    })
}

/// A drill's report as an outcome: failed when one of its phases did.
fn drilled(report: crate::engine::drill::DrillReport) -> Done {
    let failure = report.failure().map(|p| Failure {
        kind: ErrorKind::Corrupt,
        retryable: false,
        message: format!(
            "restore drill of {}: {} failed: {}",
            report.source, p.name, p.detail
        ),
    });
    Done {
        output: Output::RestoreDrill(report),
        warnings: vec![],
        failure,
    }
}

async fn execute(req: &OperationRequest, progress: Arc<Progress>) -> Result<Done> {
    let lock_wait = Duration::from_secs(req.lock_wait_secs);
    match &req.operation {
        Operation::Backup {
            source,
            spec,
            full,
            tags,
        } => {
            let repo = req.repository.open().await?;
            let mut all = vec![format!("source={source}"), format!("job={}", req.job_id)];
            all.extend(tags.iter().cloned());
            backup(repo, req, all, spec, *full, lock_wait, progress).await
        }
        // A replica is written by name, not opened: the first run finds it empty.
        Operation::Mirror {
            from,
            prune,
            check_only,
        } => mirror_into(req, from, *prune, *check_only).await,
        Operation::Retention { source, policy } => {
            let repo = req.repository.open().await?;
            let tags = [format!("source={source}")];
            let forgotten = forget(&repo, *policy, &tags, false, lock_wait).await?;
            let pruned = crate::engine::prune::prune(repo, false, lock_wait).await?;
            Ok(Done {
                output: Output::Retention {
                    kept: forgotten.kept.len() as u32,
                    removed: forgotten.removed.len() as u32,
                    packs_removed: pruned.packs_deleted + pruned.unindexed_packs_deleted,
                    bytes_freed: pruned.bytes_freed,
                },
                warnings: vec![],
                failure: None,
            })
        }
        Operation::RestoreDrill { request } => {
            let repo = req.repository.open().await?;
            Ok(drilled(
                crate::engine::drill::restore_drill(repo, request, progress).await,
            ))
        }
        Operation::RdsSnapshotCopy { instance } => Ok(Done {
            output: Output::SnapshotCopy(
                crate::engine::rds_snapshot_copy::copy(instance, &req.job_id).await?,
            ),
            warnings: vec![],
            failure: None,
        }),
        Operation::RdsPitrDrill {
            request,
            instance,
            dsn,
        } => {
            let target = crate::engine::drill::rds_pitr::Target {
                instance,
                dsn,
                agent: req.origin.agent.as_deref().unwrap_or_default(),
                job: &req.job_id,
            };
            Ok(drilled(
                crate::engine::drill::rds_pitr::drill(request, &target).await,
            ))
        }
        Operation::Verify { read_data } => {
            let repo = req.repository.open().await?;
            let report = crate::engine::verify::verify(repo, *read_data, cores()).await?;
            let problems: Vec<String> = report
                .problems
                .iter()
                .map(|p| format!("{} {}", p.object, p.problem))
                .collect();
            let failure = (!problems.is_empty()).then(|| Failure {
                kind: ErrorKind::Corrupt,
                retryable: false,
                message: format!(
                    "the repository is damaged: {} problem(s), the first: {}; run `seawall verify` to see them all and `seawall repair` as docs/operations.md says",
                    problems.len(),
                    problems[0]
                ),
            });
            Ok(Done {
                output: Output::Verify {
                    snapshots: report.snapshots as u32,
                    packs_read: report.packs_read as u64,
                    bytes_read: report.bytes_read,
                    problem_count: problems.len() as u32,
                    problems: problems.into_iter().take(SAMPLE).collect(),
                },
                warnings: vec![],
                failure,
            })
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

async fn backup(
    repo: Arc<Repository>,
    req: &OperationRequest,
    tags: Vec<String>,
    spec: &SourceSpec,
    full: bool,
    lock_wait: Duration,
    progress: Arc<Progress>,
) -> Result<Done> {
    let settings = StreamSettings {
        lock_wait,
        origin: req.origin.clone(),
        ..StreamSettings::default()
    };
    let (id, snap) = match spec {
        SourceSpec::Files { paths, exclude } => {
            let outcome = backup_files(
                repo,
                BackupOptions {
                    paths: paths.clone(),
                    excludes: exclude.clone(),
                    tags,
                    parent: if full {
                        ParentChoice::None
                    } else {
                        ParentChoice::Auto
                    },
                    lock_wait,
                    origin: req.origin.clone(),
                    ..BackupOptions::default()
                },
                progress,
            )
            .await?;
            (outcome.id, outcome.snapshot)
        }
        SourceSpec::Postgres {
            dsn,
            physical: true,
            file_level: Some(data_dir),
            ..
        } => {
            let opts = DatadirOptions {
                dsn: dsn.clone(),
                data_dir: (!data_dir.as_os_str().is_empty()).then(|| data_dir.clone()),
                fast_checkpoint: true,
                full,
                delta: false,
                tags,
                settings,
            };
            backup_datadir(repo, opts, progress).await?
        }
        SourceSpec::Postgres {
            dsn,
            physical: true,
            pg_bin,
            ..
        } => {
            let opts = PhysicalOptions {
                dsn: dsn.clone(),
                fast_checkpoint: true,
                tags,
                tools: PgTools {
                    bin_dir: pg_bin.clone(),
                },
                settings,
            };
            backup_physical(repo, opts, progress).await?
        }
        SourceSpec::Postgres { dsn, pg_bin, .. } => {
            let opts = LogicalOptions {
                dsn: dsn.clone(),
                databases: vec![],
                globals: true,
                tags,
                jobs: cores(),
                split_min_bytes: crate::engine::postgres::logical::SPLIT_MIN_BYTES,
                tools: PgTools {
                    bin_dir: pg_bin.clone(),
                },
                settings,
            };
            backup_logical(repo, opts, progress).await?
        }
        SourceSpec::Redis { url, keys } if !keys.is_empty() => {
            let opts = KeysOptions {
                url: url.clone(),
                tls: Default::default(),
                selection: KeySelection::from_args(keys, None)?,
                tags,
                settings,
            };
            backup_redis_keys(repo, opts, progress).await?
        }
        SourceSpec::Redis { url, .. } => {
            let opts = RedisOptions {
                url: url.clone(),
                tls: Default::default(),
                transfer: Transfer::Auto,
                tags,
                settings,
            };
            backup_redis(repo, opts, progress).await?
        }
    };
    Ok(backup_done(id, &snap))
}

fn backup_done(id: Id, snap: &Snapshot) -> Done {
    let s = &snap.summary;
    Done {
        output: Output::Backup {
            snapshot_id: id.to_hex(),
            backup_type: serde_json::to_value(snap.backup_type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            bytes_read: s.bytes_read,
            bytes_added: s.bytes_added,
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unchanged: s.files_unchanged,
        },
        warnings: s.warnings.clone(),
        failure: None,
    }
}

impl OperationOutcome {
    /// The outcome of an operation that could not be run or whose process
    /// did not report (crashed, killed).
    pub fn failed(kind: ErrorKind, retryable: bool, message: impl Into<String>) -> Self {
        OperationOutcome {
            status: Status::Failed,
            failure: Some(Failure {
                kind,
                retryable,
                message: message.into(),
            }),
            warnings: vec![],
            warning_count: 0,
            duration_secs: 0.0,
            finished_unix_ms: chrono::Utc::now().timestamp_millis(),
            output: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_survives_the_trip_to_the_child_and_back() {
        let req = OperationRequest {
            job_id: "nightly-1".into(),
            origin: Origin {
                region: Some("eu-west-1".into()),
                agent: Some("db-1".into()),
            },
            repository: RepositorySpec {
                repo: "/srv/repo".into(),
                password_file: Some("/etc/seawall/pass".into()),
                ..Default::default()
            },
            lock_wait_secs: 60,
            operation: Operation::Backup {
                source: "app".into(),
                spec: SourceSpec::Files {
                    paths: vec!["/srv/app".into()],
                    exclude: vec!["*.tmp".into()],
                },
                full: false,
                tags: vec![],
            },
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            serde_json::from_str::<OperationRequest>(&text).unwrap(),
            req
        );
    }

    #[tokio::test]
    async fn a_missing_repository_is_a_failure_with_its_kind_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("SEAWALL_PASSWORD", "pw");
        let req = OperationRequest {
            job_id: "j".into(),
            origin: Origin::default(),
            repository: RepositorySpec {
                repo: dir.path().join("none").display().to_string(),
                ..Default::default()
            },
            lock_wait_secs: 1,
            operation: Operation::Verify { read_data: false },
        };
        let out = run(&req, Arc::new(Progress::default())).await;
        assert_eq!(out.status, Status::Failed);
        let f = out.failure.unwrap();
        assert_eq!(f.kind, ErrorKind::NotFound, "{}", f.message);
        assert!(!f.retryable);
    }
}
