//! Keeps the state store small: settled jobs, backup records and audit lines
//! older than `history_keep` are deleted by the leader, so listing them and
//! electing a new leader (which loads the jobs) stay fast in a fleet that
//! runs for years. The newest backup record of every source is kept however
//! old, because the RPO figure (`seawall_backup_age_seconds`) is computed
//! from it, and jobs still pending or running are never touched. Settled
//! failovers go the same way, except each service's newest (its last
//! achieved RTO and RPO); a running one is never touched.

use crate::jobs::{Coordinator, Lead};
use crate::model::clock::now_ms;
use crate::model::error::ActError;
use crate::model::records::{BackupRecord, JobRecord};
use crate::store::Entry;
use std::sync::Arc;
use std::time::Duration;

/// Records pruned, by kind (the one figure this module exports).
const PRUNED_TOTAL: &str = "seawall_history_pruned_total";

/// Most keys deleted in one pass, so a first pass over years of history does
/// not hold the store busy; the next pass goes on.
const MAX_DELETES_PER_PASS: usize = 5_000;

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Settled job records.
    pub jobs: usize,
    /// Backup records (never a source's newest).
    pub backups: usize,
    /// Audit lines.
    pub audit: usize,
    /// Settled failover records (never a service's newest).
    pub failovers: usize,
    /// Finished drill records (never the newest of a service's scenario).
    pub drills: usize,
    /// Whether more is left for the next pass (a pass deletes at most
    /// `MAX_DELETES_PER_PASS`); it then runs at once.
    pub more: bool,
}

/// Prunes at once and then every quarter of `history_keep` (at most hourly)
/// while `lead` holds.
pub fn start(coord: Arc<Coordinator>, lead: Arc<Lead>) {
    let keep = coord.config.history_keep;
    let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let (board, tree) = (coord.workers.clone(), lead.tree.clone());
    crate::fleet::workers::spawn_worker(&tree, &board, "history", move || {
        let (coord, lead) = (coord.clone(), lead.clone());
        async move {
            if !lead.leadership.is_valid() {
                return Ok(crate::fleet::workers::Next::Stop);
            }
            // Saturating: an absurd history_keep keeps everything rather than
            // wrapping into a cutoff in the future.
            let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            let p = prune(&coord, &lead, now_ms().saturating_sub(keep_ms))
                .await
                .map_err(|e| format!("history not pruned: {e}"))?;
            if p != Pruned::default() {
                for (kind, n) in [
                    ("jobs", p.jobs),
                    ("backups", p.backups),
                    ("audit", p.audit),
                    ("failovers", p.failovers),
                    ("drills", p.drills),
                ] {
                    metrics::counter!(PRUNED_TOTAL, "kind" => kind).increment(n as u64);
                }
                tracing::info!(
                    jobs = p.jobs,
                    backups = p.backups,
                    audit = p.audit,
                    failovers = p.failovers,
                    drills = p.drills,
                    "history pruned"
                )
            }
            // A backlog (a history grown past one pass) is worked off
            // pass after pass, not one pass per interval.
            Ok(crate::fleet::workers::Next::After(if p.more {
                Duration::from_millis(100)
            } else {
                every
            }))
        }
    });
}

/// Deletes what settled before `cutoff_ms`.
pub async fn prune(coord: &Coordinator, lead: &Lead, cutoff_ms: i64) -> Result<Pruned, ActError> {
    let mut doomed: Vec<(String, &'static str)> = Vec::new();
    for e in coord.store.list("jobs/").await? {
        if let Ok(job) = serde_json::from_slice::<JobRecord>(&e.value) {
            if job.state.is_final() && settled_ms(&job) < cutoff_ms {
                doomed.push((e.key, "jobs"));
            }
        }
    }
    for key in old_backups(&coord.store.list("backups/").await?, cutoff_ms) {
        doomed.push((key, "backups"));
    }
    for e in coord.store.list("audit/").await? {
        if key_time_ms(&e.key).is_some_and(|at| at < cutoff_ms) {
            doomed.push((e.key, "audit"));
        }
    }
    let failovers = coord.store.list(crate::model::failover::PREFIX).await?;
    for key in old_failovers(&failovers, cutoff_ms) {
        doomed.push((key, "failovers"));
    }
    let drills = coord.store.list(crate::drills::journal::PREFIX).await?;
    for key in old_drills(&drills, cutoff_ms) {
        doomed.push((key, "drills"));
    }
    let mut pruned = Pruned {
        more: doomed.len() > MAX_DELETES_PER_PASS,
        ..Pruned::default()
    };
    for (key, kind) in doomed.into_iter().take(MAX_DELETES_PER_PASS) {
        if !lead.leadership.is_valid() {
            return Err(ActError::NotLeader);
        }
        coord.store.delete(lead.fence(), &key).await?;
        match kind {
            "jobs" => pruned.jobs += 1,
            "backups" => pruned.backups += 1,
            "failovers" => pruned.failovers += 1,
            "drills" => pruned.drills += 1,
            _ => pruned.audit += 1,
        }
    }
    Ok(pruned)
}

/// When a settled job last changed.
fn settled_ms(job: &JobRecord) -> i64 {
    job.finished_ms
        .or(job.history.last().map(|e| e.at_ms))
        .unwrap_or(job.created_ms)
}

/// Backup records before the cutoff, except each source's newest. Keys sort
/// by time within a source (`backups/<region>/<source>/<ms>-<job>`).
fn old_backups(entries: &[Entry], cutoff_ms: i64) -> Vec<String> {
    let mut newest: std::collections::HashMap<(String, String), &str> = Default::default();
    for e in entries {
        if let Ok(b) = serde_json::from_slice::<BackupRecord>(&e.value) {
            let at = newest.entry((b.region, b.source)).or_insert(&e.key);
            if e.key.as_str() > *at {
                *at = &e.key;
            }
        }
    }
    let kept: std::collections::HashSet<&str> = newest.into_values().collect();
    entries
        .iter()
        .filter(|e| !kept.contains(e.key.as_str()))
        .filter(|e| key_time_ms(&e.key).is_some_and(|at| at < cutoff_ms))
        .map(|e| e.key.clone())
        .collect()
}

/// Settled failover records that finished before the cutoff, except each
/// service's newest.
fn old_failovers(entries: &[Entry], cutoff_ms: i64) -> Vec<String> {
    let records: Vec<(&str, crate::model::failover::FailoverRecord)> = entries
        .iter()
        .filter_map(|e| Some((e.key.as_str(), serde_json::from_slice(&e.value).ok()?)))
        .collect();
    let mut newest: std::collections::HashMap<&str, i64> = Default::default();
    for (_, f) in &records {
        let at = newest
            .entry(f.service.as_str())
            .or_insert(f.started_unix_ms);
        *at = (*at).max(f.started_unix_ms);
    }
    records
        .iter()
        .filter(|(_, f)| f.is_final())
        .filter(|(_, f)| newest.get(f.service.as_str()) != Some(&f.started_unix_ms))
        .filter(|(_, f)| f.finished_unix_ms < cutoff_ms)
        .map(|(k, _)| k.to_string())
        .collect()
}

/// Finished drill records that ended before the cutoff, except the newest
/// of each service's scenario (the status page shows it, and the metrics
/// of the last drill come from it).
fn old_drills(entries: &[Entry], cutoff_ms: i64) -> Vec<String> {
    let records: Vec<(&str, seawall_proto::v1::Drill)> = entries
        .iter()
        .filter_map(|e| Some((e.key.as_str(), serde_json::from_slice(&e.value).ok()?)))
        .collect();
    let mut newest: std::collections::HashMap<(&str, &str, &str), i64> = Default::default();
    for (_, d) in &records {
        let at = newest
            .entry((d.service.as_str(), d.scenario.as_str(), d.kind.as_str()))
            .or_insert(d.started_unix_ms);
        *at = (*at).max(d.started_unix_ms);
    }
    records
        .iter()
        .filter(|(_, d)| d.state == crate::drills::journal::FINISHED)
        .filter(|(_, d)| {
            newest.get(&(d.service.as_str(), d.scenario.as_str(), d.kind.as_str()))
                != Some(&d.started_unix_ms)
        })
        .filter(|(_, d)| d.finished_unix_ms < cutoff_ms)
        .map(|(k, _)| k.to_string())
        .collect()
}

/// The time at the start of a key's last segment (`<13-digit ms>-...`).
fn key_time_ms(key: &str) -> Option<i64> {
    let last = key.rsplit('/').next()?;
    last.get(..13)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(region: &str, source: &str, at: i64) -> Entry {
        let b = BackupRecord {
            region: region.into(),
            source: source.into(),
            snapshot_id: "s".into(),
            job_id: format!("j{at}"),
            finished_ms: at,
            bytes_read: 0,
            bytes_added: 0,
            duration_secs: 0.0,
        };
        Entry {
            key: crate::model::records::backup_key(&b),
            value: serde_json::to_vec(&b).unwrap(),
            revision: 1,
        }
    }

    #[test]
    fn a_sources_newest_backup_record_is_kept_however_old() {
        let entries = vec![
            backup("eu", "db", 1_000),
            backup("eu", "db", 2_000),
            backup("eu", "db", 9_000),
            backup("us", "db", 1_500),
        ];
        let old = old_backups(&entries, 5_000);
        assert_eq!(old, vec![entries[0].key.clone(), entries[1].key.clone()]);
        assert!(old_backups(&entries, 500).is_empty());
    }

    #[test]
    fn settled_failovers_go_but_each_services_newest_and_running_ones_stay() {
        use crate::model::failover::{FailoverRecord, FailoverState};
        let f = |service: &str, started: i64, state: FailoverState| {
            let f = FailoverRecord {
                id: format!("{service}-{started}"),
                service: service.into(),
                state,
                started_unix_ms: started,
                finished_unix_ms: started + 10,
                ..Default::default()
            };
            Entry {
                key: crate::model::failover::key(&f.id),
                value: serde_json::to_vec(&f).unwrap(),
                revision: 1,
            }
        };
        let entries = vec![
            f("shop", 1_000, FailoverState::Succeeded),
            f("shop", 2_000, FailoverState::Failed),
            f("shop", 3_000, FailoverState::Succeeded),
            f("cart", 1_500, FailoverState::Succeeded),
            f("stock", 1_000, FailoverState::Running),
            f("stock", 4_000, FailoverState::Succeeded),
        ];
        let old = old_failovers(&entries, 5_000);
        assert_eq!(old, vec![entries[0].key.clone(), entries[1].key.clone()]);
        assert!(old_failovers(&entries, 500).is_empty());
    }

    #[test]
    fn finished_drills_go_but_each_scenarios_newest_and_running_ones_stay() {
        let drill = |id: &str, scenario: &str, at: i64, state: &str| Entry {
            key: format!("drills/{id}"),
            value: serde_json::to_vec(&seawall_proto::v1::Drill {
                id: id.into(),
                service: "orders".into(),
                scenario: scenario.into(),
                kind: "restore".into(),
                state: state.into(),
                started_unix_ms: at,
                finished_unix_ms: at + 10,
                ..Default::default()
            })
            .unwrap(),
            revision: 1,
        };
        let entries = [
            drill("a", "complete outage", 100, "finished"),
            drill("b", "complete outage", 200, "finished"),
            drill("c", "zone failure", 150, "finished"),
            drill("d", "complete outage", 50, "running"),
        ];
        assert_eq!(old_drills(&entries, 1_000), vec!["drills/a".to_string()]);
        assert!(old_drills(&entries, 0).is_empty());
    }

    #[test]
    fn key_times_are_read_from_the_last_segment() {
        assert_eq!(
            key_time_ms("audit/1700000000000-0a0b0c0d"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            key_time_ms("backups/eu/db/1700000000123-job"),
            Some(1_700_000_000_123)
        );
        assert_eq!(key_time_ms("audit/garbage"), None);
    }
}
