//! The walk both file-level backups share (`backup files` and the
//! PostgreSQL data directory): directories are listed and stored as tree
//! blobs depth first, file reads go to a pool of reader threads, and a file
//! the parent snapshot already holds unchanged is taken from it unread.

use super::excludes::Excludes;
use super::meta::{node_from_metadata, read_xattrs, unchanged};
use super::reader::{read_into, ATTEMPTS as READ_ATTEMPTS};
use crate::engine::pipeline::{Saver, SaverStats};
use crate::engine::progress::Progress;
use crossbeam_channel::{bounded, Receiver, Sender};
use seawall_common::chunker::ChunkerParams;
use seawall_common::repo::snapshot::BackupSummary;
use seawall_common::repo::tree::{Node, NodeKind, Tree};
use seawall_common::repo::BlobType;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::runtime::Handle;

/// What a walk does with an entry it meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The entry and, for a directory, everything below it.
    Whole,
    /// Nothing of it.
    Skip,
    /// A directory without its contents (PostgreSQL's runtime directories).
    DirOnly,
}

/// Decides per path what a walk keeps.
pub trait WalkFilter: Send + Sync {
    /// What to do with `path`.
    fn keep(&self, path: &Path) -> Keep;
}

impl WalkFilter for Excludes {
    fn keep(&self, path: &Path) -> Keep {
        if self.excludes(path) {
            Keep::Skip
        } else {
            Keep::Whole
        }
    }
}

/// How a walk treats files.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkRules {
    /// Do not descend into other file systems.
    pub one_file_system: bool,
    /// Take a file from the parent only if its recorded mtime and ctime are
    /// before this (seconds, nanoseconds): a file written in the same clock
    /// tick as the parent read it may have changed without its times
    /// changing, so it is read again (git's "racy" rule, pgBackRest's
    /// timestamp check).
    pub settled_before: Option<(i64, u32)>,
    /// Read a file that changes under the reader again, and warn if it
    /// keeps changing. Off where changes during the read are expected and
    /// repaired later (PostgreSQL's data files, which WAL replay mends).
    pub reread_changing: bool,
}

/// File counts of a walk.
#[derive(Debug, Default)]
pub struct Counts {
    /// Files the parent did not have.
    pub new: AtomicU64,
    /// Files read again.
    pub changed: AtomicU64,
    /// Files taken from the parent.
    pub unchanged: AtomicU64,
    /// Directories.
    pub dirs: AtomicU64,
    /// Bytes read.
    pub bytes_read: AtomicU64,
    /// Bytes of every file kept.
    pub bytes_total: AtomicU64,
}

/// What a finished walk reports.
pub struct WalkOutcome {
    /// File counts.
    pub counts: Counts,
    /// What could not be read, one line each.
    pub warnings: Vec<String>,
    /// What the saver stored.
    pub stats: SaverStats,
}

impl WalkOutcome {
    /// The snapshot summary of a walk that took `duration_secs`.
    pub fn summary(self, duration_secs: f64) -> BackupSummary {
        let c = &self.counts;
        BackupSummary {
            files_new: c.new.load(Ordering::Relaxed),
            files_changed: c.changed.load(Ordering::Relaxed),
            files_unchanged: c.unchanged.load(Ordering::Relaxed),
            dirs: c.dirs.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            bytes_total: c.bytes_total.load(Ordering::Relaxed),
            blobs_added: self.stats.blobs_added,
            bytes_added: self.stats.bytes_added,
            duration_secs,
            warnings: self.warnings,
        }
    }
}

struct ReadJob {
    path: PathBuf,
    node: Node,
    reply: Sender<Option<Node>>,
}

/// A node ready now, or one a reader thread is still filling.
pub enum Slot {
    /// Complete.
    Ready(Box<Node>),
    /// Being read; `None` if the read failed (the file is left out, with a warning).
    Waiting(Receiver<Option<Node>>),
}

/// The walk's shared state: reader threads hold it too.
struct Shared {
    repo: Arc<Repository>,
    saver: Saver,
    handle: Handle,
    filter: Box<dyn WalkFilter>,
    rules: WalkRules,
    params: ChunkerParams,
    progress: Arc<Progress>,
    counts: Counts,
    warnings: Mutex<Vec<String>>,
}

/// A running walk: its reader threads and the queue that feeds them. Its
/// methods block; call them off the async runtime.
pub struct Walk {
    shared: Arc<Shared>,
    jobs: Option<Sender<ReadJob>>,
    readers: Vec<JoinHandle<()>>,
}

/// A directory on the way from `/` to a backup path: stored with its real
/// metadata but only the children that lead to backup paths.
#[derive(Default)]
struct Virtual {
    children: BTreeMap<String, Virtual>,
    real: bool,
}

impl Walk {
    /// Starts the saver and `threads` reader threads.
    pub fn start(
        repo: Arc<Repository>,
        saver: Saver,
        filter: Box<dyn WalkFilter>,
        rules: WalkRules,
        threads: usize,
        progress: Arc<Progress>,
        handle: Handle,
    ) -> Result<Walk> {
        let shared = Arc::new(Shared {
            params: repo.config().chunker,
            repo,
            saver,
            handle,
            filter,
            rules,
            progress,
            counts: Counts::default(),
            warnings: Mutex::new(Vec::new()),
        });
        let threads = threads.max(1);
        let (jobs_tx, jobs_rx) = bounded::<ReadJob>(threads * 4);
        let mut walk = Walk {
            shared,
            jobs: Some(jobs_tx),
            readers: Vec::new(),
        };
        for i in 0..threads {
            let s = walk.shared.clone();
            let rx = jobs_rx.clone();
            let reader = std::thread::Builder::new()
                .name(format!("read-{i}"))
                .spawn(move || s.read_loop(rx))
                .map_err(|e| Error::io("starting reader thread", e))?;
            walk.readers.push(reader);
        }
        Ok(walk)
    }

    /// Records a warning (also logged).
    pub fn warn(&self, msg: String) {
        self.shared.warn(msg);
    }

    /// Stops the readers, flushes the saver; only after this is every blob stored.
    pub fn finish(self) -> Result<WalkOutcome> {
        let Walk {
            shared,
            jobs,
            readers,
        } = self;
        // Readers end when the queue closes.
        drop(jobs);
        for r in readers {
            let _ = r.join();
        }
        let shared = Arc::try_unwrap(shared)
            .map_err(|_| Error::new(ErrorKind::Io, "walk state still shared"))?;
        let stats = shared.saver.finish()?;
        Ok(WalkOutcome {
            counts: shared.counts,
            warnings: shared
                .warnings
                .into_inner()
                .unwrap_or_else(|p| p.into_inner()),
            stats,
        })
    }

    /// Stores the tree of absolute `paths` from `/` down: the directories
    /// on the way hold only what leads to a backup path.
    pub fn save_roots(&self, paths: &[PathBuf], parent: Option<&Tree>) -> Result<Id> {
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
            return self.save_dir(Path::new("/"), parent);
        }
        self.save_virtual(Path::new("/"), &root, parent)
    }

    fn save_virtual(&self, path: &Path, v: &Virtual, parent: Option<&Tree>) -> Result<Id> {
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
                )? {
                    slots.push(slot);
                }
            } else {
                let sub_parent = self.parent_subtree(parent_node);
                let mut node = self.node(&child_path, OsStr::new(name), NodeKind::Dir, &meta);
                node.subtree = Some(self.save_virtual(&child_path, child, sub_parent.as_ref())?);
                slots.push(Slot::Ready(Box::new(node)));
            }
        }
        self.store_tree(slots)
    }

    /// The tree a parent directory node points to, if it can be read.
    pub fn parent_subtree(&self, node: Option<&Node>) -> Option<Tree> {
        let id = node.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
        match self.shared.handle.block_on(self.shared.repo.load_tree(&id)) {
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
    pub fn node(
        &self,
        path: &Path,
        name: &OsStr,
        kind: NodeKind,
        meta: &std::fs::Metadata,
    ) -> Node {
        let mut node = node_from_metadata(name, kind, meta);
        let (xattrs, problems) = read_xattrs(path);
        node.xattrs = xattrs;
        for p in problems {
            self.warn(p);
        }
        node
    }

    /// Whether the parent's node can stand for the file as it is now.
    fn reusable(&self, p: &Node, meta: &std::fs::Metadata) -> bool {
        let settled = match self.shared.rules.settled_before {
            None => true,
            Some(t) => (p.mtime, p.mtime_nsec) < t && (p.ctime, p.ctime_nsec) < t,
        };
        settled && unchanged(p, meta) && p.content.iter().all(|id| self.shared.saver.has(id))
    }

    /// The slot of one entry (`None` for what is not backed up: a socket, a
    /// symlink with a non-UTF-8 target).
    pub fn entry(
        &self,
        path: &Path,
        name: &OsStr,
        meta: &std::fs::Metadata,
        parent_node: Option<&Node>,
        dev: u64,
    ) -> Result<Option<Slot>> {
        use std::os::unix::fs::FileTypeExt;
        let counts = &self.shared.counts;
        let ft = meta.file_type();
        if ft.is_file() {
            let mut node = self.node(path, name, NodeKind::File, meta);
            counts.bytes_total.fetch_add(meta.len(), Ordering::Relaxed);
            if let Some(p) = parent_node {
                if self.reusable(p, meta) {
                    node.content = p.content.clone();
                    counts.unchanged.fetch_add(1, Ordering::Relaxed);
                    Progress::add(&self.shared.progress.files_done, 1);
                    Progress::add(&self.shared.progress.bytes_done, meta.len());
                    return Ok(Some(Slot::Ready(Box::new(node))));
                }
                counts.changed.fetch_add(1, Ordering::Relaxed);
            } else {
                counts.new.fetch_add(1, Ordering::Relaxed);
            }
            return self.read(path, node).map(Some);
        }
        if ft.is_dir() {
            let mut node = self.node(path, name, NodeKind::Dir, meta);
            counts.dirs.fetch_add(1, Ordering::Relaxed);
            if self.shared.rules.one_file_system && meta.dev() != dev {
                node.subtree = Some(self.store_tree(vec![])?);
            } else {
                let sub_parent = self.parent_subtree(parent_node);
                node.subtree = Some(self.save_dir(path, sub_parent.as_ref())?);
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

    /// Queues a read of a file no parent has (counted as new).
    pub fn read_new(&self, path: &Path, node: Node, len: u64) -> Result<Slot> {
        let counts = &self.shared.counts;
        counts.new.fetch_add(1, Ordering::Relaxed);
        counts.bytes_total.fetch_add(len, Ordering::Relaxed);
        self.read(path, node)
    }

    /// Queues a read of `path` into `node`.
    fn read(&self, path: &Path, node: Node) -> Result<Slot> {
        let (tx, rx) = bounded(1);
        self.jobs
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Io, "walk already finished"))?
            .send(ReadJob {
                path: path.to_path_buf(),
                node,
                reply: tx,
            })
            .map_err(|_| Error::new(ErrorKind::Io, "reader threads stopped"))?;
        Ok(Slot::Waiting(rx))
    }

    /// Stores the tree of directory `path`, taking unchanged files from `parent`.
    pub fn save_dir(&self, path: &Path, parent: Option<&Tree>) -> Result<Id> {
        let dev = match std::fs::metadata(path) {
            Ok(m) => m.dev(),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        self.save_dir_on(path, dev, parent)
    }

    fn save_dir_on(&self, path: &Path, dev: u64, parent: Option<&Tree>) -> Result<Id> {
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
            let keep = self.shared.filter.keep(&child);
            if keep == Keep::Skip {
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
            if keep == Keep::DirOnly {
                if meta.is_dir() {
                    let mut node = self.node(&child, &name, NodeKind::Dir, &meta);
                    node.subtree = Some(self.store_tree(vec![])?);
                    slots.push(Slot::Ready(Box::new(node)));
                }
                continue;
            }
            if let Some(slot) =
                self.entry(&child, &name, &meta, find(parent, name.as_bytes()), dev)?
            {
                slots.push(slot);
            }
        }
        self.store_tree(slots)
    }

    /// Waits for the slots' reads and stores them as one tree (the slots
    /// must be in name order).
    pub fn store_tree(&self, slots: Vec<Slot>) -> Result<Id> {
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
        self.store_blob(BlobType::Tree, data)
    }

    /// Stores one blob; its id.
    pub fn store_blob(&self, kind: BlobType, data: Vec<u8>) -> Result<Id> {
        let id = self.shared.saver.blob_id(&data);
        self.shared.saver.save(kind, id, data)?;
        Ok(id)
    }
}

impl Shared {
    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }

    fn read_loop(&self, jobs: Receiver<ReadJob>) {
        let attempts = if self.rules.reread_changing {
            READ_ATTEMPTS
        } else {
            1
        };
        for mut job in jobs {
            let result = match read_into(
                &job.path,
                &mut job.node,
                &self.saver,
                self.params,
                &self.progress,
                attempts,
            ) {
                Ok(read) => {
                    self.counts.bytes_read.fetch_add(read, Ordering::Relaxed);
                    if job.node.changed_during_backup && self.rules.reread_changing {
                        self.warn(format!(
                            "{} changed while it was read ({} attempts); its content in this snapshot may be inconsistent",
                            job.path.display(),
                            attempts
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
}

/// The node named `name` in a tree sorted by name bytes.
pub fn find<'a>(tree: Option<&'a Tree>, name: &[u8]) -> Option<&'a Node> {
    let nodes = &tree?.nodes;
    nodes
        .binary_search_by(|n| n.raw_name().cmp(name))
        .ok()
        .map(|i| &nodes[i])
}
