//! Looking inside a repository without restoring: the entries of a
//! snapshot (`ls`), one file, stream or directory written out (`dump`),
//! and what the snapshots hold against what is stored (`stats`). A file or
//! stream is written out blob by blob, so memory stays at one blob whatever
//! its size; in a tar of a directory each file is held whole while its
//! entry is written (tar needs its size first), one file at a time.

use seawall_common::repo::snapshot::Snapshot;
use seawall_common::repo::tree::{Node, NodeKind};
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::io::Write;

/// One entry, as `ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Absolute path in the snapshot (a stream is `stream:<name>`).
    pub path: String,
    /// "file", "dir", "symlink" or "stream".
    pub kind: &'static str,
    /// Permission bits.
    pub mode: u32,
    /// Bytes (files and streams).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// A symlink's target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "chardev",
        NodeKind::BlockDevice => "blockdev",
    }
}

fn entry(path: String, n: &Node) -> Entry {
    Entry {
        path,
        kind: kind_name(n.kind),
        mode: n.mode & 0o7777,
        size: n.size,
        mtime: n.mtime,
        target: n.link_target.clone(),
    }
}

/// What a path names in a snapshot.
pub enum Found {
    /// The snapshot's root directory.
    Root(Id),
    /// A node, with its absolute path.
    Node(String, Node),
    /// A database stream.
    Stream(seawall_common::repo::snapshot::Stream),
}

/// Resolves `path` ("/" or absent for the root; `stream:NAME` for a
/// database stream) in `snap`.
pub async fn resolve(repo: &Repository, snap: &Snapshot, path: &str) -> Result<Found> {
    if let Some(name) = path.strip_prefix("stream:") {
        return snap
            .streams
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .map(Found::Stream)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "the snapshot has no stream {name:?}; it has: {}",
                        snap.streams
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            });
    }
    let Some(root) = snap.tree else {
        return Err(Error::new(
            ErrorKind::NotFound,
            "this snapshot holds database streams, not files: name one as stream:NAME (`seawall ls` lists them)",
        ));
    };
    let mut dir = root;
    let mut at = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Ok(Found::Root(root));
    }
    for (i, part) in parts.iter().enumerate() {
        let tree = repo.load_tree(&dir).await?;
        let node = tree
            .nodes
            .into_iter()
            .find(|n| n.raw_name() == part.as_bytes())
            .ok_or_else(|| {
                let wanted = format!("/{}", parts.join("/"));
                let missing = format!("{at}/{part}");
                let why = if missing == wanted {
                    format!("{wanted} is not in the snapshot")
                } else {
                    format!("{wanted} is not in the snapshot ({missing} is not)")
                };
                Error::new(
                    ErrorKind::NotFound,
                    format!("{why}: `seawall ls SNAPSHOT` lists what it holds"),
                )
            })?;
        at = format!("{at}/{part}");
        if i + 1 == parts.len() {
            return Ok(Found::Node(at, node));
        }
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(sub)) => dir = sub,
            _ => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{at} is not a directory"),
                ))
            }
        }
    }
    Ok(Found::Root(root))
}

/// The entries under `path` (itself included when it is not a directory),
/// depth first, every level when `recursive`.
pub async fn list(
    repo: &Repository,
    snap: &Snapshot,
    path: &str,
    recursive: bool,
) -> Result<Vec<Entry>> {
    if snap.tree.is_none() && (path.is_empty() || path == "/") {
        return Ok(snap
            .streams
            .iter()
            .map(|s| Entry {
                path: format!("stream:{}", s.name),
                kind: "stream",
                mode: 0o600,
                size: s.size,
                mtime: snap.time.timestamp(),
                target: None,
            })
            .collect());
    }
    let (base, dir) = match resolve(repo, snap, path).await? {
        Found::Root(id) => (String::new(), id),
        Found::Node(p, n) => match (n.kind, n.subtree) {
            (NodeKind::Dir, Some(sub)) => (p, sub),
            _ => return Ok(vec![entry(p, &n)]),
        },
        Found::Stream(s) => {
            return Ok(vec![Entry {
                path: format!("stream:{}", s.name),
                kind: "stream",
                mode: 0o600,
                size: s.size,
                mtime: snap.time.timestamp(),
                target: None,
            }])
        }
    };
    let mut out = Vec::new();
    let mut stack = vec![(base, dir)];
    while let Some((prefix, id)) = stack.pop() {
        let tree = repo.load_tree(&id).await?;
        let mut subdirs = Vec::new();
        for n in &tree.nodes {
            let p = format!("{prefix}/{}", n.name);
            out.push(entry(p.clone(), n));
            if recursive {
                if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                    subdirs.push((p, sub));
                }
            }
        }
        // Depth first, in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

/// Writes the blobs `content` to `out`, one at a time.
async fn write_blobs(repo: &Repository, content: &[Id], out: &mut dyn Write) -> Result<u64> {
    let mut written = 0;
    for id in content {
        let data = repo.load_blob(id).await?;
        out.write_all(&data)
            .map_err(|e| Error::io("standard output", e))?;
        written += data.len() as u64;
    }
    Ok(written)
}

/// Writes a file's or a stream's bytes to `out`; a directory as a tar
/// archive of everything under it.
pub async fn dump(
    repo: &Repository,
    snap: &Snapshot,
    path: &str,
    out: &mut dyn Write,
) -> Result<u64> {
    match resolve(repo, snap, path).await? {
        Found::Stream(s) => write_blobs(repo, &s.content, out).await,
        Found::Node(_, n) if n.kind == NodeKind::File => write_blobs(repo, &n.content, out).await,
        Found::Node(p, n) => match (n.kind, n.subtree) {
            (NodeKind::Dir, Some(sub)) => dump_tar(repo, sub, out).await,
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{p} is a symlink to {}: nothing to dump",
                    n.link_target.unwrap_or_default()
                ),
            )),
        },
        Found::Root(id) => dump_tar(repo, id, out).await,
    }
}

/// A directory as a tar stream, entries relative to it.
async fn dump_tar(repo: &Repository, dir: Id, out: &mut dyn Write) -> Result<u64> {
    let mut written = 0;
    let mut builder = tar::Builder::new(out);
    let mut stack = vec![(std::path::PathBuf::new(), dir)];
    let tar_err = |e: std::io::Error| Error::io("tar output", e);
    while let Some((prefix, id)) = stack.pop() {
        let tree = repo.load_tree(&id).await?;
        let mut subdirs = Vec::new();
        for n in &tree.nodes {
            // Names as stored, bytes and all (not the lossy display form).
            use std::os::unix::ffi::OsStrExt;
            let name = std::path::Path::new(std::ffi::OsStr::from_bytes(n.raw_name()));
            let rel: std::path::PathBuf = if prefix.as_os_str().is_empty() {
                name.to_path_buf()
            } else {
                prefix.join(name)
            };
            let mut header = tar::Header::new_gnu();
            header.set_mode(n.mode & 0o7777);
            header.set_uid(u64::from(n.uid));
            header.set_gid(u64::from(n.gid));
            header.set_mtime(u64::try_from(n.mtime).unwrap_or(0));
            match n.kind {
                NodeKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, &rel, std::io::empty())
                        .map_err(tar_err)?;
                    if let Some(sub) = n.subtree {
                        subdirs.push((rel, sub));
                    }
                }
                NodeKind::Symlink => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, &rel, n.link_target.clone().unwrap_or_default())
                        .map_err(tar_err)?;
                }
                NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
                    header.set_entry_type(match n.kind {
                        NodeKind::Fifo => tar::EntryType::Fifo,
                        NodeKind::CharDevice => tar::EntryType::Char,
                        _ => tar::EntryType::Block,
                    });
                    header.set_size(0);
                    let dev = n.rdev as libc::dev_t;
                    header.set_device_major(libc::major(dev)).map_err(tar_err)?;
                    header.set_device_minor(libc::minor(dev)).map_err(tar_err)?;
                    builder
                        .append_data(&mut header, &rel, std::io::empty())
                        .map_err(tar_err)?;
                }
                NodeKind::File => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(n.size);
                    let mut data = Vec::new();
                    written += write_blobs(repo, &n.content, &mut data).await?;
                    builder
                        .append_data(&mut header, &rel, data.as_slice())
                        .map_err(tar_err)?;
                }
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    builder.finish().map_err(tar_err)?;
    Ok(written)
}

/// Sizes: what the snapshots hold, and what storing it costs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: usize,
    /// Sum of every snapshot's file and stream sizes (what restores give).
    pub logical_bytes: u64,
    /// Distinct content (each blob once, uncompressed).
    pub unique_bytes: u64,
    /// Bytes of the packs in storage.
    pub stored_bytes: u64,
    /// logical / stored.
    pub ratio: f64,
    /// Per snapshot, oldest first.
    pub per_snapshot: Vec<SnapshotStats>,
}

/// One snapshot's sizes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SnapshotStats {
    /// Its id.
    pub id: String,
    /// What restoring it gives.
    pub logical_bytes: u64,
    /// Its distinct content (each blob once, uncompressed).
    pub unique_bytes: u64,
    /// What its blobs take in storage, compressed and sealed (shared ones
    /// counted in full: what keeping only this snapshot would cost).
    pub stored_bytes: u64,
    /// What of that no older snapshot holds: what it added.
    pub added_bytes: u64,
    /// logical / stored.
    pub ratio: f64,
}

/// Walks every snapshot's trees and streams.
pub async fn stats(repo: &Repository) -> Result<Stats> {
    repo.load_index().await?;
    let mut s = Stats::default();
    let mut unique_blobs: HashSet<Id> = HashSet::new();
    let index = repo.index().clone();
    for (id, snap) in repo.snapshots().await? {
        let mut logical = 0;
        let mut own: HashSet<Id> = HashSet::new();
        for st in &snap.streams {
            logical += st.size;
            own.extend(st.content.iter().copied());
        }
        if let Some(root) = snap.tree {
            let mut stack = vec![root];
            while let Some(t) = stack.pop() {
                let tree = repo.load_tree(&t).await?;
                for n in &tree.nodes {
                    match n.kind {
                        NodeKind::File => {
                            logical += n.size;
                            own.extend(n.content.iter().copied());
                        }
                        NodeKind::Dir => {
                            if let Some(sub) = n.subtree {
                                // A subtree shared with another snapshot is
                                // walked for each: logical size counts it
                                // every time, as a restore would.
                                stack.push(sub);
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
        let mut one = SnapshotStats {
            id: id.to_hex(),
            logical_bytes: logical,
            ..SnapshotStats::default()
        };
        for b in &own {
            if let Some(l) = index.get(b) {
                one.unique_bytes += u64::from(l.raw_length);
                one.stored_bytes += u64::from(l.length);
                if !unique_blobs.contains(b) {
                    one.added_bytes += u64::from(l.length);
                }
            }
        }
        one.ratio = ratio(logical, one.stored_bytes);
        unique_blobs.extend(own);
        s.snapshots += 1;
        s.logical_bytes += logical;
        s.per_snapshot.push(one);
    }
    s.unique_bytes = unique_blobs
        .iter()
        .filter_map(|b| index.get(b).map(|l| u64::from(l.raw_length)))
        .sum();
    s.stored_bytes = index.packs().values().sum();
    s.ratio = ratio(s.logical_bytes, s.stored_bytes);
    Ok(s)
}

/// What restores give per byte stored (0 when nothing is stored).
fn ratio(logical: u64, stored: u64) -> f64 {
    if stored > 0 {
        logical as f64 / stored as f64
    } else {
        0.0
    }
}

/// A path found by `find`, in one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct FoundIn {
    /// The snapshot's id.
    pub snapshot: String,
    /// Its time.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The entry.
    pub entry: Entry,
}

/// Every entry, in every snapshot, whose path or name matches `pattern`
/// (a glob: `*.conf`, `/srv/**/secret`).
pub async fn find(repo: &Repository, pattern: &str) -> Result<Vec<FoundIn>> {
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("{pattern:?} is not a glob pattern: {e}"),
            )
        })?
        .compile_matcher();
    repo.load_index().await?;
    let mut out = Vec::new();
    for (id, snap) in repo.snapshots().await? {
        if snap.tree.is_none() {
            continue;
        }
        for e in list(repo, &snap, "/", true).await? {
            let name = e.path.rsplit('/').next().unwrap_or_default();
            if glob.is_match(&e.path) || glob.is_match(name) {
                out.push(FoundIn {
                    snapshot: id.to_hex(),
                    time: snap.time,
                    entry: e,
                });
            }
        }
    }
    Ok(out)
}

/// One difference between two snapshots.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// The path.
    pub path: String,
    /// "added", "removed", "changed" (content), "type" (file became
    /// directory...) or "metadata" (same content, other mode, owner or time).
    pub change: &'static str,
}

/// What changed from snapshot `a` to snapshot `b`.
pub async fn diff(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), a.tree, b.tree)];
    while let Some((prefix, left, right)) = stack.pop() {
        let load = |t: Option<Id>| async move {
            match t {
                Some(id) => repo.load_tree(&id).await.map(|t| t.nodes),
                None => Ok(Vec::new()),
            }
        };
        let (l, r) = (load(left).await?, load(right).await?);
        let mut names: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
        names.extend(l.iter().map(|n| n.raw_name().to_vec()));
        names.extend(r.iter().map(|n| n.raw_name().to_vec()));
        for name in names {
            let find = |v: &[Node]| v.iter().find(|n| n.raw_name() == name.as_slice()).cloned();
            let (x, y) = (find(&l), find(&r));
            let shown = String::from_utf8_lossy(&name).into_owned();
            let path = format!("{prefix}/{shown}");
            match (x, y) {
                (None, Some(n)) => {
                    out.push(Change {
                        path: path.clone(),
                        change: "added",
                    });
                    if let Some(sub) = n.subtree {
                        stack.push((path, None, Some(sub)));
                    }
                }
                (Some(n), None) => {
                    out.push(Change {
                        path: path.clone(),
                        change: "removed",
                    });
                    if let Some(sub) = n.subtree {
                        stack.push((path, Some(sub), None));
                    }
                }
                (Some(x), Some(y)) => {
                    if x.kind != y.kind {
                        out.push(Change {
                            path: path.clone(),
                            change: "type",
                        });
                    } else if x.content != y.content || x.link_target != y.link_target {
                        out.push(Change {
                            path: path.clone(),
                            change: "changed",
                        });
                    } else if (
                        x.mode,
                        x.uid,
                        x.gid,
                        x.mtime,
                        x.mtime_nsec,
                        x.rdev,
                        &x.xattrs,
                    ) != (
                        y.mode,
                        y.uid,
                        y.gid,
                        y.mtime,
                        y.mtime_nsec,
                        y.rdev,
                        &y.xattrs,
                    ) && x.kind != NodeKind::Dir
                    {
                        out.push(Change {
                            path: path.clone(),
                            change: "metadata",
                        });
                    }
                    // An identical subtree id holds no change below it.
                    if x.subtree != y.subtree && (x.subtree.is_some() || y.subtree.is_some()) {
                        stack.push((path, x.subtree, y.subtree));
                    }
                }
                (None, None) => {}
            }
        }
    }
    out.sort();
    Ok(out)
}
