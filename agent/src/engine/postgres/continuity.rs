//! The archive seen whole: `verify` proves that the WAL from every base
//! backup reaches the newest archived segment without a gap, and `prune`
//! removes only WAL older than what the oldest kept base backup needs.

use super::archive::{reach, segment_identity, WalArchive};
use super::physical::PhysicalFacts;
use super::walname::{WalKind, WalName};
use seawall_common::repo::snapshot::Snapshot;
use seawall_common::storage::FileKind;
use seawall_common::{Id, Repository, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A WAL problem: the object, what is wrong, the snapshots it hurts.
pub type WalProblem = (String, String, Vec<String>);

/// What the WAL check found.
#[derive(Debug, Clone, Default)]
pub struct WalCheck {
    /// Archived WAL files.
    pub files: usize,
    /// WAL files read and checked (with read_data).
    pub files_read: usize,
    /// Problems.
    pub problems: Vec<WalProblem>,
}

/// Base backups of the cluster the archive is bound to.
fn physical<'a>(snapshots: &'a [(Id, Snapshot)], sysid: &str) -> Vec<(&'a Id, PhysicalFacts)> {
    snapshots
        .iter()
        .filter_map(|(id, s)| PhysicalFacts::of(s).ok().map(|f| (id, f)))
        .filter(|(_, f)| f.system_identifier == sysid)
        .collect()
}

/// Checks continuity from every base backup; with `read_data` opens every file.
pub async fn check_archive(
    repo: Arc<Repository>,
    snapshots: &[(Id, Snapshot)],
    read_data: bool,
) -> Result<WalCheck> {
    let archive = WalArchive::new(repo);
    let names = archive.list().await?;
    let mut out = WalCheck {
        files: names.len(),
        ..WalCheck::default()
    };
    let Some(binding) = archive.binding().await? else {
        return Ok(out);
    };
    let histories = match archive.histories(&names).await {
        Ok(h) => h,
        Err(e) => {
            out.problems
                .push(("WAL history".into(), e.to_string(), vec![]));
            BTreeMap::new()
        }
    };
    let mut gaps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (id, facts) in physical(snapshots, &binding.system_identifier) {
        let r = reach(
            &names,
            &histories,
            facts.timeline,
            facts.wal_stop.segno(facts.segment_size) + 1,
            facts.segment_size,
        );
        if let Some(gap) = r.gap {
            let entry = gaps.entry(gap.file.clone()).or_insert_with(|| {
                (
                    format!(
                        "is missing from the archive though newer segments are there: point-in-time recovery stops at {}",
                        r.last
                    ),
                    vec![],
                )
            });
            entry.1.push(id.short());
        }
    }
    for (seg, (problem, snaps)) in gaps {
        out.problems
            .push((format!("WAL segment {seg}"), problem, snaps));
    }
    if read_data {
        for name in &names {
            match archive.fetch(name).await {
                Ok(Some(data)) => {
                    out.files_read += 1;
                    if name.kind == WalKind::Segment {
                        match segment_identity(&data) {
                            Ok((sysid, _)) if sysid.to_string() == binding.system_identifier => {}
                            Ok((sysid, _)) => out.problems.push((
                                format!("WAL file {name}"),
                                format!(
                                    "belongs to cluster {sysid}, not {}",
                                    binding.system_identifier
                                ),
                                vec![],
                            )),
                            Err(e) => out.problems.push((
                                format!("WAL file {name}"),
                                e.to_string(),
                                vec![],
                            )),
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => out.problems.push((
                    format!("WAL file {name}"),
                    format!("cannot be read: {e}"),
                    vec![],
                )),
            }
        }
    }
    Ok(out)
}

/// What WAL retention removed (or would remove).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WalRetention {
    /// Files removed.
    pub files_deleted: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// The oldest segment kept, when any base backup bounds it.
    pub oldest_kept: Option<String>,
}

/// Removes archived WAL older than the oldest kept base backup needs.
/// Without a base backup of the bound cluster nothing is removed.
pub async fn retain_wal(
    repo: Arc<Repository>,
    snapshots: &[(Id, Snapshot)],
    dry_run: bool,
) -> Result<WalRetention> {
    let archive = WalArchive::new(repo.clone());
    let mut out = WalRetention::default();
    let Some(binding) = archive.binding().await? else {
        return Ok(out);
    };
    let seg = binding.segment_size;
    let Some(oldest) = physical(snapshots, &binding.system_identifier)
        .into_iter()
        .map(|(_, f)| f.wal_start.segno(seg))
        .min()
    else {
        return Ok(out);
    };
    out.oldest_kept = Some(WalName::segment(1, oldest, seg).file[8..].to_string());
    let sizes: BTreeMap<String, u64> = repo
        .storage()
        .list(FileKind::Wal)
        .await?
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect();
    for name in archive.list().await? {
        if name.kind == WalKind::History || name.segno(seg) >= oldest {
            continue;
        }
        out.files_deleted += 1;
        out.bytes_freed += sizes.get(&name.repo_name()).copied().unwrap_or(0);
        if !dry_run {
            archive.remove(&name).await?;
        }
    }
    Ok(out)
}
