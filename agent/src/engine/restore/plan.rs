//! The restore plan: every directory, file and symlink to create, read from
//! the snapshot's trees, and the blobs each pack must deliver to which files.

use crate::engine::progress::Progress;
use seawall_common::repo::index::BlobLocation;
use seawall_common::repo::tree::{Node, NodeKind};
use seawall_common::{Id, Repository, Result};
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A file to restore.
#[derive(Clone)]
pub struct PlannedFile {
    /// Path relative to the target.
    pub rel: PathBuf,
    /// Its node, with content and metadata.
    pub node: Node,
}

/// Everything a restore creates, made from the trees before any data is read.
#[derive(Clone)]
pub struct Plan {
    /// Directories, parents before children.
    pub dirs: Vec<(PathBuf, Node)>,
    /// Files in tree order.
    pub files: Vec<PlannedFile>,
    /// Symlinks.
    pub links: Vec<(PathBuf, Node)>,
    /// Hard links: a path, and the path of the file in `files` it is
    /// another name of (its content is written once).
    pub hardlinks: Vec<(PathBuf, PathBuf)>,
    /// FIFOs and device nodes.
    pub specials: Vec<(PathBuf, Node)>,
}

/// One place a blob goes: a file and an offset in it.
#[derive(Clone, Copy)]
pub struct Use {
    /// Index into the plan's files.
    pub file: usize,
    /// Byte offset in that file.
    pub offset: u64,
}

/// One pack to read and what to do with its blobs.
pub struct PackJob {
    /// The pack.
    pub pack: Id,
    /// Start of the range to read (the first needed blob).
    pub start: u64,
    /// End of the range (after the last needed blob).
    pub end: u64,
    /// Needed blobs in pack order, with every use.
    pub blobs: Vec<(Id, BlobLocation, Vec<Use>)>,
    /// Lowest file index served, to finish files in order.
    first_file: usize,
}

impl Plan {
    /// Walks the trees below `root`, keeping what `include` selects.
    pub async fn from_trees(
        repo: &Repository,
        root: Id,
        include: &[String],
        progress: &Progress,
    ) -> Result<Plan> {
        let includes: Vec<PathBuf> = include
            .iter()
            .map(|i| PathBuf::from(i.trim_start_matches('/')))
            .collect();
        let mut plan = Plan {
            dirs: vec![],
            files: vec![],
            links: vec![],
            hardlinks: vec![],
            specials: vec![],
        };
        // (device, inode) of a linked file: the path restored first.
        let mut first_of: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let mut stack = vec![(PathBuf::new(), root)];
        while let Some((rel, tree_id)) = stack.pop() {
            let tree = repo.load_tree(&tree_id).await?;
            for node in tree.nodes.into_iter().rev() {
                let path = rel.join(std::ffi::OsStr::from_bytes(node.raw_name()));
                if !wanted(&path, &includes) {
                    continue;
                }
                match node.kind {
                    NodeKind::Dir => {
                        if let Some(sub) = node.subtree {
                            stack.push((path.clone(), sub));
                        }
                        plan.dirs.push((path, node));
                    }
                    NodeKind::File => {
                        if node.links > 1 {
                            let key = (node.device_id, node.inode);
                            if let Some(first) = first_of.get(&key) {
                                plan.hardlinks.push((path, first.clone()));
                                continue;
                            }
                            first_of.insert(key, path.clone());
                        }
                        Progress::add(&progress.bytes_total, node.size);
                        Progress::add(&progress.files_total, 1);
                        plan.files.push(PlannedFile { rel: path, node });
                    }
                    NodeKind::Symlink => plan.links.push((path, node)),
                    NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
                        plan.specials.push((path, node))
                    }
                }
            }
        }
        progress
            .totals_final
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Parents sort before their children: each directory is created after its parent.
        plan.dirs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(plan)
    }
}

fn wanted(path: &Path, includes: &[PathBuf]) -> bool {
    includes.is_empty()
        || includes
            .iter()
            .any(|i| path.starts_with(i) || i.starts_with(path))
}

/// Groups every needed blob by pack so each pack is read once. Returns the
/// jobs in the order of the files they serve, and the files whose blobs no
/// index lists.
pub fn group_by_pack(
    repo: &Repository,
    files: &[PlannedFile],
) -> (Vec<PackJob>, Vec<(usize, String)>) {
    let index = repo.index();
    let mut jobs: HashMap<Id, PackJob> = HashMap::new();
    let mut seen: HashMap<Id, (Id, usize)> = HashMap::new();
    let mut missing = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        let mut offset = 0u64;
        for id in &f.node.content {
            let Some(loc) = index.get(id) else {
                missing.push((
                    fi,
                    format!("blob {} is missing from the repository", id.short()),
                ));
                break;
            };
            let use_ = Use { file: fi, offset };
            offset += loc.raw_length as u64;
            if let Some((pack, pos)) = seen.get(id) {
                if let Some(job) = jobs.get_mut(pack) {
                    job.blobs[*pos].2.push(use_);
                }
                continue;
            }
            let job = jobs.entry(loc.pack).or_insert_with(|| PackJob {
                pack: loc.pack,
                start: u64::MAX,
                end: 0,
                blobs: vec![],
                first_file: fi,
            });
            seen.insert(*id, (loc.pack, job.blobs.len()));
            job.blobs.push((*id, *loc, vec![use_]));
            job.start = job.start.min(loc.offset as u64);
            job.end = job.end.max(loc.offset as u64 + loc.length as u64);
        }
    }
    let mut jobs: Vec<PackJob> = jobs
        .into_values()
        .flat_map(|mut j| {
            j.blobs.sort_by_key(|b| b.1.offset);
            split(j)
        })
        .collect();
    jobs.sort_by_key(|j| j.first_file);
    (jobs, missing)
}

/// Writes one job does at most. A pack of small files holds thousands of
/// them, and creating a file costs more than writing it: split, such a pack
/// is shared by every worker instead of leaving one to create its files
/// alone at the end while the others wait.
const USES_PER_JOB: usize = 128;

/// Bytes of a pack one job reads at most: what a worker holds in memory,
/// so more workers cost little.
const BYTES_PER_JOB: u64 = 4 << 20;

/// Splits a job into runs of consecutive blobs with at most
/// [`USES_PER_JOB`] writes and [`BYTES_PER_JOB`] bytes each (a single
/// blob may exceed either); each run reads only its own byte range.
fn split(job: PackJob) -> Vec<PackJob> {
    let uses: usize = job.blobs.iter().map(|b| b.2.len()).sum();
    if uses <= USES_PER_JOB && job.end - job.start <= BYTES_PER_JOB {
        return vec![job];
    }
    let mut pieces = Vec::new();
    let mut blobs = Vec::new();
    let mut taken = 0;
    let pack = job.pack;
    let close = |blobs: Vec<(Id, BlobLocation, Vec<Use>)>| PackJob {
        pack,
        start: blobs.first().map_or(0, |b| b.1.offset as u64),
        end: blobs
            .last()
            .map_or(0, |b| b.1.offset as u64 + b.1.length as u64),
        first_file: blobs
            .iter()
            .flat_map(|b| b.2.iter().map(|u| u.file))
            .min()
            .unwrap_or(0),
        blobs,
    };
    let mut piece_start = 0u64;
    for blob in job.blobs {
        let end = blob.1.offset as u64 + blob.1.length as u64;
        if taken > 0 && (taken + blob.2.len() > USES_PER_JOB || end - piece_start > BYTES_PER_JOB) {
            pieces.push(close(std::mem::take(&mut blobs)));
            taken = 0;
        }
        if taken == 0 {
            piece_start = blob.1.offset as u64;
        }
        taken += blob.2.len();
        blobs.push(blob);
    }
    if !blobs.is_empty() {
        pieces.push(close(blobs));
    }
    pieces
}

/// Pack jobs split into one contiguous run per worker. Each worker goes
/// through its own run in file order, so files finish soon after they start,
/// while different workers create files in different directories instead of
/// queueing on one directory's lock; a worker whose run is done helps another.
pub struct JobQueues {
    runs: Vec<std::sync::Mutex<Vec<PackJob>>>,
}

impl JobQueues {
    /// Splits `jobs` (in file order) into `workers` runs.
    pub fn new(jobs: Vec<PackJob>, workers: usize) -> JobQueues {
        let workers = workers.max(1);
        let per = jobs.len().div_ceil(workers).max(1);
        let mut runs: Vec<Vec<PackJob>> = (0..workers).map(|_| Vec::new()).collect();
        for (i, job) in jobs.into_iter().enumerate() {
            runs[(i / per).min(workers - 1)].push(job);
        }
        JobQueues {
            runs: runs
                .into_iter()
                .map(|mut r| {
                    // Popped from the end: reverse so the first files come first.
                    r.reverse();
                    std::sync::Mutex::new(r)
                })
                .collect(),
        }
    }

    /// The next job for worker `w`: from its own run, else from the fullest other run.
    pub fn next(&self, w: usize) -> Option<PackJob> {
        let own = w % self.runs.len();
        if let Some(job) = self.runs[own]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
        {
            return Some(job);
        }
        let busiest = (0..self.runs.len())
            .max_by_key(|&i| self.runs[i].lock().unwrap_or_else(|p| p.into_inner()).len())?;
        // Take from the far end of another run, away from where its worker is.
        let mut run = self.runs[busiest].lock().unwrap_or_else(|p| p.into_inner());
        if run.is_empty() {
            None
        } else {
            Some(run.remove(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seawall_common::repo::blob::BlobType;

    fn job(blobs: usize, uses_each: usize) -> PackJob {
        let pack = Id::random();
        let blobs: Vec<_> = (0..blobs)
            .map(|i| {
                let loc = BlobLocation {
                    pack,
                    kind: BlobType::Data,
                    offset: (i * 100) as u32,
                    length: 90,
                    raw_length: 80,
                };
                let uses = (0..uses_each)
                    .map(|u| Use {
                        file: 1000 + i * uses_each + u,
                        offset: 0,
                    })
                    .collect();
                (Id::random(), loc, uses)
            })
            .collect();
        PackJob {
            pack,
            start: 0,
            end: blobs.len() as u64 * 100 - 10,
            first_file: 1000,
            blobs,
        }
    }

    #[test]
    fn a_pack_of_many_small_files_is_split_into_ranges_that_cover_it_once() {
        let whole = job(1000, 1);
        let ids: Vec<Id> = whole.blobs.iter().map(|b| b.0).collect();
        let pieces = split(whole);
        assert_eq!(pieces.len(), 1000usize.div_ceil(USES_PER_JOB));
        let mut seen = Vec::new();
        for p in &pieces {
            let uses: usize = p.blobs.iter().map(|b| b.2.len()).sum();
            assert!(uses <= USES_PER_JOB);
            // Each piece reads exactly the range of its own blobs.
            assert_eq!(p.start, p.blobs[0].1.offset as u64);
            let last = &p.blobs[p.blobs.len() - 1].1;
            assert_eq!(p.end, last.offset as u64 + last.length as u64);
            assert_eq!(p.first_file, p.blobs[0].2[0].file);
            seen.extend(p.blobs.iter().map(|b| b.0));
        }
        assert_eq!(seen, ids);
    }

    #[test]
    fn a_pack_of_few_writes_stays_one_job_and_a_blob_is_never_split() {
        assert_eq!(split(job(16, 1)).len(), 1);
        // One blob used more times than a job allows still goes whole.
        let pieces = split(job(3, USES_PER_JOB + 5));
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.blobs.len() == 1));
    }
}
