//! File metadata in and out of tree nodes: what a backup records (owner,
//! mode, times, hard-link identity, holes, device numbers, extended
//! attributes with the ACLs and file capabilities they carry), and how a
//! restore applies it (ownership only when running as root).

use seawall_common::repo::tree::{ExtendedAttribute, Node, NodeKind};
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// A node for `name` from its `lstat` metadata; content is filled in later.
pub fn node_from_metadata(name: &std::ffi::OsStr, kind: NodeKind, m: &Metadata) -> Node {
    let file = kind == NodeKind::File;
    let device = matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice);
    // A hard link is told by (device, inode) when the file has several.
    let linked = file && m.nlink() > 1;
    let mut node = Node {
        name: String::new(),
        name_bytes: None,
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec() as u32,
        ctime: m.ctime(),
        ctime_nsec: m.ctime_nsec() as u32,
        inode: m.ino(),
        size: if file { m.len() } else { 0 },
        atime: m.atime(),
        atime_nsec: m.atime_nsec() as u32,
        rdev: if device { m.rdev() } else { 0 },
        links: if linked { m.nlink() } else { 0 },
        device_id: if linked { m.dev() } else { 0 },
        // st_blocks counts 512-byte units whatever the block size.
        sparse: file && m.blocks().saturating_mul(512) < m.len(),
        xattrs: vec![],
        content: vec![],
        subtree: None,
        link_target: None,
        changed_during_backup: false,
    };
    node.set_name(name);
    node
}

/// The extended attributes of `path` (not following a symlink), and a
/// line for each one that could not be read. A file system without them
/// has none.
pub fn read_xattrs(path: &Path) -> (Vec<ExtendedAttribute>, Vec<String>) {
    let (mut found, mut problems) = (Vec::new(), Vec::new());
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return (found, problems),
        Err(e) => {
            problems.push(format!(
                "extended attributes of {} not read: {e}",
                path.display()
            ));
            return (found, problems);
        }
    };
    for name in names {
        let Some(text) = name.to_str() else {
            problems.push(format!(
                "extended attribute {:?} of {} skipped: its name is not UTF-8",
                name,
                path.display()
            ));
            continue;
        };
        match xattr::get(path, &name) {
            Ok(Some(value)) => found.push(ExtendedAttribute {
                name: text.to_string(),
                value,
            }),
            // Removed since it was listed.
            Ok(None) => {}
            Err(e) => problems.push(format!(
                "extended attribute {text} of {} not read: {e}",
                path.display()
            )),
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    (found, problems)
}

/// Sets a node's extended attributes with `set` (on a path or an open
/// file); a line naming `shown` for each the file system or this user
/// refuses (trusted.* and security.* need root).
pub fn set_xattrs(
    node: &Node,
    shown: &dyn std::fmt::Display,
    set: impl Fn(&str, &[u8]) -> std::io::Result<()>,
) -> Vec<String> {
    node.xattrs
        .iter()
        .filter_map(|x| {
            set(&x.name, &x.value)
                .err()
                .map(|e| format!("extended attribute {} of {shown} not restored: {e}", x.name))
        })
        .collect()
}

/// [`set_xattrs`] on `path`, not following a symlink.
fn write_xattrs(path: &Path, node: &Node) -> Vec<String> {
    set_xattrs(node, &path.display(), |name, value| {
        xattr::set(path, name, value)
    })
}

/// The access and modification times to restore: snapshots made before
/// access times were recorded give the mtime for both.
pub fn restored_times(node: &Node) -> (filetime::FileTime, filetime::FileTime) {
    let mtime = filetime::FileTime::from_unix_time(node.mtime, node.mtime_nsec);
    let atime = if node.atime == 0 && node.atime_nsec == 0 {
        mtime
    } else {
        filetime::FileTime::from_unix_time(node.atime, node.atime_nsec)
    };
    (atime, mtime)
}

/// Whether a file's metadata says it is the same as the parent snapshot's node.
pub fn unchanged(node: &Node, m: &Metadata) -> bool {
    node.kind == NodeKind::File
        && !node.changed_during_backup
        && node.size == m.len()
        && node.mtime == m.mtime()
        && node.mtime_nsec == m.mtime_nsec() as u32
        && node.ctime == m.ctime()
        && node.ctime_nsec == m.ctime_nsec() as u32
        && node.inode == m.ino()
}

/// Whether two metadata reads of one file show it did not change in between.
pub fn same_version(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
        && a.ctime() == b.ctime()
        && a.ctime_nsec() == b.ctime_nsec()
}

/// Sets ownership (as root), mode, extended attributes and times of a
/// restored entry; what could not be set of its extended attributes, one
/// line each (the rest is an error).
pub fn apply_metadata(path: &Path, node: &Node, as_root: bool) -> std::io::Result<Vec<String>> {
    if as_root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    let (atime, mtime) = restored_times(node);
    if node.kind == NodeKind::Symlink {
        let refused = write_xattrs(path, node);
        filetime::set_symlink_file_times(path, atime, mtime)?;
        return Ok(refused);
    }
    // chown clears setuid bits, so the mode goes after it; an ACL after
    // the mode, as setting one sets the group bits.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode))?;
    let refused = write_xattrs(path, node);
    // utimensat without following, never an open: opening a restored FIFO
    // would wait for a writer.
    filetime::set_symlink_file_times(path, atime, mtime)?;
    Ok(refused)
}
