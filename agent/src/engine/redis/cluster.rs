//! Redis Cluster for application-state capture and restore: which primaries
//! hold which hash slots (`CLUSTER SLOTS`), and the slot of a key (CRC16 of
//! the key, or of its `{hash tag}`, modulo 16384), so keys are read from
//! every primary and each restored key goes to the primary that owns it.

use super::connect::Endpoint;
use redis::aio::MultiplexedConnection;
use redis::Value;
use seawall_common::{Error, ErrorKind, Result};
use std::collections::BTreeMap;

/// Hash slots in a cluster.
pub const SLOTS: u16 = 16384;

/// The primaries of a cluster and the slots each serves.
#[derive(Debug, Clone)]
pub struct SlotMap {
    /// Distinct primaries, as `host:port`, in a stable order.
    pub primaries: Vec<(String, u16)>,
    /// For each slot, the index of its primary in `primaries`.
    owner: Vec<Option<usize>>,
}

impl SlotMap {
    /// The primary index owning `key`, if the slot is covered.
    pub fn owner_of(&self, key: &[u8]) -> Option<usize> {
        self.owner.get(usize::from(slot(key))).copied().flatten()
    }
}

/// CRC16/XMODEM, as Redis Cluster hashes keys.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of a key: only the part inside the first non-empty `{...}`
/// counts, so related keys can share a slot.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The cluster's slot map, or `None` when the server is not in cluster mode.
/// A primary that announces no host is reached at the URL's host.
pub async fn slot_map(
    endpoint: &Endpoint,
    con: &mut MultiplexedConnection,
) -> Result<Option<SlotMap>> {
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(con)
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("Redis INFO cluster failed: {e}")))?;
    if !info.lines().any(|l| l.trim() == "cluster_enabled:1") {
        return Ok(None);
    }
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(con)
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("Redis CLUSTER SLOTS failed: {e} (the backup user needs +cluster|slots)"),
            )
        })?;
    let unexpected = || {
        Error::new(
            ErrorKind::Io,
            "Redis answered CLUSTER SLOTS with an unexpected reply",
        )
    };
    let Value::Array(ranges) = reply else {
        return Err(unexpected());
    };
    let mut index: BTreeMap<(String, u16), usize> = BTreeMap::new();
    let mut primaries = Vec::new();
    let mut owner = vec![None; usize::from(SLOTS)];
    for range in &ranges {
        let Value::Array(fields) = range else {
            return Err(unexpected());
        };
        let (Some(start), Some(end), Some(Value::Array(node))) = (
            fields.first().and_then(int),
            fields.get(1).and_then(int),
            fields.get(2),
        ) else {
            return Err(unexpected());
        };
        let host = node
            .first()
            .and_then(text)
            .filter(|h| !h.is_empty() && h != "?")
            .unwrap_or_else(|| endpoint.url.target.host.clone());
        let port = node
            .get(1)
            .and_then(int)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(unexpected)?;
        let at = *index.entry((host.clone(), port)).or_insert_with(|| {
            primaries.push((host, port));
            primaries.len() - 1
        });
        if !(0..i64::from(SLOTS)).contains(&start) || !(start..i64::from(SLOTS)).contains(&end) {
            return Err(unexpected());
        }
        for s in start..=end {
            owner[s as usize] = Some(at);
        }
    }
    if primaries.is_empty() {
        return Err(Error::new(
            ErrorKind::Io,
            "the Redis cluster serves no slot: is it still being created?",
        ));
    }
    Ok(Some(SlotMap { primaries, owner }))
}

/// Connections to every primary of `map`, with the URL's credentials and TLS.
pub async fn connect_all(endpoint: &Endpoint, map: &SlotMap) -> Result<Vec<MultiplexedConnection>> {
    let mut cons = Vec::with_capacity(map.primaries.len());
    for (host, port) in &map.primaries {
        cons.push(endpoint.at(host, *port)?.connection().await?);
    }
    Ok(cons)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_hashing() {
        // Values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot(b"foo{{bar}}zap"), crc16(b"{bar") % SLOTS);
    }
}
