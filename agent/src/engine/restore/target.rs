//! Keeping a restore inside its target. Directories are created parent
//! first, and an existing entry on the way must be a real directory: a
//! symlink there could lead anywhere, so it is refused, not followed.

use seawall_common::repo::tree::{Node, NodeKind};
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
        // Owner-only while its files are written: the snapshot's mode is
        // set last, once everything inside is in place, so no other local
        // user reads a file of a private directory in the meantime.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map_err(|e| Error::io(path.display(), e))
        }
        Err(e) => Err(Error::io(path.display(), e)),
    }
}

/// Clears `path` for a new entry of kind `what`: a file or link there is
/// removed, a directory never.
fn clear(path: &Path, what: &str) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} is an existing directory where the snapshot has a {what}",
                path.display()
            ),
        )),
        Ok(_) => std::fs::remove_file(path).map_err(|e| Error::io(path.display(), e)),
        Err(_) => Ok(()),
    }
}

/// Puts a symlink at `path`, replacing a file or link there but never a directory.
pub fn replace_with_symlink(path: &Path, link_target: &str) -> Result<()> {
    clear(path, "symlink")?;
    std::os::unix::fs::symlink(link_target, path).map_err(|e| Error::io(path.display(), e))
}

/// Makes `path` another name of the restored file `first` (never
/// following a symlink at `first`).
pub fn replace_with_hard_link(first: &Path, path: &Path) -> Result<()> {
    clear(path, "hard link")?;
    std::fs::hard_link(first, path).map_err(|e| Error::io(path.display(), e))
}

/// Makes the FIFO or device node `node` describes at `path` (mode bits
/// are set afterwards with the rest of its metadata; a device node needs
/// root).
pub fn replace_with_special(path: &Path, node: &Node) -> Result<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    clear(path, "special file")?;
    let kind = match node.kind {
        NodeKind::Fifo => SFlag::S_IFIFO,
        NodeKind::CharDevice => SFlag::S_IFCHR,
        NodeKind::BlockDevice => SFlag::S_IFBLK,
        _ => {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{} is not a special file in the snapshot", path.display()),
            ))
        }
    };
    mknod(
        path,
        kind,
        Mode::from_bits_truncate(0o600),
        node.rdev as libc::dev_t,
    )
    .map_err(|e| Error::io(path.display(), std::io::Error::from(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_restored_directory_is_owner_only_until_its_mode_is_set() {
        let target = tempfile::tempdir().unwrap();
        let mode = || {
            std::fs::metadata(target.path().join("private"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        create_dir(target.path(), Path::new("private")).unwrap();
        assert_eq!(mode(), 0o700);
        // An existing directory is left as it is.
        std::fs::set_permissions(
            target.path().join("private"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        create_dir(target.path(), Path::new("private")).unwrap();
        assert_eq!(mode(), 0o750);
    }
}
