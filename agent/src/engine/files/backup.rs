//! `backup files`: walks the given paths depth first, sends file reads to a
//! pool of reader threads, reuses unchanged files from the parent snapshot,
//! stores one tree blob per directory and finally the snapshot manifest,
//! which is written only after every pack and index it needs.

use super::excludes::Excludes;
use super::scan;
use super::walker::{Walk, WalkRules};
use crate::engine::pipeline::Saver;
use crate::engine::progress::Progress;
use seawall_common::repo::lock::RepoLock;
use seawall_common::repo::snapshot::{BackupType, Origin, Snapshot};
use seawall_common::storage::FileKind;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use std::collections::BTreeMap;
use std::path::{Component, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Which snapshot unchanged files are taken from.
#[derive(Debug, Clone, Default)]
pub enum ParentChoice {
    /// The newest snapshot of the same host and paths.
    #[default]
    Auto,
    /// Read every file.
    None,
    /// A given snapshot.
    Snapshot(Id),
}

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Files and directories to back up.
    pub paths: Vec<PathBuf>,
    /// Exclude globs.
    pub excludes: Vec<String>,
    /// Tags recorded in the snapshot.
    pub tags: Vec<String>,
    /// Parent snapshot choice.
    pub parent: ParentChoice,
    /// Do not descend into other file systems.
    pub one_file_system: bool,
    /// Reader and encoder threads each.
    pub threads: usize,
    /// Packs uploaded at once.
    pub uploads: usize,
    /// zstd level for blobs.
    pub compression_level: i32,
    /// Count files first so progress can show an ETA.
    pub scan: bool,
    /// Seconds to wait for a conflicting lock.
    pub lock_wait: Duration,
    /// The agent and region recorded in the manifest.
    pub origin: Origin,
}

impl Default for BackupOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        BackupOptions {
            paths: vec![],
            excludes: vec![],
            tags: vec![],
            parent: ParentChoice::Auto,
            one_file_system: false,
            threads: cores,
            uploads: 4,
            compression_level: 1,
            scan: false,
            lock_wait: Duration::from_secs(60),
            origin: Origin::default(),
        }
    }
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: Id,
    /// The manifest as written.
    pub snapshot: Snapshot,
}

/// Backs up files and directories into `repo`.
pub async fn backup_files(
    repo: Arc<Repository>,
    opts: BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let time = chrono::Utc::now();
    let paths = resolve_paths(&opts.paths)?;
    let excludes = Excludes::new(&opts.excludes)?;
    crate::engine::under_backup_lock(&repo, opts.lock_wait, async |lock| {
        run(
            repo.clone(),
            &opts,
            paths,
            excludes,
            progress,
            (started, time),
            lock,
        )
        .await
    })
    .await
}

async fn run(
    repo: Arc<Repository>,
    opts: &BackupOptions,
    paths: Vec<PathBuf>,
    excludes: Excludes,
    progress: Arc<Progress>,
    (started, time): (Instant, chrono::DateTime<chrono::Utc>),
    lock: &RepoLock,
) -> Result<BackupOutcome> {
    repo.load_index().await?;
    let path_strings: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let hostname = seawall_common::repo::hostname();
    let parent = match &opts.parent {
        ParentChoice::None => None,
        ParentChoice::Snapshot(id) => Some(repo.find_snapshot(&id.to_hex()).await?),
        ParentChoice::Auto => repo.snapshots().await?.into_iter().rev().find(|(_, s)| {
            s.source == "files"
                && s.hostname == hostname
                && s.paths == path_strings
                && s.tree.is_some()
        }),
    };
    let parent_tree = match &parent {
        Some((_, s)) => match s.tree {
            Some(t) => Some(repo.load_tree(&t).await?),
            None => None,
        },
        None => None,
    };
    if opts.scan {
        scan::spawn(paths.clone(), excludes.clone(), progress.clone());
    }
    let handle = Handle::current();
    let saver = Saver::start(
        repo.clone(),
        opts.threads,
        opts.uploads,
        opts.compression_level,
        progress.clone(),
        handle.clone(),
    );
    let rules = WalkRules {
        one_file_system: opts.one_file_system,
        settled_before: None,
        reread_changing: true,
    };
    let threads = opts.threads;
    let walk_repo = repo.clone();
    let walked = tokio::task::spawn_blocking(move || {
        let walk = Walk::start(
            walk_repo,
            saver,
            Box::new(excludes),
            rules,
            threads,
            progress,
            handle,
        )?;
        // Deep trees recurse deeply: give the walk its own large stack.
        let (walk, root) = std::thread::Builder::new()
            .name("walk".into())
            .stack_size(256 * 1024 * 1024)
            .spawn(move || {
                let root = walk.save_roots(&paths, parent_tree.as_ref());
                (walk, root)
            })
            .map_err(|e| Error::io("starting walker thread", e))?
            .join()
            .map_err(|_| Error::new(ErrorKind::Io, "walker thread panicked"))?;
        // Flushed even after a failed walk, so no upload is left running.
        let finished = walk.finish();
        // Only now is every blob stored: a failure before this point leaves no snapshot.
        Ok::<_, Error>((root?, finished?))
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, format!("backup walk stopped: {e}")))?;
    let (root, walked) = walked?;
    let end_time = chrono::Utc::now();
    let summary = walked.summary(started.elapsed().as_secs_f64());
    let snapshot = Snapshot {
        time,
        end_time,
        hostname: seawall_common::repo::hostname(),
        source: "files".into(),
        paths: path_strings,
        tags: opts.tags.clone(),
        region: opts.origin.region.clone(),
        agent: opts.origin.agent.clone(),
        backup_type: if parent.is_some() {
            BackupType::Incremental
        } else {
            BackupType::Full
        },
        parent: parent.map(|(id, _)| id),
        excludes: opts.excludes.clone(),
        tree: Some(root),
        streams: vec![],
        facts: BTreeMap::new(),
        summary,
    };
    // The commit point: only while the lock still protects the packs.
    lock.check()?;
    let (id, len) = repo.write_json(FileKind::Snapshot, &snapshot).await?;
    crate::engine::record_in_head(&repo, id, snapshot.time).await;
    let mut snapshot = snapshot;
    snapshot.summary.bytes_added += len;
    Ok(BackupOutcome { id, snapshot })
}

/// Makes paths absolute and clean, checks they exist, drops ones nested in others.
fn resolve_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "nothing to back up: give at least one PATH",
        ));
    }
    let mut out = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).map_err(|e| Error::io(p.display(), e))?;
        let mut clean = PathBuf::from("/");
        for c in abs.components() {
            match c {
                Component::Normal(n) => clean.push(n),
                Component::ParentDir => {
                    clean.pop();
                }
                _ => {}
            }
        }
        std::fs::symlink_metadata(&clean)
            .map_err(|e| Error::io(format!("backup path {}", p.display()), e))?;
        out.push(clean);
    }
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
    Ok(out)
}
