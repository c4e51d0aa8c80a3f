//! The copy a store's old primary keeps of what only it holds, before it
//! is rebuilt or made to follow the new primary: a backup into the
//! region's repository under the source `<source>.diverged`, tagged
//! `diverged` (the source's retention does not touch it). Every store
//! kind keeps its copy through here; what to copy is the kind's to say.

use crate::engine::operation::{
    Operation, OperationOutcome, OperationRequest, Output, SourceSpec, Status,
};
use crate::engine::postgres::tools::tail;
use crate::engine::repository::RepositorySpec;
use seawall_common::repo::snapshot::Origin;
use seawall_common::{Error, ErrorKind, Result};
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where the agent keeps diverged copies: its repository, as itself.
#[derive(Debug, Clone)]
pub struct Keeper {
    /// The region's repository.
    pub repository: RepositorySpec,
    /// The agent and region, for the snapshot's manifest.
    pub origin: Origin,
    /// The source, whose name the snapshot's source is made of.
    pub source: String,
}

impl Keeper {
    /// The keeper of `source`'s diverged copies: the agent's repository,
    /// as the agent.
    pub fn of(config: &crate::daemon::config::AgentConfig, source: &str) -> Keeper {
        Keeper {
            repository: config.repository.spec(),
            origin: Origin {
                region: Some(config.region.clone()),
                agent: Some(config.id.clone()),
            },
            source: source.to_string(),
        }
    }
}

/// Backs `spec` up into the repository as the diverged copy of the
/// keeper's source (tagged `diverged`, source `<source>.diverged`);
/// returns the snapshot's id.
pub async fn keep_source(keeper: &Keeper, spec: SourceSpec, why: &str) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::io("this program's path", e))?;
    keep_with(&exe, keeper, spec, why).await
}

async fn keep_with(exe: &PathBuf, keeper: &Keeper, spec: SourceSpec, why: &str) -> Result<String> {
    let request = OperationRequest {
        job_id: format!("diverged-{}", chrono::Utc::now().timestamp_millis()),
        origin: keeper.origin.clone(),
        repository: keeper.repository.clone(),
        lock_wait_secs: 300,
        operation: Operation::Backup {
            source: format!("{}.diverged", keeper.source),
            spec,
            full: true,
            tags: vec!["diverged".into(), format!("why={why}")],
        },
    };
    let input =
        serde_json::to_vec(&request).map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
    let mut child = tokio::process::Command::new(exe)
        .arg(crate::daemon::jobs::CHILD_COMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::io(
                format!("starting {} for the diverged copy", exe.display()),
                e,
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&input)
            .await
            .map_err(|e| Error::io("handing the backup request to its process", e))?;
    }
    let mut out = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_end(&mut out).await;
    }
    let mut err = Vec::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut err).await;
    }
    let _ = child.wait().await;
    let outcome: OperationOutcome = serde_json::from_slice(&out).map_err(|_| {
        Error::new(
            ErrorKind::Io,
            format!(
                "the backup of the diverged copy ended without a result: {}",
                tail(&String::from_utf8_lossy(&err))
            ),
        )
    })?;
    match (outcome.status, outcome.output, outcome.failure) {
        (Status::Succeeded, Some(Output::Backup { snapshot_id, .. }), _) => Ok(snapshot_id),
        (_, _, failure) => Err(Error::new(
            ErrorKind::Io,
            format!(
                "the backup of the diverged copy failed: {}",
                failure
                    .map(|f| f.message)
                    .unwrap_or_else(|| "no reason given".into())
            ),
        )),
    }
}
