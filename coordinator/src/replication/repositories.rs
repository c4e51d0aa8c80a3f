//! The repositories' side of the replication checks: every
//! `repository_interval`, each region's repository agent reports the newest
//! snapshot of the services' sources, its WAL archive and what it lacks
//! compared with the primary region's; each is then judged against the
//! primary's repository and the service's RPO. Listing a bucket costs
//! requests, so this runs less often than the store checks, in its own
//! worker, and the store rounds pick up its latest results.

use super::assess::{self, AT_RISK, BROKEN, OK, UNKNOWN};
use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::topology::{RegionConfig, RegionRole, ServiceConfig};
use seawall_proto::v1::{RepositoryProbe, RepositoryReplication, RepositoryReport, SourceHead};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Each (region, agent) repository's newest answer, and when it came.
pub type Answers = HashMap<(String, String), (Result<RepositoryReport, String>, i64)>;

/// [`Answers`], shared between the repository reads and the store rounds.
pub type Latest = Arc<Mutex<Answers>>;

/// Starts the repository reads for `lead`'s term, if any service names
/// repositories; `latest` is where the answers go.
pub fn start(coord: Arc<Coordinator>, lead: Arc<Lead>, latest: Latest) {
    if coord
        .config
        .services
        .iter()
        .all(|s| s.repositories.is_empty())
    {
        return;
    }
    let (board, tree) = (coord.workers.clone(), lead.tree.clone());
    crate::fleet::workers::spawn_worker(&tree, &board, "repositories", move || {
        let (coord, lead, latest) = (coord.clone(), lead.clone(), latest.clone());
        async move {
            if !lead.leadership.is_valid() {
                return Ok(crate::fleet::workers::Next::Stop);
            }
            let started = Instant::now();
            round(&coord, &lead, &latest).await;
            let every = coord.config.replication.repository_interval;
            Ok(crate::fleet::workers::Next::After(
                every.saturating_sub(started.elapsed()),
            ))
        }
    });
}

/// What each repository agent is asked: the union over the services.
fn probes(
    config: &crate::model::config::CoordinatorConfig,
) -> HashMap<(String, String), RepositoryProbe> {
    let mut out: HashMap<(String, String), (BTreeSet<String>, BTreeSet<String>)> = HashMap::new();
    for s in &config.services {
        let sources = s.backup_sources(&config.regions);
        for r in &s.repositories {
            let entry = out.entry((r.region.clone(), r.agent.clone())).or_default();
            entry.0.extend(sources.iter().cloned());
            entry.1.extend(r.mirror.iter().cloned());
        }
    }
    out.into_iter()
        .map(|(k, (sources, mirrors))| {
            (
                k,
                RepositoryProbe {
                    sources: sources.into_iter().collect(),
                    mirrors: mirrors.into_iter().collect(),
                },
            )
        })
        .collect()
}

async fn round(coord: &Coordinator, lead: &Lead, latest: &Latest) {
    let deadline = coord.config.replication.repository_interval.mul_f64(0.8);
    let asks = probes(&coord.config)
        .into_iter()
        .map(|((region, agent), probe)| async move {
            let answer = match crate::fleet::pending::session_of(&coord.registry, &region, &agent) {
                Err(e) => Err(e.to_string()),
                Ok(session) => coord
                    .probes
                    .ask(&session, lead.epoch(), Vec::new(), Some(probe), deadline)
                    .await
                    .map_err(|e| format!("agent {region}/{agent}: {e}"))
                    .and_then(|r| {
                        r.repository.ok_or_else(|| {
                            format!("agent {region}/{agent} sent no repository report")
                        })
                    }),
            };
            ((region, agent), (answer, now_ms()))
        });
    let answers = futures_util::future::join_all(asks).await;
    let mut slot = latest.lock().unwrap_or_else(|p| p.into_inner());
    for (k, v) in answers {
        slot.insert(k, v);
    }
}

/// WAL segments as a position: (timeline, segment number), for names
/// "TTTTTTTT/TTTTTTTTLLLLLLLLSSSSSSSS" and 16 MiB segments.
pub fn wal_position(name: &str) -> Option<(u32, i64)> {
    let file = name.rsplit('/').next()?;
    if file.len() != 24 {
        return None;
    }
    let timeline = u32::from_str_radix(&file[0..8], 16).ok()?;
    let log = i64::from_str_radix(&file[8..16], 16).ok()?;
    let seg = i64::from_str_radix(&file[16..24], 16).ok()?;
    Some((timeline, log * 0x100 + seg))
}

fn head<'a>(heads: &'a [SourceHead], source: &str) -> Option<&'a SourceHead> {
    heads
        .iter()
        .find(|h| h.source == source && !h.snapshot_id.is_empty())
}

fn secs(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(ms.max(0) as u64 / 1000)).to_string()
}

/// Each of `service`'s repositories judged against the primary region's.
pub fn assess_all(
    regions: &[RegionConfig],
    service: &ServiceConfig,
    latest: &Answers,
) -> Vec<RepositoryReplication> {
    let sources = service.backup_sources(regions);
    let role_of = |region: &str| regions.iter().find(|r| r.name == region).map(|r| r.role);
    let answer = |region: &str, agent: &str| -> Option<(Result<&RepositoryReport, String>, i64)> {
        let (r, at) = latest.get(&(region.to_string(), agent.to_string()))?;
        let r = match r {
            Ok(rep) if rep.error.is_empty() => Ok(rep),
            Ok(rep) => Err(rep.error.clone()),
            Err(e) => Err(e.clone()),
        };
        Some((r, *at))
    };
    let primary = service
        .repositories
        .iter()
        .find(|r| role_of(&r.region) == Some(RegionRole::Primary))
        .and_then(|r| answer(&r.region, &r.agent))
        .and_then(|(r, _)| r.ok());
    let rpo_ms = service.rpo.as_millis() as i64;
    service
        .repositories
        .iter()
        .map(|at| {
            let role = role_of(&at.region);
            let mut out = RepositoryReplication {
                region: at.region.clone(),
                role: match role {
                    Some(RegionRole::Primary) => "primary",
                    Some(RegionRole::Standby) => "standby",
                    _ => "cold",
                }
                .into(),
                agent: at.agent.clone(),
                verdict: OK.into(),
                ..Default::default()
            };
            let mut verdict = OK;
            let mut reasons = Vec::new();
            let mut worse = |v: &'static str, why: String, reasons: &mut Vec<String>| {
                if assess::severity(v) > assess::severity(verdict) {
                    verdict = v;
                }
                reasons.push(why);
            };
            match answer(&at.region, &at.agent) {
                None => {
                    out.verdict = UNKNOWN.into();
                    out.reasons = vec!["not read yet".into()];
                    return out;
                }
                Some((Err(e), at_ms)) => {
                    out.answered_unix_ms = at_ms;
                    worse(BROKEN, format!("repository unreachable: {e}"), &mut reasons);
                }
                Some((Ok(rep), at_ms)) => {
                    out.answered_unix_ms = at_ms;
                    out.sources = sources
                        .iter()
                        .map(|s| {
                            head(&rep.heads, s).cloned().unwrap_or(SourceHead {
                                source: s.clone(),
                                ..Default::default()
                            })
                        })
                        .collect();
                    out.newest_wal = rep.newest_wal.clone();
                    out.wal_files = rep.wal_files;
                    if role == Some(RegionRole::Primary) {
                        for s in &sources {
                            if head(&rep.heads, s).is_none() {
                                reasons.push(format!("no backup of {s} yet"));
                            }
                        }
                    } else if let Some(p) = primary {
                        let mut behind: Option<i64> = None;
                        for s in &sources {
                            let Some(theirs) = head(&p.heads, s) else { continue };
                            match head(&rep.heads, s) {
                                Some(mine) if mine.snapshot_id == theirs.snapshot_id => {
                                    behind = Some(behind.unwrap_or(0));
                                }
                                Some(mine) => {
                                    out.snapshots_behind += 1;
                                    let by = (theirs.time_unix_ms - mine.time_unix_ms).max(0);
                                    behind = Some(behind.unwrap_or(0).max(by));
                                    if by > rpo_ms {
                                        worse(AT_RISK, format!("the newest backup of {s} here is {} older than the primary region's, over the RPO of {}", secs(by), secs(rpo_ms)), &mut reasons);
                                    } else {
                                        reasons.push(format!("the newest backup of {s} has not arrived yet ({} behind)", secs(by)));
                                    }
                                }
                                None => {
                                    out.snapshots_behind += 1;
                                    worse(AT_RISK, format!("no backup of {s} here: this region could not restore it"), &mut reasons);
                                }
                            }
                        }
                        out.behind_ms = behind;
                        if let (Some(mine), Some(theirs)) =
                            (wal_position(&rep.newest_wal), wal_position(&p.newest_wal))
                        {
                            out.wal_segments_behind = Some((theirs.1 - mine.1).max(0));
                        } else if !p.newest_wal.is_empty() && rep.newest_wal.is_empty() {
                            worse(AT_RISK, "no WAL here: point-in-time recovery would stop at the last base backup".into(), &mut reasons);
                        }
                    } else {
                        reasons.push("the primary region's repository was not read: nothing to compare with".into());
                    }
                    for m in &rep.mirrors {
                        if !m.error.is_empty() {
                            worse(AT_RISK, format!("mirror {}: {}", m.mirror, m.error), &mut reasons);
                            continue;
                        }
                        out.gap_count += m.gap_count;
                        out.gaps.extend(m.gaps.iter().cloned());
                        for s in &m.sources_hurt {
                            if !out.sources_hurt.contains(s) {
                                out.sources_hurt.push(s.clone());
                            }
                        }
                        if m.gap_count > 0 {
                            let first = m.gaps.first().map(|g| format!(" ({} {})", g.object, g.problem)).unwrap_or_default();
                            let hurt = if m.sources_hurt.is_empty() {
                                String::new()
                            } else {
                                format!("; a restore here would fail for {}", m.sources_hurt.join(", "))
                            };
                            worse(AT_RISK, format!("{} object(s) of the primary's repository missing or different here{first}{hurt}", m.gap_count), &mut reasons);
                        }
                    }
                }
            }
            out.verdict = verdict.into();
            out.reasons = reasons;
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_read_as_positions() {
        assert_eq!(
            wal_position("00000001/000000010000000000000003"),
            Some((1, 3))
        );
        assert_eq!(
            wal_position("00000002/0000000200000001000000FF"),
            Some((2, 0x1FF))
        );
        assert_eq!(wal_position("binding"), None);
    }
}
