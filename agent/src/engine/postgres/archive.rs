//! The WAL archive inside a repository: `wal/<timeline>/<file>`, each file
//! zstd-compressed and sealed with the repository key (its name is in the
//! associated data, so files cannot be swapped), and `wal/cluster`, which
//! binds the archive to one cluster's system identifier.

use super::walname::{parse_history, segno_of, TimelineSwitch, WalKind, WalName};
use seawall_common::storage::FileKind;
use seawall_common::{Error, ErrorKind, Repository, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Name of the binding file under `wal/`.
const BINDING: &str = "cluster";
/// AAD of the binding file.
const BINDING_AAD: &[u8] = b"seawall wal cluster";
/// WAL files never decompress beyond this (segments are at most 1 GiB).
const MAX_WAL_FILE: usize = 1 << 30;

/// The cluster whose WAL an archive holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterBinding {
    /// `pg_control_system().system_identifier`.
    pub system_identifier: String,
    /// Bytes per segment.
    pub segment_size: u64,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored now.
    Stored,
    /// Already there with the same content.
    AlreadyStored,
}

/// A repository's WAL archive.
pub struct WalArchive {
    repo: Arc<Repository>,
    binding: OnceCell<Option<ClusterBinding>>,
}

/// Reads the system identifier and segment size from a segment's first page.
pub fn segment_identity(data: &[u8]) -> Result<(u64, u64)> {
    const XLP_LONG_HEADER: u16 = 0x0002;
    let field = |at: usize, n: usize| data.get(at..at + n);
    let info = field(2, 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let sysid = field(24, 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    let seg_size = field(32, 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes);
    match (info, sysid, seg_size) {
        (Some(info), Some(sysid), Some(size))
            if info & XLP_LONG_HEADER != 0 && u64::from(size) == data.len() as u64 =>
        {
            Ok((sysid, u64::from(size)))
        }
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "this file ({} bytes) does not start with a WAL segment header: it is not a complete WAL segment",
                data.len()
            ),
        )),
    }
}

impl WalArchive {
    /// The archive of `repo`.
    pub fn new(repo: Arc<Repository>) -> WalArchive {
        WalArchive {
            repo,
            binding: OnceCell::new(),
        }
    }

    /// The repository.
    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// The bound cluster, if any WAL was archived yet.
    pub async fn binding(&self) -> Result<Option<ClusterBinding>> {
        self.binding
            .get_or_try_init(|| async {
                let data = match self.repo.storage().read(FileKind::Wal, BINDING).await {
                    Ok(d) => d,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                seawall_common::repo::sealed::open_json::<ClusterBinding>(
                    self.repo.key(),
                    BINDING_AAD,
                    &data,
                    "wal/cluster",
                )
                .map(Some)
            })
            .await
            .cloned()
    }

    async fn bind(&self, sysid: u64, segment_size: u64) -> Result<()> {
        let mine = sysid.to_string();
        match self.binding().await? {
            Some(b) if b.system_identifier == mine => Ok(()),
            Some(b) => Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "this repository archives the WAL of cluster {}, but this segment is from cluster {mine}: refusing to mix them; give this cluster its own repository",
                    b.system_identifier
                ),
            )),
            None => {
                let binding = ClusterBinding {
                    system_identifier: mine,
                    segment_size,
                };
                let data = seawall_common::repo::sealed::seal_json(
                    self.repo.key(),
                    BINDING_AAD,
                    &binding,
                )?;
                self.repo
                    .storage()
                    .write(FileKind::Wal, BINDING, data.into())
                    .await?;
                let _ = self.binding.set(Some(binding));
                Ok(())
            }
        }
    }

    fn aad(name: &WalName) -> Vec<u8> {
        format!("seawall wal {}", name.repo_name()).into_bytes()
    }

    /// Archives one file. Idempotent for the same content; refuses another
    /// content under the same name and segments of another cluster.
    pub async fn push(&self, name: &WalName, data: Vec<u8>) -> Result<PushOutcome> {
        if matches!(name.kind, WalKind::Segment | WalKind::Partial) {
            let (sysid, size) =
                segment_identity(&data).map_err(|e| e.context(format!("WAL file {name}")))?;
            self.bind(sysid, size).await?;
        }
        let data = Arc::new(data);
        // A partial segment grows while it is streamed: the newest copy wins.
        let existing = if name.kind == WalKind::Partial {
            None
        } else {
            self.fetch(name).await?
        };
        if let Some(existing) = existing {
            if existing == *data {
                return Ok(PushOutcome::AlreadyStored);
            }
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "WAL file {name} is already archived with different content: refusing to overwrite it. Two servers may be archiving the same timeline into this repository (a restored copy with archiving left on?)"
                ),
            ));
        }
        let key = self.repo.key().clone();
        let aad = Self::aad(name);
        let plain = data.clone();
        let sealed = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let compressed =
                zstd::bulk::compress(&plain, 3).map_err(|e| Error::io("compressing WAL", e))?;
            Ok(key.seal(&compressed, &aad))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("WAL encoding stopped: {e}")))??;
        self.repo
            .storage()
            .write(FileKind::Wal, &name.repo_name(), sealed.into())
            .await?;
        Ok(PushOutcome::Stored)
    }

    /// Reads one archived file; `None` when it is not in the archive.
    pub async fn fetch(&self, name: &WalName) -> Result<Option<Vec<u8>>> {
        let sealed = match self
            .repo
            .storage()
            .read(FileKind::Wal, &name.repo_name())
            .await
        {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = self.repo.key().clone();
        let aad = Self::aad(name);
        let what = name.to_string();
        let plain = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let compressed = key.open(&sealed, &aad).map_err(|e| {
                e.context(format!(
                    "archived WAL file {what} is damaged or sealed with another key"
                ))
            })?;
            seawall_common::repo::sealed::decompress_bounded(&compressed, MAX_WAL_FILE)
                .map_err(|e| e.context(format!("archived WAL file {what}")))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("WAL decoding stopped: {e}")))??;
        Ok(Some(plain))
    }

    /// Every archived file, by name.
    pub async fn list(&self) -> Result<BTreeSet<WalName>> {
        let listed = self.repo.storage().list(FileKind::Wal).await?;
        Ok(listed
            .iter()
            .filter_map(|l| WalName::from_repo_name(&l.name))
            .collect())
    }

    /// Removes one archived file.
    pub async fn remove(&self, name: &WalName) -> Result<()> {
        self.repo
            .storage()
            .remove(FileKind::Wal, &name.repo_name())
            .await
    }

    /// Reads the switch points of every timeline that has a history file.
    pub async fn histories(
        &self,
        names: &BTreeSet<WalName>,
    ) -> Result<BTreeMap<u32, Vec<TimelineSwitch>>> {
        let mut out = BTreeMap::new();
        for n in names.iter().filter(|n| n.kind == WalKind::History) {
            let data = self.fetch(n).await?.unwrap_or_default();
            let text = String::from_utf8_lossy(&data);
            out.insert(
                n.timeline,
                parse_history(&text).map_err(|e| e.context(format!("history file {n}")))?,
            );
        }
        Ok(out)
    }
}

/// Where recovery from a base backup can get to with the archived WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalReach {
    /// The timeline recovery ends on.
    pub timeline: u32,
    /// The last segment that can be replayed without a gap.
    pub last: WalName,
    /// The first missing segment before newer archived ones, if any.
    pub gap: Option<WalName>,
}

/// Which timeline each segment is read from when recovering to `target`:
/// (first segment number, timeline), ascending.
fn timeline_ranges(
    target: u32,
    histories: &BTreeMap<u32, Vec<TimelineSwitch>>,
    seg_size: u64,
) -> Vec<(u64, u32)> {
    let mut ranges = vec![(0u64, 0u32)];
    match histories.get(&target) {
        Some(switches) => {
            let mut begin = 0u64;
            for s in switches {
                ranges.push((begin, s.parent));
                begin = segno_of(s.switch_lsn, seg_size);
            }
            ranges.push((begin, target));
        }
        None => ranges.push((0, target)),
    }
    ranges.remove(0);
    ranges
}

/// Follows the archived WAL from segment `from` on timeline `timeline` to
/// the newest timeline descending from it, as `recovery_target_timeline =
/// 'latest'` does, and reports the last reachable segment and any gap.
pub fn reach(
    names: &BTreeSet<WalName>,
    histories: &BTreeMap<u32, Vec<TimelineSwitch>>,
    timeline: u32,
    from: u64,
    seg_size: u64,
) -> WalReach {
    // The newest timeline whose history passes through ours after `from`.
    let target = histories
        .iter()
        .filter(|(_, sw)| {
            sw.iter()
                .any(|s| s.parent == timeline && segno_of(s.switch_lsn, seg_size) >= from)
        })
        .map(|(tl, _)| *tl)
        .chain(std::iter::once(timeline))
        .max()
        .unwrap_or(timeline);
    let ranges = timeline_ranges(target, histories, seg_size);
    let tl_for = |segno: u64| {
        ranges
            .iter()
            .rev()
            .find(|(begin, _)| *begin <= segno)
            .map(|(_, tl)| *tl)
            .unwrap_or(timeline)
    };
    let have: BTreeSet<(u32, u64)> = names
        .iter()
        .filter(|n| n.kind == WalKind::Segment)
        .map(|n| (n.timeline, n.segno(seg_size)))
        .collect();
    let newest = have
        .iter()
        .filter(|(tl, s)| *s >= from && tl_for(*s) == *tl)
        .map(|(_, s)| *s)
        .max();
    let mut last = from.saturating_sub(1);
    let mut gap = None;
    if let Some(newest) = newest {
        for segno in from..=newest {
            let tl = tl_for(segno);
            if have.contains(&(tl, segno)) {
                last = segno;
            } else {
                gap = Some(WalName::segment(tl, segno, seg_size));
                break;
            }
        }
    }
    WalReach {
        timeline: tl_for(last),
        last: WalName::segment(tl_for(last), last, seg_size),
        gap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 * 1024 * 1024;

    fn names(list: &[(u32, u64)]) -> BTreeSet<WalName> {
        list.iter()
            .map(|(tl, s)| WalName::segment(*tl, *s, SEG))
            .collect()
    }

    #[test]
    fn reach_without_gap_and_with_one() {
        let none = BTreeMap::new();
        let all = names(&[(1, 3), (1, 4), (1, 5)]);
        let r = reach(&all, &none, 1, 3, SEG);
        assert_eq!((r.last.segno(SEG), r.gap), (5, None));
        let holed = names(&[(1, 3), (1, 5), (1, 6)]);
        let r = reach(&holed, &none, 1, 3, SEG);
        assert_eq!(r.last.segno(SEG), 3);
        assert_eq!(r.gap.unwrap().file, "000000010000000000000004");
    }

    #[test]
    fn reach_follows_a_timeline_switch() {
        // Timeline 1 ended in segment 5; timeline 2 holds segment 5 on.
        let mut h = BTreeMap::new();
        h.insert(
            2,
            vec![TimelineSwitch {
                parent: 1,
                switch_lsn: 5 * SEG + 100,
            }],
        );
        let have = names(&[(1, 3), (1, 4), (1, 5), (2, 5), (2, 6)]);
        let r = reach(&have, &h, 1, 3, SEG);
        assert_eq!((r.timeline, r.last.segno(SEG), r.gap), (2, 6, None));
        let missing = names(&[(1, 3), (1, 4), (2, 6)]);
        let r = reach(&missing, &h, 1, 3, SEG);
        assert_eq!(r.gap.unwrap().file, "000000020000000000000005");
    }

    #[test]
    fn segment_identity_reads_the_long_header() {
        let mut seg = vec![0u8; 64];
        seg[2] = 0x06; // XLP_LONG_HEADER | XLP_BKP_REMOVABLE
        seg[24..32].copy_from_slice(&7_123_456_789u64.to_le_bytes());
        seg[32..36].copy_from_slice(&64u32.to_le_bytes());
        assert_eq!(segment_identity(&seg).unwrap(), (7_123_456_789, 64));
        seg[2] = 0;
        assert!(segment_identity(&seg).is_err());
    }
}
