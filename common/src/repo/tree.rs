//! Trees: one directory's entries, stored as a JSON blob of type tree. A
//! directory node names its subtree by blob id, so unchanged directories
//! deduplicate across snapshots like file content does.

use crate::error::{Error, Result};
use crate::id::Id;
use serde::{Deserialize, Serialize};

/// What kind of file system object a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Regular file; `content` lists its blobs.
    File,
    /// Directory; `subtree` names its tree.
    Dir,
    /// Symbolic link; `link_target` holds the target.
    Symlink,
    /// Named pipe (FIFO).
    Fifo,
    /// Character device node; `rdev` holds its device number.
    #[serde(rename = "chardev")]
    CharDevice,
    /// Block device node; `rdev` holds its device number.
    #[serde(rename = "blockdev")]
    BlockDevice,
}

/// One extended attribute: its full name with the namespace
/// (`user.x`, `security.capability`, `system.posix_acl_access`) and its
/// raw value, base64 in the tree's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendedAttribute {
    /// Namespace and name.
    pub name: String,
    /// The value's bytes.
    #[serde(with = "crate::crypto::b64_vec")]
    pub value: Vec<u8>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The entry's name: one path component, never `.`, `..` or containing `/`.
    /// For a name that is not UTF-8 this is a lossy rendering for display,
    /// and `name_bytes` holds the real name.
    pub name: String,
    /// The name's raw bytes, present only when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_bytes: Option<Vec<u8>>,
    /// File, directory or symlink.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: u32,
    /// Change time, seconds, for change detection.
    #[serde(default)]
    pub ctime: i64,
    /// Nanoseconds part of the change time.
    #[serde(default)]
    pub ctime_nsec: u32,
    /// Inode number, for change detection.
    #[serde(default)]
    pub inode: u64,
    /// File size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Access time, seconds (0 with 0 nanoseconds: not recorded, as in
    /// snapshots made before it was; the restore then uses the mtime).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub atime: i64,
    /// Nanoseconds part of the access time.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub atime_nsec: u32,
    /// The device number of a device node.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
    /// Hard links to the file, when more than one: with `device_id` and
    /// `inode` it tells which paths of the snapshot are one file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub links: u64,
    /// The file system the file was on (st_dev), when `links` is set.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub device_id: u64,
    /// The file had holes (fewer blocks than its size needs): restored
    /// sparse, its blocks of zeros left unwritten.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
    /// Extended attributes (ACLs and file capabilities among them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<ExtendedAttribute>,
    /// A file's blobs, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// A directory's tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// The file changed while it was read, even after a retry: its content may be torn.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changed_during_backup: bool,
}

/// A directory listing, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Entries, sorted by raw name bytes, names unique.
    pub nodes: Vec<Node>,
}

/// Whether a name (as raw bytes) is safe to join under a restore target.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Node {
    /// The real name as bytes: `name_bytes` when present, else `name`.
    pub fn raw_name(&self) -> &[u8] {
        self.name_bytes.as_deref().unwrap_or(self.name.as_bytes())
    }

    /// Sets the name from a file system name, keeping non-UTF-8 names exactly.
    pub fn set_name(&mut self, name: &std::ffi::OsStr) {
        use std::os::unix::ffi::OsStrExt;
        match name.to_str() {
            Some(s) => {
                self.name = s.to_string();
                self.name_bytes = None;
            }
            None => {
                self.name = name.to_string_lossy().into_owned();
                self.name_bytes = Some(name.as_bytes().to_vec());
            }
        }
    }
}

impl Tree {
    /// Serializes a tree for storage as a blob.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| {
            Error::new(
                crate::ErrorKind::InvalidInput,
                format!("encoding tree: {e}"),
            )
        })
    }

    /// Parses a tree blob and refuses names that could escape a restore target.
    pub fn from_bytes(data: &[u8]) -> Result<Tree> {
        let tree: Tree = serde_json::from_slice(data)
            .map_err(|e| Error::corrupt(format!("tree does not parse: {e}")))?;
        let mut prev: Option<&[u8]> = None;
        for node in &tree.nodes {
            if !is_safe_name(node.raw_name()) || !is_safe_name(node.name.as_bytes()) {
                return Err(Error::corrupt(format!(
                    "tree holds the unsafe name {:?} (a path that could escape the restore target); refusing it",
                    node.name
                )));
            }
            if prev.is_some_and(|p| p >= node.raw_name()) {
                return Err(Error::corrupt(format!(
                    "tree names are not unique and sorted at {:?}; refusing it",
                    node.name
                )));
            }
            prev = Some(node.raw_name());
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            name_bytes: None,
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            ctime: 0,
            ctime_nsec: 0,
            inode: 0,
            size: 0,
            atime: 0,
            atime_nsec: 0,
            rdev: 0,
            links: 0,
            device_id: 0,
            sparse: false,
            xattrs: vec![],
            content: vec![],
            subtree: None,
            link_target: None,
            changed_during_backup: false,
        }
    }

    #[test]
    fn a_tree_written_before_the_metadata_fields_reads_and_new_ones_round_trip() {
        let old = br#"{"nodes":[{"name":"a","type":"file","mode":420,"uid":0,"gid":0,"mtime":5,"mtime_nsec":0,"ctime":5,"ctime_nsec":0,"inode":7,"size":3,"content":[]}]}"#;
        let n = &Tree::from_bytes(old).unwrap().nodes[0];
        assert_eq!((n.atime, n.links, n.rdev, n.sparse), (0, 0, 0, false));
        assert!(n.xattrs.is_empty());

        let mut fifo = node("p");
        fifo.kind = NodeKind::Fifo;
        fifo.xattrs = vec![ExtendedAttribute {
            name: "user.raw".into(),
            value: vec![0, 255, 16],
        }];
        let mut dev = node("d");
        dev.kind = NodeKind::CharDevice;
        dev.rdev = 259;
        let t = Tree {
            nodes: vec![dev, fifo],
        };
        let bytes = t.to_bytes().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(r#""type":"chardev""#) && text.contains(r#""value":"AP8Q""#),
            "{text}"
        );
        assert_eq!(Tree::from_bytes(&bytes).unwrap(), t);
    }

    #[test]
    fn refuses_escaping_and_duplicate_names() {
        for bad in ["..", ".", "a/b", "", "/etc"] {
            let t = Tree {
                nodes: vec![node(bad)],
            };
            assert!(
                Tree::from_bytes(&t.to_bytes().unwrap()).is_err(),
                "{bad:?} accepted"
            );
        }
        let dup = Tree {
            nodes: vec![node("a"), node("a")],
        };
        assert!(Tree::from_bytes(&dup.to_bytes().unwrap()).is_err());
        let ok = Tree {
            nodes: vec![node("a"), node("b")],
        };
        assert_eq!(Tree::from_bytes(&ok.to_bytes().unwrap()).unwrap(), ok);
    }
}
