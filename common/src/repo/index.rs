//! Index files map blob ids to their place in packs. A backup writes them as
//! it goes (so an interrupted backup's packs are reused); prune compacts them
//! and lists the ones it replaces in `supersedes`.

use super::blob::BlobType;
use super::pack::PackEntry;
use crate::id::Id;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One blob as an index file lists it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IndexBlob {
    /// Blob id.
    pub id: Id,
    /// Data or tree.
    #[serde(rename = "type")]
    pub kind: BlobType,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// One pack as an index file lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IndexPack {
    /// Pack id (its file name).
    pub id: Id,
    /// Size of the pack file, checked by `verify`.
    pub size: u64,
    /// Its blobs.
    pub blobs: Vec<IndexBlob>,
}

/// The content of one `index/<id>` file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IndexFile {
    /// Index files this one replaces; readers ignore those.
    #[serde(default)]
    pub supersedes: Vec<Id>,
    /// Packs described.
    pub packs: Vec<IndexPack>,
}

impl IndexPack {
    /// The index record of a freshly written pack.
    pub fn from_entries(id: Id, size: u64, entries: &[PackEntry]) -> IndexPack {
        IndexPack {
            id,
            size,
            blobs: entries
                .iter()
                .map(|e| IndexBlob {
                    id: e.id,
                    kind: e.kind,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                })
                .collect(),
        }
    }
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Pack holding it.
    pub pack: Id,
    /// Data or tree.
    pub kind: BlobType,
    /// Offset in the pack.
    pub offset: u32,
    /// Sealed length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

/// All index files merged: every blob the repository knows.
#[derive(Debug, Default, Clone)]
pub struct MasterIndex {
    blobs: HashMap<Id, BlobLocation>,
    packs: HashMap<Id, u64>,
}

impl MasterIndex {
    /// Adds every blob of a pack record.
    pub fn add_pack(&mut self, pack: &IndexPack) {
        self.packs.insert(pack.id, pack.size);
        for b in &pack.blobs {
            self.blobs.entry(b.id).or_insert(BlobLocation {
                pack: pack.id,
                kind: b.kind,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
            });
        }
    }

    /// Where a blob is, if the repository has it.
    pub fn get(&self, id: &Id) -> Option<&BlobLocation> {
        self.blobs.get(id)
    }

    /// Whether the repository has a blob.
    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    /// Every indexed pack with its recorded size.
    pub fn packs(&self) -> &HashMap<Id, u64> {
        &self.packs
    }

    /// Every indexed blob.
    pub fn blobs(&self) -> impl Iterator<Item = (&Id, &BlobLocation)> {
        self.blobs.iter()
    }

    /// Number of indexed blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}
