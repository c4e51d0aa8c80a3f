//! Answers the leader's probes: the replication state of the agent's
//! PostgreSQL and Redis sources, and canary writes and reads. Connections
//! are kept between rounds (a probe every few seconds must not cost a
//! connection each time); one that fails is dropped and made again. Every
//! store gets the probe's deadline: one that has not answered by then is
//! reported unreachable, never as "no lag". The repository is read for its
//! newest snapshots and compared with the repositories it mirrors.

use super::config::AgentConfig;
use crate::engine::repo_state;
use crate::stores::canary::Marker;
use crate::stores::{self, StoreControl};
use seawall_common::{Error, ErrorKind, Repository, Result};
use seawall_proto::v1::{
    CanaryMarker, MirrorComparison, ProbeReply, ProbeRequest, RepositoryGap, RepositoryProbe,
    RepositoryReport, SourceHead, StoreProbe, StoreReport,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Store probe rounds answered at once; a further one is refused at once
/// (the stores are not keeping up and piling on would not help).
const CONCURRENT_ROUNDS: usize = 2;
/// Repository reads answered at once. They have a pool of their own: a
/// listing of a slow bucket (its deadline is most of a minute) must not
/// take a permit the replication rounds, due every second, need.
const CONCURRENT_REPOSITORY_READS: usize = 1;
/// Gaps listed one by one in an answer (the count has them all).
const MAX_GAPS: usize = 20;
/// Longest deadline honoured, whatever the request says.
const MAX_DEADLINE: Duration = Duration::from_secs(60);

/// The agent's prober.
pub struct Prober {
    config: Arc<AgentConfig>,
    /// Each source's store, kept with its connection between rounds.
    stores: Mutex<HashMap<String, Arc<dyn StoreControl>>>,
    rounds: Arc<tokio::sync::Semaphore>,
    repository_reads: Arc<tokio::sync::Semaphore>,
    repo: tokio::sync::Mutex<Option<Arc<Repository>>>,
}

impl Prober {
    /// A prober for `config`'s sources.
    pub fn new(config: Arc<AgentConfig>) -> Self {
        Prober {
            config,
            stores: Mutex::default(),
            rounds: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_ROUNDS)),
            repository_reads: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REPOSITORY_READS)),
            repo: tokio::sync::Mutex::new(None),
        }
    }

    /// Answers one request: every store in parallel, each within the deadline.
    pub async fn answer(&self, request: ProbeRequest) -> ProbeReply {
        let deadline =
            Duration::from_millis(u64::from(request.deadline_ms.max(100))).min(MAX_DEADLINE);
        // Reach checks (one connection attempt each, within the deadline)
        // are not held up by slow rounds: a hung store that keeps the
        // replication rounds busy is exactly what they must report.
        let reach_only = request.repository.is_none()
            && request.probes.iter().all(|p| !p.reach_address.is_empty());
        let repository_only = request.probes.is_empty() && request.repository.is_some();
        let pool = if repository_only {
            &self.repository_reads
        } else {
            &self.rounds
        };
        let permit = pool.clone().try_acquire_owned();
        if permit.is_err() && !reach_only {
            let busy = Error::new(
                ErrorKind::Locked,
                if repository_only {
                    "the agent is still reading its repository for an earlier probe: the bucket is slow to respond"
                } else {
                    "the agent is still answering earlier probes: its stores are slow to respond"
                },
            );
            return ProbeReply {
                probe_id: request.probe_id,
                reports: request.probes.iter().map(|p| failed(p, &busy, 0)).collect(),
                repository: request.repository.as_ref().map(|_| RepositoryReport {
                    error: busy.to_string(),
                    error_kind: super::result::wire_kind(busy.kind()) as i32,
                    ..Default::default()
                }),
            };
        }
        let stores =
            futures_util::future::join_all(request.probes.iter().map(|p| self.one(p, deadline)));
        let repository = async {
            match &request.repository {
                Some(r) => Some(self.repository(r, deadline).await),
                None => None,
            }
        };
        let (reports, repository) = tokio::join!(stores, repository);
        ProbeReply {
            probe_id: request.probe_id,
            reports,
            repository,
        }
    }

    /// The agent's repository, opened once (a password's key derivation
    /// is deliberately slow) and again after a failure.
    async fn own_repository(&self) -> Result<Arc<Repository>> {
        let mut slot = self.repo.lock().await;
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        let repo = self.config.repository.spec().open().await?;
        *slot = Some(repo.clone());
        Ok(repo)
    }

    async fn repository(&self, probe: &RepositoryProbe, deadline: Duration) -> RepositoryReport {
        let started = Instant::now();
        let answer = tokio::time::timeout(deadline, self.read_repository(probe)).await;
        let took_ms = started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
        let failed = |e: Error| RepositoryReport {
            error: e.to_string(),
            error_kind: super::result::wire_kind(e.kind()) as i32,
            took_ms,
            ..Default::default()
        };
        match answer {
            Ok(Ok(mut r)) => {
                r.took_ms = took_ms;
                r
            }
            Ok(Err(e)) => {
                *self.repo.lock().await = None;
                failed(e)
            }
            Err(_) => failed(Error::new(
                ErrorKind::Unreachable,
                format!("the repository did not answer within {deadline:?}: unreachable"),
            )),
        }
    }

    async fn read_repository(&self, probe: &RepositoryProbe) -> Result<RepositoryReport> {
        // A replica that no mirror run has created yet holds nothing: that
        // is a finding (every source missing), not an unreachable store.
        let repo = match self.own_repository().await {
            Ok(r) => Some(r),
            Err(e) if e.kind() == ErrorKind::NotFound && !probe.mirrors.is_empty() => None,
            Err(e) => return Err(e),
        };
        let state = match &repo {
            Some(r) => repo_state::state(r, &probe.sources).await?,
            None => repo_state::State {
                heads: Vec::new(),
                newest_wal: None,
                wal_files: 0,
            },
        };
        let mut mirrors = Vec::new();
        for name in &probe.mirrors {
            let Some(m) = self.config.mirrors.iter().find(|m| &m.name == name) else {
                mirrors.push(MirrorComparison {
                    mirror: name.clone(),
                    error: format!("this agent has no [[mirrors]] entry {name:?}: the topology names one its agent.toml lacks"),
                    ..Default::default()
                });
                continue;
            };
            let compared = async {
                let from = m.spec().storage().await?;
                let to = match &repo {
                    Some(r) => r.storage().clone(),
                    None => self.config.repository.spec().storage().await?,
                };
                let password = self.config.repository.spec().password()?;
                repo_state::compare(from, to, repo.clone(), &password).await
            };
            mirrors.push(match compared.await {
                Ok(c) => MirrorComparison {
                    mirror: name.clone(),
                    error: String::new(),
                    gap_count: c.gaps.len().min(u32::MAX as usize) as u32,
                    gaps: c
                        .gaps
                        .into_iter()
                        .take(MAX_GAPS)
                        .map(|g| RepositoryGap {
                            object: g.object,
                            problem: g.problem,
                        })
                        .collect(),
                    sources_hurt: c.sources_hurt,
                },
                Err(e) => MirrorComparison {
                    mirror: name.clone(),
                    error: format!("{} cannot be compared: {e}", m.from),
                    ..Default::default()
                },
            });
        }
        Ok(RepositoryReport {
            heads: state
                .heads
                .into_iter()
                .map(|h| SourceHead {
                    source: h.source,
                    snapshot_id: h.newest.as_ref().map(|n| n.0.clone()).unwrap_or_default(),
                    time_unix_ms: h.newest.map(|n| n.1).unwrap_or(0),
                    snapshots: h.snapshots,
                })
                .collect(),
            newest_wal: state.newest_wal.unwrap_or_default(),
            wal_files: state.wal_files,
            mirrors,
            ..Default::default()
        })
    }

    async fn one(&self, probe: &StoreProbe, deadline: Duration) -> StoreReport {
        let started = Instant::now();
        if !probe.reach_address.is_empty() {
            let outcome =
                crate::stores::reach::reach(&probe.reach_address, &probe.reach_kind, deadline)
                    .await;
            let took_ms = started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
            return StoreReport {
                source: probe.reach_address.clone(),
                reached: outcome.is_ok(),
                error: outcome.err().map(|e| e.to_string()).unwrap_or_default(),
                took_ms,
                ..Default::default()
            };
        }
        let answer = tokio::time::timeout(deadline, self.read(probe)).await;
        let took = started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
        match answer {
            Ok(Ok(mut report)) => {
                report.took_ms = took;
                report
            }
            Ok(Err(e)) => failed(probe, &e, took),
            Err(_) => {
                // The connection may be the stuck part: make a new one next time.
                self.forget(&probe.source);
                let e = Error::new(
                    ErrorKind::Unreachable,
                    format!(
                        "{} did not answer within {deadline:?}: unreachable",
                        probe.source
                    ),
                );
                let mut report = failed(probe, &e, took);
                // What the control plane said of it still goes.
                if probe.replication {
                    report.managed = self.store(&probe.source).ok().and_then(|s| s.managed());
                }
                report
            }
        }
    }

    fn forget(&self, source: &str) {
        let kept = self.stores.lock().ok().and_then(|m| m.get(source).cloned());
        if let Some(store) = kept {
            store.forget();
        }
    }

    /// The store of `source`, kept between rounds.
    fn store(&self, source: &str) -> Result<Arc<dyn StoreControl>> {
        if let Some(s) = self.stores.lock().ok().and_then(|m| m.get(source).cloned()) {
            return Ok(s);
        }
        let store = stores::open(&self.config, source)?;
        if let Ok(mut m) = self.stores.lock() {
            m.insert(source.to_string(), store.clone());
        }
        Ok(store)
    }

    async fn read(&self, probe: &StoreProbe) -> Result<StoreReport> {
        let store = self.store(&probe.source)?;
        let mut report = StoreReport {
            source: probe.source.clone(),
            ..Default::default()
        };
        if probe.replication {
            match store.replication().await {
                Ok(r) => report.replication = Some(r),
                // The control plane's view still goes: what RDS says of an
                // instance its agent cannot reach by SQL.
                Err(e) => match store.managed() {
                    Some(managed) => {
                        let mut report = failed(probe, &e, 0);
                        report.managed = Some(managed);
                        return Ok(report);
                    }
                    None => return Err(e),
                },
            }
            report.managed = store.managed();
        }
        if let Some(m) = &probe.canary_write {
            let marker = Marker {
                seq: m.seq,
                written_unix_ms: m.written_unix_ms,
            };
            match store.write_canary(&m.service, marker).await {
                Ok(()) => report.canary = Some(m.clone()),
                Err(e) => report.canary_error = e.to_string(),
            }
        }
        if !probe.canary_read.is_empty() {
            match store.read_canary(&probe.canary_read).await {
                Ok(seen) => report.canary = seen.map(|m| marker_message(&probe.canary_read, m)),
                Err(e) => report.canary_error = e.to_string(),
            }
        }
        Ok(report)
    }
}

fn failed(probe: &StoreProbe, e: &Error, took_ms: u32) -> StoreReport {
    StoreReport {
        source: probe.source.clone(),
        error: e.to_string(),
        error_kind: super::result::wire_kind(e.kind()) as i32,
        took_ms,
        ..Default::default()
    }
}

fn marker_message(service: &str, m: Marker) -> CanaryMarker {
    CanaryMarker {
        service: service.to_string(),
        seq: m.seq,
        written_unix_ms: m.written_unix_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prober() -> (tempfile::TempDir, Prober) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "id = \"a1\"\nregion = \"eu\"\ncoordinators = [\"127.0.0.1:7000\"]\n\
                 state_dir = \"{0}\"\n[tls]\nca = \"ca.pem\"\ncert = \"a1.pem\"\nkey = \"a1.key\"\n\
                 [repository]\nrepo = \"{0}/repo\"\npassword_file = \"{0}/pw\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let config = AgentConfig::load(&path, None).unwrap();
        (dir, Prober::new(Arc::new(config)))
    }

    fn store_round() -> ProbeRequest {
        ProbeRequest {
            probe_id: 7,
            deadline_ms: 500,
            probes: vec![StoreProbe {
                source: "missing".into(),
                replication: true,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_slow_repository_read_takes_no_permit_the_replication_rounds_need() {
        let (_dir, prober) = prober();
        // A repository read in progress (a slow bucket: its deadline is
        // most of a minute) holds its pool's permit, and the previous
        // round's answer is still on its way.
        let _reading = prober.repository_reads.clone().try_acquire_owned().unwrap();
        let _previous = prober.rounds.clone().try_acquire_owned().unwrap();
        let reply = prober.answer(store_round()).await;
        assert!(
            !reply.reports[0].error.contains("earlier probes"),
            "{}",
            reply.reports[0].error
        );
        // A second repository read is refused at once, by name.
        let reply = prober
            .answer(ProbeRequest {
                probe_id: 8,
                deadline_ms: 500,
                repository: Some(RepositoryProbe::default()),
                ..Default::default()
            })
            .await;
        let error = &reply.repository.unwrap().error;
        assert!(error.contains("reading its repository"), "{error}");
        // Store rounds past their own bound are refused as before.
        let _other = prober.rounds.clone().try_acquire_owned().unwrap();
        let reply = prober.answer(store_round()).await;
        assert!(
            reply.reports[0].error.contains("earlier probes"),
            "{}",
            reply.reports[0].error
        );
    }
}
