//! `restore --to DIR`: recreates a snapshot's files under a target directory.
//! The plan is made from the trees first; then packs are read once each, in
//! parallel, and every blob is written to every file that holds it. Nothing
//! is ever written outside the target: names are single components, existing
//! symlinks on the way are refused, and files are opened without following
//! links.

pub mod check;
mod plan;
mod target;
mod writer;

use crate::engine::progress::Progress;
use plan::Plan;
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::storage::FileKind;
use seawall_common::{Error, ErrorKind, Repository, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
pub use writer::running_as_root;
use writer::Files;

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Directory everything is restored under.
    pub target: PathBuf,
    /// Restore only these snapshot paths (and what is below them).
    pub include: Vec<String>,
    /// Packs processed at once.
    pub threads: usize,
    /// Keep what a content check that follows needs ([`CheckBasis`]).
    pub fingerprint: bool,
}

/// XXH3-64 of each blob's plaintext, taken after the plaintext was proved
/// against its id (keyed BLAKE3): reading a restored file back and
/// comparing these proves it holds the snapshot's bytes at a fraction of
/// hashing it again.
pub type Fingerprints = std::collections::HashMap<seawall_common::Id, u64>;

/// What a restore hands the content check after it: its plan (what the
/// trees say, read once) and the fingerprints of the blobs it wrote.
pub struct CheckBasis {
    plan: Plan,
    fingerprints: Fingerprints,
}

impl std::fmt::Debug for CheckBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckBasis")
            .field("files", &self.plan.files.len())
            .field("fingerprints", &self.fingerprints.len())
            .finish()
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreSummary {
    /// Files restored whole.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links made (paths that are another name of a restored file).
    pub hardlinks: u64,
    /// FIFOs and device nodes made.
    pub specials: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub duration_secs: f64,
    /// Files that could not be restored, with why; they are removed, not left torn.
    pub failed: Vec<String>,
    /// What was restored without all its metadata (an extended attribute
    /// this user or file system refuses), one line each.
    pub warnings: Vec<String>,
    /// For a content check, when asked for.
    #[serde(skip)]
    pub check_basis: Option<Arc<CheckBasis>>,
}

/// Workers a restore runs by default: one more than the cores, so a core
/// is not left idle while a worker waits for its read. A worker holds one
/// job's range (at most 4 MiB), so each costs little memory.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        + 1
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("restore worker stopped: {e}")))?
}

/// Restores a snapshot (or the parts named by `include`) under the target.
pub async fn restore(
    repo: Arc<Repository>,
    snapshot: &Snapshot,
    opts: RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let root = snapshot.tree.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "snapshot of {} has no file tree; restore it with the options for its source",
                snapshot.source
            ),
        )
    })?;
    repo.load_index().await?;
    let plan = Plan::from_trees(&repo, root, &opts.include, &progress).await?;
    let kept_plan = opts.fingerprint.then(|| plan.clone());
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?;
    let target_dir =
        std::fs::canonicalize(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?;

    let Plan {
        dirs,
        files,
        links,
        hardlinks,
        specials,
    } = plan;
    let dirs = {
        let t = target_dir.clone();
        blocking(move || {
            for (rel, _) in &dirs {
                target::create_dir(&t, rel)?;
            }
            Ok(dirs)
        })
        .await?
    };
    let (jobs, missing) = plan::group_by_pack(&repo, &files);
    let files = Arc::new(Files::new(
        target_dir.clone(),
        files,
        writer::running_as_root(),
        opts.fingerprint,
    ));
    for (fi, why) in missing {
        files.fail(fi, why);
    }

    let queue = Arc::new(plan::JobQueues::new(jobs, opts.threads));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..opts.threads.max(1) {
        let (repo, queue, files, progress) =
            (repo.clone(), queue.clone(), files.clone(), progress.clone());
        workers.spawn(async move {
            // Decode buffers grow to a chunk's size once and serve every
            // job of this worker.
            let mut scratch = seawall_common::repo::blob::DecodeScratch::default();
            while let Some(job) = queue.next(w) {
                let data = repo
                    .storage()
                    .read_range(
                        FileKind::Pack,
                        &job.pack.to_hex(),
                        job.start,
                        job.end - job.start,
                    )
                    .await;
                let (key, files, progress) = (repo.key().clone(), files.clone(), progress.clone());
                scratch = tokio::task::spawn_blocking(move || {
                    files.write_pack(&key, &job, data, &progress, &mut scratch);
                    scratch
                })
                .await
                .unwrap_or_default();
            }
        });
    }
    while workers.join_next().await.is_some() {}

    let summary = {
        let t = target_dir.clone();
        let files = files.clone();
        blocking(move || {
            let mut s = files.finish_all()?;
            let as_root = writer::running_as_root();
            for (rel, node) in &links {
                let path = t.join(rel);
                target::replace_with_symlink(
                    &path,
                    node.link_target.as_deref().unwrap_or_default(),
                )?;
                s.warnings.extend(
                    crate::engine::files::apply_metadata(&path, node, as_root)
                        .map_err(|e| Error::io(path.display(), e))?,
                );
                s.symlinks += 1;
            }
            for (rel, first) in &hardlinks {
                match target::replace_with_hard_link(&t.join(first), &t.join(rel)) {
                    Ok(()) => s.hardlinks += 1,
                    Err(e) => s.failed.push(format!(
                        "{}: a hard link of {}, not made: {e}",
                        shown(rel),
                        shown(first)
                    )),
                }
            }
            for (rel, node) in &specials {
                // A device node needs root: one that cannot be made is
                // named, and the rest of the tree still restored.
                let path = t.join(rel);
                let made = target::replace_with_special(&path, node).and_then(|()| {
                    crate::engine::files::apply_metadata(&path, node, as_root)
                        .map_err(|e| Error::io(path.display(), e))
                });
                match made {
                    Ok(refused) => {
                        s.warnings.extend(refused);
                        s.specials += 1;
                    }
                    Err(e) => s.failed.push(format!("{}: {e}", shown(rel))),
                }
            }
            // Deepest first, so setting a parent's mtime is not undone by its children.
            for (rel, node) in dirs.iter().rev() {
                let path = t.join(rel);
                s.warnings.extend(
                    crate::engine::files::apply_metadata(&path, node, as_root)
                        .map_err(|e| Error::io(path.display(), e))?,
                );
                s.dirs += 1;
            }
            s.failed.sort();
            Ok(s)
        })
        .await?
    };
    let check_basis = kept_plan.map(|plan| {
        Arc::new(CheckBasis {
            plan,
            fingerprints: files.fingerprints(),
        })
    });
    Ok(RestoreSummary {
        duration_secs: started.elapsed().as_secs_f64(),
        check_basis,
        ..summary
    })
}

/// The path as the snapshot names it, for messages.
fn shown(rel: &Path) -> String {
    Path::new("/").join(rel).display().to_string()
}
