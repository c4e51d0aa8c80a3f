//! The embedded store for `--dev` and small installs: one redb file, one
//! replica. Revisions and epochs work as in etcd (one counter, bumped by
//! every write and by every election), so the same fencing rules hold: a
//! write with an older epoch than the file's is refused. redb holds an
//! exclusive lock on the file, so a second coordinator on it fails to open.

use super::{Entry, Fence, LeaderInfo, Leadership, StateStore, StoreError, StoreResult};
use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION: &str = "revision";
const EPOCH: &str = "epoch";
const LEADER: &str = "election/leader";
const FENCE_KEY: &[u8] = b"embedded/epoch";
/// Prefix of the markers of lease-bound keys.
const BOUND_MARK: &str = "election/bound/";

/// Store in a local redb file.
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// Keeps the "never lost" signals alive for leaderships handed out.
    _never: watch::Sender<bool>,
    never_rx: watch::Receiver<bool>,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

/// A value with its revision, as stored: 8 bytes of revision, then the value.
fn encode(revision: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, raw: &[u8]) -> Entry {
    let mut rev = [0u8; 8];
    let n = raw.len().min(8);
    rev[..n].copy_from_slice(&raw[..n]);
    Entry {
        key: key.to_string(),
        value: raw.get(8..).unwrap_or_default().to_vec(),
        revision: i64::from_be_bytes(rev),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file.
    pub fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "{} is in use by another coordinator: run one --dev coordinator per state file",
                path.display()
            )),
            other => failed(format!("{}: {other}", path.display())),
        })?;
        let tx = db.begin_write().map_err(failed)?;
        tx.open_table(KV).map_err(failed)?;
        tx.open_table(META).map_err(failed)?;
        tx.commit().map_err(failed)?;
        let (never, never_rx) = watch::channel(false);
        Ok(EmbeddedStore {
            db: Arc::new(db),
            _never: never,
            never_rx,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(failed)?
    }
}

/// Checks the fence and bumps the revision inside a write transaction.
fn fenced_write(
    db: &Database,
    fence: &Fence,
    f: impl FnOnce(&mut redb::Table<&str, &[u8]>, i64) -> StoreResult<()>,
) -> StoreResult<i64> {
    let tx = db.begin_write().map_err(failed)?;
    let revision = {
        let mut meta = tx.open_table(META).map_err(failed)?;
        let epoch = meta
            .get(EPOCH)
            .map_err(failed)?
            .map(|v| v.value())
            .unwrap_or(0);
        if fence.key != FENCE_KEY || fence.epoch != epoch {
            return Err(StoreError::Fenced { epoch: fence.epoch });
        }
        let revision = meta
            .get(REVISION)
            .map_err(failed)?
            .map(|v| v.value())
            .unwrap_or(0)
            + 1;
        meta.insert(REVISION, revision).map_err(failed)?;
        let mut kv = tx.open_table(KV).map_err(failed)?;
        f(&mut kv, revision)?;
        revision
    };
    tx.commit().map_err(failed)?;
    Ok(revision)
}

#[async_trait]
impl StateStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Entry>> {
        let key = key.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(failed)?;
            let kv = tx.open_table(KV).map_err(failed)?;
            let found = kv.get(key.as_str()).map_err(failed)?;
            Ok(found.map(|v| decode(&key, v.value())))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<Entry>> {
        let prefix = prefix.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(failed)?;
            let kv = tx.open_table(KV).map_err(failed)?;
            let mut out = Vec::new();
            for item in kv.range(prefix.as_str()..).map_err(failed)? {
                let (k, v) = item.map_err(failed)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                out.push(decode(k.value(), v.value()));
            }
            Ok(out)
        })
        .await
    }

    async fn list_newest(
        &self,
        prefix: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Entry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let prefix = prefix.to_string();
        let end = match before {
            Some(b) if b.starts_with(prefix.as_str()) => b.to_string(),
            // Every key under the prefix sorts before the prefix + the last char.
            _ => format!("{prefix}{}", char::MAX),
        };
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(failed)?;
            let kv = tx.open_table(KV).map_err(failed)?;
            let mut out = Vec::new();
            for item in kv
                .range(prefix.as_str()..end.as_str())
                .map_err(failed)?
                .rev()
            {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = item.map_err(failed)?;
                out.push(decode(k.value(), v.value()));
            }
            Ok(out)
        })
        .await
    }

    async fn put_with(
        &self,
        fence: &Fence,
        key: &str,
        value: &[u8],
        expected: Option<i64>,
        extra: &[(String, Vec<u8>)],
    ) -> StoreResult<i64> {
        let (fence, key, value) = (fence.clone(), key.to_string(), value.to_vec());
        let extra = extra.to_vec();
        self.blocking(move |db| {
            fenced_write(db, &fence, |kv, revision| {
                let found = kv
                    .get(key.as_str())
                    .map_err(failed)?
                    .map(|v| decode(&key, v.value()).revision)
                    .unwrap_or(0);
                if let Some(expected) = expected {
                    if found != expected {
                        return Err(StoreError::Conflict {
                            key: key.clone(),
                            expected,
                            found,
                        });
                    }
                }
                kv.insert(key.as_str(), encode(revision, &value).as_slice())
                    .map_err(failed)?;
                for (k, v) in &extra {
                    kv.insert(k.as_str(), encode(revision, v).as_slice())
                        .map_err(failed)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn put_bound(&self, fence: &Fence, key: &str, value: &[u8]) -> StoreResult<i64> {
        let bound = format!("{BOUND_MARK}{key}");
        let r = self.put(fence, key, value, None).await?;
        // Remember the key so the next election clears it.
        self.put(fence, &bound, b"", None).await?;
        Ok(r)
    }

    async fn delete(&self, fence: &Fence, key: &str) -> StoreResult<()> {
        let (fence, key) = (fence.clone(), key.to_string());
        self.blocking(move |db| {
            fenced_write(db, &fence, |kv, _| {
                kv.remove(key.as_str()).map_err(failed)?;
                Ok(())
            })
            .map(|_| ())
        })
        .await
    }

    async fn campaign(&self, me: &LeaderInfo) -> StoreResult<Leadership> {
        let me = me.clone();
        let epoch = self
            .blocking(move |db| {
                let tx = db.begin_write().map_err(failed)?;
                let epoch = {
                    let mut meta = tx.open_table(META).map_err(failed)?;
                    let epoch = meta
                        .get(REVISION)
                        .map_err(failed)?
                        .map(|v| v.value())
                        .unwrap_or(0)
                        + 1;
                    meta.insert(REVISION, epoch).map_err(failed)?;
                    meta.insert(EPOCH, epoch).map_err(failed)?;
                    let mut kv = tx.open_table(KV).map_err(failed)?;
                    // Keys bound to the previous leadership end with it.
                    let bound: Vec<String> = kv
                        .range(BOUND_MARK..)
                        .map_err(failed)?
                        .filter_map(|item| item.ok())
                        .map(|(k, _)| k.value().to_string())
                        .take_while(|k| k.starts_with(BOUND_MARK))
                        .collect();
                    for mark in bound {
                        kv.remove(mark.as_str()).map_err(failed)?;
                        kv.remove(&mark[BOUND_MARK.len()..]).map_err(failed)?;
                    }
                    let info = LeaderInfo { epoch, ..me };
                    let value = serde_json::to_vec(&info).map_err(failed)?;
                    kv.insert(LEADER, encode(epoch, &value).as_slice())
                        .map_err(failed)?;
                    epoch
                };
                tx.commit().map_err(failed)?;
                Ok(epoch)
            })
            .await?;
        // One replica: leadership lasts until the process ends.
        let (_tx, deadline) =
            watch::channel(tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400));
        Ok(Leadership::new(
            Fence {
                key: FENCE_KEY.to_vec(),
                epoch,
                lease: 0,
            },
            self.never_rx.clone(),
            deadline,
        ))
    }

    async fn resign(&self, _leadership: &Leadership) -> StoreResult<()> {
        Ok(())
    }

    async fn leader(&self) -> StoreResult<Option<LeaderInfo>> {
        let entry = self.get(LEADER).await?;
        Ok(entry.and_then(|e| serde_json::from_slice(&e.value).ok()))
    }

    fn lease_ttl(&self) -> Duration {
        Duration::from_secs(10)
    }
}
