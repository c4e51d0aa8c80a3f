//! Mirroring a repository into another region's storage: the target
//! becomes a byte-for-byte replica (the same config, keys, packs, index,
//! WAL, snapshots and head), so the same password opens it and it alone can
//! restore every source. Objects are copied by name, what the target holds
//! already is skipped, and the order keeps the target readable at every
//! moment: keys and config first, then packs, index and WAL, snapshots
//! only once everything they need is there, and the head last. A copy is
//! checked before it is written (a content-addressed object must hash to
//! its name), so a damaged source object is named, not spread. Nothing is
//! deleted in the target unless asked (`prune`), and then snapshots go
//! first, so a reader never finds a snapshot whose data is gone.
//!
//! The source is not trusted to keep the replica openable: a key file the
//! source removed is deleted from the replica only by [`retire_keys`], and
//! only when the replica still opens with the password through a key the
//! source kept (so a retired password stops opening the replica, and junk
//! in the source cannot lock it); a config is never overwritten, and a new
//! one is parsed and bounds-checked before it is written; an object that
//! cannot be read or does not hash to its name is skipped and named, and
//! the run goes on.

use futures_util::stream::{self, StreamExt};
use seawall_common::storage::{FileKind, Listed, Storage};
use seawall_common::{Error, ErrorKind, Id, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How a mirror run behaves.
#[derive(Debug, Clone, Copy)]
pub struct MirrorOptions {
    /// Delete from the target what the source no longer holds.
    pub prune: bool,
    /// Compare only: copy and delete nothing (for targets that S3
    /// replication fills).
    pub check_only: bool,
    /// Objects copied at once.
    pub concurrency: usize,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            prune: false,
            check_only: false,
            concurrency: 8,
        }
    }
}

/// One object the target lacks, or holds differently.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gap {
    /// Its path in the repository.
    pub object: String,
    /// What is wrong ("missing", "differs: 100 bytes, the source has 120").
    pub problem: String,
}

/// What a run did, per kind of file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MirrorReport {
    /// Objects copied, by folder.
    pub copied: BTreeMap<String, u64>,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Objects the target held already.
    pub present: u64,
    /// Objects deleted from the target (`prune`).
    pub pruned: u64,
    /// With `check_only`: what the target lacks or holds differently.
    pub gaps: Vec<Gap>,
    /// Source objects not copied because they are damaged or unreadable.
    pub skipped: Vec<Gap>,
    /// Key files the target holds and the source removed: deleted by
    /// [`retire_keys`] when that is safe, else kept and named.
    pub retired_keys: Vec<String>,
    /// Why retired keys were kept, when they were.
    pub keys_kept: Option<String>,
    /// Seconds the run took.
    pub duration_secs: f64,
}

impl MirrorReport {
    /// What failed the run when objects were skipped, in one line.
    pub fn not_mirrored(&self) -> Option<String> {
        let first = self.skipped.first()?;
        Some(format!(
            "{} object(s) of the source were not mirrored, the first: {} {}; everything else was",
            self.skipped.len(),
            first.object,
            first.problem
        ))
    }

    /// Why key files the source removed are still in the replica, in one
    /// line, when they are.
    pub fn kept_keys(&self) -> Option<String> {
        self.keys_kept.as_ref().map(|why| {
            format!(
                "kept {} key file(s) the source removed: {why}",
                self.retired_keys.len()
            )
        })
    }
}

/// The order objects are copied in; the reverse is the order of deletion.
const ORDER: [FileKind; 8] = [
    FileKind::Key,
    FileKind::Config,
    FileKind::Pack,
    FileKind::Index,
    FileKind::Wal,
    FileKind::Snapshot,
    FileKind::Lock,
    FileKind::Head,
];

/// Whether a kind's names are the BLAKE3 hash of the bytes.
fn content_addressed(kind: FileKind) -> bool {
    matches!(
        kind,
        FileKind::Key | FileKind::Pack | FileKind::Index | FileKind::Snapshot
    )
}

/// Copies what `to` lacks from `from`.
pub async fn mirror(
    from: Arc<dyn Storage>,
    to: Arc<dyn Storage>,
    opts: MirrorOptions,
) -> Result<MirrorReport> {
    let started = std::time::Instant::now();
    check_same_repository(from.as_ref(), to.as_ref()).await?;
    if !opts.check_only {
        to.create().await?;
    }
    let mut report = MirrorReport::default();
    let bytes = Arc::new(AtomicU64::new(0));
    let mut wanted: HashMap<FileKind, Vec<Listed>> = HashMap::new();
    for kind in ORDER {
        // Locks belong to the processes of the source's region.
        if kind == FileKind::Lock {
            continue;
        }
        let source = from.list(kind).await?;
        let target: HashMap<String, u64> = to
            .list(kind)
            .await?
            .into_iter()
            .map(|l| (l.name, l.size))
            .collect();
        let mut todo = Vec::new();
        for l in &source {
            let copy = match target.get(&l.name) {
                None => {
                    if opts.check_only {
                        report.gaps.push(Gap {
                            object: kind.path(&l.name),
                            problem: "missing".into(),
                        });
                    }
                    true
                }
                // A repository's config never changes: a source whose config
                // differs from the replica's was altered, and the replica's
                // is kept.
                Some(_) if kind == FileKind::Config => {
                    if from.read(kind, "").await? != to.read(kind, "").await? {
                        report.skipped.push(Gap {
                            object: kind.path(""),
                            problem: "differs from the replica's, which was kept: a repository's config never changes; check who altered the source".into(),
                        });
                    }
                    false
                }
                // Objects never change once written (the head aside): a
                // different size is a damaged copy, replaced by the source's.
                Some(size) if *size != l.size => {
                    report.gaps.push(Gap {
                        object: kind.path(&l.name),
                        problem: format!("differs: {size} bytes, the source has {}", l.size),
                    });
                    true
                }
                Some(_) if kind.is_single() => {
                    // The head is compared by content.
                    let same = from.read(kind, "").await? == to.read(kind, "").await?;
                    if !same && opts.check_only {
                        report.gaps.push(Gap {
                            object: kind.path(""),
                            problem: "differs from the source's".into(),
                        });
                    }
                    !same
                }
                Some(_) => {
                    report.present += 1;
                    false
                }
            };
            if copy {
                todo.push(l.clone());
            }
        }
        wanted.insert(kind, source);
        if opts.check_only {
            continue;
        }
        let (copied, skipped) = copy_all(&from, &to, kind, todo, opts.concurrency, &bytes).await?;
        report.skipped.extend(skipped);
        if copied > 0 {
            *report.copied.entry(kind.dir().to_string()).or_default() += copied;
        }
    }
    // A password removed from the source must stop opening the replica:
    // such key files are named here and deleted by retire_keys, which
    // holds the password to prove the replica still opens without them.
    let source_keys: std::collections::HashSet<&str> = wanted
        .get(&FileKind::Key)
        .map(|l| l.iter().map(|l| l.name.as_str()).collect())
        .unwrap_or_default();
    for l in to.list(FileKind::Key).await? {
        if source_keys.contains(l.name.as_str()) {
            continue;
        }
        if opts.check_only {
            report.gaps.push(Gap {
                object: FileKind::Key.path(&l.name),
                problem: "was removed from the source: its password still opens this replica"
                    .into(),
            });
        } else {
            report.retired_keys.push(l.name);
        }
    }
    if opts.prune && !opts.check_only {
        report.pruned += prune_target(to.as_ref(), &wanted).await?;
    }
    report.gaps.sort();
    report.skipped.sort();
    report.bytes_copied = bytes.load(Ordering::Relaxed);
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Copies the WAL segments `to` lacks (or holds at another size) from
/// `from`, nothing else: cheap enough to run every few seconds, so the
/// replica can be replayed to within moments of the primary's archive
/// between full mirror runs. WAL files stand alone (no snapshot needs one
/// to exist first), so copying them out of the usual order is safe. A
/// target that no full run has created yet is left alone: `Ok(None)`.
pub async fn mirror_wal(
    from: Arc<dyn Storage>,
    to: Arc<dyn Storage>,
    concurrency: usize,
) -> Result<Option<u64>> {
    match to.read(FileKind::Config, "").await {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    check_same_repository(from.as_ref(), to.as_ref()).await?;
    let target: HashMap<String, u64> = to
        .list(FileKind::Wal)
        .await?
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    let todo: Vec<Listed> = from
        .list(FileKind::Wal)
        .await?
        .into_iter()
        .filter(|l| target.get(&l.name) != Some(&l.size))
        .collect();
    let bytes = Arc::new(AtomicU64::new(0));
    // A segment the source cannot give now is named in the log and tried
    // again at the next run (the full mirror run reports it).
    copy_all(&from, &to, FileKind::Wal, todo, concurrency, &bytes)
        .await
        .map(|(copied, _)| Some(copied))
}

/// Refuses a target that is another repository.
async fn check_same_repository(from: &dyn Storage, to: &dyn Storage) -> Result<()> {
    let source = from.read(FileKind::Config, "").await.map_err(|e| {
        e.context(format!(
            "{} is not a repository (no readable config)",
            from.location()
        ))
    })?;
    let target = match to.read(FileKind::Config, "").await {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let id = |bytes: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string))
    };
    if id(&source) != id(&target) {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} holds another repository (id {}), not a replica of {} (id {}): mirror into an empty location or a replica of the same repository",
                to.location(),
                id(&target).unwrap_or_default(),
                from.location(),
                id(&source).unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// What became of one object.
enum Copy {
    Copied,
    /// Damaged or unreadable in the source: not copied, named.
    Skipped(Gap),
}

/// Whether `data` may be written as the `kind` object `name`: a
/// content-addressed object must hash to its name, a key file must parse,
/// a config must parse within its bounds. Why not, when not.
fn fit_to_copy(kind: FileKind, name: &str, data: &[u8]) -> Option<String> {
    if content_addressed(kind) && !name.parse::<Id>().is_ok_and(|id| Id::of_file(data) == id) {
        return Some(
            "does not hash to its name: it is damaged in the source; run `seawall verify` there"
                .into(),
        );
    }
    match kind {
        FileKind::Key => serde_json::from_slice::<seawall_common::crypto::KeyFile>(data)
            .err()
            .map(|e| format!("is not a key file ({e})")),
        FileKind::Config => seawall_common::repo::config::RepoConfig::parse(data)
            .err()
            .map(|e| format!("is not a valid repository config ({e})")),
        _ => None,
    }
}

/// Copies `todo` of one kind, `concurrency` at a time; how many, and what
/// was skipped. Only a failure to write the target stops the run.
async fn copy_all(
    from: &Arc<dyn Storage>,
    to: &Arc<dyn Storage>,
    kind: FileKind,
    todo: Vec<Listed>,
    concurrency: usize,
    bytes: &Arc<AtomicU64>,
) -> Result<(u64, Vec<Gap>)> {
    let results: Vec<Result<Copy>> = stream::iter(todo)
        .map(|l| {
            let (from, to, bytes) = (from.clone(), to.clone(), bytes.clone());
            async move {
                let skipped = |problem: String| {
                    Ok(Copy::Skipped(Gap {
                        object: kind.path(&l.name),
                        problem,
                    }))
                };
                let data = match from.read(kind, &l.name).await {
                    Ok(d) => d,
                    Err(e) => return skipped(format!("could not be read from the source: {e}")),
                };
                // WAL and the head have nothing to check: no thread for them
                // (the WAL follower copies segments every few seconds).
                let unfit = if content_addressed(kind) || kind == FileKind::Config {
                    let (checked, name) = (data.clone(), l.name.clone());
                    tokio::task::spawn_blocking(move || fit_to_copy(kind, &name, &checked))
                        .await
                        .unwrap_or_else(|e| Some(format!("not checked: {e}")))
                } else {
                    None
                };
                if let Some(why) = unfit {
                    tracing::warn!(object = %kind.path(&l.name), source = %from.location(), "not mirrored: {why}");
                    return skipped(why);
                }
                bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                to.write(kind, &l.name, data).await.map(|()| Copy::Copied)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let (mut copied, mut skipped) = (0, Vec::new());
    let mut first_error = None;
    for r in results {
        match r {
            Ok(Copy::Copied) => copied += 1,
            Ok(Copy::Skipped(g)) => skipped.push(g),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        // What was copied stays; the next run copies the rest.
        Some(e) => Err(e),
        None => Ok((copied, skipped)),
    }
}

/// Deletes the key files the source removed (`report.retired_keys`) from
/// the replica `target`, but only when the replica opens with the password
/// through a key the source kept: a hostile or damaged source cannot take
/// the last working key away. Otherwise they are kept and the report says
/// why.
pub async fn retire_keys(
    target: &crate::engine::repository::RepositorySpec,
    report: &mut MirrorReport,
) -> Result<()> {
    if report.retired_keys.is_empty() {
        return Ok(());
    }
    let repo = match target.open().await {
        Ok(r) => r,
        Err(e) => {
            report.keys_kept = Some(format!(
                "the replica did not open with the password ({e}), so no key was removed from it"
            ));
            return Ok(());
        }
    };
    let current = repo.key_file().to_string();
    if report.retired_keys.contains(&current) {
        report.keys_kept = Some(
            "the password opens the replica only through a key the source removed: no key was removed from it; mirror with the source's current password"
                .into(),
        );
        return Ok(());
    }
    for id in report.retired_keys.clone() {
        repo.remove_key(&id).await?;
        report.pruned += 1;
    }
    Ok(())
}

/// Deletes from the target what the source no longer holds: snapshots
/// first, then index, packs and WAL, so no snapshot ever lacks its data.
async fn prune_target(to: &dyn Storage, wanted: &HashMap<FileKind, Vec<Listed>>) -> Result<u64> {
    let mut pruned = 0;
    for kind in [
        FileKind::Snapshot,
        FileKind::Index,
        FileKind::Pack,
        FileKind::Wal,
    ] {
        let keep: std::collections::HashSet<&str> = wanted
            .get(&kind)
            .map(|l| l.iter().map(|l| l.name.as_str()).collect())
            .unwrap_or_default();
        for l in to.list(kind).await? {
            if !keep.contains(l.name.as_str()) {
                to.remove(kind, &l.name).await?;
                pruned += 1;
            }
        }
    }
    Ok(pruned)
}
