//! Proof that a restored tree is the snapshot: every file read back from
//! disk and each of its chunks hashed against the blob id the snapshot
//! names (the repository's keyed BLAKE3), its length checked, and every
//! symlink's target compared. The restore drill runs it after a restore.

use super::plan::Plan;
use crate::engine::progress::Progress;
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::{Error, ErrorKind, Repository, Result};
use serde::Serialize;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// Problems named in full at most; the count is exact.
const NAMED: usize = 20;

/// What the check read and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContentCheck {
    /// Files read back.
    pub files: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Symlinks compared.
    pub symlinks: u64,
    /// The first problems, one line each.
    pub problems: Vec<String>,
    /// How many problems there were.
    pub problem_count: u64,
}

/// Checks the tree restored under `target` against `snapshot`.
pub async fn check_restored(
    repo: Arc<Repository>,
    snapshot: &Snapshot,
    target: &Path,
) -> Result<ContentCheck> {
    let root = snapshot.tree.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            "the snapshot has no file tree to check a restore against",
        )
    })?;
    repo.load_index().await?;
    let plan = Plan::from_trees(&repo, root, &[], &Progress::default()).await?;
    let target = target.to_path_buf();
    tokio::task::spawn_blocking(move || check_plan(&repo, plan, &target))
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("content check stopped: {e}")))?
}

fn check_plan(repo: &Repository, plan: Plan, target: &Path) -> Result<ContentCheck> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(4);
    let per = plan.files.len().div_ceil(workers).max(1);
    let results: Vec<ContentCheck> = std::thread::scope(|scope| {
        let handles: Vec<_> = plan
            .files
            .chunks(per)
            .map(|files| {
                scope.spawn(move || {
                    let mut c = ContentCheck::default();
                    let mut buf = Vec::new();
                    for f in files {
                        let shown = Path::new("/").join(&f.rel).display().to_string();
                        match check_file(repo, &target.join(&f.rel), &f.node, &mut buf) {
                            Ok(bytes) => c.bytes += bytes,
                            Err(why) => {
                                c.problem_count += 1;
                                if c.problems.len() < NAMED {
                                    c.problems.push(format!("{shown}: {why}"));
                                }
                            }
                        }
                        c.files += 1;
                    }
                    c
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut out = ContentCheck::default();
    for r in results {
        out.files += r.files;
        out.bytes += r.bytes;
        out.problem_count += r.problem_count;
        out.problems.extend(r.problems);
    }
    for (rel, node) in &plan.links {
        out.symlinks += 1;
        let want = node.link_target.as_deref().unwrap_or_default();
        let found = std::fs::read_link(target.join(rel));
        let shown = Path::new("/").join(rel).display().to_string();
        let problem = match found {
            Ok(t) if t.as_os_str() == std::ffi::OsStr::new(want) => None,
            Ok(t) => Some(format!(
                "{shown}: symlink points to {} instead of {want}",
                t.display()
            )),
            Err(e) => Some(format!("{shown}: symlink not restored ({e})")),
        };
        if let Some(p) = problem {
            out.problem_count += 1;
            out.problems.push(p);
        }
    }
    out.problems.truncate(NAMED);
    Ok(out)
}

/// Reads one file back, chunk by chunk; the bytes hashed, or what is wrong.
fn check_file(
    repo: &Repository,
    path: &Path,
    node: &seawall_common::repo::tree::Node,
    buf: &mut Vec<u8>,
) -> std::result::Result<u64, String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("not restored ({e})"))?;
    let mut bytes = 0u64;
    for (i, id) in node.content.iter().enumerate() {
        let len = repo
            .locate(id)
            .map_err(|e| format!("chunk {i} not in the index: {e}"))?
            .raw_length as usize;
        buf.resize(len, 0);
        file.read_exact(buf)
            .map_err(|e| format!("shorter than the snapshot says ({bytes} bytes read: {e})"))?;
        if repo.key().blob_id(buf) != *id {
            return Err(format!(
                "bytes {bytes}..{} differ from the snapshot's chunk {}",
                bytes + len as u64,
                id.short()
            ));
        }
        bytes += len as u64;
    }
    let mut extra = [0u8; 1];
    match file.read(&mut extra) {
        Ok(0) => Ok(bytes),
        Ok(_) => Err(format!("longer than the snapshot's {bytes} bytes")),
        Err(e) => Err(format!("unreadable after {bytes} bytes: {e}")),
    }
}
