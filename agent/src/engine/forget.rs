//! `forget`: applies a retention policy (keep-last, -hourly, -daily, -weekly,
//! -monthly, -yearly, -within, as restic users know them) per group of snapshots
//! (same host, source and paths) and removes the snapshots it does not keep.
//! Data goes only when `prune` runs.

use chrono::{DateTime, Datelike, Utc};
use seawall_common::repo::lock::RepoLock;
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::storage::FileKind;
use seawall_common::{Error, ErrorKind, Id, Repository, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// How many snapshots to keep per rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KeepPolicy {
    /// The newest N.
    pub last: u32,
    /// The newest of each of the last N hours that have one.
    pub hourly: u32,
    /// ... days.
    pub daily: u32,
    /// ... ISO weeks.
    pub weekly: u32,
    /// ... months.
    pub monthly: u32,
    /// ... years.
    pub yearly: u32,
    /// Every snapshot taken within this many seconds of the group's newest
    /// (not of now: a source whose backups stopped keeps what it has).
    pub within_secs: u64,
}

impl KeepPolicy {
    /// Whether no rule is set (which would forget everything).
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }

    /// Which of `snaps` (any order) to keep: their indices.
    pub fn keep(&self, snaps: &[(Id, DateTime<Utc>)]) -> HashSet<Id> {
        let mut sorted: Vec<_> = snaps.to_vec();
        sorted.sort_by_key(|s| std::cmp::Reverse(s.1));
        let rules: [(u32, Bucket); 6] = [
            (self.last, |_| -1),
            (self.hourly, |t| t.timestamp() / 3600),
            (self.daily, |t| i64::from(t.num_days_from_ce())),
            (self.weekly, |t| {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }),
            (self.monthly, |t| {
                i64::from(t.year()) * 100 + i64::from(t.month())
            }),
            (self.yearly, |t| i64::from(t.year())),
        ];
        let mut kept = HashSet::new();
        if let Some((_, newest)) = sorted.first() {
            let since =
                *newest - chrono::Duration::seconds(self.within_secs.min(i64::MAX as u64) as i64);
            if self.within_secs > 0 {
                kept.extend(
                    sorted
                        .iter()
                        .filter(|(_, t)| *t >= since)
                        .map(|(id, _)| *id),
                );
            }
        }
        for (count, bucket) in rules {
            let mut left = count;
            let mut last_bucket: Option<i64> = None;
            for (id, t) in &sorted {
                if left == 0 {
                    break;
                }
                let b = bucket(t);
                // keep-last counts every snapshot; the others one per bucket.
                if b == -1 || last_bucket != Some(b) {
                    kept.insert(*id);
                    last_bucket = Some(b);
                    left -= 1;
                }
            }
        }
        kept
    }
}

/// Maps a snapshot time to its bucket (hour, day, ...); -1 means every snapshot is its own.
type Bucket = fn(&DateTime<Utc>) -> i64;

/// Snapshots that retention treats together: same host, source and paths.
type GroupKey = (String, String, Vec<String>);

/// What forget decided.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ForgetReport {
    /// Snapshots kept.
    pub kept: Vec<String>,
    /// Snapshots removed (or that would be, on a dry run).
    pub removed: Vec<String>,
}

/// Applies `policy` to each group of the snapshots carrying every tag in
/// `tags` (all snapshots when empty; an agent tags each source's snapshots
/// `source=<name>`, so each source keeps its own policy); removes what it
/// does not keep unless `dry_run`. Removal holds the exclusive lock (as
/// restic's does), so the head it updates is not overwritten meanwhile by a
/// backup's.
pub async fn forget(
    repo: &Arc<Repository>,
    policy: KeepPolicy,
    tags: &[String],
    dry_run: bool,
    lock_wait: std::time::Duration,
) -> Result<ForgetReport> {
    if policy.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "no retention rule given: pass at least one of --keep-last/--keep-hourly/--keep-daily/--keep-weekly/--keep-monthly/--keep-yearly/--keep-within",
        ));
    }
    let lock = if dry_run {
        None
    } else {
        Some(RepoLock::acquire(repo.clone(), true, "forget", lock_wait).await?)
    };
    let snaps = repo.snapshots().await?;
    let mut groups: BTreeMap<GroupKey, Vec<(Id, DateTime<Utc>)>> = BTreeMap::new();
    for (id, s) in snaps
        .iter()
        .filter(|(_, s)| tags.iter().all(|t| s.tags.contains(t)))
    {
        groups.entry(group_key(s)).or_default().push((*id, s.time));
    }
    let mut report = ForgetReport::default();
    let mut removed = Vec::new();
    let outcome: Result<()> = async {
        for members in groups.values() {
            let keep = policy.keep(members);
            for (id, _) in members {
                if keep.contains(id) {
                    report.kept.push(id.to_hex());
                } else {
                    if let Some(lock) = &lock {
                        lock.check()?;
                        repo.storage()
                            .remove(FileKind::Snapshot, &id.to_hex())
                            .await?;
                        removed.push(*id);
                    }
                    report.removed.push(id.to_hex());
                }
            }
        }
        Ok(())
    }
    .await;
    // What was deleted leaves the head even when a later removal failed.
    let recorded = if removed.is_empty() {
        Ok(())
    } else {
        repo.head_remove(&removed).await
    };
    if let Some(lock) = lock {
        lock.release().await?;
    }
    outcome?;
    recorded?;
    Ok(report)
}

fn group_key(s: &Snapshot) -> GroupKey {
    (s.hostname.clone(), s.source.clone(), s.paths.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(days: i64, hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
            + chrono::Duration::days(days)
            + chrono::Duration::hours(hours)
    }

    #[test]
    fn keeps_last_and_one_per_day() {
        let snaps: Vec<(Id, DateTime<Utc>)> = (0..10)
            .flat_map(|d| (0..3).map(move |h| (d, h)))
            .map(|(d, h)| (Id::random(), at(d, h * 5)))
            .collect();
        let newest = snaps.iter().max_by_key(|s| s.1).unwrap().0;
        let k = KeepPolicy {
            last: 1,
            ..Default::default()
        }
        .keep(&snaps);
        assert_eq!(k, HashSet::from([newest]));
        let k = KeepPolicy {
            daily: 4,
            ..Default::default()
        }
        .keep(&snaps);
        assert_eq!(k.len(), 4);
        assert!(k.contains(&newest));
        let k = KeepPolicy {
            last: 2,
            daily: 3,
            ..Default::default()
        }
        .keep(&snaps);
        assert_eq!(k.len(), 4, "the newest day counts for both rules");
        assert!(KeepPolicy::default().is_empty());
    }

    #[test]
    fn keep_within_counts_back_from_the_newest_snapshot_not_from_now() {
        // Ten daily snapshots from 2026-01-01: long before "now".
        let snaps: Vec<(Id, DateTime<Utc>)> = (0..10).map(|d| (Id::random(), at(d, 0))).collect();
        let k = KeepPolicy {
            within_secs: 3 * 86_400,
            ..Default::default()
        }
        .keep(&snaps);
        // Days 7, 8 and 9 (the newest), and day 6 exactly at the bound.
        let expect: HashSet<Id> = snaps[6..].iter().map(|s| s.0).collect();
        assert_eq!(k, expect);
        assert!(!KeepPolicy {
            within_secs: 1,
            ..Default::default()
        }
        .is_empty());
    }
}
