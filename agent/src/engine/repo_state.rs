//! Where a region's repository stands for the sources it protects: each
//! source's newest snapshot, how far the WAL archive reaches, and what it
//! lacks compared with the repository it mirrors, with the sources a restore
//! from it alone would fail for. The replication checks compare these
//! figures across regions.

use crate::engine::mirror::{mirror, Gap, MirrorOptions};
use crate::engine::verify::verify;
use seawall_common::storage::{FileKind, Storage};
use seawall_common::{Repository, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A source's newest snapshot here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Head {
    /// The source (its snapshots' `source=` tag).
    pub source: String,
    /// Its newest snapshot, if any.
    pub newest: Option<(String, i64)>,
    /// How many snapshots of it the repository holds.
    pub snapshots: u32,
}

/// What the repository holds for `sources`, and its WAL archive.
pub struct State {
    /// One per source asked for, in that order.
    pub heads: Vec<Head>,
    /// The newest archived WAL segment ("timeline/segment").
    pub newest_wal: Option<String>,
    /// Archived WAL files.
    pub wal_files: u64,
}

/// The source a snapshot belongs to (its `source=` tag).
pub fn source_of(tags: &[String]) -> Option<&str> {
    tags.iter().find_map(|t| t.strip_prefix("source="))
}

/// Reads the newest snapshot of each of `sources` and the WAL archive.
pub async fn state(repo: &Repository, sources: &[String]) -> Result<State> {
    let mut newest: BTreeMap<&str, (String, i64, u32)> = BTreeMap::new();
    for (id, snap) in repo.snapshots().await? {
        let Some(source) = source_of(&snap.tags) else {
            continue;
        };
        let Some(wanted) = sources.iter().find(|s| s.as_str() == source) else {
            continue;
        };
        let at = snap.time.timestamp_millis();
        let entry = newest
            .entry(wanted.as_str())
            .or_insert_with(|| (id.to_string(), at, 0));
        entry.2 += 1;
        if at > entry.1 {
            entry.0 = id.to_string();
            entry.1 = at;
        }
    }
    let heads = sources
        .iter()
        .map(|s| match newest.get(s.as_str()) {
            Some((id, at, n)) => Head {
                source: s.clone(),
                newest: Some((id.clone(), *at)),
                snapshots: *n,
            },
            None => Head {
                source: s.clone(),
                ..Head::default()
            },
        })
        .collect();
    let wal = repo.storage().list(FileKind::Wal).await?;
    let segments: Vec<&str> = wal
        .iter()
        .map(|l| l.name.as_str())
        .filter(|n| n.contains('/'))
        .collect();
    Ok(State {
        heads,
        newest_wal: segments.iter().max().map(|s| s.to_string()),
        wal_files: segments.len() as u64,
    })
}

/// What `repo` lacks or holds differently compared with `from`, the
/// repository it replicates.
pub struct Comparison {
    /// The gaps, in path order.
    pub gaps: Vec<Gap>,
    /// Sources a restore from `repo` alone would fail for (or whose
    /// point-in-time recovery would stop short, for missing WAL).
    pub sources_hurt: Vec<String>,
}

/// Compares the replica in `to` with `from` (names and sizes: nothing is
/// read in full unless something is missing, and then only to name the
/// sources hurt). `repo` is the replica opened, `None` while it does not
/// exist yet (everything is missing). `password` opens `from` when a
/// snapshot has not arrived, to name its source (a replica opens with the
/// same passwords).
pub async fn compare(
    from: Arc<dyn Storage>,
    to: Arc<dyn Storage>,
    repo: Option<Arc<Repository>>,
    password: &[u8],
) -> Result<Comparison> {
    let report = mirror(
        from.clone(),
        to,
        MirrorOptions {
            check_only: true,
            ..MirrorOptions::default()
        },
    )
    .await?;
    if report.gaps.is_empty() {
        return Ok(Comparison {
            gaps: Vec::new(),
            sources_hurt: Vec::new(),
        });
    }
    let mut hurt = BTreeSet::new();
    let snapshots = match &repo {
        Some(r) => r.snapshots().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let physical: Vec<&str> = snapshots
        .iter()
        .filter(|(_, s)| s.facts.contains_key("wal_start"))
        .filter_map(|(_, s)| source_of(&s.tags))
        .collect();
    let mut data_gap = false;
    // A snapshot that has not arrived is named in the other region's
    // copy, which the same password opens (once, only when needed).
    let mut other: Option<Option<Repository>> = None;
    for gap in &report.gaps {
        if let Some(id) = gap.object.strip_prefix("snapshots/") {
            if other.is_none() {
                other = Some(Repository::open(from.clone(), password).await.ok());
            }
            if let Some(Some(other)) = &other {
                if let Ok((_, snap)) = other.find_snapshot(id).await {
                    if let Some(s) = source_of(&snap.tags) {
                        hurt.insert(s.to_string());
                    }
                }
            }
        } else if gap.object.starts_with("wal/") {
            hurt.extend(physical.iter().map(|s| s.to_string()));
        } else if gap.object.starts_with("data/") || gap.object.starts_with("index/") {
            data_gap = true;
        }
    }
    if let (true, Some(repo)) = (data_gap, &repo) {
        // Which snapshots need the missing data: the verify walk knows.
        let checked = verify(repo.clone(), false, 2).await?;
        let by_id: BTreeMap<String, &str> = snapshots
            .iter()
            .filter_map(|(id, s)| source_of(&s.tags).map(|src| (id.to_string(), src)))
            .collect();
        for p in &checked.problems {
            for snap in &p.snapshots {
                let found = by_id
                    .iter()
                    .find(|(id, _)| id.starts_with(snap.as_str()) || snap.starts_with(id.as_str()));
                if let Some((_, src)) = found {
                    hurt.insert(src.to_string());
                }
            }
        }
    }
    Ok(Comparison {
        gaps: report.gaps,
        sources_hurt: hurt.into_iter().collect(),
    })
}
