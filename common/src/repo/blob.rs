//! Blobs: one chunk of file or stream data, or one serialized tree. Stored as
//! AEAD(flag ‖ payload) where the flag says whether payload is zstd.

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File or stream content.
    Data,
    /// A directory listing (JSON tree).
    Tree,
}

impl BlobType {
    /// The byte that stands for the type in pack headers and AAD.
    pub fn code(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    /// The inverse of [`BlobType::code`].
    pub fn from_code(code: u8) -> Option<BlobType> {
        match code {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

const RAW: u8 = 0;
const ZSTD: u8 = 1;

fn aad(kind: BlobType, id: &Id) -> [u8; 37] {
    let mut a = [0u8; 37];
    a[..4].copy_from_slice(b"blob");
    a[4] = kind.code();
    a[5..].copy_from_slice(&id.0);
    a
}

thread_local! {
    // zstd contexts are costly to create (allocation, tables): one per thread and level.
    static COMPRESSORS: RefCell<HashMap<i32, zstd::bulk::Compressor<'static>>> = RefCell::new(HashMap::new());
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's zstd compressor for `level`.
fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> Option<T>,
) -> Option<T> {
    COMPRESSORS.with(|cell| {
        let mut map = cell.borrow_mut();
        let c = match map.entry(level) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(zstd::bulk::Compressor::new(level).ok()?)
            }
        };
        f(c)
    })
}

/// Compresses into `out`; the size written, or `None` if zstd failed or
/// `out` is too small.
fn compress_into(plain: &[u8], level: i32, out: &mut [u8]) -> Option<usize> {
    with_compressor(level, |c| c.compress_to_buffer(plain, out).ok())
}

/// Compresses (when it helps) and seals a blob; `level` is the zstd level.
pub fn encode(key: &MasterKey, kind: BlobType, id: &Id, plain: &[u8], level: i32) -> Vec<u8> {
    let mut scratch = EncodeScratch::default();
    encode_into(key, kind, id, plain, level, &mut scratch);
    scratch.sealed
}

/// The buffer an encoder thread reuses from blob to blob.
#[derive(Debug, Default)]
pub struct EncodeScratch {
    sealed: Vec<u8>,
}

/// [`encode`] into `scratch`, allocating nothing once its buffer has
/// grown; returns the sealed blob, framed as `encode` frames it. zstd
/// writes straight behind the nonce and flag, so no second buffer holds
/// the compressed copy.
pub fn encode_into<'s>(
    key: &MasterKey,
    kind: BlobType,
    id: &Id,
    plain: &[u8],
    level: i32,
    scratch: &'s mut EncodeScratch,
) -> &'s [u8] {
    use crate::crypto::{NONCE_LEN, OVERHEAD};
    let sealed = &mut scratch.sealed;
    let head = NONCE_LEN + 1;
    // Compressed output bigger than the input is useless: give zstd no
    // more room than the input, so it fails fast on random data.
    sealed.clear();
    sealed.reserve(head + plain.len() + OVERHEAD);
    sealed.resize(head + plain.len(), 0);
    match compress_into(plain, level, &mut sealed[head..]).filter(|n| n + 1 < plain.len()) {
        Some(n) => {
            sealed.truncate(head + n);
            sealed[NONCE_LEN] = ZSTD;
        }
        None => {
            sealed[NONCE_LEN] = RAW;
            sealed[head..].copy_from_slice(plain);
        }
    }
    key.seal_in_place(sealed, &aad(kind, id));
    sealed
}

/// The buffers a restore thread reuses from blob to blob.
#[derive(Debug, Default)]
pub struct DecodeScratch {
    framed: Vec<u8>,
    plain: Vec<u8>,
}

/// Which scratch buffer holds a decoded blob's plaintext.
enum Decoded {
    /// `framed` after its flag byte (a blob stored uncompressed).
    Framed,
    /// `plain` (a blob zstd decompressed).
    Plain,
}

/// Opens, decompresses and checks a blob against its id, into `scratch`.
fn decode_checked(
    key: &MasterKey,
    kind: BlobType,
    id: &Id,
    sealed: &[u8],
    raw_length: u32,
    scratch: &mut DecodeScratch,
) -> Result<Decoded> {
    let DecodeScratch { framed, plain } = scratch;
    key.open_into(sealed, &aad(kind, id), framed)
        .map_err(|e| e.context(format!("blob {}", id.short())))?;
    let (flag, payload) = framed
        .split_first()
        .ok_or_else(|| Error::corrupt(format!("blob {} is empty", id.short())))?;
    let (decoded, out): (Decoded, &[u8]) = match *flag {
        RAW => (Decoded::Framed, payload),
        ZSTD => {
            plain.clear();
            plain.reserve(raw_length as usize);
            DECOMPRESSOR
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = Some(zstd::bulk::Decompressor::new()?);
                    }
                    match slot.as_mut() {
                        Some(d) => d.decompress_to_buffer(payload, plain),
                        None => Err(std::io::Error::other("no decompressor")),
                    }
                })
                .map_err(|e| {
                    Error::corrupt(format!("blob {} does not decompress: {e}", id.short()))
                })?;
            (Decoded::Plain, plain)
        }
        other => {
            return Err(Error::corrupt(format!(
                "blob {} has unknown flag {other}",
                id.short()
            )))
        }
    };
    if out.len() != raw_length as usize || key.blob_id(out) != *id {
        return Err(Error::corrupt(format!(
            "blob {} does not match its id",
            id.short()
        )));
    }
    Ok(decoded)
}

/// [`decode`] into `scratch`: the plaintext, checked against its id,
/// without an allocation per blob once the buffers have grown.
pub fn decode_into<'s>(
    key: &MasterKey,
    kind: BlobType,
    id: &Id,
    sealed: &[u8],
    raw_length: u32,
    scratch: &'s mut DecodeScratch,
) -> Result<&'s [u8]> {
    Ok(
        match decode_checked(key, kind, id, sealed, raw_length, scratch)? {
            Decoded::Framed => &scratch.framed[1..],
            Decoded::Plain => &scratch.plain,
        },
    )
}

/// Opens, decompresses and checks a blob against its id.
pub fn decode(
    key: &MasterKey,
    kind: BlobType,
    id: &Id,
    sealed: &[u8],
    raw_length: u32,
) -> Result<Vec<u8>> {
    let mut scratch = DecodeScratch::default();
    Ok(
        match decode_checked(key, kind, id, sealed, raw_length, &mut scratch)? {
            Decoded::Framed => {
                let mut framed = scratch.framed;
                framed.remove(0);
                framed
            }
            Decoded::Plain => scratch.plain,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_compressible_and_random() {
        let key = MasterKey::generate();
        for plain in [
            vec![7u8; 100_000],
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            vec![],
        ] {
            let id = key.blob_id(&plain);
            let sealed = encode(&key, BlobType::Data, &id, &plain, 1);
            assert_eq!(
                decode(&key, BlobType::Data, &id, &sealed, plain.len() as u32).unwrap(),
                plain
            );
            assert!(decode(&key, BlobType::Tree, &id, &sealed, plain.len() as u32).is_err());
        }
    }

    #[test]
    fn encoding_into_reused_buffers_gives_what_encode_gives() {
        let key = MasterKey::generate();
        let mut scratch = EncodeScratch::default();
        let random: Vec<u8> = (0..70_000u64)
            .map(|i| (i.wrapping_mul(6364136223846793005) >> 33) as u8)
            .collect();
        for plain in [vec![7u8; 100_000], random, vec![1, 2, 3], vec![]] {
            let id = key.blob_id(&plain);
            let sealed = encode_into(&key, BlobType::Data, &id, &plain, 1, &mut scratch).to_vec();
            let plain_len = plain.len() as u32;
            assert_eq!(
                decode(&key, BlobType::Data, &id, &sealed, plain_len).unwrap(),
                plain
            );
            // The same framing as `encode`: nonce, flag, payload, tag.
            assert_eq!(
                sealed.len(),
                encode(&key, BlobType::Data, &id, &plain, 1).len()
            );
            let mut back = DecodeScratch::default();
            assert_eq!(
                decode_into(&key, BlobType::Data, &id, &sealed, plain_len, &mut back).unwrap(),
                &plain[..]
            );
            let mut damaged = sealed.clone();
            let last = damaged.len() - 1;
            damaged[last] ^= 1;
            assert!(
                decode_into(&key, BlobType::Data, &id, &damaged, plain_len, &mut back).is_err()
            );
            assert!(decode_into(&key, BlobType::Tree, &id, &sealed, plain_len, &mut back).is_err());
        }
    }
}
