//! Snapshot manifests: one per backup, written after every blob and index it
//! needs, so its presence is the commit point of the backup.

use crate::id::Id;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How operators and retention rules speak of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// No parent: everything was read.
    Full,
    /// Has a parent: unchanged files were reused without reading.
    Incremental,
    /// Archived write-ahead log.
    Wal,
}

/// A named logical stream (a dump, an RDB) and its blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stream {
    /// Name of the stream, such as a database name.
    pub name: String,
    /// Bytes in the stream.
    pub size: u64,
    /// SHA-256 of the whole stream, hex: what streams written before
    /// `blake3` carry, checked after restore.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// BLAKE3 of the whole stream (unkeyed), hex, checked after restore;
    /// new streams carry this instead of `sha256` (a third of its CPU).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub blake3: String,
    /// Blobs in order.
    pub content: Vec<Id>,
}

/// What a backup run did, as printed at its end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSummary {
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files whose metadata changed since the parent, and were read.
    pub files_changed: u64,
    /// Files reused from the parent without reading.
    pub files_unchanged: u64,
    /// Directories seen.
    pub dirs: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes of files in the snapshot.
    pub bytes_total: u64,
    /// Blobs added to the repository.
    pub blobs_added: u64,
    /// Bytes added to the repository (packs and index).
    pub bytes_added: u64,
    /// Wall-clock seconds.
    pub duration_secs: f64,
    /// Files that changed during reading, or could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where a backup was taken from: the agent and region that ran it (both
/// empty for a manual run; the manifest's hostname is always set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Region of the agent.
    pub region: Option<String>,
    /// The agent's id.
    pub agent: Option<String>,
}

/// The manifest of one backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// When the backup started.
    pub time: chrono::DateTime<chrono::Utc>,
    /// When it finished.
    pub end_time: chrono::DateTime<chrono::Utc>,
    /// Host that took it.
    pub hostname: String,
    /// Source kind: "files", "postgres", "redis", ...
    pub source: String,
    /// Paths backed up (files) or the source's identity.
    pub paths: Vec<String>,
    /// Operator tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Region of the agent, when run by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Agent that took it, when run by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Full, incremental or WAL.
    pub backup_type: BackupType,
    /// The snapshot whose unchanged files were reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// Exclude patterns in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Root tree of a files backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Id>,
    /// Logical streams of a database backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<Stream>,
    /// Facts about the source (versions, LSNs, offsets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, serde_json::Value>,
    /// What the run did.
    pub summary: BackupSummary,
}

impl Snapshot {
    /// Every blob id the snapshot names directly (trees are followed by the caller).
    pub fn direct_blobs(&self) -> impl Iterator<Item = &Id> {
        self.tree
            .iter()
            .chain(self.streams.iter().flat_map(|s| s.content.iter()))
    }
}
