//! `restore --to DIR`: recreates a snapshot's files under a target directory.
//! The plan is made from the trees first; then packs are read once each,
//! in parallel, and every blob is written to every file that holds it.
//! Nothing is ever written outside the target: names are single components,
//! existing symlinks on the way are refused, and files are opened without
//! following links.

use crate::files::apply_metadata;
use crate::progress::Progress;
use seawall_common::repo::blob;
use seawall_common::repo::index::BlobLocation;
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::repo::tree::{Node, NodeKind};
use seawall_common::storage::FileKind;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Directory everything is restored under.
    pub target: PathBuf,
    /// Restore only these snapshot paths (and what is below them).
    pub include: Vec<String>,
    /// Packs processed at once.
    pub threads: usize,
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
    /// Bytes written.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub duration_secs: f64,
    /// Files that could not be restored, with why; they are removed, not left torn.
    pub failed: Vec<String>,
}

/// Everything a restore will create, made from the trees before any data is read.
struct Plan {
    summary: RestoreSummary,
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<PlannedFile>,
    links: Vec<(PathBuf, Node)>,
}

struct PlannedFile {
    rel: PathBuf,
    node: Node,
}

/// One use of a blob: which file and at which offset.
#[derive(Clone, Copy)]
struct Use {
    file: usize,
    offset: u64,
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
    std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?;
    let target =
        std::fs::canonicalize(&opts.target).map_err(|e| Error::io(opts.target.display(), e))?;

    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut files: Vec<PlannedFile> = Vec::new();
    let mut links: Vec<(PathBuf, Node)> = Vec::new();
    let includes: Vec<PathBuf> = opts
        .include
        .iter()
        .map(|i| Path::new(i.trim_start_matches('/')).to_path_buf())
        .collect();
    let mut stack = vec![(PathBuf::new(), root)];
    while let Some((rel, tree_id)) = stack.pop() {
        let tree = repo.load_tree(&tree_id).await?;
        for node in tree.nodes {
            let path = rel.join(&node.name);
            if !wanted(&path, &includes) {
                continue;
            }
            match node.kind {
                NodeKind::Dir => {
                    if let Some(sub) = node.subtree {
                        stack.push((path.clone(), sub));
                    }
                    dirs.push((path, node));
                }
                NodeKind::File => {
                    Progress::add(&progress.bytes_total, node.size);
                    Progress::add(&progress.files_total, 1);
                    files.push(PlannedFile { rel: path, node });
                }
                NodeKind::Symlink => links.push((path, node)),
            }
        }
    }
    progress
        .totals_final
        .store(true, std::sync::atomic::Ordering::Relaxed);
    dirs.sort_by(|a, b| a.0.cmp(&b.0));

    let target2 = target.clone();
    let prepared = tokio::task::spawn_blocking(move || -> Result<Plan> {
        let mut summary = RestoreSummary::default();
        for (rel, _) in &dirs {
            ensure_dir(&target2, rel)?;
            summary.dirs += 1;
        }
        for f in &files {
            if let Some(parent) = f.rel.parent() {
                ensure_dir(&target2, parent)?;
            }
            let path = target2.join(&f.rel);
            refuse_symlink(&path)?;
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| Error::io(path.display(), e))?;
            file.set_len(f.node.size)
                .map_err(|e| Error::io(path.display(), e))?;
        }
        Ok(Plan {
            summary,
            dirs,
            files,
            links,
        })
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, format!("restore stopped: {e}")))??;
    let Plan {
        summary: mut sum,
        dirs,
        files,
        links,
    } = prepared;

    // Group every needed blob by pack so each pack is read once.
    let mut by_pack: HashMap<Id, Vec<(Id, BlobLocation, Vec<Use>)>> = HashMap::new();
    let mut file_errors: HashMap<usize, String> = HashMap::new();
    {
        let index = repo.index();
        let mut seen: HashMap<Id, (Id, usize)> = HashMap::new();
        for (fi, f) in files.iter().enumerate() {
            let mut offset = 0u64;
            for id in &f.node.content {
                match index.get(id) {
                    Some(loc) => {
                        let use_ = Use { file: fi, offset };
                        match seen.get(id) {
                            Some((pack, pos)) => {
                                if let Some(list) = by_pack.get_mut(pack) {
                                    list[*pos].2.push(use_);
                                }
                            }
                            None => {
                                let list = by_pack.entry(loc.pack).or_default();
                                seen.insert(*id, (loc.pack, list.len()));
                                list.push((*id, *loc, vec![use_]));
                            }
                        }
                        offset += loc.raw_length as u64;
                    }
                    None => {
                        file_errors.insert(
                            fi,
                            format!("blob {} is missing from the repository", id.short()),
                        );
                        break;
                    }
                }
            }
        }
    }
    let files = Arc::new(files);
    let errors = Arc::new(Mutex::new(file_errors));
    let packs: Vec<_> = by_pack.into_iter().collect();
    let queue = Arc::new(Mutex::new(packs));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..opts.threads.max(1) {
        let repo = repo.clone();
        let queue = queue.clone();
        let files = files.clone();
        let errors = errors.clone();
        let target = target.clone();
        let progress = progress.clone();
        workers.spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some((pack, mut blobs)) = next else { break };
                blobs.sort_by_key(|b| b.1.offset);
                let (start, end) = match (blobs.first(), blobs.last()) {
                    (Some(f), Some(l)) => {
                        (f.1.offset as u64, l.1.offset as u64 + l.1.length as u64)
                    }
                    _ => continue,
                };
                let data = repo
                    .storage()
                    .read_range(FileKind::Pack, &pack.to_hex(), start, end - start)
                    .await;
                let key = repo.key().clone();
                let files = files.clone();
                let errors = errors.clone();
                let target = target.clone();
                let progress = progress.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    write_pack(
                        &key, pack, start, data, &blobs, &files, &target, &errors, &progress,
                    )
                })
                .await;
            }
        });
    }
    while workers.join_next().await.is_some() {}

    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
    let as_root = running_as_root();
    let target3 = target.clone();
    let files_for_meta = files.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<RestoreSummary> {
        let mut s = RestoreSummary::default();
        for (fi, f) in files_for_meta.iter().enumerate() {
            let path = target3.join(&f.rel);
            if let Some(why) = errors.get(&fi) {
                let _ = std::fs::remove_file(&path);
                s.failed
                    .push(format!("{}: {why}", Path::new("/").join(&f.rel).display()));
                continue;
            }
            apply_metadata(&path, &f.node, as_root).map_err(|e| Error::io(path.display(), e))?;
            s.files += 1;
            s.bytes += f.node.size;
        }
        for (rel, node) in &links {
            if let Some(parent) = rel.parent() {
                ensure_dir(&target3, parent)?;
            }
            let path = target3.join(rel);
            refuse_symlink_or_remove(&path)?;
            let link = node.link_target.as_deref().unwrap_or_default();
            std::os::unix::fs::symlink(link, &path).map_err(|e| Error::io(path.display(), e))?;
            apply_metadata(&path, node, as_root).map_err(|e| Error::io(path.display(), e))?;
            s.symlinks += 1;
        }
        // Deepest first, so setting a parent's mtime is not undone by its children.
        for (rel, node) in dirs.iter().rev() {
            let path = target3.join(rel);
            apply_metadata(&path, node, as_root).map_err(|e| Error::io(path.display(), e))?;
        }
        s.failed.sort();
        Ok(s)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, format!("restore stopped: {e}")))??;
    sum.files = result.files;
    sum.symlinks = result.symlinks;
    sum.bytes = result.bytes;
    sum.failed = result.failed;
    sum.duration_secs = started.elapsed().as_secs_f64();
    Ok(sum)
}

fn running_as_root() -> bool {
    // /proc/self belongs to the effective user: no unsafe geteuid call needed.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn wanted(path: &Path, includes: &[PathBuf]) -> bool {
    includes.is_empty()
        || includes
            .iter()
            .any(|i| path.starts_with(i) || i.starts_with(path))
}

/// Creates `target/rel` directory by directory, refusing any existing component that is not a real directory.
fn ensure_dir(target: &Path, rel: &Path) -> Result<()> {
    let mut cur = target.to_path_buf();
    for c in rel.components() {
        let std::path::Component::Normal(name) = c else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "snapshot path {} would leave the target; refusing it",
                    rel.display()
                ),
            ));
        };
        cur.push(name);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{} exists and is not a directory (a symlink here could lead outside the target); move it away and restore again",
                        cur.display()
                    ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&cur).map_err(|e| Error::io(cur.display(), e))?;
            }
            Err(e) => return Err(Error::io(cur.display(), e)),
        }
    }
    Ok(())
}

fn refuse_symlink(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} is an existing symlink; refusing to write through it",
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}

fn refuse_symlink_or_remove(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} is an existing directory where the snapshot has a symlink",
                path.display()
            ),
        )),
        Ok(_) => std::fs::remove_file(path).map_err(|e| Error::io(path.display(), e)),
        Err(_) => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn write_pack(
    key: &seawall_common::crypto::MasterKey,
    pack: Id,
    start: u64,
    data: Result<bytes::Bytes>,
    blobs: &[(Id, BlobLocation, Vec<Use>)],
    files: &[PlannedFile],
    target: &Path,
    errors: &Mutex<HashMap<usize, String>>,
    progress: &Progress,
) {
    let fail = |uses: &[Use], why: String| {
        let mut errs = errors.lock().unwrap_or_else(|p| p.into_inner());
        for u in uses {
            errs.entry(u.file).or_insert_with(|| why.clone());
        }
    };
    let data = match data {
        Ok(d) => d,
        Err(e) => {
            for (_, _, uses) in blobs {
                fail(uses, format!("pack {} unreadable: {e}", pack.short()));
            }
            return;
        }
    };
    for (id, loc, uses) in blobs {
        let from = (loc.offset as u64 - start) as usize;
        let sealed = &data[from..from + loc.length as usize];
        let plain = match blob::decode(key, loc.kind, id, sealed, loc.raw_length) {
            Ok(p) => p,
            Err(e) => {
                fail(uses, format!("pack {} is damaged: {e}", pack.short()));
                continue;
            }
        };
        for u in uses {
            let path = target.join(&files[u.file].rel);
            let written = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .and_then(|f| f.write_all_at(&plain, u.offset));
            match written {
                Ok(()) => Progress::add(&progress.bytes_done, plain.len() as u64),
                Err(e) => fail(&[*u], format!("writing: {e}")),
            }
        }
    }
}
