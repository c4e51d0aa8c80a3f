//! Self-fencing: when the agent's lease (see `lease.rs`) lapses, it fences
//! the primaries the lease covers itself, because the leader may promote
//! elsewhere soon after. Checked every few milliseconds, so after a freeze
//! (a paused VM, a SIGSTOP) the lapse is seen at once, before the store's
//! clients get far.
//!
//! One exception, like Patroni's failsafe mode: when every coordinator
//! replica answers and none leads, no promotion can happen (a coordinator
//! or etcd outage), so the primaries keep serving. The replicas are asked
//! shortly before the lease lapses; an answer older than that does not
//! count. A region cut from everything gets no answer and fences.
//!
//! A self-fenced source stays fenced until the leader acts on it (an
//! unfence when its region is still the primary, a rejoin or rebuild when
//! not); the list is kept in the state directory and sent in the hello.

use super::certs::AgentTls;
use super::config::AgentConfig;
use super::lease::LeaseState;
use seawall_proto::v1::agent_service_client::AgentServiceClient;
use seawall_proto::v1::{FenceAction, LeadershipQuery};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the lease is looked at.
const TICK: Duration = Duration::from_millis(20);
/// How long before the lapse the replicas are asked.
const FAILSAFE_LEAD: Duration = Duration::from_millis(600);
/// How long a replica may take to answer.
const FAILSAFE_TIMEOUT: Duration = Duration::from_millis(400);
/// How often the replicas are asked at most (each question is a TLS
/// handshake with every replica: in an etcd outage every agent asks on).
const ASK_EVERY: Duration = Duration::from_millis(200);
/// How long a fence of one store may take.
const FENCE_DEADLINE: Duration = Duration::from_secs(10);

/// The watchdog and what it fenced.
pub struct SelfFencer {
    config: Arc<AgentConfig>,
    lease: Arc<LeaseState>,
    tls: Arc<AgentTls>,
    fenced: Mutex<BTreeSet<String>>,
    path: PathBuf,
    /// Counts self-fences: the link reconnects on each, so the leader
    /// (whose answers may only have been late) sees the list in the hello.
    fences: tokio::sync::watch::Sender<u64>,
}

impl SelfFencer {
    /// The watchdog of `lease`, with what it fenced before a restart.
    pub fn open(config: Arc<AgentConfig>, lease: Arc<LeaseState>, tls: Arc<AgentTls>) -> Self {
        let path = config.state_dir.join("self-fenced.json");
        let fenced = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        SelfFencer {
            config,
            lease,
            tls,
            fenced: Mutex::new(fenced),
            path,
            fences: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes on each self-fence.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.fences.subscribe()
    }

    fn set(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.fenced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sources it fenced itself that no leader has acted on yet.
    pub fn fenced(&self) -> Vec<String> {
        self.set().iter().cloned().collect()
    }

    /// A leader acted on `source` (unfenced, promoted, demoted, rebuilt it).
    pub fn lifted(&self, source: &str) {
        let changed = self.set().remove(source);
        if changed {
            self.keep();
        }
    }

    fn keep(&self) {
        let list = self.fenced();
        let written = serde_json::to_vec(&list)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&self.path, b));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "the self-fenced sources are not kept");
        }
    }

    /// Watches the lease until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        // When the replicas last said no one leads, asked near the lapse.
        let mut leaderless_at: Option<Instant> = None;
        let mut last_asked: Option<Instant> = None;
        let mut kept_logged = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let (until, covered) = self.lease.now();
            let pending: Vec<(String, bool)> = {
                let fenced = self.set();
                covered
                    .sources
                    .into_iter()
                    .filter(|(s, _)| !fenced.contains(s))
                    .collect()
            };
            if covered.after_ms == 0 || pending.is_empty() {
                leaderless_at = None;
                continue;
            }
            let now = Instant::now();
            if now + FAILSAFE_LEAD < until {
                leaderless_at = None;
                kept_logged = false;
                continue;
            }
            let due = last_asked.is_none_or(|t| now.duration_since(t) >= ASK_EVERY);
            if now < until {
                // About to lapse: ask the replicas while it still holds,
                // never past the lapse (an answer that comes later is no
                // answer: the fence must not wait for it).
                if due {
                    last_asked = Some(now);
                    if self.no_one_leads(until - now).await {
                        leaderless_at = Some(Instant::now());
                    }
                }
                continue;
            }
            // Lapsed. Serving on needs a leaderless answer that is fresh
            // (one from before a freeze is not) and stays so.
            let fresh = leaderless_at
                .is_some_and(|t| now.duration_since(t) <= FAILSAFE_LEAD + FAILSAFE_TIMEOUT);
            if fresh {
                if !kept_logged {
                    tracing::warn!("no word from a leader, but every coordinator replica answers and none leads: no promotion can happen, so the primaries keep serving");
                    kept_logged = true;
                }
                if !due {
                    continue;
                }
                last_asked = Some(now);
                if self.no_one_leads(FAILSAFE_TIMEOUT).await {
                    leaderless_at = Some(Instant::now());
                    continue;
                }
                leaderless_at = None;
            }
            let late = now.duration_since(until);
            self.fence(&pending, late).await;
        }
    }

    /// Whether every configured replica answers, within `within`, and
    /// none leads.
    async fn no_one_leads(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.ask_replicas())
            .await
            .unwrap_or(false)
    }

    async fn ask_replicas(&self) -> bool {
        let asks = self.config.coordinators.iter().map(|address| async move {
            let url = super::channel::url_of(address);
            let channel = super::channel::open_channel(&self.tls, &url, FAILSAFE_TIMEOUT).await?;
            let answer = tokio::time::timeout(
                FAILSAFE_TIMEOUT,
                AgentServiceClient::new(channel).leadership(LeadershipQuery {}),
            )
            .await
            .map_err(|_| format!("{url}: no answer within {FAILSAFE_TIMEOUT:?}"))?
            .map_err(|s| format!("{url}: {}", s.message()))?
            .into_inner();
            Ok::<bool, String>(answer.leader)
        });
        let answers = futures_util::future::join_all(asks).await;
        answers.iter().all(|a| matches!(a, Ok(false)))
    }

    async fn fence(&self, pending: &[(String, bool)], late: Duration) {
        tracing::error!(
            late_ms = late.as_millis() as u64,
            sources = ?pending.iter().map(|p| &p.0).collect::<Vec<_>>(),
            "no word from a leader for the lease's bound, and no sign that no one leads: fencing this region's primaries before a leader promotes elsewhere"
        );
        let fences = pending.iter().map(|(source, stop)| async move {
            let store = crate::stores::open(&self.config, source)?;
            let how = FenceAction {
                stop_postgres: *stop,
            };
            store.fence(&how, FENCE_DEADLINE).await
        });
        let done = futures_util::future::join_all(fences).await;
        let mut any = false;
        for ((source, _), outcome) in pending.iter().zip(done) {
            match outcome {
                Ok(d) => {
                    tracing::warn!(source = %source, detail = %d.detail, "self-fenced");
                    metrics::counter!(super::metrics::SELF_FENCES_TOTAL).increment(1);
                    self.set().insert(source.clone());
                    any = true;
                }
                // Tried again at the next tick.
                Err(e) => {
                    tracing::error!(source = %source, error = %e, "self-fence failed: it may still take writes")
                }
            }
        }
        if any {
            self.keep();
            self.fences.send_modify(|n| *n += 1);
        }
    }
}
