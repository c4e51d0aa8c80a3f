//! Encrypted JSON files (index, snapshots, locks) and tree blobs share one
//! encoding: JSON, zstd-compressed, sealed with the data key; the AAD names
//! the kind so a file cannot be passed off as another kind.

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encodes `value` as sealed, compressed JSON.
pub fn seal_json<T: Serialize>(key: &MasterKey, aad: &[u8], value: &T) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(value).map_err(|e| {
        Error::new(
            crate::ErrorKind::InvalidInput,
            format!("encoding JSON: {e}"),
        )
    })?;
    let packed = zstd::bulk::compress(&json, 3).map_err(|e| Error::io("compressing JSON", e))?;
    Ok(key.seal(&packed, aad))
}

/// Decodes what [`seal_json`] produced; `what` names the file in errors.
pub fn open_json<T: DeserializeOwned>(
    key: &MasterKey,
    aad: &[u8],
    data: &[u8],
    what: &str,
) -> Result<T> {
    let packed = key
        .open(data, aad)
        .map_err(|e| e.context(format!("{what} is damaged")))?;
    let json = decompress_bounded(&packed, 1 << 30).map_err(|e| e.context(what))?;
    serde_json::from_slice(&json).map_err(|e| Error::corrupt(format!("{what} does not parse: {e}")))
}

/// Decompresses a zstd frame, refusing output beyond `limit` bytes.
pub fn decompress_bounded(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let decoder =
        zstd::stream::read::Decoder::new(data).map_err(|e| Error::corrupt(format!("zstd: {e}")))?;
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::corrupt(format!("zstd frame is damaged: {e}")))?;
    if out.len() > limit {
        return Err(Error::corrupt(
            "decompressed data exceeds its declared bound",
        ));
    }
    Ok(out)
}
