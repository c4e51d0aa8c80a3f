//! Keeping a restore inside its target. Directories are created parent
//! first, and an existing entry on the way must be a real directory: a
//! symlink there could lead anywhere, so it is refused, not followed.

use seawall_common::{Error, ErrorKind, Result};
use std::path::{Component, Path};

/// Creates `target/rel`, whose parent exists already, refusing anything but a real directory there.
pub fn create_dir(target: &Path, rel: &Path) -> Result<()> {
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "snapshot path {} would leave the target; refusing it",
                rel.display()
            ),
        ));
    }
    let path = target.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_dir() => Ok(()),
        Ok(_) => Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} exists and is not a directory (a symlink here could lead outside the target); move it away and restore again",
                path.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(&path).map_err(|e| Error::io(path.display(), e))
        }
        Err(e) => Err(Error::io(path.display(), e)),
    }
}

/// Puts a symlink at `path`, replacing a file or link there but never a directory.
pub fn replace_with_symlink(path: &Path, link_target: &str) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "{} is an existing directory where the snapshot has a symlink",
                    path.display()
                ),
            ))
        }
        Ok(_) => std::fs::remove_file(path).map_err(|e| Error::io(path.display(), e))?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(link_target, path).map_err(|e| Error::io(path.display(), e))
}
