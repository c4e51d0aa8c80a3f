//! Where a repository's files live. Backends implement [`ReadStorage`] and
//! [`Storage`] over a flat namespace of (kind, name); retry is a wrapper, not
//! a flag inside each backend.

mod local;
mod location;
mod retry;
mod s3;

pub use local::LocalStorage;
pub use location::{open, S3Options, StorageLocation};
pub use retry::Retrying;
pub use s3::S3Storage;

use crate::error::Result;
use async_trait::async_trait;
use bytes::Bytes;

/// The kinds of file a repository holds, each in its own folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// The single `config` file.
    Config,
    /// `keys/<id>`: wrapped master keys.
    Key,
    /// `data/<xx>/<id>`: packs of blobs.
    Pack,
    /// `index/<id>`: blob locations.
    Index,
    /// `snapshots/<id>`: manifests, the commit points.
    Snapshot,
    /// `locks/<id>`: shared and exclusive locks.
    Lock,
    /// `wal/<timeline>/<segment>`: archived PostgreSQL WAL.
    Wal,
    /// The single `head` file: which snapshots the repository holds.
    Head,
}

impl FileKind {
    /// Every kind, in the order `init` creates their folders.
    pub const ALL: [FileKind; 8] = [
        FileKind::Config,
        FileKind::Key,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Lock,
        FileKind::Wal,
        FileKind::Head,
    ];

    /// Whether this kind is one file at the top (`config`, `head`), named
    /// `""`, rather than a folder of files.
    pub fn is_single(self) -> bool {
        matches!(self, FileKind::Config | FileKind::Head)
    }

    /// The folder (or, for config, the file) this kind lives under.
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Key => "keys",
            FileKind::Pack => "data",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::Lock => "locks",
            FileKind::Wal => "wal",
            FileKind::Head => "head",
        }
    }

    /// The path of `name` relative to the repository root.
    pub fn path(self, name: &str) -> String {
        match self {
            FileKind::Config | FileKind::Head => self.dir().to_string(),
            FileKind::Pack => {
                let fan = name.get(..2).unwrap_or("00");
                format!("data/{fan}/{name}")
            }
            _ => format!("{}/{name}", self.dir()),
        }
    }

    /// The largest file of this kind the format allows. A larger one is not
    /// Seawall's (or was tampered with) and is refused before it is read,
    /// so a hostile object cannot make a reader allocate its size.
    pub fn max_size(self) -> u64 {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        match self {
            FileKind::Config | FileKind::Key | FileKind::Lock => 64 * KIB,
            FileKind::Snapshot | FileKind::Head => 64 * MIB,
            // Packs close at 128 MiB at most, plus one blob of up to 16 MiB
            // and their headers.
            FileKind::Pack => 256 * MIB,
            // A consolidated index (prune, repair) lists every pack.
            FileKind::Index => 1024 * MIB,
            // PostgreSQL WAL segments are at most 1 GiB.
            FileKind::Wal => 1024 * MIB + 64 * KIB,
        }
    }

    /// The error for a file of `size` bytes over [`FileKind::max_size`].
    pub fn oversized(self, name: &str, size: u64, location: &str) -> crate::Error {
        crate::Error::corrupt(format!(
            "{location}/{} is {size} bytes, more than a {} file may be ({} bytes): it is not one Seawall wrote; move it out of the repository (or restore it from a replica)",
            self.path(name),
            self.dir(),
            self.max_size()
        ))
    }

    /// The name of a file of this kind from its relative path, the inverse of [`FileKind::path`].
    pub fn name_from_path(self, path: &str) -> Option<String> {
        let rest = path.strip_prefix(self.dir())?.strip_prefix('/')?;
        if rest.is_empty() || rest.split('/').any(|c| c.starts_with(".tmp-")) {
            return None;
        }
        match self {
            FileKind::Pack => rest.rsplit('/').next().map(str::to_string),
            _ => Some(rest.to_string()),
        }
    }
}

/// A file found by [`ReadStorage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name within its kind.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, where the storage says.
    pub modified: Option<std::time::SystemTime>,
}

/// Reading a repository's files.
#[async_trait]
pub trait ReadStorage: Send + Sync {
    /// A human description of where the files are, for messages.
    fn location(&self) -> String;
    /// The whole content of a file; a missing file is `ErrorKind::NotFound`.
    async fn read(&self, kind: FileKind, name: &str) -> Result<Bytes>;
    /// `len` bytes from `offset`; reading past the end is `ErrorKind::Corrupt`.
    async fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Bytes>;
    /// Every file of a kind with its size, in no particular order.
    async fn list(&self, kind: FileKind) -> Result<Vec<Listed>>;
    /// The size of a file, or `None` when it does not exist.
    async fn size(&self, kind: FileKind, name: &str) -> Result<Option<u64>>;
}

/// Writing a repository's files. Writes are atomic: a reader sees the old
/// state or the whole new file, never a part.
#[async_trait]
pub trait Storage: ReadStorage {
    /// Creates the folders a new repository needs (a no-op on object stores).
    async fn create(&self) -> Result<()>;
    /// Stores `data` as the file, replacing any file of that name.
    async fn write(&self, kind: FileKind, name: &str, data: Bytes) -> Result<()>;
    /// Deletes a file; deleting a missing file succeeds.
    async fn remove(&self, kind: FileKind, name: &str) -> Result<()>;
    /// How many pack writes at once pay off. Each holds a whole pack in
    /// memory; an object store overlaps round trips, a disk little.
    fn writes_at_once(&self) -> usize {
        4
    }
    /// Deletes the temporary files of writes a crash interrupted, when
    /// older than `age`; returns how many and their bytes. Object stores
    /// write atomically and leave none.
    async fn remove_stale_temporaries(&self, age: std::time::Duration) -> Result<(u64, u64)> {
        let _ = age;
        Ok((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fan_out_packs_and_invert() {
        let name = "ab".repeat(32);
        assert_eq!(FileKind::Pack.path(&name), format!("data/ab/{name}"));
        assert_eq!(
            FileKind::Pack.name_from_path(&FileKind::Pack.path(&name)),
            Some(name)
        );
        assert_eq!(
            FileKind::Wal.path("00000001/0000000100000000000000A1"),
            "wal/00000001/0000000100000000000000A1"
        );
        assert_eq!(FileKind::Index.name_from_path("index/.tmp-123"), None);
        assert_eq!(FileKind::Config.path(""), "config");
    }
}
