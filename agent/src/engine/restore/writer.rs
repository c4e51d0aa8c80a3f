//! Writing restored files. A file is created at its first blob and kept open
//! until its last, then its metadata is set through the open descriptor and
//! it is closed: one open per file, and no path lookups for metadata. A file
//! that cannot be completed is removed and named, never left torn.

use super::plan::{PackJob, PlannedFile};
use super::shown;
use super::{Fingerprints, RestoreSummary};
use crate::engine::progress::Progress;
use seawall_common::crypto::MasterKey;
use seawall_common::repo::blob;
use seawall_common::{Error, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// Open descriptors kept between blobs at most; beyond, files are reopened per blob.
const MAX_OPEN: usize = 1024;

/// Whether this process may restore ownership.
pub fn running_as_root() -> bool {
    // /proc/self belongs to the effective user: no unsafe geteuid call needed.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[derive(Default)]
struct State {
    handle: Option<File>,
    created: bool,
    done: bool,
    error: Option<String>,
}

struct Slot {
    planned: PlannedFile,
    remaining: AtomicUsize,
    state: Mutex<State>,
}

/// Every file of the plan with its write state.
pub struct Files {
    target: PathBuf,
    slots: Vec<Slot>,
    open: AtomicUsize,
    as_root: bool,
    /// Filled as blobs are written, when a content check will follow.
    fingerprints: Option<Mutex<Fingerprints>>,
    /// Extended attributes refused, one line each.
    warnings: Mutex<Vec<String>>,
}

impl Files {
    /// Write states for the planned files.
    pub fn new(
        target: PathBuf,
        files: Vec<PlannedFile>,
        as_root: bool,
        fingerprint: bool,
    ) -> Files {
        let slots = files
            .into_iter()
            .map(|planned| Slot {
                remaining: AtomicUsize::new(planned.node.content.len()),
                planned,
                state: Mutex::new(State::default()),
            })
            .collect();
        Files {
            target,
            slots,
            open: AtomicUsize::new(0),
            as_root,
            fingerprints: fingerprint.then(Mutex::default),
            warnings: Mutex::default(),
        }
    }

    /// Marks a file failed; it will be removed and named.
    pub fn fail(&self, fi: usize, why: String) {
        if let Some(slot) = self.slots.get(fi) {
            let mut st = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.handle.take().is_some() {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
            st.error.get_or_insert(why);
        }
    }

    /// Decodes the blobs of one pack and writes them everywhere they
    /// belong; `scratch` is the calling worker's, kept from job to job.
    pub fn write_pack(
        &self,
        key: &MasterKey,
        job: &PackJob,
        data: Result<bytes::Bytes>,
        progress: &Progress,
        scratch: &mut blob::DecodeScratch,
    ) {
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                for (_, _, uses) in &job.blobs {
                    for u in uses {
                        self.fail(u.file, format!("pack {} unreadable: {e}", job.pack.short()));
                    }
                }
                return;
            }
        };
        let mut taken = Vec::new();
        for (id, loc, uses) in &job.blobs {
            let from = (loc.offset as u64 - job.start) as usize;
            let decoded = data
                .get(from..from + loc.length as usize)
                .ok_or_else(|| Error::corrupt("pack is shorter than the index says"))
                .and_then(|sealed| {
                    blob::decode_into(key, loc.kind, id, sealed, loc.raw_length, scratch)
                });
            match decoded {
                Ok(plain) => {
                    if self.fingerprints.is_some() {
                        taken.push((*id, xxhash_rust::xxh3::xxh3_64(plain)));
                    }
                    for u in uses {
                        if let Err(why) = self.write(u.file, u.offset, plain) {
                            self.fail(u.file, why);
                        } else {
                            Progress::add(&progress.bytes_done, plain.len() as u64);
                        }
                    }
                }
                Err(e) => {
                    for u in uses {
                        self.fail(u.file, format!("pack {} is damaged: {e}", job.pack.short()));
                    }
                }
            }
        }
        if let Some(all) = &self.fingerprints {
            all.lock().unwrap_or_else(|p| p.into_inner()).extend(taken);
        }
    }

    fn write(&self, fi: usize, offset: u64, data: &[u8]) -> std::result::Result<(), String> {
        let slot = &self.slots[fi];
        let mut st = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.error.is_some() {
            return Ok(());
        }
        if st.handle.is_none() {
            st.handle = Some(self.open_file(slot, !st.created)?);
            st.created = true;
            self.open.fetch_add(1, Ordering::Relaxed);
        }
        let file = st.handle.as_ref().ok_or("no handle")?;
        if slot.planned.node.sparse {
            write_leaving_holes(file, data, offset)
        } else {
            file.write_all_at(data, offset)
        }
        .map_err(|e| format!("writing: {e}"))?;
        if slot.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let file = st.handle.take().ok_or("no handle")?;
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.finish(&slot.planned, &file)?;
            st.done = true;
        } else if self.open.load(Ordering::Relaxed) > MAX_OPEN {
            st.handle = None;
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn open_file(&self, slot: &Slot, create: bool) -> std::result::Result<File, String> {
        let path = self.target.join(&slot.planned.rel);
        let mut opts = OpenOptions::new();
        opts.write(true).custom_flags(libc::O_NOFOLLOW);
        if create {
            // Owner-only from the first instant: the file's own mode is
            // set by `finish`, once its content is in place, so a secret
            // file is never open to others while it is restored.
            opts.create(true).truncate(true).mode(0o600);
        }
        opts.open(&path).map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                format!(
                    "{} is an existing symlink; refusing to write through it",
                    path.display()
                )
            } else {
                format!("creating {}: {e}", path.display())
            }
        })
    }

    /// Sets size, owner, mode and times through the open descriptor.
    fn finish(&self, planned: &PlannedFile, file: &File) -> std::result::Result<(), String> {
        let node = &planned.node;
        let fail = |what: &str, e: std::io::Error| format!("{what}: {e}");
        // Every written blob already put the size in place, except a
        // sparse file's trailing hole.
        if node.sparse {
            file.set_len(node.size)
                .map_err(|e| fail("setting size", e))?;
        }
        if self.as_root {
            std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid))
                .map_err(|e| fail("chown", e))?;
        }
        // chown clears setuid bits and file capabilities, so the mode
        // goes after it, and the extended attributes (an ACL sets the
        // group bits) after the mode.
        file.set_permissions(std::fs::Permissions::from_mode(node.mode))
            .map_err(|e| fail("chmod", e))?;
        let refused =
            crate::engine::files::set_xattrs(node, &shown(&planned.rel), |name, value| {
                xattr::FileExt::set_xattr(file, name, value)
            });
        if !refused.is_empty() {
            self.warnings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(refused);
        }
        let (atime, mtime) = crate::engine::files::restored_times(node);
        file.set_times(
            std::fs::FileTimes::new()
                .set_modified(SystemTime::from(mtime))
                .set_accessed(SystemTime::from(atime)),
        )
        .map_err(|e| fail("setting times", e))
    }

    /// The fingerprints taken so far (none unless asked for).
    pub fn fingerprints(&self) -> Fingerprints {
        self.fingerprints
            .as_ref()
            .map(|f| std::mem::take(&mut *f.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default()
    }

    /// Creates empty files, removes failed ones and counts the rest.
    pub fn finish_all(&self) -> Result<RestoreSummary> {
        let mut s = RestoreSummary {
            warnings: std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner())),
            ..RestoreSummary::default()
        };
        for slot in &self.slots {
            let mut st = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            let path = self.target.join(&slot.planned.rel);
            if st.error.is_none() && !st.done && slot.planned.node.content.is_empty() {
                match self
                    .open_file(slot, true)
                    .and_then(|f| self.finish(&slot.planned, &f))
                {
                    Ok(()) => st.done = true,
                    Err(why) => st.error = Some(why),
                }
            }
            if !st.done && st.error.is_none() {
                st.error = Some("not every blob arrived".into());
            }
            match st.error.clone() {
                Some(why) => {
                    st.handle = None;
                    if st.created {
                        let _ = std::fs::remove_file(&path);
                    }
                    s.failed
                        .push(format!("{}: {why}", shown(&slot.planned.rel)));
                }
                None => {
                    s.files += 1;
                    s.bytes += slot.planned.node.size;
                }
            }
        }
        s.failed.sort();
        Ok(s)
    }
}

/// Bytes of a file's blocks checked for zeros: a whole page, the unit a
/// file system allocates.
const HOLE_UNIT: u64 = 4096;

/// Writes `data` at `offset` except its whole pages of zeros, which stay
/// holes in a file restored sparse (its size is set at the end); each run
/// of pages with data is one write.
fn write_leaving_holes(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let (mut at, mut run) = (0usize, None::<usize>);
    while at < data.len() {
        // Pages end on the file's page boundaries.
        let file_at = offset + at as u64;
        let end = (at + (HOLE_UNIT - file_at % HOLE_UNIT) as usize).min(data.len());
        let zeros = data[at..end].iter().all(|b| *b == 0);
        match (zeros, run) {
            (false, None) => run = Some(at),
            (true, Some(start)) => {
                file.write_all_at(&data[start..at], offset + start as u64)?;
                run = None;
            }
            _ => {}
        }
        at = end;
    }
    if let Some(start) = run {
        file.write_all_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn pages_of_zeros_stay_holes_and_the_rest_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let file = File::create(&path).unwrap();
        let page = HOLE_UNIT as usize;
        // From an offset off the page boundary: a partial page of data, a
        // page of zeros, two pages of data, a page of zeros, a tail.
        let offset = 10 * HOLE_UNIT + 100;
        let mut data = vec![7u8; page - 100];
        data.extend(vec![0u8; page]);
        data.extend(vec![9u8; 2 * page]);
        data.extend(vec![0u8; page]);
        data.extend(vec![5u8; 10]);
        write_leaving_holes(&file, &data, offset).unwrap();
        file.set_len(offset + data.len() as u64).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[offset as usize..], &data[..]);
        assert!(back[..offset as usize].iter().all(|b| *b == 0));
        // Four pages hold data (512-byte blocks: 8 per page).
        assert_eq!(std::fs::metadata(&path).unwrap().blocks(), 4 * 8);
    }
}
