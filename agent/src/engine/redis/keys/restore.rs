//! `restore --redis-target`: the captured keys written into a live server
//! with pipelined `RESTORE ... ABSTTL`, so each key keeps the absolute
//! expiry it had; a key whose expiry passed meanwhile is left out rather
//! than resurrected. Keys present in the target are kept (or replaced with
//! `--replace`), and TTL rules can shorten what restored keys live.

use super::capture::KEYS_STREAM;
use super::format::{KeyRecord, RecordReader};
use super::selection::KeySelection;
use crate::engine::progress::Progress;
use crate::engine::redis::cluster::SlotMap;
use crate::engine::redis::connect::Endpoint;
use crate::engine::redis::rdb::info;
use crate::engine::redis::tls::RedisTls;
use crate::engine::stream::write_stream;
use redis::aio::MultiplexedConnection;
use redis::Value;
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::{Error, ErrorKind, Repository, Result};
use std::sync::Arc;
use std::time::Instant;

/// Keys sent per pipeline.
const BATCH: usize = 256;
/// Payload bytes sent per pipeline at most (besides one large key).
const BATCH_BYTES: usize = 8 << 20;

/// What to do with a key the target already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Keep the target's key.
    Skip,
    /// Overwrite it with the snapshot's.
    Replace,
}

/// How `restore --redis-target` runs.
#[derive(Debug, Clone)]
pub struct KeysRestoreOptions {
    /// `redis[s]://...` of the live target.
    pub url: String,
    /// TLS files for `rediss://`.
    pub tls: RedisTls,
    /// Existing keys: skip or replace.
    pub conflict: Conflict,
    /// TTL rules to apply instead of those recorded at capture.
    pub rules: Option<KeySelection>,
}

/// What the restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KeysRestoreReport {
    /// Where the keys went (without credentials).
    pub target: String,
    /// Keys written.
    pub restored: u64,
    /// Keys the target already held and kept.
    pub skipped_existing: u64,
    /// Keys whose expiry had passed.
    pub skipped_expired: u64,
    /// Restored keys whose life a TTL rule shortened or bounded.
    pub ttl_rule_applied: u64,
    /// Seconds taken.
    pub duration_secs: f64,
}

/// The target server's clock, read once and advanced locally.
struct Clock {
    base_ms: i64,
    at: Instant,
}

impl Clock {
    async fn read(con: &mut MultiplexedConnection) -> Result<Clock> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(con)
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("Redis TIME failed: {e}")))?;
        Ok(Clock {
            base_ms: secs * 1000 + micros / 1000,
            at: Instant::now(),
        })
    }

    fn now_ms(&self) -> i64 {
        self.base_ms + self.at.elapsed().as_millis() as i64
    }
}

fn shown(key: &[u8]) -> String {
    let s = String::from_utf8_lossy(key);
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s.into_owned()
    }
}

struct Loader<'a> {
    /// One connection, or one per primary of a cluster (indexed as `map`).
    nodes: &'a mut [MultiplexedConnection],
    map: Option<SlotMap>,
    conflict: Conflict,
    rules: &'a KeySelection,
    clock: Clock,
    report: KeysRestoreReport,
    source_version: String,
    target_version: String,
    batch: Vec<KeyRecord>,
    batch_bytes: usize,
}

impl Loader<'_> {
    fn push(&mut self, r: KeyRecord) {
        self.batch_bytes += r.payload.len();
        self.batch.push(r);
    }

    fn full(&self) -> bool {
        self.batch.len() >= BATCH || self.batch_bytes >= BATCH_BYTES
    }

    async fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        // Each key goes to the node that owns its slot (the one node of a
        // plain server), one pipeline per node.
        let mut per_node: Vec<Vec<(&KeyRecord, Option<i64>, bool)>> =
            (0..self.nodes.len()).map(|_| Vec::new()).collect();
        for r in &batch {
            if r.expire_at_ms.is_some_and(|t| t <= now) {
                self.report.skipped_expired += 1;
                continue;
            }
            let bound = self
                .rules
                .restore_ttl(&r.key)
                .map(|ttl| now + ttl.as_millis() as i64);
            let expire = match (r.expire_at_ms, bound) {
                (Some(own), Some(b)) => Some(own.min(b)),
                (own, b) => own.or(b),
            };
            let node = match &self.map {
                Some(map) => map.owner_of(&r.key).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Io,
                        format!(
                            "no primary of the target cluster serves the slot of {}: is the cluster complete (cluster_state:ok)?",
                            shown(&r.key)
                        ),
                    )
                })?,
                None => 0,
            };
            per_node[node].push((r, expire, expire != r.expire_at_ms));
        }
        for (node, sent) in per_node.iter().enumerate() {
            if sent.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for (r, expire, _) in sent {
                let cmd = pipe
                    .cmd("RESTORE")
                    .arg(&r.key)
                    .arg(expire.unwrap_or(0))
                    .arg(&r.payload);
                if expire.is_some() {
                    cmd.arg("ABSTTL");
                }
                if self.conflict == Conflict::Replace {
                    cmd.arg("REPLACE");
                }
            }
            let replies: Vec<Value> =
                pipe.query_async(&mut self.nodes[node]).await.map_err(|e| {
                    Error::new(ErrorKind::Io, format!("Redis RESTORE pipeline failed: {e}"))
                })?;
            for (reply, (r, _, ruled)) in replies.iter().zip(sent) {
                self.settle(reply, r, *ruled)?;
            }
        }
        Ok(())
    }

    /// Counts one RESTORE reply, or says why the restore stops.
    fn settle(&mut self, reply: &Value, r: &KeyRecord, ruled: bool) -> Result<()> {
        match reply {
            Value::ServerError(e) if e.code() == "BUSYKEY" => {
                self.report.skipped_existing += 1;
            }
            Value::ServerError(e) if e.code() == "NOPERM" => {
                return Err(Error::new(
                    ErrorKind::Denied,
                    format!(
                        "Redis refused RESTORE of {}: {e}; the restoring user needs +restore +time +info",
                        shown(&r.key)
                    ),
                ));
            }
            Value::ServerError(e) => {
                let hint = if e.to_string().contains("payload version") {
                    format!(
                        "; the snapshot was taken from Redis {}, the target runs Redis {}: restore into the same or a newer version",
                        self.source_version, self.target_version
                    )
                } else {
                    String::new()
                };
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "Redis refused RESTORE of {} after {} keys were restored: {e}{hint}",
                        shown(&r.key),
                        self.report.restored
                    ),
                ));
            }
            _ => {
                self.report.restored += 1;
                self.report.ttl_rule_applied += u64::from(ruled);
            }
        }
        Ok(())
    }
}

/// Restores an application-state snapshot into a live server.
pub async fn restore_redis_keys(
    repo: Arc<Repository>,
    snap: &Snapshot,
    opts: KeysRestoreOptions,
    progress: Arc<Progress>,
) -> Result<KeysRestoreReport> {
    let started = Instant::now();
    let is_keys = snap.facts.get("mode").and_then(|m| m.as_str()) == Some("keys");
    if snap.source != "redis" || !is_keys {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            if snap.source == "redis" {
                "this Redis snapshot is a whole RDB, not captured keys: restore it with --redis-datadir DIR"
            } else {
                "--redis-target restores Redis key snapshots (backup redis --keys); this one is not"
            },
        ));
    }
    let stream = snap
        .streams
        .iter()
        .find(|s| s.name == KEYS_STREAM)
        .ok_or_else(|| Error::corrupt("the Redis keys snapshot has no keys stream"))?
        .clone();
    let recorded: KeySelection = snap
        .facts
        .get("selection")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let rules = opts.rules.unwrap_or(recorded);
    let endpoint = Endpoint::new(&opts.url, &opts.tls)?;
    let mut con = endpoint.connection().await?;
    let target_info = info(&mut con).await?;
    let clock = Clock::read(&mut con).await?;
    let map = crate::engine::redis::cluster::slot_map(&endpoint, &mut con).await?;
    let mut nodes = match &map {
        Some(map) => crate::engine::redis::cluster::connect_all(&endpoint, map).await?,
        None => vec![con],
    };
    repo.load_index().await?;

    let (mut writer, reader) = tokio::io::duplex(1 << 20);
    let feed_progress = progress.clone();
    let feeding =
        tokio::spawn(async move { write_stream(repo, &stream, &mut writer, &feed_progress).await });
    let mut loader = Loader {
        nodes: &mut nodes,
        map,
        conflict: opts.conflict,
        rules: &rules,
        clock,
        report: KeysRestoreReport {
            target: endpoint.describe(),
            ..Default::default()
        },
        source_version: snap
            .facts
            .get("redis_version")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string(),
        target_version: target_info
            .get("redis_version")
            .cloned()
            .unwrap_or_default(),
        batch: Vec::new(),
        batch_bytes: 0,
    };
    let loaded: Result<()> = async {
        let mut records = RecordReader::new(reader).await?;
        while let Some(r) = records.next().await? {
            loader.push(r);
            Progress::add(&progress.files_done, 1);
            if loader.full() {
                loader.flush().await?;
            }
        }
        loader.flush().await
    }
    .await;
    let fed = feeding
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("reading the snapshot stopped: {e}")))
        .and_then(|r| r);
    match (loaded, fed) {
        // A stream that could not be read cuts the records short: name the cause.
        (Err(e), Err(feed)) if e.kind() == ErrorKind::Corrupt => Err(feed),
        // Otherwise the target failed, and the feed broke because the reader left.
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(_)) => {
            let mut report = loader.report;
            report.duration_secs = started.elapsed().as_secs_f64();
            Ok(report)
        }
    }
}
