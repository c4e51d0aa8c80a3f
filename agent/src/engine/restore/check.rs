//! Proof that a restored tree is the snapshot: every file read back from
//! disk and each of its chunks compared with what the snapshot names, its
//! length checked, and every symlink's target compared. A chunk the
//! restore fingerprinted (XXH3 of plaintext it had proved against the blob
//! id) is compared with that fingerprint; any other is hashed against the
//! blob id itself (the repository's keyed BLAKE3), several times slower.
//! The restore drill runs it after a restore.

use super::plan::Plan;
use super::{CheckBasis, Fingerprints};
use crate::engine::progress::Progress;
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::{Error, ErrorKind, Repository, Result};
use serde::Serialize;
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

/// Checks the tree restored under `target` against `snapshot`, from what
/// the restore kept for it when it has it.
pub async fn check_restored(
    repo: Arc<Repository>,
    snapshot: &Snapshot,
    target: &Path,
    basis: Option<Arc<CheckBasis>>,
) -> Result<ContentCheck> {
    let basis = match basis {
        Some(b) => b,
        None => {
            let root = snapshot.tree.ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    "the snapshot has no file tree to check a restore against",
                )
            })?;
            repo.load_index().await?;
            Arc::new(CheckBasis {
                plan: Plan::from_trees(&repo, root, &[], &Progress::default()).await?,
                fingerprints: Fingerprints::new(),
            })
        }
    };
    let target = target.to_path_buf();
    tokio::task::spawn_blocking(move || {
        check_plan(&repo, &basis.plan, &target, &basis.fingerprints)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, format!("content check stopped: {e}")))?
}

/// Bytes of a file checked as one piece of work: a large file is split so
/// every core hashes part of it.
const PIECE: u64 = 32 << 20;

/// A run of one file's chunks, checked by one worker.
struct Piece {
    /// Index into the plan's files.
    file: usize,
    /// The first chunk and the end of the run.
    chunks: std::ops::Range<usize>,
    /// Where the run starts in the file.
    offset: u64,
    /// The file's length, when this run is its last (checked against the
    /// file on disk, so a longer file is caught).
    last_of: Option<u64>,
}

/// Splits every file into runs of chunks of about [`PIECE`] bytes.
fn pieces(repo: &Repository, plan: &Plan) -> Vec<std::result::Result<Piece, (usize, String)>> {
    let mut out = Vec::new();
    for (fi, f) in plan.files.iter().enumerate() {
        let (mut start, mut offset, mut run, mut total) = (0usize, 0u64, 0u64, 0u64);
        let mut lengths = Vec::with_capacity(f.node.content.len());
        for (i, id) in f.node.content.iter().enumerate() {
            match repo.locate(id) {
                Ok(loc) => lengths.push(u64::from(loc.raw_length)),
                Err(e) => {
                    out.push(Err((fi, format!("chunk {i} not in the index: {e}"))));
                    lengths.clear();
                    break;
                }
            }
        }
        if lengths.len() != f.node.content.len() {
            continue;
        }
        for (i, len) in lengths.iter().enumerate() {
            run += len;
            total += len;
            if run >= PIECE && i + 1 < lengths.len() {
                out.push(Ok(Piece {
                    file: fi,
                    chunks: start..i + 1,
                    offset,
                    last_of: None,
                }));
                start = i + 1;
                offset += run;
                run = 0;
            }
        }
        out.push(Ok(Piece {
            file: fi,
            chunks: start..lengths.len(),
            offset,
            last_of: Some(total),
        }));
    }
    out
}

fn check_plan(
    repo: &Repository,
    plan: &Plan,
    target: &Path,
    fingerprints: &Fingerprints,
) -> Result<ContentCheck> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(8);
    let work = pieces(repo, plan);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found: Vec<(u64, Vec<(usize, String)>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (work, next) = (&work, &next);
                scope.spawn(move || {
                    let (mut bytes, mut problems) = (0u64, Vec::new());
                    let mut buf = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = work.get(i) else {
                            break;
                        };
                        match item {
                            Ok(p) => {
                                let f = &plan.files[p.file];
                                let path = target.join(&f.rel);
                                match check_piece(repo, fingerprints, &path, &f.node, p, &mut buf) {
                                    Ok(n) => bytes += n,
                                    Err(why) => problems.push((p.file, why)),
                                }
                            }
                            Err(e) => problems.push(e.clone()),
                        }
                    }
                    (bytes, problems)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut out = ContentCheck {
        files: plan.files.len() as u64,
        ..ContentCheck::default()
    };
    // One problem per file: the first found.
    let mut by_file: std::collections::BTreeMap<usize, String> = Default::default();
    for (bytes, problems) in found {
        out.bytes += bytes;
        for (fi, why) in problems {
            by_file.entry(fi).or_insert(why);
        }
    }
    out.problem_count = by_file.len() as u64;
    for (fi, why) in by_file.into_iter().take(NAMED) {
        let shown = Path::new("/")
            .join(&plan.files[fi].rel)
            .display()
            .to_string();
        out.problems.push(format!("{shown}: {why}"));
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
    for (rel, first) in &plan.hardlinks {
        use std::os::unix::fs::MetadataExt;
        let shown = Path::new("/").join(rel).display().to_string();
        let (a, b) = (
            std::fs::symlink_metadata(target.join(rel)),
            std::fs::symlink_metadata(target.join(first)),
        );
        let same = matches!((&a, &b), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev());
        if !same {
            out.problem_count += 1;
            out.problems
                .push(format!("{shown}: not a hard link of /{}", first.display()));
        }
    }
    out.problems.truncate(NAMED);
    Ok(out)
}

/// Reads one run of a file back, chunk by chunk; the bytes hashed, or what
/// is wrong.
fn check_piece(
    repo: &Repository,
    fingerprints: &Fingerprints,
    path: &Path,
    node: &seawall_common::repo::tree::Node,
    piece: &Piece,
    buf: &mut Vec<u8>,
) -> std::result::Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("not restored ({e})"))?;
    let mut at = piece.offset;
    for i in piece.chunks.clone() {
        let id = &node.content[i];
        let len = repo
            .locate(id)
            .map_err(|e| format!("chunk {i} not in the index: {e}"))?
            .raw_length as usize;
        buf.resize(len, 0);
        file.read_exact_at(buf, at).map_err(|e| {
            format!("shorter than the snapshot says ({at} bytes and more expected: {e})")
        })?;
        let same = match fingerprints.get(id) {
            Some(fp) => xxhash_rust::xxh3::xxh3_64(buf) == *fp,
            None => repo.key().blob_id(buf) == *id,
        };
        if !same {
            return Err(format!(
                "bytes {at}..{} differ from the snapshot's chunk {}",
                at + len as u64,
                id.short()
            ));
        }
        at += len as u64;
    }
    if let Some(total) = piece.last_of {
        let on_disk = file
            .metadata()
            .map_err(|e| format!("unreadable: {e}"))?
            .len();
        if on_disk != total {
            return Err(format!(
                "{on_disk} bytes on disk, the snapshot's are {total}"
            ));
        }
    }
    Ok(at - piece.offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::files::{backup_files, BackupOptions};
    use crate::engine::restore::{restore, RestoreOptions};
    use seawall_common::storage::LocalStorage;

    #[tokio::test]
    async fn a_changed_longer_or_missing_file_is_named_and_a_large_file_is_checked_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn seawall_common::storage::Storage> =
            Arc::new(LocalStorage::new(dir.path().join("repo")));
        let repo = Arc::new(
            Repository::init_with_kdf(
                storage,
                b"pw",
                seawall_common::crypto::KdfParams {
                    m_cost: 64,
                    t_cost: 1,
                    ..seawall_common::crypto::KdfParams::default_fresh()
                },
            )
            .await
            .unwrap(),
        );
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        // Three pieces of about PIECE bytes: incompressible, varied.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let big: Vec<u8> = (0..(PIECE as usize * 2 + 4096))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(src.join("big.bin"), &big).unwrap();
        std::fs::write(src.join("sub/a.txt"), b"alpha").unwrap();
        std::fs::write(src.join("sub/b.txt"), b"bravo").unwrap();
        std::fs::write(src.join("empty"), b"").unwrap();
        let out = backup_files(
            repo.clone(),
            BackupOptions {
                paths: vec![src.clone()],
                ..BackupOptions::default()
            },
            Arc::new(Progress::default()),
        )
        .await
        .unwrap();
        let target = dir.path().join("restored");
        let restored = restore(
            repo.clone(),
            &out.snapshot,
            RestoreOptions {
                target: target.clone(),
                include: Vec::new(),
                threads: 2,
                fingerprint: true,
            },
            Arc::new(Progress::default()),
        )
        .await
        .unwrap();
        let root = target.join(src.strip_prefix("/").unwrap());
        let basis = restored.check_basis.unwrap();
        assert!(
            basis.fingerprints.len() >= 4,
            "{}",
            basis.fingerprints.len()
        );
        // With what the restore kept and without it (BLAKE3 again).
        for known in [Some(basis.clone()), None] {
            let clean = check_restored(repo.clone(), &out.snapshot, &target, known)
                .await
                .unwrap();
            assert_eq!(clean.problem_count, 0, "{:?}", clean.problems);
            assert_eq!(clean.bytes, big.len() as u64 + 10);
        }

        // A byte flipped in the big file's last piece, a byte appended to
        // one small file, the other removed.
        let mut changed = big.clone();
        let at = changed.len() - 100;
        changed[at] ^= 1;
        std::fs::write(root.join("big.bin"), &changed).unwrap();
        std::fs::write(root.join("sub/a.txt"), b"alpha!").unwrap();
        std::fs::remove_file(root.join("sub/b.txt")).unwrap();
        for known in [Some(basis), None] {
            let found = check_restored(repo.clone(), &out.snapshot, &target, known)
                .await
                .unwrap();
            assert_eq!(found.problem_count, 3, "{:?}", found.problems);
            let all = found.problems.join("\n");
            assert!(
                all.contains("big.bin: bytes ") && all.contains("differ from the snapshot's chunk"),
                "{all}"
            );
            assert!(
                all.contains("a.txt: 6 bytes on disk, the snapshot's are 5"),
                "{all}"
            );
            assert!(all.contains("b.txt: not restored"), "{all}");
        }
    }
}
