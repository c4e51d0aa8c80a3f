//! Reading one file into blobs. The file is opened without following
//! symlinks, and its metadata is compared before and after the read; a file
//! that changes under the reader is read again, and if it keeps changing the
//! node says so instead of passing a torn copy off as good.

use super::meta::same_version;
use crate::engine::pipeline::Saver;
use crate::engine::progress::Progress;
use seawall_common::chunker::{chunks_pooled, ChunkerParams};
use seawall_common::repo::tree::Node;
use seawall_common::repo::BlobType;
use seawall_common::{Error, Result};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// How many times a changing file is read before it is stored as changed.
pub(super) const ATTEMPTS: u32 = 3;

/// Reads `path` into `node` (content, size, times), up to `attempts`
/// times while it changes under the reader; returns bytes read.
pub fn read_into(
    path: &Path,
    node: &mut Node,
    saver: &Saver,
    params: ChunkerParams,
    progress: &Progress,
    attempts: u32,
) -> Result<u64> {
    let mut total_read = 0;
    for attempt in 1..=attempts.max(1) {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| Error::io(path.display(), e))?;
        let before = file.metadata().map_err(|e| Error::io(path.display(), e))?;
        let (content, read) = read_blobs(&file, before.len(), saver, params, progress)
            .map_err(|e| e.context(path.display()))?;
        total_read += read;
        let after = file.metadata().map_err(|e| Error::io(path.display(), e))?;
        let stable = same_version(&before, &after) && read == before.len();
        node.content = content;
        node.size = read;
        node.mtime = before.mtime();
        node.mtime_nsec = before.mtime_nsec() as u32;
        node.ctime = before.ctime();
        node.ctime_nsec = before.ctime_nsec() as u32;
        node.mode = before.mode() & 0o7777;
        node.inode = before.ino();
        if stable {
            node.changed_during_backup = false;
            return Ok(total_read);
        }
        tracing::debug!(path = %path.display(), attempt, "file changed while being read");
        node.changed_during_backup = true;
    }
    Ok(total_read)
}

fn read_blobs(
    file: &File,
    size_hint: u64,
    saver: &Saver,
    params: ChunkerParams,
    progress: &Progress,
) -> Result<(Vec<seawall_common::Id>, u64)> {
    let mut content = Vec::new();
    let mut read = 0u64;
    if size_hint < params.min as u64 {
        // Small files are one blob: skip the chunker's buffer.
        let mut data = saver.pool().take(size_hint as usize + 1);
        file.take(params.min as u64)
            .read_to_end(&mut data)
            .map_err(|e| Error::io("reading", e))?;
        if data.len() as u64 >= params.min as u64 {
            // It grew past the small-file bound while we read: chunk it properly.
            return read_chunked(file, data, saver, params, progress);
        }
        read += data.len() as u64;
        Progress::add(&progress.bytes_done, data.len() as u64);
        if !data.is_empty() {
            let id = saver.blob_id(&data);
            saver.save(BlobType::Data, id, data)?;
            content.push(id);
        }
        return Ok((content, read));
    }
    read_chunked(file, Vec::new(), saver, params, progress)
}

fn read_chunked(
    file: &File,
    head: Vec<u8>,
    saver: &Saver,
    params: ChunkerParams,
    progress: &Progress,
) -> Result<(Vec<seawall_common::Id>, u64)> {
    let mut content = Vec::new();
    let mut read = 0u64;
    let source = std::io::Cursor::new(head).chain(file);
    for chunk in chunks_pooled(source, params, saver.pool()) {
        let chunk = chunk.map_err(|e| Error::io("reading", e))?;
        read += chunk.len() as u64;
        Progress::add(&progress.bytes_done, chunk.len() as u64);
        let id = saver.blob_id(&chunk);
        saver.save(BlobType::Data, id, chunk)?;
        content.push(id);
    }
    Ok((content, read))
}
