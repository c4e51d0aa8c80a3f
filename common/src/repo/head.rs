//! The head: a sealed record of the snapshots the repository holds. Each
//! backup adds its snapshot after writing the manifest; `forget` removes
//! what it deletes (under the exclusive lock). A snapshot file deleted
//! behind Seawall's back (a rollback to an older state) is then named by
//! `verify` and `snapshots` as missing, and a snapshot file that is not
//! the hash of its own bytes (one copied under another name) as misnamed.
//! Nobody without the key can write a head that opens.
//!
//! Limits, by design: two backups writing at once may each leave the
//! other's snapshot out of the head (adds are merged and re-checked, but
//! there is no compare-and-swap on every store); such a snapshot shows as
//! "not recorded", a note, not an error. Someone who can write the bucket
//! can also put an older head back together with the older snapshots;
//! that needs the bucket's versioning or object lock to catch.

use super::repository::{file_aad, Repository};
use super::sealed;
use super::snapshot::Snapshot;
use crate::error::{Error, ErrorKind, Result};
use crate::id::Id;
use crate::storage::FileKind;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The head's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// Raised by one at every write.
    pub generation: u64,
    /// The snapshots held, by id, with their time.
    pub snapshots: BTreeMap<Id, DateTime<Utc>>,
    /// When this generation was written.
    pub written: DateTime<Utc>,
}

/// What comparing the head with the snapshot files found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeadCheck {
    /// The head's generation; `None` when there is no head yet (a
    /// repository last written before heads existed).
    pub generation: Option<u64>,
    /// In the head, but their file is gone.
    pub missing: Vec<(Id, DateTime<Utc>)>,
    /// Files under `snapshots/` whose name is not the hash of their bytes.
    pub misnamed: Vec<String>,
    /// Snapshot files the head does not list.
    pub unrecorded: Vec<Id>,
}

impl HeadCheck {
    /// One line per finding that means snapshots were removed or planted.
    pub fn alarms(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, time) in &self.missing {
            out.push(format!(
                "snapshot {} of {} is recorded in the head but its file is gone: it was deleted outside Seawall (a rollback?); restore snapshots/{} from a replica",
                id.short(),
                time.format("%Y-%m-%d %H:%M:%S"),
                id.to_hex()
            ));
        }
        for name in &self.misnamed {
            out.push(format!(
                "snapshots/{name} is not named by the hash of its bytes: a snapshot copied or replayed under another name; remove it"
            ));
        }
        out
    }
}

const HEAD_AAD: &[u8] = b"seawall head";
/// Attempts at merging this writer's change into the head.
const MERGE_ATTEMPTS: usize = 4;

impl Repository {
    /// The head, or `None` when there is none yet.
    pub async fn read_head(&self) -> Result<Option<Head>> {
        let data = match self.storage().read(FileKind::Head, "").await {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = self.key().clone();
        tokio::task::spawn_blocking(move || sealed::open_json(&key, HEAD_AAD, &data, "head"))
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("decoding stopped: {e}")))?
            .map(Some)
    }

    async fn write_head(&self, head: &Head) -> Result<()> {
        let data = sealed::seal_json(self.key(), HEAD_AAD, head)?;
        self.storage()
            .write(FileKind::Head, "", Bytes::from(data))
            .await
    }

    /// Records a snapshot just written. With no head yet, the head starts
    /// from every snapshot file present.
    pub async fn head_add(&self, id: Id, time: DateTime<Utc>) -> Result<()> {
        for _ in 0..MERGE_ATTEMPTS {
            let mut head = match self.read_head().await? {
                Some(h) if h.snapshots.get(&id) == Some(&time) => return Ok(()),
                Some(h) => h,
                None => {
                    let mut h = Head::default();
                    for (sid, s) in self.snapshots().await? {
                        h.snapshots.insert(sid, s.time);
                    }
                    h
                }
            };
            head.snapshots.insert(id, time);
            head.generation += 1;
            head.written = Utc::now();
            self.write_head(&head).await?;
            // Another backup may have written its own head in between:
            // read it back and merge again until ours is in it.
            let jitter = 20 + u64::from(rand::random::<u8>() % 50);
            tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
        }
        tracing::warn!(snapshot = %id.short(), "the head changed under every attempt to record this snapshot; verify will list it as not recorded");
        Ok(())
    }

    /// Removes snapshots `forget` deleted (it holds the exclusive lock).
    pub async fn head_remove(&self, ids: &[Id]) -> Result<()> {
        let Some(mut head) = self.read_head().await? else {
            return Ok(());
        };
        let before = head.snapshots.len();
        for id in ids {
            head.snapshots.remove(id);
        }
        if head.snapshots.len() != before {
            head.generation += 1;
            head.written = Utc::now();
            self.write_head(&head).await?;
        }
        Ok(())
    }

    /// Compares the head with the snapshot files: each file's name against
    /// the hash of its bytes, and the head's list against what is there.
    pub async fn head_check(&self) -> Result<HeadCheck> {
        self.read_snapshot_files(false)
            .await
            .map(|(_, check)| check)
    }

    /// Every snapshot, oldest first, and the head check, reading each
    /// snapshot file once (a listing needs both; on S3 each read is a
    /// request). A damaged manifest is an error naming it, as in
    /// [`Repository::snapshots`].
    pub async fn snapshots_checked(&self) -> Result<(Vec<(Id, Snapshot)>, HeadCheck)> {
        self.read_snapshot_files(true).await
    }

    async fn read_snapshot_files(&self, decode: bool) -> Result<(Vec<(Id, Snapshot)>, HeadCheck)> {
        let head = self.read_head().await?;
        let listed = self.storage().list(FileKind::Snapshot).await?;
        let mut check = HeadCheck {
            generation: head.as_ref().map(|h| h.generation),
            ..HeadCheck::default()
        };
        let mut present = std::collections::BTreeSet::new();
        let mut snapshots = Vec::new();
        for l in &listed {
            let data = self.storage().read(FileKind::Snapshot, &l.name).await?;
            let Ok(id) = l.name.parse::<Id>() else {
                // Not named by an id: not a snapshot at all.
                check.misnamed.push(l.name.clone());
                continue;
            };
            if Id::of_file(&data) == id {
                present.insert(id);
            } else {
                check.misnamed.push(l.name.clone());
            }
            if decode {
                let key = self.key().clone();
                let what = format!("snapshots {}", l.name);
                let snap: Snapshot = tokio::task::spawn_blocking(move || {
                    sealed::open_json(&key, file_aad(FileKind::Snapshot), &data, &what)
                })
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("decoding stopped: {e}")))?
                .map_err(|e| {
                    e.context(format!(
                        "snapshot {} cannot be read (`seawall forget {}` removes it)",
                        id.short(),
                        id.short()
                    ))
                })?;
                snapshots.push((id, snap));
            }
        }
        snapshots.sort_by_key(|(_, s)| s.time);
        if let Some(head) = head {
            for (id, time) in &head.snapshots {
                if !present.contains(id) {
                    check.missing.push((*id, *time));
                }
            }
            check.unrecorded = present
                .iter()
                .filter(|id| !head.snapshots.contains_key(id))
                .copied()
                .collect();
        }
        Ok((snapshots, check))
    }
}
