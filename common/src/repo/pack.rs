//! Packs: many sealed blobs back to back, then a sealed header listing them,
//! then the header's length as a little-endian u32. The pack's name is the
//! BLAKE3 hash of its bytes, so damage is found without the key.

use super::blob::BlobType;
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;

/// One blob's place in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// Data or tree.
    pub kind: BlobType,
    /// The blob's id.
    pub id: Id,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

const ENTRY_LEN: usize = 1 + 32 + 4 + 4;
const HEADER_AAD: &[u8] = b"seawall pack header";

/// Accumulates sealed blobs into one pack.
#[derive(Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to upload.
pub struct FinishedPack {
    /// BLAKE3 of `bytes`: the pack's file name.
    pub id: Id,
    /// The whole pack file.
    pub bytes: Vec<u8>,
    /// Where each blob lies in it.
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> PackBuilder {
        PackBuilder::in_buffer(Vec::with_capacity(capacity))
    }

    /// An empty pack written into `buf` (cleared; a used pack's buffer).
    pub fn in_buffer(mut buf: Vec<u8>) -> PackBuilder {
        buf.clear();
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    /// Appends a sealed blob.
    pub fn add(&mut self, kind: BlobType, id: Id, sealed: &[u8], raw_length: u32) {
        self.entries.push(PackEntry {
            kind,
            id,
            offset: self.buf.len() as u32,
            length: sealed.len() as u32,
            raw_length,
        });
        self.buf.extend_from_slice(sealed);
    }

    /// Bytes of blobs so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the header and names the pack.
    pub fn finish(mut self, key: &MasterKey) -> FinishedPack {
        let mut header = Vec::with_capacity(self.entries.len() * ENTRY_LEN);
        for e in &self.entries {
            header.push(e.kind.code());
            header.extend_from_slice(&e.id.0);
            header.extend_from_slice(&e.length.to_le_bytes());
            header.extend_from_slice(&e.raw_length.to_le_bytes());
        }
        let sealed = key.seal(&header, HEADER_AAD);
        self.buf.extend_from_slice(&sealed);
        self.buf
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        FinishedPack {
            id: Id::of_file(&self.buf),
            bytes: self.buf,
            entries: self.entries,
        }
    }
}

/// Reads the blob list from a whole pack file (for `repair` and `verify`).
pub fn parse_header(key: &MasterKey, pack: &[u8]) -> Result<Vec<PackEntry>> {
    let damaged = |why: &str| Error::corrupt(format!("pack header is damaged: {why}"));
    if pack.len() < 4 {
        return Err(damaged("file shorter than the length field"));
    }
    let (body, len_bytes) = pack.split_at(pack.len() - 4);
    let mut len = [0u8; 4];
    len.copy_from_slice(len_bytes);
    let hlen = u32::from_le_bytes(len) as usize;
    if hlen > body.len() {
        return Err(damaged("header length exceeds the file"));
    }
    let header = key.open(&body[body.len() - hlen..], HEADER_AAD)?;
    if header.len() % ENTRY_LEN != 0 {
        return Err(damaged("header size is not a whole number of entries"));
    }
    let mut offset = 0u32;
    let mut entries = Vec::with_capacity(header.len() / ENTRY_LEN);
    for raw in header.chunks_exact(ENTRY_LEN) {
        let kind = BlobType::from_code(raw[0]).ok_or_else(|| damaged("unknown blob type"))?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&raw[1..33]);
        let length = u32::from_le_bytes([raw[33], raw[34], raw[35], raw[36]]);
        let raw_length = u32::from_le_bytes([raw[37], raw[38], raw[39], raw[40]]);
        entries.push(PackEntry {
            kind,
            id: Id(id),
            offset,
            length,
            raw_length,
        });
        offset = offset
            .checked_add(length)
            .ok_or_else(|| damaged("blob lengths overflow"))?;
    }
    if offset as usize + hlen != body.len() {
        return Err(damaged("blob lengths do not add up to the file size"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::blob;

    #[test]
    fn header_round_trip() {
        let key = MasterKey::generate();
        let mut b = PackBuilder::default();
        for text in [&b"one"[..], b"two two", b""] {
            let id = key.blob_id(text);
            b.add(
                BlobType::Data,
                id,
                &blob::encode(&key, BlobType::Data, &id, text, 1),
                text.len() as u32,
            );
        }
        let p = b.finish(&key);
        assert_eq!(p.id, Id::of_file(&p.bytes));
        assert_eq!(parse_header(&key, &p.bytes).unwrap(), p.entries);
        let mut damaged = p.bytes.clone();
        let n = damaged.len();
        damaged[n - 10] ^= 0xff;
        assert!(parse_header(&key, &damaged).is_err());
        assert!(parse_header(&key, &p.bytes[..n - 1]).is_err());
    }
}
