//! File-level physical backups, for an agent on the database host: the
//! data directory and every tablespace are walked between `pg_backup_start`
//! and `pg_backup_stop`, files the parent snapshot holds unchanged are
//! taken from it unread, and the WAL from the backup's start to its stop is
//! copied from `pg_wal` (held there by a temporary replication slot), so the
//! snapshot restores on its own like a `pg_basebackup` one.
//!
//! The snapshot's tree is the data directory as it must be laid down:
//! `backup_label` from `pg_backup_stop`, `pg_wal` holding only the backup's
//! segments, and each tablespace as a directory in `pg_tblspc` (an in-place
//! tablespace), so a restore never writes to the original tablespace
//! locations. Those locations are kept in the facts.

use super::conn::{self, query_error};
use super::physical::BackupPositions;
use super::walname::{format_lsn, parse_lsn, segno_of, WalName};
use crate::engine::files::walker::{find, Keep, Slot, Walk, WalkFilter, WalkRules};
use crate::engine::pipeline::Saver;
use crate::engine::progress::Progress;
use crate::engine::stream::StreamSettings;
use seawall_common::repo::lock::RepoLock;
use seawall_common::repo::snapshot::{BackupType, Snapshot};
use seawall_common::repo::tree::{NodeKind, Tree};
use seawall_common::repo::BlobType;
use seawall_common::storage::FileKind;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::runtime::Handle;

/// The `layout` fact of a file-level physical snapshot.
pub const FILES_LAYOUT: &str = "files";

/// What a file-level physical backup reads and how.
#[derive(Debug, Clone)]
pub struct DatadirOptions {
    /// Connection string (the backup session and the slot use it).
    pub dsn: String,
    /// The data directory as this host sees it (default: the server's
    /// `data_directory`).
    pub data_dir: Option<PathBuf>,
    /// Start with an immediate checkpoint rather than a spread one.
    pub fast_checkpoint: bool,
    /// Read every file, taking nothing from an earlier snapshot.
    pub full: bool,
    /// Read every file even if its size and times are unchanged, and let
    /// content decide what is new (pgBackRest's `--delta`).
    pub delta: bool,
    /// Operator tags.
    pub tags: Vec<String>,
    /// Storage settings.
    pub settings: StreamSettings,
}

/// Files in the data directory's top level a backup leaves out: the
/// running server's own, or ones a restore must not find (PostgreSQL's
/// basebackup.c leaves out the same).
const SKIPPED_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "backup_manifest",
    "current_logfiles",
    "postgresql.auto.conf.tmp",
];

/// Directories kept empty: their contents are rebuilt at startup or are
/// the running server's.
const EMPTIED_DIRS: &[&str] = &[
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// What of a data directory (and its tablespaces) a backup keeps.
#[derive(Debug, Clone)]
struct DataDirFilter {
    data_dir: PathBuf,
}

impl WalkFilter for DataDirFilter {
    fn keep(&self, path: &Path) -> Keep {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Keep::Whole;
        };
        // Temporary files and relation caches, wherever they are.
        if name.starts_with("pgsql_tmp") || name == "pg_internal.init" {
            return Keep::Skip;
        }
        if path.parent() == Some(self.data_dir.as_path()) {
            if SKIPPED_FILES.contains(&name) {
                return Keep::Skip;
            }
            if EMPTIED_DIRS.contains(&name) {
                return Keep::DirOnly;
            }
        }
        Keep::Whole
    }
}

/// What `backup_label` says of where the backup starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelStart {
    /// Where replay starts.
    pub lsn: u64,
    /// The timeline it starts on.
    pub timeline: u32,
}

/// Reads the start point and timeline from a `backup_label`.
pub fn parse_label(label: &str) -> Result<LabelStart> {
    let mut lsn = None;
    let mut timeline = None;
    for line in label.lines() {
        if let Some(rest) = line.strip_prefix("START WAL LOCATION: ") {
            lsn = Some(parse_lsn(rest.split_whitespace().next().unwrap_or(""))?);
        } else if let Some(rest) = line.strip_prefix("START TIMELINE: ") {
            timeline = rest.trim().parse::<u32>().ok();
        }
    }
    match (lsn, timeline) {
        (Some(lsn), Some(timeline)) => Ok(LabelStart { lsn, timeline }),
        _ => Err(Error::corrupt(format!(
            "pg_backup_stop returned a backup label without its start point and timeline: {label:?}"
        ))),
    }
}

/// Checks a WAL segment's first page: it must be the segment named, of
/// this cluster. A recycled or foreign file copied in its place would make
/// recovery fail, or worse, stop early without saying so.
pub fn check_segment_header(
    path: &Path,
    segno: u64,
    seg_size: u64,
    system_identifier: u64,
) -> Result<()> {
    let mut head = [0u8; 40];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| Error::io(path.display(), e))?;
    let u32_at = |o: usize| u32::from_le_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    // XLogLongPageHeaderData: pageaddr at 8, system identifier at 24,
    // segment size at 32.
    let (pageaddr, sysid, size) = (u64_at(8), u64_at(24), u64::from(u32_at(32)));
    if pageaddr != segno * seg_size || sysid != system_identifier || size != seg_size {
        return Err(Error::corrupt(format!(
            "{} is not the WAL segment its name says (its first page is at {} of cluster {sysid}, segment size {size}); the backup cannot include it",
            path.display(),
            format_lsn(pageaddr)
        )));
    }
    Ok(())
}

/// The newest file-level physical snapshot of this cluster and data
/// directory taken on this host: the one unchanged files come from.
async fn find_parent(
    repo: &Repository,
    system_identifier: &str,
    data_dir: &str,
) -> Result<Option<(Id, Snapshot)>> {
    let host = seawall_common::repo::hostname();
    let fact = |s: &Snapshot, k: &str| s.facts.get(k).and_then(|v| v.as_str()).map(String::from);
    Ok(repo.snapshots().await?.into_iter().rev().find(|(_, s)| {
        s.source == "postgres"
            && s.hostname == host
            && s.tree.is_some()
            && fact(s, "mode").as_deref() == Some("physical")
            && fact(s, "layout").as_deref() == Some(FILES_LAYOUT)
            && fact(s, "system_identifier").as_deref() == Some(system_identifier)
            && fact(s, "data_directory").as_deref() == Some(data_dir)
    }))
}

/// Reads the system identifier from `global/pg_control` (its first field):
/// proves the directory is the cluster the connection reaches.
fn local_system_identifier(data_dir: &Path) -> Result<u64> {
    let path = data_dir.join("global/pg_control");
    let mut id = [0u8; 8];
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut id))
        .map_err(|e| {
            Error::io(path.display(), e).context(
                "a file-level physical backup reads the data directory itself: run it on the database host as a user that can read it (postgres or root), or pass --data-dir where this host sees it",
            )
        })?;
    Ok(u64::from_le_bytes(id))
}

/// The session a backup runs in: `pg_backup_start` and `pg_backup_stop`
/// must be called on one connection, and the temporary slot lives as long
/// as it does.
struct BackupSession {
    client: tokio_postgres::Client,
    slot: String,
}

/// What `pg_backup_stop` hands back.
struct Stopped {
    stop_lsn: u64,
    label: String,
    tablespace_map: String,
}

impl BackupSession {
    async fn start(dsn: &str, fast: bool) -> Result<(BackupSession, u64)> {
        let client = conn::connect(dsn).await?;
        let slot = format!("seawall_backup_{}", std::process::id());
        // Keeps every WAL segment from before the backup's checkpoint
        // until the session ends, so pg_wal still holds them when copied.
        client
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true, true)",
                &[&slot],
            )
            .await
            .map_err(|e| {
                query_error("creating a temporary replication slot to hold the backup's WAL", e)
                    .context("a file-level backup needs a free replication slot (max_replication_slots) and a role with REPLICATION or superuser")
            })?;
        let row = client
            .query_one("SELECT pg_backup_start('seawall', $1)::text", &[&fast])
            .await
            .map_err(|e| query_error("starting the backup (pg_backup_start)", e))?;
        let start: String = row.get(0);
        Ok((BackupSession { client, slot }, parse_lsn(&start)?))
    }

    async fn stop(&self) -> Result<Stopped> {
        // Not waiting for the archiver: the WAL the backup needs is copied
        // into the snapshot itself.
        let row = self
            .client
            .query_one(
                "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(false)",
                &[],
            )
            .await
            .map_err(|e| query_error("ending the backup (pg_backup_stop)", e))?;
        let lsn: String = row.get(0);
        Ok(Stopped {
            stop_lsn: parse_lsn(&lsn)?,
            label: row.get(1),
            tablespace_map: row.get(2),
        })
    }

    async fn end(self) {
        // The slot is temporary; dropping it now frees the WAL at once.
        let _ = self
            .client
            .execute("SELECT pg_drop_replication_slot($1)", &[&self.slot])
            .await;
    }
}

/// What the walk of the data directory found before the backup stopped.
struct Walked {
    /// Top-level entries, by name.
    slots: Vec<(Vec<u8>, Slot)>,
    /// Tablespace oid → its original location.
    tablespaces: BTreeMap<String, String>,
}

/// The names in `dir`, in the byte order trees keep.
fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir.display(), e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir.display(), e))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Walks the data directory's top level: everything but `pg_wal` (added
/// after the stop), `pg_tblspc` holding each tablespace's contents.
fn walk_data_dir(
    walk: &Walk,
    dir: &Path,
    filter: &DataDirFilter,
    parent: Option<&Tree>,
) -> Result<Walked> {
    let names = sorted_names(dir)?;
    let dev = std::fs::metadata(dir)
        .map_err(|e| Error::io(dir.display(), e))?
        .dev();
    let mut walked = Walked {
        slots: Vec::new(),
        tablespaces: BTreeMap::new(),
    };
    for name in names {
        let path = dir.join(&name);
        if name == "pg_wal" {
            continue;
        }
        let keep = filter.keep(&path);
        if keep == Keep::Skip {
            continue;
        }
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        let parent_node = find(parent, name.as_bytes());
        let slot = if name == "pg_tblspc" {
            let mut node = walk.node(&path, &name, NodeKind::Dir, &meta);
            let sub_parent = walk.parent_subtree(parent_node);
            node.subtree = Some(save_tablespaces(
                walk,
                &path,
                sub_parent.as_ref(),
                &mut walked.tablespaces,
            )?);
            Some(Slot::Ready(Box::new(node)))
        } else if keep == Keep::DirOnly && meta.is_dir() {
            let mut node = walk.node(&path, &name, NodeKind::Dir, &meta);
            node.subtree = Some(walk.store_tree(vec![])?);
            Some(Slot::Ready(Box::new(node)))
        } else {
            walk.entry(&path, &name, &meta, parent_node, dev)?
        };
        if let Some(slot) = slot {
            walked.slots.push((name.as_bytes().to_vec(), slot));
        }
    }
    Ok(walked)
}

/// Stores `pg_tblspc` with each tablespace's contents in place of its
/// symlink; records where each one lives.
fn save_tablespaces(
    walk: &Walk,
    dir: &Path,
    parent: Option<&Tree>,
    found: &mut BTreeMap<String, String>,
) -> Result<Id> {
    let names = sorted_names(dir)?;
    let mut slots = Vec::new();
    for name in names {
        let link = dir.join(&name);
        let meta = std::fs::symlink_metadata(&link).map_err(|e| Error::io(link.display(), e))?;
        let parent_node = find(parent, name.as_bytes());
        if !meta.file_type().is_symlink() {
            // An in-place tablespace is a directory already.
            if let Some(slot) = walk.entry(&link, &name, &meta, parent_node, meta.dev())? {
                slots.push(slot);
            }
            continue;
        }
        let target = std::fs::read_link(&link).map_err(|e| Error::io(link.display(), e))?;
        let location = dir.join(&target);
        let real = std::fs::metadata(&location).map_err(|e| {
            Error::io(location.display(), e).context(format!(
                "tablespace {} points to {}, which this host cannot read",
                name.to_string_lossy(),
                target.display()
            ))
        })?;
        let mut node = walk.node(&location, &name, NodeKind::Dir, &real);
        let sub_parent = walk.parent_subtree(parent_node);
        node.subtree = Some(walk.save_dir(&location, sub_parent.as_ref())?);
        found.insert(
            name.to_string_lossy().into_owned(),
            target.display().to_string(),
        );
        slots.push(Slot::Ready(Box::new(node)));
    }
    walk.store_tree(slots)
}

/// The WAL range a backup needs, as segment numbers.
#[derive(Debug, Clone, Copy)]
struct WalRange {
    timeline: u32,
    first: u64,
    last: u64,
    seg_size: u64,
}

/// Stores `pg_wal` holding the backup's segments, each checked to be
/// what its name says, and an empty `archive_status`.
fn save_wal(
    walk: &Walk,
    data_dir: &Path,
    range: &WalRange,
    system_identifier: u64,
) -> Result<Slot> {
    let wal = data_dir.join("pg_wal");
    let meta = std::fs::metadata(&wal).map_err(|e| Error::io(wal.display(), e))?;
    let mut slots: Vec<(Vec<u8>, Slot)> = Vec::new();
    let status = wal.join("archive_status");
    if let Ok(m) = std::fs::metadata(&status) {
        let mut node = walk.node(&status, OsStr::new("archive_status"), NodeKind::Dir, &m);
        node.subtree = Some(walk.store_tree(vec![])?);
        slots.push((b"archive_status".to_vec(), Slot::Ready(Box::new(node))));
    }
    for segno in range.first..=range.last {
        let name = WalName::segment(range.timeline, segno, range.seg_size).file;
        let path = wal.join(&name);
        check_segment_header(&path, segno, range.seg_size, system_identifier).map_err(|e| {
            e.context(
                "the WAL the backup needs is not all in pg_wal; nothing was stored as a snapshot",
            )
        })?;
        let m = std::fs::symlink_metadata(&path).map_err(|e| Error::io(path.display(), e))?;
        let node = walk.node(&path, OsStr::new(&name), NodeKind::File, &m);
        slots.push((name.into_bytes(), walk.read_new(&path, node, m.len())?));
    }
    slots.sort_by(|a, b| a.0.cmp(&b.0));
    let mut node = walk.node(&wal, OsStr::new("pg_wal"), NodeKind::Dir, &meta);
    node.subtree = Some(walk.store_tree(slots.into_iter().map(|(_, s)| s).collect())?);
    Ok(Slot::Ready(Box::new(node)))
}

/// `backup_label` as `pg_backup_stop` wrote it, owned like `PG_VERSION`.
fn label_node(walk: &Walk, data_dir: &Path, label: &str) -> Result<Slot> {
    let version = data_dir.join("PG_VERSION");
    let m = std::fs::symlink_metadata(&version).map_err(|e| Error::io(version.display(), e))?;
    let mut node =
        crate::engine::files::node_from_metadata(OsStr::new("backup_label"), NodeKind::File, &m);
    let now = chrono::Utc::now();
    node.mode = 0o600;
    node.size = label.len() as u64;
    (node.mtime, node.mtime_nsec) = (now.timestamp(), now.timestamp_subsec_nanos());
    (node.atime, node.atime_nsec) = (node.mtime, node.mtime_nsec);
    (node.ctime, node.ctime_nsec) = (node.mtime, node.mtime_nsec);
    node.inode = 0;
    node.content = vec![walk.store_blob(BlobType::Data, label.as_bytes().to_vec())?];
    Ok(Slot::Ready(Box::new(node)))
}

/// Takes a file-level physical backup into one snapshot.
pub async fn backup_datadir(
    repo: Arc<Repository>,
    opts: DatadirOptions,
    progress: Arc<Progress>,
) -> Result<(Id, Snapshot)> {
    let started = Instant::now();
    let time = chrono::Utc::now();
    let client = conn::connect(&opts.dsn).await?;
    let facts = conn::server_facts(&client).await?;
    let server_dir: String = client
        .query_one("SELECT current_setting('data_directory')", &[])
        .await
        .map_err(|e| query_error("asking the server for its data directory", e))?
        .get(0);
    drop(client);
    let data_dir = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&server_dir));
    let data_dir = std::fs::canonicalize(&data_dir).map_err(|e| {
        Error::io(data_dir.display(), e).context(
            "a file-level physical backup runs on the database host (or pass --data-dir where this host sees the data directory)",
        )
    })?;
    let sysid: u64 = facts.system_identifier.parse().map_err(|_| {
        Error::corrupt(format!(
            "the server reported system identifier {:?}",
            facts.system_identifier
        ))
    })?;
    let local = local_system_identifier(&data_dir)?;
    if local != sysid {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} belongs to cluster {local}, but the connection reaches cluster {sysid}: point --data-dir at the data directory of the server the DSN names",
                data_dir.display()
            ),
        ));
    }
    let data_dir_text = data_dir.display().to_string();
    crate::engine::under_backup_lock(&repo, opts.settings.lock_wait, async |lock| {
        run(
            repo.clone(),
            &opts,
            (&data_dir, &data_dir_text),
            (sysid, &facts),
            progress,
            (started, time),
            lock,
        )
        .await
    })
    .await
}

async fn run(
    repo: Arc<Repository>,
    opts: &DatadirOptions,
    (data_dir, data_dir_text): (&Path, &str),
    (sysid, facts): (u64, &conn::ServerFacts),
    progress: Arc<Progress>,
    (started, time): (Instant, chrono::DateTime<chrono::Utc>),
    lock: &RepoLock,
) -> Result<(Id, Snapshot)> {
    repo.load_index().await?;
    let parent = if opts.full {
        None
    } else {
        find_parent(&repo, &facts.system_identifier, data_dir_text).await?
    };
    let parent_tree = match parent.as_ref().and_then(|(_, s)| s.tree) {
        Some(t) if !opts.delta => Some(repo.load_tree(&t).await?),
        _ => None,
    };
    // A file the parent read in the same second as one of its writes may
    // have changed since without its times moving.
    let settled_before = parent.as_ref().map(|(_, s)| {
        let t = s.time - chrono::Duration::seconds(1);
        (t.timestamp(), t.timestamp_subsec_nanos())
    });
    let handle = Handle::current();
    let s = &opts.settings;
    let saver = Saver::start(
        repo.clone(),
        s.threads,
        s.uploads,
        s.compression_level,
        progress.clone(),
        handle.clone(),
    );
    let filter = DataDirFilter {
        data_dir: data_dir.to_path_buf(),
    };
    let rules = WalkRules {
        one_file_system: false,
        settled_before,
        reread_changing: false,
    };
    let walk = Walk::start(
        repo.clone(),
        saver,
        Box::new(filter.clone()),
        rules,
        s.threads,
        progress,
        handle,
    )?;
    let (session, start_lsn) = BackupSession::start(&opts.dsn, opts.fast_checkpoint).await?;
    let dir = data_dir.to_path_buf();
    let walked = tokio::task::spawn_blocking(move || {
        let walked = walk_data_dir(&walk, &dir, &filter, parent_tree.as_ref());
        (walk, walked)
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, format!("data directory walk stopped: {e}")));
    // The backup is stopped whatever the walk found: a session that ends
    // without it leaves nothing behind either, but this says why.
    let stopped = session.stop().await;
    let (walk, walked) = match walked {
        Ok(w) => w,
        Err(e) => {
            session.end().await;
            return Err(e);
        }
    };
    let finished = async {
        let walked = walked?;
        let stopped = stopped?;
        let label = parse_label(&stopped.label)?;
        if label.lsn != start_lsn {
            return Err(Error::corrupt(format!(
                "the backup label starts at {}, but pg_backup_start returned {}",
                format_lsn(label.lsn),
                format_lsn(start_lsn)
            )));
        }
        Ok((walked, stopped, label))
    }
    .await;
    let (walked, stopped, label) = match finished {
        Ok(x) => x,
        Err(e) => {
            // Flush what was queued so no upload is left running.
            let _ = tokio::task::spawn_blocking(move || walk.finish()).await;
            session.end().await;
            return Err(e);
        }
    };
    let seg = facts.wal_segment_size;
    let range = WalRange {
        timeline: label.timeline,
        first: segno_of(label.lsn, seg),
        last: segno_of(stopped.stop_lsn, seg),
        seg_size: seg,
    };
    let dir = data_dir.to_path_buf();
    let label_text = stopped.label.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let tail = (|| {
            let mut slots = walked.slots;
            slots.push((b"pg_wal".to_vec(), save_wal(&walk, &dir, &range, sysid)?));
            slots.push((
                b"backup_label".to_vec(),
                label_node(&walk, &dir, &label_text)?,
            ));
            slots.sort_by(|a, b| a.0.cmp(&b.0));
            walk.store_tree(slots.into_iter().map(|(_, s)| s).collect())
        })();
        let finished = walk.finish();
        Ok::<_, Error>((tail?, finished?, walked.tablespaces))
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Io, format!("storing the backup stopped: {e}")));
    session.end().await;
    let (root, outcome, tablespaces) = stored??;

    let mut f = super::physical::recovery_facts(
        facts,
        &BackupPositions {
            start_lsn: label.lsn,
            stop_lsn: stopped.stop_lsn,
            timeline: label.timeline,
        },
    );
    f.insert("layout".into(), FILES_LAYOUT.into());
    f.insert("data_directory".into(), data_dir_text.into());
    f.insert("delta".into(), opts.delta.into());
    f.insert("tablespaces".into(), serde_json::json!(tablespaces));
    if !stopped.tablespace_map.is_empty() {
        f.insert(
            "tablespace_map".into(),
            stopped.tablespace_map.clone().into(),
        );
    }
    let summary = outcome.summary(started.elapsed().as_secs_f64());
    let mut snapshot = Snapshot {
        time,
        end_time: chrono::Utc::now(),
        hostname: seawall_common::repo::hostname(),
        source: "postgres".into(),
        paths: vec![conn::describe(&opts.dsn)?],
        tags: opts.tags.clone(),
        region: s.origin.region.clone(),
        agent: s.origin.agent.clone(),
        backup_type: if parent.is_some() && !opts.delta {
            BackupType::Incremental
        } else {
            BackupType::Full
        },
        parent: parent.map(|(id, _)| id),
        excludes: vec![],
        tree: Some(root),
        streams: vec![],
        facts: f,
        summary,
    };
    // The commit point: only while the lock still protects the packs.
    lock.check()?;
    let (id, len) = repo.write_json(FileKind::Snapshot, &snapshot).await?;
    crate::engine::record_in_head(&repo, id, snapshot.time).await;
    snapshot.summary.bytes_added += len;
    Ok((id, snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_start_and_timeline() {
        let label = "START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\n\
                     CHECKPOINT LOCATION: 0/9000060\nBACKUP METHOD: streamed\n\
                     BACKUP FROM: primary\nSTART TIME: 2026-11-30 10:00:00 UTC\n\
                     LABEL: seawall\nSTART TIMELINE: 3\n";
        assert_eq!(
            parse_label(label).unwrap(),
            LabelStart {
                lsn: 0x900_0028,
                timeline: 3
            }
        );
        assert!(parse_label("LABEL: seawall\n").is_err());
    }

    #[test]
    fn the_filter_leaves_out_the_running_servers_files_only_at_the_top() {
        let f = DataDirFilter {
            data_dir: PathBuf::from("/d"),
        };
        assert_eq!(f.keep(Path::new("/d/postmaster.pid")), Keep::Skip);
        assert_eq!(f.keep(Path::new("/d/backup_label")), Keep::Skip);
        assert_eq!(f.keep(Path::new("/d/pg_replslot")), Keep::DirOnly);
        assert_eq!(f.keep(Path::new("/d/base/1/pg_internal.init")), Keep::Skip);
        assert_eq!(f.keep(Path::new("/d/base/pgsql_tmp")), Keep::Skip);
        assert_eq!(f.keep(Path::new("/t/PG_15/pgsql_tmp")), Keep::Skip);
        assert_eq!(f.keep(Path::new("/d/base/1/postmaster.pid")), Keep::Whole);
        assert_eq!(f.keep(Path::new("/d/base/1/1259")), Keep::Whole);
        assert_eq!(f.keep(Path::new("/d/global/pg_control")), Keep::Whole);
    }

    #[test]
    fn a_segment_header_must_name_its_segment_and_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 16 * 1024 * 1024u64;
        let mut page = vec![0u8; 8192];
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[8..16].copy_from_slice(&(5 * seg).to_le_bytes());
        page[24..32].copy_from_slice(&42u64.to_le_bytes());
        page[32..36].copy_from_slice(&(seg as u32).to_le_bytes());
        let p = dir.path().join("000000010000000000000005");
        std::fs::write(&p, &page).unwrap();
        check_segment_header(&p, 5, seg, 42).unwrap();
        let wrong_segment = check_segment_header(&p, 6, seg, 42).unwrap_err();
        assert!(wrong_segment.to_string().contains("is not the WAL segment"));
        assert!(check_segment_header(&p, 5, seg, 43).is_err());
        std::fs::write(&p, b"short").unwrap();
        assert!(check_segment_header(&p, 5, seg, 42).is_err());
    }
}
