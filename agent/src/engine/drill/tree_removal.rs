//! Removing a scratch tree on every core. A drill's restored files tree
//! can hold tens of thousands of small files, and a restored cluster
//! gigabytes whose blocks the file system gives back (and, mounted with
//! `discard`, trims) as they are unlinked: one unlink after another was
//! the larger part of a drill's own time. The tree is listed first, its
//! files unlinked by several threads, then its directories removed
//! deepest first.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Threads unlinking at once: more than the cores, as much of an unlink
/// is waiting on the file system's journal.
const UNLINKERS: usize = 4;

/// Removes `dir` and everything under it, never following a symlink; a
/// missing `dir` is not an error. On any failure the serial
/// `remove_dir_all` has the last word, so the error is its.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return std::fs::remove_file(dir),
        Ok(_) => {}
    }
    if parallel(dir).is_err() {
        return std::fs::remove_dir_all(dir);
    }
    Ok(())
}

fn parallel(dir: &Path) -> io::Result<()> {
    let (mut dirs, mut files) = (vec![dir.to_path_buf()], Vec::new());
    let mut i = 0;
    while let Some(d) = dirs.get(i).cloned() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
        i += 1;
    }
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<io::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..UNLINKERS.min(files.len()) {
            scope.spawn(|| {
                while let Some(f) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Err(e) = std::fs::remove_file(f) {
                        failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    // Listed parents first, so removed children first.
    for d in dirs.iter().rev() {
        std::fs::remove_dir(d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deep_tree_goes_without_following_its_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let root = t.path().join("scratch");
        for d in 0..12 {
            let sub = root.join(format!("d{d}/e/f"));
            std::fs::create_dir_all(&sub).unwrap();
            for i in 0..30 {
                std::fs::write(sub.join(format!("{i}")), b"x").unwrap();
            }
        }
        std::os::unix::fs::symlink(&outside, root.join("d0/to-outside")).unwrap();
        std::os::unix::fs::symlink(outside.join("keep"), root.join("d1/e/keep")).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");
        remove_tree(&root).unwrap();
    }
}
