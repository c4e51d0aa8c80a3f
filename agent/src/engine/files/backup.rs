//! `backup files`: walks the given paths depth first, sends file reads to a
//! pool of reader threads, reuses unchanged files from the parent snapshot,
//! stores one tree blob per directory and finally the snapshot manifest,
//! which is written only after every pack and index it needs.

use super::excludes::Excludes;
use super::meta::{node_from_metadata, read_xattrs, unchanged};
use super::reader::{read_into, ATTEMPTS as READ_ATTEMPTS};
use super::scan;
use crate::engine::pipeline::Saver;
use crate::engine::progress::Progress;
use crossbeam_channel::{bounded, Receiver, Sender};
use seawall_common::chunker::ChunkerParams;
use seawall_common::repo::lock::RepoLock;
use seawall_common::repo::snapshot::{BackupSummary, BackupType, Origin, Snapshot};
use seawall_common::repo::tree::{Node, NodeKind, Tree};
use seawall_common::repo::BlobType;
use seawall_common::storage::FileKind;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    let lock = RepoLock::acquire(repo.clone(), false, "backup", opts.lock_wait).await?;
    let result = run(
        repo.clone(),
        &opts,
        paths,
        excludes,
        progress,
        (started, time),
        &lock,
    )
    .await;
    let released = lock.release().await;
    let outcome = result?;
    released?;
    Ok(outcome)
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
    let walker = Arc::new(Walker {
        repo: repo.clone(),
        saver,
        handle: handle.clone(),
        excludes,
        one_file_system: opts.one_file_system,
        params: repo.config().chunker,
        progress: progress.clone(),
        counts: Counts::default(),
        warnings: Mutex::new(Vec::new()),
    });
    let threads = opts.threads.max(1);
    let walk = {
        let walker = walker.clone();
        tokio::task::spawn_blocking(move || -> Result<Id> {
            let (jobs_tx, jobs_rx) = bounded::<ReadJob>(threads * 4);
            let readers: Vec<_> = (0..threads)
                .map(|i| {
                    let w = walker.clone();
                    let rx = jobs_rx.clone();
                    std::thread::Builder::new()
                        .name(format!("read-{i}"))
                        .spawn(move || w.read_loop(rx))
                        .map_err(|e| Error::io("starting reader thread", e))
                })
                .collect::<Result<_>>()?;
            // Deep trees recurse deeply: give the walk its own large stack.
            let w = walker.clone();
            let root = std::thread::Builder::new()
                .name("walk".into())
                .stack_size(256 * 1024 * 1024)
                .spawn(move || w.save_roots(&paths, parent_tree.as_ref(), &jobs_tx))
                .map_err(|e| Error::io("starting walker thread", e))?
                .join()
                .map_err(|_| Error::new(ErrorKind::Io, "walker thread panicked"))?;
            for r in readers {
                let _ = r.join();
            }
            root
        })
    };
    let root = walk
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("backup walk stopped: {e}")))?;
    let walker =
        Arc::try_unwrap(walker).map_err(|_| Error::new(ErrorKind::Io, "walker still shared"))?;
    let Walker {
        saver,
        counts,
        warnings,
        ..
    } = walker;
    let stats = tokio::task::spawn_blocking(move || saver.finish())
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("saver stopped: {e}")))?;
    // Only now is every blob stored: a failure before this point leaves no snapshot.
    let root = root?;
    let stats = stats?;
    let mut summary = BackupSummary {
        files_new: counts.new.load(Ordering::Relaxed),
        files_changed: counts.changed.load(Ordering::Relaxed),
        files_unchanged: counts.unchanged.load(Ordering::Relaxed),
        dirs: counts.dirs.load(Ordering::Relaxed),
        bytes_read: counts.bytes_read.load(Ordering::Relaxed),
        bytes_total: counts.bytes_total.load(Ordering::Relaxed),
        blobs_added: stats.blobs_added,
        bytes_added: stats.bytes_added,
        duration_secs: 0.0,
        warnings: warnings.into_inner().unwrap_or_else(|p| p.into_inner()),
    };
    let end_time = chrono::Utc::now();
    summary.duration_secs = started.elapsed().as_secs_f64();
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

#[derive(Default)]
struct Counts {
    new: AtomicU64,
    changed: AtomicU64,
    unchanged: AtomicU64,
    dirs: AtomicU64,
    bytes_read: AtomicU64,
    bytes_total: AtomicU64,
}

struct ReadJob {
    path: PathBuf,
    node: Node,
    reply: Sender<Option<Node>>,
}

enum Slot {
    Ready(Box<Node>),
    Waiting(Receiver<Option<Node>>),
}

struct Walker {
    repo: Arc<Repository>,
    saver: Saver,
    handle: Handle,
    excludes: Excludes,
    one_file_system: bool,
    params: ChunkerParams,
    progress: Arc<Progress>,
    counts: Counts,
    warnings: Mutex<Vec<String>>,
}

/// A directory on the way from `/` to a backup path: stored with its real
/// metadata but only the children that lead to backup paths.
#[derive(Default)]
struct Virtual {
    children: BTreeMap<String, Virtual>,
    real: bool,
}

impl Walker {
    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }

    fn read_loop(&self, jobs: Receiver<ReadJob>) {
        for mut job in jobs {
            let result = match read_into(
                &job.path,
                &mut job.node,
                &self.saver,
                self.params,
                &self.progress,
            ) {
                Ok(read) => {
                    self.counts.bytes_read.fetch_add(read, Ordering::Relaxed);
                    if job.node.changed_during_backup {
                        self.warn(format!(
                            "{} changed while it was read ({} attempts); its content in this snapshot may be inconsistent",
                            job.path.display(),
                            READ_ATTEMPTS
                        ));
                    }
                    Some(job.node)
                }
                Err(e) => {
                    self.warn(format!("cannot read {}: {e}", job.path.display()));
                    None
                }
            };
            Progress::add(&self.progress.files_done, 1);
            let _ = job.reply.send(result);
        }
    }

    fn save_roots(
        &self,
        paths: &[PathBuf],
        parent: Option<&Tree>,
        jobs: &Sender<ReadJob>,
    ) -> Result<Id> {
        let mut root = Virtual::default();
        for p in paths {
            let mut v = &mut root;
            for c in p.components() {
                if let Component::Normal(n) = c {
                    let name = n.to_str().ok_or_else(|| {
                        Error::new(
                            ErrorKind::InvalidInput,
                            format!("backup path {} is not UTF-8", p.display()),
                        )
                    })?;
                    v = v.children.entry(name.to_string()).or_default();
                }
            }
            v.real = true;
        }
        if root.real {
            let dev = std::fs::metadata("/").map_err(|e| Error::io("/", e))?.dev();
            return self.save_dir(Path::new("/"), dev, parent, jobs);
        }
        self.save_virtual(Path::new("/"), &root, parent, jobs)
    }

    fn save_virtual(
        &self,
        path: &Path,
        v: &Virtual,
        parent: Option<&Tree>,
        jobs: &Sender<ReadJob>,
    ) -> Result<Id> {
        let mut slots = Vec::new();
        for (name, child) in &v.children {
            let child_path = path.join(name);
            let meta = std::fs::symlink_metadata(&child_path)
                .map_err(|e| Error::io(child_path.display(), e))?;
            let parent_node = find(parent, name.as_bytes());
            if child.real {
                if let Some(slot) = self.entry(
                    &child_path,
                    OsStr::new(name),
                    &meta,
                    parent_node,
                    meta.dev(),
                    jobs,
                )? {
                    slots.push(slot);
                }
            } else {
                let sub_parent = self.parent_subtree(parent_node);
                let mut node = self.node(&child_path, OsStr::new(name), NodeKind::Dir, &meta);
                node.subtree =
                    Some(self.save_virtual(&child_path, child, sub_parent.as_ref(), jobs)?);
                slots.push(Slot::Ready(Box::new(node)));
            }
        }
        self.store_tree(slots)
    }

    fn parent_subtree(&self, node: Option<&Node>) -> Option<Tree> {
        let id = node.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
        match self.handle.block_on(self.repo.load_tree(&id)) {
            Ok(t) => Some(t),
            Err(e) => {
                self.warn(format!(
                    "parent snapshot tree {} unreadable, reading files again: {e}",
                    id.short()
                ));
                None
            }
        }
    }

    /// A node with its extended attributes; what could not be read of
    /// them is a warning.
    fn node(&self, path: &Path, name: &OsStr, kind: NodeKind, meta: &std::fs::Metadata) -> Node {
        let mut node = node_from_metadata(name, kind, meta);
        let (xattrs, problems) = read_xattrs(path);
        node.xattrs = xattrs;
        for p in problems {
            self.warn(p);
        }
        node
    }

    fn entry(
        &self,
        path: &Path,
        name: &OsStr,
        meta: &std::fs::Metadata,
        parent_node: Option<&Node>,
        dev: u64,
        jobs: &Sender<ReadJob>,
    ) -> Result<Option<Slot>> {
        use std::os::unix::fs::FileTypeExt;
        let ft = meta.file_type();
        if ft.is_file() {
            let mut node = self.node(path, name, NodeKind::File, meta);
            self.counts
                .bytes_total
                .fetch_add(meta.len(), Ordering::Relaxed);
            if let Some(p) = parent_node {
                if unchanged(p, meta) && p.content.iter().all(|id| self.saver.has(id)) {
                    node.content = p.content.clone();
                    self.counts.unchanged.fetch_add(1, Ordering::Relaxed);
                    Progress::add(&self.progress.files_done, 1);
                    Progress::add(&self.progress.bytes_done, meta.len());
                    return Ok(Some(Slot::Ready(Box::new(node))));
                }
                self.counts.changed.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counts.new.fetch_add(1, Ordering::Relaxed);
            }
            let (tx, rx) = bounded(1);
            jobs.send(ReadJob {
                path: path.to_path_buf(),
                node,
                reply: tx,
            })
            .map_err(|_| Error::new(ErrorKind::Io, "reader threads stopped"))?;
            return Ok(Some(Slot::Waiting(rx)));
        }
        if ft.is_dir() {
            let mut node = self.node(path, name, NodeKind::Dir, meta);
            self.counts.dirs.fetch_add(1, Ordering::Relaxed);
            if self.one_file_system && meta.dev() != dev {
                node.subtree = Some(self.store_tree(vec![])?);
            } else {
                let sub_parent = self.parent_subtree(parent_node);
                node.subtree = Some(self.save_dir(path, meta.dev(), sub_parent.as_ref(), jobs)?);
            }
            return Ok(Some(Slot::Ready(Box::new(node))));
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| Error::io(path.display(), e))?;
            let Some(target) = target.to_str() else {
                self.warn(format!(
                    "skipping symlink {} with a non-UTF-8 target",
                    path.display()
                ));
                return Ok(None);
            };
            let mut node = self.node(path, name, NodeKind::Symlink, meta);
            node.link_target = Some(target.to_string());
            return Ok(Some(Slot::Ready(Box::new(node))));
        }
        let special = if ft.is_fifo() {
            NodeKind::Fifo
        } else if ft.is_char_device() {
            NodeKind::CharDevice
        } else if ft.is_block_device() {
            NodeKind::BlockDevice
        } else {
            // A socket belongs to the process listening on it; restic
            // skips them too.
            self.warn(format!(
                "skipping {}: sockets are not backed up",
                path.display()
            ));
            return Ok(None);
        };
        Ok(Some(Slot::Ready(Box::new(
            self.node(path, name, special, meta),
        ))))
    }

    fn save_dir(
        &self,
        path: &Path,
        dev: u64,
        parent: Option<&Tree>,
        jobs: &Sender<ReadJob>,
    ) -> Result<Id> {
        let mut names = Vec::new();
        match std::fs::read_dir(path) {
            Ok(entries) => {
                for entry in entries {
                    match entry {
                        Ok(e) => names.push(e.file_name()),
                        Err(e) => self.warn(format!("listing {}: {e}", path.display())),
                    }
                }
            }
            Err(e) => self.warn(format!("cannot list {}: {e}", path.display())),
        }
        // Trees are sorted by the names' bytes, which is what binary search in `find` expects.
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut slots = Vec::with_capacity(names.len());
        for name in names {
            let child = path.join(&name);
            if self.excludes.excludes(&child) {
                continue;
            }
            let meta = match std::fs::symlink_metadata(&child) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(format!(
                        "{} vanished or is unreadable: {e}",
                        child.display()
                    ));
                    continue;
                }
            };
            if let Some(slot) = self.entry(
                &child,
                &name,
                &meta,
                find(parent, name.as_bytes()),
                dev,
                jobs,
            )? {
                slots.push(slot);
            }
        }
        self.store_tree(slots)
    }

    fn store_tree(&self, slots: Vec<Slot>) -> Result<Id> {
        let mut nodes = Vec::with_capacity(slots.len());
        for slot in slots {
            match slot {
                Slot::Ready(n) => nodes.push(*n),
                Slot::Waiting(rx) => match rx.recv() {
                    Ok(Some(n)) => nodes.push(n),
                    Ok(None) => {}
                    Err(_) => return Err(Error::new(ErrorKind::Io, "reader thread stopped")),
                },
            }
        }
        let data = Tree { nodes }.to_bytes()?;
        let id = self.saver.blob_id(&data);
        self.saver.save(BlobType::Tree, id, data)?;
        Ok(id)
    }
}

fn find<'a>(tree: Option<&'a Tree>, name: &[u8]) -> Option<&'a Node> {
    let nodes = &tree?.nodes;
    nodes
        .binary_search_by(|n| n.raw_name().cmp(name))
        .ok()
        .map(|i| &nodes[i])
}
