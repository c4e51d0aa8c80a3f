//! `backup redis --keys`: the keys matching the patterns, found with SCAN
//! (never KEYS, which blocks the server), read in batches inside MULTI/EXEC
//! so each key's DUMP and PTTL, and the server's TIME they are measured
//! against, come from one instant. Expiries are stored as absolute times,
//! so a restore does not give keys back the life they had at capture.

use super::format::{KeyRecord, RecordWriter};
use super::selection::KeySelection;
use crate::engine::progress::Progress;
use crate::engine::redis::connect::Endpoint;
use crate::engine::redis::rdb::info;
use crate::engine::redis::tls::RedisTls;
use crate::engine::stream::{
    save_stream, BlockingReader, StreamBackup, StreamManifest, StreamSettings,
};
use redis::aio::MultiplexedConnection;
use redis::Value;
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokio::io::AsyncWrite;

/// Stream name of the captured keys.
pub const KEYS_STREAM: &str = "keys";
/// Keys SCAN is asked to look at per call.
const SCAN_COUNT: usize = 1000;
/// Keys read per MULTI/EXEC.
const BATCH: usize = 256;

/// What `backup redis --keys` reads.
#[derive(Debug, Clone)]
pub struct KeysOptions {
    /// `redis[s]://[user:password@]host:port[/db]`.
    pub url: String,
    /// TLS files for `rediss://`.
    pub tls: RedisTls,
    /// The patterns (and TTL rules, recorded for the restore).
    pub selection: KeySelection,
    /// Operator tags.
    pub tags: Vec<String>,
    /// Storage settings.
    pub settings: StreamSettings,
}

/// Counts of one capture.
#[derive(Debug, Default)]
struct Captured {
    per_pattern: BTreeMap<String, u64>,
    keys: u64,
    with_expiry: u64,
    /// Found by SCAN but gone (deleted or expired) before they were read.
    vanished: u64,
    dump_bytes: u64,
}

fn failed(what: &str, e: redis::RedisError) -> Error {
    if e.code() == Some("NOPERM") {
        Error::new(
            ErrorKind::Denied,
            format!("Redis refused {what}: {e}; the backup user needs +scan +dump +pttl +time +multi +exec +info"),
        )
    } else {
        Error::new(ErrorKind::Io, format!("Redis {what} failed: {e}"))
    }
}

/// A stable 128-bit fingerprint of a key name: SCAN may return a key twice
/// and patterns may overlap, and remembering fingerprints rather than names
/// keeps memory at 16 bytes per key whatever the names' length.
fn fingerprint(key: &[u8]) -> u128 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(key);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    u128::from_le_bytes(out)
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn unexpected() -> Error {
    Error::new(
        ErrorKind::Io,
        "Redis answered MULTI/EXEC of TIME, PTTL and DUMP with an unexpected reply",
    )
}

/// Milliseconds of a TIME reply.
fn time_ms(v: &Value) -> Result<i64> {
    match v {
        Value::Array(t) if t.len() == 2 => {
            let secs = t.first().and_then(int).ok_or_else(unexpected)?;
            let micros = t.get(1).and_then(int).ok_or_else(unexpected)?;
            Ok(secs * 1000 + micros / 1000)
        }
        _ => Err(unexpected()),
    }
}

/// One key's record from its PTTL and DUMP replies (`None`: it is gone).
fn record(key: &[u8], now_ms: i64, pttl: &Value, dump: &Value) -> Result<Option<KeyRecord>> {
    let pttl = int(pttl).ok_or_else(unexpected)?;
    Ok(bytes(dump).map(|payload| KeyRecord {
        key: key.to_vec(),
        expire_at_ms: (pttl >= 0).then_some(now_ms + pttl),
        payload,
    }))
}

/// Reads one batch in a transaction: TIME, then PTTL and DUMP per key.
async fn read_batch(con: &mut MultiplexedConnection, keys: &[Vec<u8>]) -> Result<Vec<KeyRecord>> {
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("TIME");
    for k in keys {
        pipe.cmd("PTTL").arg(k).cmd("DUMP").arg(k);
    }
    let reply: Vec<Value> = pipe
        .query_async(con)
        .await
        .map_err(|e| failed("MULTI/EXEC of PTTL and DUMP", e))?;
    if reply.len() != 1 + 2 * keys.len() {
        return Err(unexpected());
    }
    let now_ms = time_ms(&reply[0])?;
    let mut out = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        // A key gone between SCAN and now has no DUMP.
        out.extend(record(key, now_ms, &reply[1 + 2 * i], &reply[2 + 2 * i])?);
    }
    Ok(out)
}

/// Reads one batch in a cluster, where a transaction may touch one hash
/// slot only: a MULTI/EXEC of TIME, PTTL and DUMP per key, pipelined.
async fn read_batch_per_key(
    con: &mut MultiplexedConnection,
    keys: &[Vec<u8>],
) -> Result<Vec<KeyRecord>> {
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("MULTI")
            .cmd("TIME")
            .cmd("PTTL")
            .arg(k)
            .cmd("DUMP")
            .arg(k)
            .cmd("EXEC");
    }
    let reply: Vec<Value> = pipe
        .query_async(con)
        .await
        .map_err(|e| failed("MULTI/EXEC of PTTL and DUMP", e))?;
    if reply.len() != 5 * keys.len() {
        return Err(unexpected());
    }
    let mut out = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let Value::Array(exec) = &reply[5 * i + 4] else {
            return Err(unexpected());
        };
        let [time, pttl, dump] = exec.as_slice() else {
            return Err(unexpected());
        };
        out.extend(record(key, time_ms(time)?, pttl, dump)?);
    }
    Ok(out)
}

/// Walks every pattern on every node (one for a plain server, each primary
/// of a cluster) and writes what it reads.
async fn capture<W: AsyncWrite + Unpin>(
    nodes: &mut [MultiplexedConnection],
    cluster: bool,
    selection: &KeySelection,
    out: W,
    progress: &Progress,
) -> Result<Captured> {
    let broken = |e: std::io::Error| Error::io("writing the keys stream", e);
    let mut writer = RecordWriter::new(out).await.map_err(broken)?;
    let mut seen: HashSet<u128> = HashSet::new();
    let mut c = Captured::default();
    for rule in &selection.rules {
        let mut count = 0u64;
        for con in nodes.iter_mut() {
            let mut cursor: u64 = 0;
            loop {
                let (next, found): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&rule.pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(con)
                    .await
                    .map_err(|e| failed("SCAN", e))?;
                let fresh: Vec<Vec<u8>> = found
                    .into_iter()
                    .filter(|k| seen.insert(fingerprint(k)))
                    .collect();
                for batch in fresh.chunks(BATCH) {
                    let records = if cluster {
                        read_batch_per_key(con, batch).await?
                    } else {
                        read_batch(con, batch).await?
                    };
                    c.vanished += (batch.len() - records.len()) as u64;
                    for r in &records {
                        writer.write(r).await.map_err(broken)?;
                        c.keys += 1;
                        count += 1;
                        c.with_expiry += u64::from(r.expire_at_ms.is_some());
                        c.dump_bytes += r.payload.len() as u64;
                        Progress::add(&progress.files_done, 1);
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        *c.per_pattern.entry(rule.pattern.clone()).or_default() += count;
    }
    writer.finish().await.map_err(broken)?;
    Ok(c)
}

/// Captures the selected keys into a new snapshot.
pub async fn backup_redis_keys(
    repo: Arc<Repository>,
    opts: KeysOptions,
    progress: Arc<Progress>,
) -> Result<(Id, Snapshot)> {
    if opts.selection.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "no key pattern: give --keys PATTERN or --keys-file FILE",
        ));
    }
    let endpoint = Endpoint::new(&opts.url, &opts.tls)?;
    let mut con = endpoint.connection().await?;
    let info = info(&mut con).await?;
    let map = crate::engine::redis::cluster::slot_map(&endpoint, &mut con).await?;
    let mut nodes = match &map {
        Some(map) => crate::engine::redis::cluster::connect_all(&endpoint, map).await?,
        None => vec![con],
    };
    let backup = StreamBackup::begin(repo, opts.settings.clone(), progress).await?;
    let params = backup.params().fine();
    let prog = backup.progress().clone();
    let saver = match backup.saver() {
        Ok(s) => s,
        Err(e) => return backup.commit(Err(e)).await,
    };
    let (writer, reader) = tokio::io::duplex(1 << 20);
    let blocking = BlockingReader::new(reader);
    let save_prog = prog.clone();
    let saving = tokio::task::spawn_blocking(move || {
        save_stream(KEYS_STREAM, blocking, &saver, params, &save_prog)
    });
    let captured = capture(&mut nodes, map.is_some(), &opts.selection, writer, &prog).await;
    let saved = saving
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("saving the keys stopped: {e}")))
        .and_then(|r| r);
    let outcome = match (captured, saved) {
        // A repository failure closes the pipe under the capture: report the cause.
        (Err(_), Err(save)) => Err(save),
        (Err(e), Ok(_)) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(c), Ok(stream)) => {
            let mut f = BTreeMap::new();
            let get = |k: &str| info.get(k).cloned().unwrap_or_default();
            f.insert("mode".into(), "keys".into());
            f.insert("redis_version".into(), get("redis_version").into());
            f.insert("run_id".into(), get("run_id").into());
            f.insert("db".into(), endpoint.url.db.unwrap_or(0).into());
            if let Some(map) = &map {
                let primaries: Vec<String> = map
                    .primaries
                    .iter()
                    .map(|(h, p)| format!("{h}:{p}"))
                    .collect();
                f.insert("cluster_primaries".into(), serde_json::json!(primaries));
            }
            f.insert("selection".into(), serde_json::json!(opts.selection));
            f.insert("keys_per_pattern".into(), serde_json::json!(c.per_pattern));
            f.insert("keys_captured".into(), c.keys.into());
            f.insert("keys_with_expiry".into(), c.with_expiry.into());
            f.insert("keys_vanished".into(), c.vanished.into());
            f.insert("dump_bytes".into(), c.dump_bytes.into());
            Ok((
                vec![stream],
                StreamManifest {
                    source: "redis".into(),
                    paths: vec![endpoint.describe()],
                    tags: opts.tags.clone(),
                    facts: f,
                },
            ))
        }
    };
    backup.commit(outcome).await
}
