//! File metadata in and out of tree nodes: what a backup records, and how a
//! restore applies it (ownership only when running as root).

use seawall_common::repo::tree::{Node, NodeKind};
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// A node for `name` from its `lstat` metadata; content is filled in later.
pub fn node_from_metadata(name: &std::ffi::OsStr, kind: NodeKind, m: &Metadata) -> Node {
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
        size: if kind == NodeKind::File { m.len() } else { 0 },
        content: vec![],
        subtree: None,
        link_target: None,
        changed_during_backup: false,
    };
    node.set_name(name);
    node
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

/// Sets ownership (as root), mode and mtime of a restored entry.
pub fn apply_metadata(path: &Path, node: &Node, as_root: bool) -> std::io::Result<()> {
    if as_root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    let mtime = filetime::FileTime::from_unix_time(node.mtime, node.mtime_nsec);
    if node.kind == NodeKind::Symlink {
        return filetime::set_symlink_file_times(path, mtime, mtime);
    }
    // chown clears setuid bits, so the mode goes after it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode))?;
    filetime::set_file_times(path, mtime, mtime)
}
