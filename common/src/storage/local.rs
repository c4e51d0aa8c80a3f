//! A repository in a local directory: the embedded default. Every write goes
//! to a temporary file that is fsynced and renamed into place, so a crash
//! leaves the old file or the new one, never a torn one.

use super::{FileKind, Listed, ReadStorage, Storage};
use crate::error::{Error, ErrorKind, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Storage in a directory on a local (or mounted) file system.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage rooted at `root`; nothing is touched until used.
    pub fn new(root: impl Into<PathBuf>) -> LocalStorage {
        LocalStorage { root: root.into() }
    }

    fn full(&self, kind: FileKind, name: &str) -> Result<PathBuf> {
        if name.split('/').any(|c| c == ".." || c == ".") || name.starts_with('/') {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("file name {name:?} is not a plain repository name"),
            ));
        }
        Ok(self.root.join(kind.path(name)))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("storage worker stopped: {e}")))?
}

fn read_range_sync(path: &Path, offset: u64, len: u64) -> Result<Bytes> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
    let size = f
        .metadata()
        .map_err(|e| Error::io(path.display(), e))?
        .len();
    if offset.saturating_add(len) > size {
        return Err(Error::corrupt(format!(
            "{}: wanted bytes {offset}..{} of a {size}-byte file: truncated",
            path.display(),
            offset + len
        )));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(path.display(), e))?;
    // read_to_end into reserved capacity: no zeroing of a buffer about to be overwritten.
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path.display(), e))?;
    if buf.len() as u64 != len {
        return Err(Error::corrupt(format!(
            "{}: shorter than expected: truncated",
            path.display()
        )));
    }
    Ok(Bytes::from(buf))
}

/// Creates `dir` and any missing parents, each made durable in its own
/// parent: a file renamed into a directory that a crash forgets is lost.
fn create_dirs_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        // Another writer made it meanwhile: it is as good.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io(dir.display(), e)),
    }
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

/// Writes `path` whole or not at all (a temporary file renamed over it),
/// created with `mode`.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{} has no parent", path.display()),
        )
    })?;
    create_dirs_durably(dir)?;
    let tmp = dir.join(format!(".tmp-{}", crate::id::Id::random().short()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io(tmp.display(), e))?;
        f.write_all(data).map_err(|e| Error::io(tmp.display(), e))?;
        f.sync_all().map_err(|e| Error::io(tmp.display(), e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display(), e))?;
        // The rename is durable only once the directory entry is.
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Temporary files (`.tmp-*`) under `dir` last modified before `cutoff`.
fn stale_temporaries(
    dir: &Path,
    cutoff: std::time::SystemTime,
    out: &mut Vec<(PathBuf, u64)>,
) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir.display(), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir.display(), e))?;
        let meta = match entry.metadata() {
            Ok(m) => m,
            // Removed since the directory was read (a lock released, a
            // pack pruned): it is simply not listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(entry.path().display(), e)),
        };
        if meta.is_dir() {
            stale_temporaries(&entry.path(), cutoff, out)?;
        } else if entry.file_name().to_string_lossy().starts_with(".tmp-")
            && meta.modified().is_ok_and(|m| m < cutoff)
        {
            out.push((entry.path(), meta.len()));
        }
    }
    Ok(())
}

fn walk(
    dir: &Path,
    rel: &str,
    out: &mut Vec<(String, u64, Option<std::time::SystemTime>)>,
) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir.display(), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir.display(), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let child_rel = format!("{rel}/{name}");
        let meta = match entry.metadata() {
            Ok(m) => m,
            // Removed since the directory was read (a lock released, a
            // pack pruned): it is simply not listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(entry.path().display(), e)),
        };
        if meta.is_dir() {
            walk(&entry.path(), &child_rel, out)?;
        } else if meta.is_file() {
            out.push((child_rel, meta.len(), meta.modified().ok()));
        }
    }
    Ok(())
}

#[async_trait]
impl ReadStorage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn read(&self, kind: FileKind, name: &str) -> Result<Bytes> {
        use std::io::Read;
        let path = self.full(kind, name)?;
        let (location, name) = (self.location(), name.to_string());
        blocking(move || {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(path.display(), e))?;
            let size = file
                .metadata()
                .map_err(|e| Error::io(path.display(), e))?
                .len();
            // Checked on the open file, and the read bounded too: a file
            // swapped or grown after the check is still cut off.
            let max = kind.max_size();
            if size > max {
                return Err(kind.oversized(&name, size, &location));
            }
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.take(max + 1)
                .read_to_end(&mut data)
                .map_err(|e| Error::io(path.display(), e))?;
            if data.len() as u64 > max {
                return Err(kind.oversized(&name, data.len() as u64, &location));
            }
            Ok(Bytes::from(data))
        })
        .await
    }

    async fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        let path = self.full(kind, name)?;
        blocking(move || read_range_sync(&path, offset, len)).await
    }

    async fn list(&self, kind: FileKind) -> Result<Vec<Listed>> {
        if kind.is_single() {
            return Ok(match self.size(kind, "").await? {
                Some(size) => vec![Listed {
                    name: String::new(),
                    size,
                    modified: None,
                }],
                None => vec![],
            });
        }
        let root = self.root.clone();
        blocking(move || {
            let mut found = Vec::new();
            walk(&root.join(kind.dir()), kind.dir(), &mut found)?;
            Ok(found
                .into_iter()
                .filter_map(|(rel, size, modified)| {
                    kind.name_from_path(&rel).map(|name| Listed {
                        name,
                        size,
                        modified,
                    })
                })
                .collect())
        })
        .await
    }

    async fn size(&self, kind: FileKind, name: &str) -> Result<Option<u64>> {
        let path = self.full(kind, name)?;
        blocking(move || match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path.display(), e)),
        })
        .await
    }
}

#[async_trait]
impl Storage for LocalStorage {
    /// One: a second write at once to the same disk finished no sooner
    /// and held one more pack in memory.
    fn writes_at_once(&self) -> usize {
        1
    }

    async fn create(&self) -> Result<()> {
        let root = self.root.clone();
        blocking(move || {
            for kind in FileKind::ALL {
                if !kind.is_single() {
                    let dir = root.join(kind.dir());
                    std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn write(&self, kind: FileKind, name: &str, data: Bytes) -> Result<()> {
        let path = self.full(kind, name)?;
        // Key files are the one secret-bearing kind: owner-only. The rest
        // is sealed and follows the umask, so that a repository shared by
        // a group (root's backups, postgres's wal-fetch) stays readable.
        let mode = if kind == FileKind::Key { 0o600 } else { 0o666 };
        blocking(move || write_atomic(&path, &data, mode)).await
    }

    async fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let path = self.full(kind, name)?;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path.display(), e)),
        })
        .await
    }

    async fn remove_stale_temporaries(&self, age: std::time::Duration) -> Result<(u64, u64)> {
        let root = self.root.clone();
        blocking(move || {
            let cutoff = std::time::SystemTime::now()
                .checked_sub(age)
                .unwrap_or(std::time::UNIX_EPOCH);
            let mut found = Vec::new();
            stale_temporaries(&root, cutoff, &mut found)?;
            let (mut n, mut bytes) = (0, 0);
            for (path, size) in found {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        n += 1;
                        bytes += size;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(path.display(), e)),
                }
            }
            Ok((n, bytes))
        })
        .await
    }
}
