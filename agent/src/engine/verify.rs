//! `verify`: proves the repository is whole. Structure always: every index
//! file opens, every indexed pack exists with its recorded size, every
//! snapshot opens and every blob its trees name is indexed. With
//! `--read-data`, every pack is read, its hash checked against its name and
//! every blob decrypted and checked against its id; damage is reported with
//! the snapshots and files it affects.

use seawall_common::repo::blob;
use seawall_common::repo::tree::NodeKind;
use seawall_common::storage::FileKind;
use seawall_common::{Id, Repository, Result};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// What is damaged ("pack <id>", "snapshot <id>", "blob <id>").
    pub object: String,
    /// What is wrong with it.
    pub problem: String,
    /// Snapshots that need it.
    pub snapshots: Vec<String>,
    /// Files (snapshot:path) whose content it holds.
    pub files: Vec<String>,
}

/// The verify report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Blobs in the index.
    pub blobs: usize,
    /// Packs whose bytes were read and checked.
    pub packs_read: usize,
    /// Bytes read.
    pub bytes_read: u64,
    /// Packs in storage that no index names: left by an interrupted backup; prune removes them.
    pub unindexed_packs: usize,
    /// Archived PostgreSQL WAL files.
    pub wal_files: usize,
    /// WAL files read and checked.
    pub wal_files_read: usize,
    /// The head's generation; `None` when the repository has no head yet
    /// (last written by a version before heads: the next backup adds one).
    pub head_generation: Option<u64>,
    /// Snapshots the head does not list: saved by two backups at once, or
    /// put into the repository from outside. A note, not damage.
    pub unrecorded_snapshots: Vec<String>,
    /// Problems found; empty means the repository is whole.
    pub problems: Vec<Problem>,
}

/// Which packs `verify` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadData {
    /// None: structure only.
    No,
    /// Every pack (and every archived WAL file).
    All,
    /// Part of the packs, so a large repository is read over several runs.
    Subset(DataSubset),
}

impl From<bool> for ReadData {
    fn from(all: bool) -> ReadData {
        if all {
            ReadData::All
        } else {
            ReadData::No
        }
    }
}

/// restic's `--read-data-subset` forms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataSubset {
    /// `n/t`: the n-th of t fixed parts (by pack id), so t runs with n = 1..t
    /// read every pack once.
    Part {
        /// Which part, 1-based.
        n: u64,
        /// Of how many.
        of: u64,
    },
    /// `P%`: a random P percent of the packs, new each run.
    Percent(f64),
}

impl std::str::FromStr for DataSubset {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<DataSubset, String> {
        let bad =
            || format!("{text:?} is not n/t (1 <= n <= t, as 2/7) or P% (0 < P <= 100, as 10%)");
        if let Some(p) = text.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            return (p > 0.0 && p <= 100.0)
                .then_some(DataSubset::Percent(p))
                .ok_or_else(bad);
        }
        let (n, t) = text.split_once('/').ok_or_else(bad)?;
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        let of: u64 = t.trim().parse().map_err(|_| bad())?;
        (n >= 1 && n <= of)
            .then_some(DataSubset::Part { n, of })
            .ok_or_else(bad)
    }
}

impl DataSubset {
    /// Whether this subset reads `pack`.
    pub fn selects(&self, pack: &Id) -> bool {
        match *self {
            DataSubset::Part { n, of } => {
                let mut first = [0u8; 8];
                first.copy_from_slice(&pack.0[..8]);
                u64::from_le_bytes(first) % of == n - 1
            }
            DataSubset::Percent(p) => rand::random::<f64>() * 100.0 < p,
        }
    }
}

/// Checks the repository, reading the packs `read` names.
pub async fn verify(
    repo: Arc<Repository>,
    read: impl Into<ReadData>,
    threads: usize,
) -> Result<VerifyReport> {
    let read = read.into();
    let read_data = read != ReadData::No;
    let mut report = VerifyReport::default();
    repo.load_index().await?;
    let index = repo.index().clone();
    report.packs = index.packs().len();
    report.blobs = index.len();

    let stored: HashMap<String, u64> = repo
        .storage()
        .list(FileKind::Pack)
        .await?
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    let mut damaged_blobs: HashMap<Id, String> = HashMap::new();
    let mut damaged_packs: Vec<(Id, String)> = Vec::new();
    // Packs whose bytes changed: only the blobs that fail their check are lost.
    let mut altered_packs: Vec<(Id, String)> = Vec::new();
    for (pack, size) in index.packs() {
        match stored.get(&pack.to_hex()) {
            None => damaged_packs.push((*pack, "is missing from storage".into())),
            Some(s) if s != size => {
                damaged_packs.push((*pack, format!("has {s} bytes, the index says {size}")))
            }
            Some(_) => {}
        }
    }
    report.unindexed_packs = stored
        .keys()
        .filter(|name| {
            name.parse::<Id>()
                .map(|id| !index.packs().contains_key(&id))
                .unwrap_or(true)
        })
        .count();

    if read_data {
        let mut by_pack: HashMap<Id, Vec<(Id, seawall_common::repo::index::BlobLocation)>> =
            HashMap::new();
        for (id, loc) in index.blobs() {
            by_pack.entry(loc.pack).or_default().push((*id, *loc));
        }
        let bad: HashSet<Id> = damaged_packs.iter().map(|(p, _)| *p).collect();
        let queue: Vec<_> = index
            .packs()
            .keys()
            .filter(|p| !bad.contains(p))
            .filter(|p| match read {
                ReadData::Subset(subset) => subset.selects(p),
                _ => true,
            })
            .copied()
            .collect();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        let by_pack = Arc::new(by_pack);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..threads.max(1) {
            let repo = repo.clone();
            let queue = queue.clone();
            let by_pack = by_pack.clone();
            workers.spawn(async move {
                let mut found = Vec::new();
                let mut read = (0usize, 0u64);
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some(pack) = next else { break };
                    let data = match repo.storage().read(FileKind::Pack, &pack.to_hex()).await {
                        Ok(d) => d,
                        Err(e) => {
                            found.push((pack, None, format!("cannot be read: {e}"), true));
                            continue;
                        }
                    };
                    read.0 += 1;
                    read.1 += data.len() as u64;
                    let key = repo.key().clone();
                    let blobs = by_pack.get(&pack).cloned().unwrap_or_default();
                    let checked =
                        tokio::task::spawn_blocking(move || check_pack(&key, pack, &data, &blobs))
                            .await;
                    match checked {
                        Ok(problems) => found.extend(problems),
                        Err(e) => found.push((pack, None, format!("check stopped: {e}"), true)),
                    }
                }
                (found, read)
            });
        }
        while let Some(done) = workers.join_next().await {
            if let Ok((found, (packs, bytes))) = done {
                report.packs_read += packs;
                report.bytes_read += bytes;
                for (pack, blob, why, whole) in found {
                    match blob {
                        Some(b) => {
                            damaged_blobs.insert(b, why);
                        }
                        None if whole => damaged_packs.push((pack, why)),
                        None => altered_packs.push((pack, why)),
                    }
                }
            }
        }
    }
    // A missing or damaged pack damages every blob in it.
    let bad_packs: HashMap<Id, String> = damaged_packs.iter().cloned().collect();
    for (id, loc) in index.blobs() {
        if bad_packs.contains_key(&loc.pack) {
            damaged_blobs
                .entry(*id)
                .or_insert_with(|| format!("pack {}", loc.pack));
        }
    }

    // Walk every snapshot: missing blobs, and who needs the damaged ones.
    let snapshots = repo.snapshots().await?;
    report.snapshots = snapshots.len();
    let mut affected: HashMap<Id, (BTreeSet<String>, BTreeSet<String>)> = HashMap::new();
    let mut missing: HashMap<Id, BTreeSet<String>> = HashMap::new();
    let mut trees_seen: HashSet<(Id, Id)> = HashSet::new();
    for (sid, snap) in &snapshots {
        let sname = sid.short();
        let mut stack: Vec<(PathBuf, Id)> = snap
            .tree
            .map(|t| (PathBuf::from("/"), t))
            .into_iter()
            .collect();
        for s in &snap.streams {
            for b in &s.content {
                if !index.contains(b) {
                    missing.entry(*b).or_default().insert(sname.clone());
                }
            }
        }
        while let Some((path, tid)) = stack.pop() {
            if !trees_seen.insert((*sid, tid)) {
                continue;
            }
            if !index.contains(&tid) {
                missing.entry(tid).or_default().insert(sname.clone());
                continue;
            }
            let tree = match repo.load_tree(&tid).await {
                Ok(t) => t,
                Err(e) => {
                    damaged_blobs.entry(tid).or_insert_with(|| e.to_string());
                    let entry = affected.entry(tid).or_default();
                    entry.0.insert(sname.clone());
                    entry
                        .1
                        .insert(format!("{sname}:{} (whole directory)", path.display()));
                    continue;
                }
            };
            for node in &tree.nodes {
                let p = path.join(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(node.raw_name()),
                );
                match node.kind {
                    NodeKind::Dir => {
                        if let Some(sub) = node.subtree {
                            stack.push((p, sub));
                        }
                    }
                    NodeKind::File => {
                        for b in &node.content {
                            if !index.contains(b) {
                                missing.entry(*b).or_default().insert(sname.clone());
                            } else if damaged_blobs.contains_key(b) {
                                let entry = affected.entry(*b).or_default();
                                entry.0.insert(sname.clone());
                                entry.1.insert(format!("{sname}:{}", p.display()));
                            }
                        }
                    }
                    NodeKind::Symlink
                    | NodeKind::Fifo
                    | NodeKind::CharDevice
                    | NodeKind::BlockDevice => {}
                }
            }
        }
    }
    type Entry = (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>);
    let mut by_object: HashMap<String, Entry> = HashMap::new();
    for (pack, why) in damaged_packs.iter().chain(altered_packs.iter()) {
        by_object
            .entry(format!("pack {pack}"))
            .or_default()
            .0
            .insert(why.clone());
    }
    for (blob_id, why) in &damaged_blobs {
        let loc = index.get(blob_id);
        let object = loc
            .map(|l| format!("pack {}", l.pack))
            .unwrap_or_else(|| format!("blob {blob_id}"));
        let entry = by_object.entry(object).or_default();
        if !loc.is_some_and(|l| bad_packs.contains_key(&l.pack)) {
            entry
                .0
                .insert(format!("blob {} is damaged: {why}", blob_id.short()));
        }
        if let Some((s, f)) = affected.get(blob_id) {
            entry.1.extend(s.iter().cloned());
            entry.2.extend(f.iter().cloned());
        }
    }
    for (object, (whys, snaps, files)) in by_object {
        report.problems.push(Problem {
            object,
            problem: whys.into_iter().collect::<Vec<_>>().join("; "),
            snapshots: snaps.into_iter().collect(),
            files: files.into_iter().collect(),
        });
    }
    for (blob_id, snaps) in missing {
        report.problems.push(Problem {
            object: format!("blob {blob_id}"),
            problem: "is referenced but missing from the index".into(),
            snapshots: snaps.into_iter().collect(),
            files: vec![],
        });
    }
    let wal =
        // WAL files are read whole with --read-data only, not with a subset.
        crate::engine::postgres::continuity::check_archive(
            repo.clone(),
            &snapshots,
            read == ReadData::All,
        )
            .await?;
    report.wal_files = wal.files;
    report.wal_files_read = wal.files_read;
    for (object, problem, snapshots) in wal.problems {
        report.problems.push(Problem {
            object,
            problem,
            snapshots,
            files: vec![],
        });
    }
    // Snapshots deleted or planted behind Seawall's back.
    let head = repo.head_check().await?;
    report.head_generation = head.generation;
    report.unrecorded_snapshots = head.unrecorded.iter().map(Id::to_hex).collect();
    for (id, time) in &head.missing {
        report.problems.push(Problem {
            object: format!("snapshot {}", id.to_hex()),
            problem: format!(
                "of {} is recorded in the head but its file is gone: deleted outside Seawall (a rollback?); restore it from a replica",
                time.format("%Y-%m-%d %H:%M:%S")
            ),
            snapshots: vec![id.to_hex()],
            files: vec![],
        });
    }
    for name in &head.misnamed {
        report.problems.push(Problem {
            object: format!("snapshots/{name}"),
            problem: "is not named by the hash of its bytes: a snapshot copied or replayed under another name; remove it".into(),
            snapshots: vec![],
            files: vec![],
        });
    }
    report.problems.sort();
    Ok(report)
}

/// Checks one pack's bytes; returns (pack, damaged blob or None for the pack, why, whether the whole pack is lost).
fn check_pack(
    key: &seawall_common::crypto::MasterKey,
    pack: Id,
    data: &[u8],
    blobs: &[(Id, seawall_common::repo::index::BlobLocation)],
) -> Vec<(Id, Option<Id>, String, bool)> {
    let mut out = Vec::new();
    if Id::of_file(data) != pack {
        out.push((
            pack,
            None,
            "content does not match its name (hash mismatch): the file was altered".to_string(),
            false,
        ));
    }
    for (id, loc) in blobs {
        let start = loc.offset as usize;
        let end = start + loc.length as usize;
        let Some(sealed) = data.get(start..end) else {
            out.push((
                pack,
                Some(*id),
                "lies beyond the end of the pack".into(),
                false,
            ));
            continue;
        };
        if let Err(e) = blob::decode(key, loc.kind, id, sealed, loc.raw_length) {
            out.push((pack, Some(*id), e.to_string(), false));
        }
    }
    out
}
